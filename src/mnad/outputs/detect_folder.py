"""A ``mnad detect`` run's folder, its layout and lifecycle: which files and folders are a run's (``DETECT_FILES``,
the source folders its summary.json names: ``detect_run_entries``), what is refused as another command's or a
user's, the run that keeps an earlier one aside until it has its own result (``DetectFolder``), the closed segments
a run keeps to a size (``OldestFirst``, ``remove_segment``) and what a killed run left (``remove_detect_temps``).
What is written into the folder, row by row, is ``mnad.outputs.detect_writer``'s."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnad.errors import DataError, os_reason
from mnad.outputs.columns import DETECT_SCORES_HEADER
from mnad.outputs.names import (
    ANNOTATED_DIR,
    ANNOTATED_VIDEO,
    EVENTS_CSV,
    EVENTS_JSONL,
    FRAME_DIGITS,
    MAP_FILE,
    MAP_SHARD,
    MAPS_DIR,
    METRICS_FILE,
    OLD_ANNOTATED_VIDEO,
    ROW_FILES,
    ROW_SEGMENT,
    ROWS_DIR,
    SCORES_FILE,
    SHARD_DIGITS,
    STATE_FILE,
    STREAM_FOLDER,
    SUMMARY_FILE,
    VIDEO_SEGMENT,
)
from mnad.outputs.reading import read_json_if_present, wrong_kinds

log = logging.getLogger(__name__)

DETECT_FILES = (SCORES_FILE, EVENTS_JSONL, EVENTS_CSV, SUMMARY_FILE, ANNOTATED_VIDEO, OLD_ANNOTATED_VIDEO, ANNOTATED_DIR, MAPS_DIR,
                ROWS_DIR, STATE_FILE)
STAGING_DIR = ".mnad-detect-new"  # a run's outputs until it scores its first frame, when an earlier run is in --out
EARLIER_DIR = ".mnad-detect-earlier"  # the earlier run's outputs, from the new run's first frame until it ends well
MOVING_MARK = ".moving"  # in EARLIER_DIR while the earlier run moves into it (DetectFolder.take_over): part of it is there


def detect_summary_problem(data: Any) -> str | None:
    """What is wrong with a detect summary.json as ``detect_run_entries`` reads it (the folders of a run over several
    sources, ``streams[].folder``: null or a source folder's name) and a source's row segments (``row_segments``,
    ``row_segments_open``, ``row_segments_deleted``) and map shards (``map_shards_deleted``), or None."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    if wrong := wrong_kinds(data, "", {"row_segments": list, "row_segments_open": str, "row_segments_deleted": int,
                                       "map_shards_deleted": int}):
        return wrong  # a source's row segments and map shards (``DetectWriter``)
    if not all(isinstance(name, str) for name in data.get("row_segments") or []):
        return f"row_segments must be a list of paths, got {data['row_segments']!r}"[:200]
    streams = data.get("streams")
    if streams is None:  # one source's summary: no folders
        return None
    if not isinstance(streams, list) or not all(isinstance(s, dict) for s in streams):
        return f"streams must be a list of objects, got {streams!r}"[:200]
    for stream in streams:
        folder = stream.get("folder")
        if folder is not None and not (isinstance(folder, str) and STREAM_FOLDER.fullmatch(folder)):
            return f"a stream's folder must be null or a name like 0_camera, got {folder!r}"[:200]
    return None


def detect_run_folders(out_dir: Path) -> list[str]:
    """The names of the per-source folders that the detect run in ``out_dir`` recorded in its summary.json
    (``streams[].folder``); [] when it has none (one source, or no run). A summary.json that cannot be read is refused
    (``DataError``): which folders are the run's could not be told."""
    path = out_dir / SUMMARY_FILE
    try:
        summary = read_json_if_present(path, "detect summary", detect_summary_problem, {})
    except DataError as exc:
        raise DataError(f"{exc}; it would say which folders are an earlier run's: move it, or choose another --out") from exc
    return sorted({s["folder"] for s in summary.get("streams", []) if s.get("folder") is not None})


def is_detect_scores(path: Path) -> bool:
    """Whether the scores.csv at ``path`` is a detect run's: its header begins ``frame,time`` (every version of
    ``DETECT_SCORES_HEADER``; an evaluation's begins ``video,``), or it is empty (a run killed before its first row
    reached the disk; an evaluation's is written whole). One that cannot be read is not taken for detect's."""
    try:
        with path.open("rb") as handle:
            head = handle.read(64)
    except OSError:
        return False
    return head == b"" or head.startswith(",".join(DETECT_SCORES_HEADER[:2]).encode() + b",")


def is_detect_summary(path: Path) -> bool:
    """Whether the summary.json at ``path`` is a detect run's: a JSON object with a source's ``frames_scored`` or a
    run's ``streams`` (``mnad detect`` writes no other summary.json). One that cannot be read is not taken for it."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested beyond Python's stack
        return False
    return isinstance(data, dict) and ("frames_scored" in data or "streams" in data)


def other_command_outputs(folder: Path) -> list[str]:
    """The files in ``folder`` that another command wrote where detect writes its own: an evaluation's metrics.json
    (``mnad evaluate``), a scores.csv that is not a detect run's (``is_detect_scores``)."""
    found = [METRICS_FILE] if os.path.lexists(folder / METRICS_FILE) else []
    scores = folder / SCORES_FILE
    if os.path.lexists(scores) and not (scores.is_file() and not scores.is_symlink() and is_detect_scores(scores)):
        found.append(SCORES_FILE)
    return found


def detect_run_entries(out_dir: Path) -> list[Path]:
    """The files and folders of the detect run already in ``out_dir``: its files (``DETECT_FILES``), the folders of
    its sources that its summary.json names (``detect_run_folders``) and what ``DetectFolder`` kept aside; nothing
    else: a folder no summary names is a user's, whatever its name or content, and the lock file (``.lock``, held by the
    run writing the folder) is no run's output. A folder holding another command's outputs where detect writes its own
    (``other_command_outputs``: an evaluation's scores.csv and metrics.json) is refused (``DataError``), --overwrite or
    not: a file's name does not make it detect's. A named folder that holds files detect does not write is refused
    too, and so are ``rows/``, ``maps/`` and ``annotated/`` folders that hold anything but what detect writes there
    (``foreign_outputs``): moving them would move a user's files."""
    for folder in (out_dir, *(out_dir / name for name in detect_run_folders(out_dir))):
        if folder.is_dir() and (folder == out_dir or not folder.is_symlink()) and (other := other_command_outputs(folder)):
            raise DataError(f"{folder}: holds another command's outputs ({', '.join(other)}: `mnad evaluate`'s?), not an "
                            "earlier detect run's; detect never replaces them, even with --overwrite: choose another --out")
        if folder.is_dir() and (folder == out_dir or not folder.is_symlink()) and (other := foreign_outputs(folder)):
            where = folder / other[0].split("/")[0]
            raise DataError(f"{where}: holds files mnad detect did not write ({', '.join(other[:3])}); detect writes "
                            "its own there and --overwrite would move them with an earlier run's: move them, or choose "
                            "another --out")
    entries = [out_dir / name for name in (*DETECT_FILES, EARLIER_DIR) if os.path.lexists(out_dir / name)]
    for name in detect_run_folders(out_dir):
        folder = out_dir / name
        if not folder.is_dir() or folder.is_symlink():  # never made (the source gave nothing), or not the run's
            continue
        if other := sorted(p.name for p in folder.iterdir() if p.name not in DETECT_FILES and not p.name.endswith(".tmp")):
            raise DataError(f"{folder}: holds files mnad detect did not write ({', '.join(other[:3])}) beside an earlier "
                            "run's outputs; move them, or choose another --out")
        entries.append(folder)
    return entries


def _doomed_segment(digits: int = FRAME_DIGITS) -> re.Pattern[str]:
    """The name a row segment being deleted has in rows/ (``remove_segment``): ``.<first frame>.<random>.tmp``; with
    ``digits`` ``SHARD_DIGITS``, a map shard's in maps/."""
    from mnad.atomic import TEMP_SUFFIX

    return re.compile(rf"\.\d{{{digits}}}\.[0-9a-f]+{re.escape(TEMP_SUFFIX)}")


def foreign_outputs(folder: Path) -> list[str]:
    """What detect's folders in ``folder`` hold that detect did not write there, relative to ``folder``: in ``rows/``
    anything but row segments (``rows/<12 digits>/`` holding row files only, a scores.csv a detect run's); in
    ``maps/`` anything but map shards (``maps/<8 digits>/`` holding ``<12 digits>.npy|png`` files); in
    ``annotated/`` anything but the video's files (``<12 digits>.mkv``); not the segments and shards a killed run was
    deleting (``remove_segment``). [] when there is nothing foreign: moving these folders aside moves nothing of a
    user's."""
    def check(name: str, entry: re.Pattern[str], files: Callable[[Path], bool] | None, digits: int = 0) -> list[str]:
        """``files`` None: ``name`` holds plain files, deleted directly (never under a doomed name, so no ``digits``)."""
        parent = folder / name
        if not os.path.lexists(parent):
            return []
        if not parent.is_dir() or parent.is_symlink():
            return [name]
        doomed, found = _doomed_segment(digits), []
        for path in sorted(parent.iterdir()):
            if files is None:
                if not entry.fullmatch(path.name) or not path.is_file() or path.is_symlink():
                    found.append(f"{name}/{path.name}")
            elif not path.is_dir() or path.is_symlink() or not (entry.fullmatch(path.name) or doomed.fullmatch(path.name)):
                found.append(f"{name}/{path.name}")
            elif not doomed.fullmatch(path.name):
                found += [f"{name}/{path.name}/{p.name}" for p in sorted(path.iterdir()) if not files(p)]
        return found

    def row_file(path: Path) -> bool:
        return (path.name in ROW_FILES and path.is_file() and not path.is_symlink()
                and (path.name != SCORES_FILE or is_detect_scores(path)))

    def map_file(path: Path) -> bool:
        return bool(MAP_FILE.fullmatch(path.name)) and path.is_file() and not path.is_symlink()

    return (check(ROWS_DIR, ROW_SEGMENT, row_file, FRAME_DIGITS) + check(MAPS_DIR, MAP_SHARD, map_file, SHARD_DIGITS)
            + check(ANNOTATED_DIR, VIDEO_SEGMENT, None))


def doomed_name(path: Path) -> Path:
    """The hidden name a folder is renamed to before it is deleted (``.<name>.<random>.tmp``), so that a run killed
    while deleting it leaves no part of it under its own name; ``remove_detect_temps`` deletes what is left."""
    from mnad.atomic import TEMP_SUFFIX

    return path.with_name(f".{path.name}.{os.urandom(4).hex()}{TEMP_SUFFIX}")


def remove_segment(path: Path) -> None:
    """Delete a closed segment: an annotated video's file, or a row segment's or map shard's folder, which is first
    renamed to a hidden name (``.<name>.<random>.tmp``) so that a run killed while deleting it leaves no half segment
    among the whole ones (``remove_detect_temps`` deletes what is left). One already gone is as good as deleted. One
    that cannot be deleted is renamed back (OSError): it is still listed, under the name it has (``OldestFirst``)."""
    if path.is_dir() and not path.is_symlink():
        doomed = doomed_name(path)
        path.rename(doomed)
        try:
            shutil.rmtree(doomed)
        except OSError:
            with contextlib.suppress(OSError):  # if not, OldestFirst lists it under its hidden name
                doomed.rename(path)
            raise
    else:
        path.unlink(missing_ok=True)


class OldestFirst:
    """The closed segments of an output that a run keeps, in time order (``names``, relative to the run's folder, with
    their ``sizes``), to at most ``keep_bytes`` bytes in all (None: all kept): when one closes (``add``) the oldest are
    deleted until the rest fit, the newest always kept (a recorder's rule), and ``deleted`` counts them. The one rule
    of the annotated video's files (``annotated_video.SegmentedVideo``, --video-keep), of the row segments and of the error
    maps' shards (``DetectWriter``, --rows-keep, --maps-keep); ``option`` and ``what`` name them in messages."""

    def __init__(self, keep_bytes: int | None, option: str, what: str) -> None:
        self.keep_bytes, self.option, self.what = keep_bytes, option, what
        self.names: list[str] = []
        self.sizes: list[int] = []
        self.deleted = 0

    def add(self, out_dir: Path, name: str, size: int) -> int:
        """Segment ``name`` closed, ``size`` bytes: listed, then the oldest past ``keep_bytes`` deleted (``prune``);
        how many were."""
        self.append(name, size)
        return self.prune(out_dir)

    def append(self, name: str, size: int) -> None:
        """Segment ``name`` closed, ``size`` bytes: listed, nothing deleted yet (``prune``)."""
        self.names.append(name)
        self.sizes.append(size)

    def prune(self, out_dir: Path) -> int:
        """Delete the oldest segments past ``keep_bytes``; how many were. ``DataError`` when one cannot be: it stays
        listed (the disk would fill without a word), under the name it has (``remove_segment``)."""
        gone = 0
        while self.keep_bytes is not None and len(self.names) > 1 and sum(self.sizes) > self.keep_bytes:
            path = out_dir / self.names[0]
            try:
                remove_segment(path)
            except OSError as exc:
                if not os.path.lexists(path):  # renamed for deleting and not back: listed as it is named now
                    left = next(path.parent.glob(f".{path.name}.*.tmp"), None)
                    if left is not None:
                        self.names[0] = str(left.relative_to(out_dir))
                raise DataError(f"{path}: cannot delete the oldest {self.what} for {self.option} ({os_reason(exc)})") from exc
            del self.names[0], self.sizes[0]
            self.deleted += 1
            gone += 1
            log.info(f"{path}: deleted ({self.option}: the {self.what}s are kept to {self.keep_bytes / 2**30:g} GiB)")
        return gone


def remove_detect_temps(folder: Path) -> list[Path]:
    """Delete the hidden temporary files that a detect run killed during an atomic write left in ``folder``
    (``.summary.json.<random>.tmp``, ``.events.csv.<random>.old.tmp``: ``atomic.TEMP_SUFFIX``), the row segments and
    map shards a run killed while deleting them left in ``rows/`` and ``maps/`` (``remove_segment``) and the earlier
    run's folder a run killed while deleting it left (``_delete_whole``), and return them; those of detect's own files
    only (``DETECT_FILES``): another program's in a shared --out are not touched. Call with the
    folder locked (``run_folder.locked_output``): a running writer's are not stale."""
    from mnad.atomic import TEMP_SUFFIX

    names = "|".join(re.escape(name) for name in DETECT_FILES)
    temp = re.compile(rf"\.(?:{names})\.[^/]+{re.escape(TEMP_SUFFIX)}")
    stale = [p for p in folder.glob(f".*{TEMP_SUFFIX}") if temp.fullmatch(p.name) and p.is_file() and not p.is_symlink()]
    for path in stale:
        path.unlink(missing_ok=True)
    earlier = re.compile(rf"\.{re.escape(EARLIER_DIR)}\.[0-9a-f]+{re.escape(TEMP_SUFFIX)}")  # ``_delete_whole``'s
    for path in folder.glob(f".*{TEMP_SUFFIX}"):
        if earlier.fullmatch(path.name) and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            stale.append(path)
    # row segments and map shards a killed run was deleting for --rows-keep and --maps-keep (remove_segment)
    for parent, digits in ((folder / ROWS_DIR, FRAME_DIGITS), (folder / MAPS_DIR, SHARD_DIGITS)):
        if parent.is_dir() and not parent.is_symlink():
            doomed = _doomed_segment(digits)
            for path in parent.glob(f".*{TEMP_SUFFIX}"):
                if doomed.fullmatch(path.name) and path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                    stale.append(path)
    return stale


class DetectFolder:
    """Where a detect run writes, so that no run destroys an earlier one's outputs before it has its own.

    Into ``out_dir`` itself when it holds no earlier run. Otherwise into ``out_dir/.mnad-detect-new`` (``root``)
    until the run scores its first frame; then (``take_over``) the earlier run's files and folders move aside into
    ``out_dir/.mnad-detect-earlier`` and the new ones into ``out_dir``: rows are flushed where they belong from the
    first one on (open files keep writing through the rename), so a killed run leaves in ``out_dir`` its own rows, or
    (before its first frame) the earlier run, and deletes nothing of the earlier run. ``finish`` deletes what is no
    longer needed: the staging folder of a run that scored nothing (the earlier run stays), or the earlier run once the
    new one ended well, its outputs complete; when it failed (a source failed, it crashed, its outputs could not be
    completed) the earlier run stays in ``.mnad-detect-earlier`` and ``finish`` says so."""

    def __init__(self, out_dir: Path, earlier: list[Path]) -> None:
        self.out_dir, self.earlier = out_dir, earlier
        self.staging = out_dir / STAGING_DIR
        try:
            shutil.rmtree(self.staging, ignore_errors=True)  # a killed run's, from before its first frame: headers only
            if earlier:
                self.staging.mkdir(parents=True)
        except OSError as exc:
            raise DataError(f"{self.staging}: cannot write the outputs ({exc.strerror or exc})") from exc
        self.root = self.staging if earlier else out_dir

    def take_over(self) -> None:
        """The run scored its first frame: its outputs replace the earlier run's (moved aside, not yet deleted).
        Call with interrupts held.

        A kill at any point leaves the earlier run whole in ``out_dir`` and ``EARLIER_DIR`` together, and the next run
        able to go on: while the earlier run moves aside, ``EARLIER_DIR`` holds ``MOVING_MARK`` (a run finding it
        completes that move, never deletes what is aside: ``EARLIER_DIR`` without it is the run before, deleted
        first); the earlier run's summary.json moves last and the new one's first, so that a source's folder in
        ``out_dir`` is always named by the summary.json beside it (``detect_run_entries``)."""
        if self.root == self.out_dir:
            return
        aside = self.out_dir / EARLIER_DIR
        mark = aside / MOVING_MARK
        moved: list[tuple[Path, Path]] = []
        try:
            resumed = mark.is_file()  # a killed run's move aside: the earlier run is part here, part in out_dir
            if aside in self.earlier and not resumed:  # the run before the earlier one, kept when the earlier failed
                shutil.rmtree(aside)
            if not resumed:
                aside.mkdir()
                mark.touch()
            for path in _summary_last([p for p in self.earlier if p != aside]):
                moved.append((path, aside / path.name))
                path.rename(aside / path.name)
            mark.unlink()  # the earlier run is whole aside
            for path in reversed(_summary_last(sorted(self.staging.iterdir()))):
                moved.append((path, self.out_dir / path.name))
                path.rename(self.out_dir / path.name)
            self.staging.rmdir()
        except OSError as exc:
            self._undo(moved)
            raise DataError(f"{self.out_dir}: cannot replace the earlier run's outputs ({exc.strerror or exc})") from exc
        self.root = self.out_dir

    def _undo(self, moved: list[tuple[Path, Path]]) -> None:
        """A failed ``take_over``: what it moved goes back (the new run staged, the earlier one in place), as far as it
        can. ``EARLIER_DIR`` is marked while anything of the earlier run is in it, so a kill now, or a rename that
        fails, leaves a move aside that a later run completes."""
        aside = self.out_dir / EARLIER_DIR
        with contextlib.suppress(OSError):
            for source, target in reversed(moved):
                if target.parent == aside:
                    (aside / MOVING_MARK).touch()
                if os.path.lexists(target):
                    target.rename(source)
            if {p.name for p in aside.iterdir()} <= {MOVING_MARK}:  # nothing of the earlier run left aside
                (aside / MOVING_MARK).unlink(missing_ok=True)
                aside.rmdir()

    def finish(self, failed: bool) -> str | None:
        """After the run's outputs are completed (or it failed to complete them): what to tell the user about the
        earlier run, if anything. ``failed``: the run did not end well (a source failed or scored nothing, the run
        crashed, or its outputs could not be completed); only a run that ended well deletes the earlier one."""
        if self.root == self.staging:
            shutil.rmtree(self.staging, ignore_errors=True)
            return f"the earlier run's outputs in {self.out_dir} are unchanged" if self.earlier else None
        if not self.earlier:
            return None
        if failed:
            return (f"the earlier run's outputs were moved to {self.out_dir / EARLIER_DIR} and kept there (a later "
                    "--overwrite run replaces them; a --resume of this run deletes them once it ends well)")
        _delete_whole(self.out_dir / EARLIER_DIR)
        return None


def _delete_whole(folder: Path) -> None:
    """Delete ``folder`` so that a kill midway leaves no part of it under its name (``doomed_name``), as far as it
    can: what cannot be deleted stays."""
    doomed = doomed_name(folder)
    try:
        folder.rename(doomed)
    except OSError:
        doomed = folder  # deleted where it is, as before
    shutil.rmtree(doomed, ignore_errors=True)


def _summary_last(paths: list[Path]) -> list[Path]:
    """``paths`` with a summary.json last (it names a run's source folders: it leaves a folder after them and comes
    into one before them, ``DetectFolder.take_over``)."""
    return sorted(paths, key=lambda p: p.name == SUMMARY_FILE)

