"""What ``mnad detect`` writes into its folder as frames are scored (``DetectWriter``: scores.csv, events.jsonl and
events.csv in row segments, the error maps in shards, summary.json at the end) and reads back
(``read_detect_scores``)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mnad.errors import DataError, os_reason
from mnad.outputs.columns import DETECT_SCORES_HEADER, frame_columns, smoothed_text
from mnad.outputs.detect_folder import OldestFirst, is_detect_scores
from mnad.outputs.names import (
    EVENTS_CSV,
    EVENTS_JSONL,
    MAP_SHARD,
    MAPS_DIR,
    ROW_FILES,
    ROW_SEGMENT,
    ROWS_DIR,
    SCORES_FILE,
    SUMMARY_FILE,
    map_name,
    row_segment_name,
)

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # for the annotations only: stream imports torch, which the report's readers of these files never need
    from mnad.events import Event
    from mnad.stream import FrameResult

ROWS_SEGMENT_SECONDS = 86400.0  # footage seconds of rows per segment: a day (~216 MB of scores.csv at 25 frames/s)
ROWS_TIME_SLACK = 1e-6  # seconds: a row this close to a segment's end begins the next (times are written to the ms; 9/25 -
# 4/25 is 0.19999999999999998 in floats)


class DetectWriter:
    """The outputs of ``mnad detect``, written as frames are scored: the row files (scores.csv, events.jsonl,
    events.csv) row by row (flushed, so a killed run keeps what it scored; no event is held in memory, so a run of weeks
    does not grow), summary.json when the run ends (atomically), into a folder that holds no earlier run's
    (``DetectFolder``); ``out_dir`` follows the folder when it is moved.

    The row files are written in segments of ``rows_segment`` seconds of footage (by the rows' times), so that no file
    grows without bound on a camera left for months. A run within one segment writes them into ``out_dir``; when a
    second segment begins (at the first row ``rows_segment`` seconds or more after its segment's first), the first
    segment's files move into ``rows/<its first frame>/`` (``row_segment_name``) and each later segment is written into
    a folder of its own there, each csv file with its header. An event is written into the segment open when it ends
    (the one that holds its last frame's row, or a later one after frames without a score). ``kept`` (``OldestFirst``,
    ``rows_keep`` bytes) lists the closed segments kept, relative to ``out_dir`` ('.': ``out_dir`` itself).

    The error maps (``maps``) go into shard folders of ``MAP_SHARD_FRAMES`` frames (``map_name``); a shard closes when
    the first map of a later one comes, or at the end (``close_maps``), and ``maps_kept`` (``OldestFirst``,
    ``maps_keep`` bytes) lists the closed shards kept (``maps/<8 digits>``), by the row segments' rule."""

    def __init__(self, out_dir: Path, *, maps: str | None = None, rows_segment: float = ROWS_SEGMENT_SECONDS,
                 rows_keep: int | None = None, maps_keep: int | None = None, resume: tuple[int, int] | None = None) -> None:
        """``resume``: (row segments, map shards) the earlier run had deleted: the folder holds an earlier run's
        outputs, which this writer continues (``_adopt``) rather than starting afresh."""
        self.out_dir, self.maps, self.rows_segment = Path(out_dir), maps, rows_segment
        self._shard = ""  # the maps/ folder being written into (``map_name``), made when its first map comes; '': none
        # the maps written since the last ``sync`` (and the shard folders they went into): written, not yet durable; a
        # state saved after ``sync`` counts their frames, whose maps a resumed run does not write again
        self._unsynced_maps: list[Path] = []
        self.kept = OldestFirst(rows_keep, "--rows-keep", "row segment")
        self.maps_kept = OldestFirst(maps_keep, "--maps-keep", "map shard")
        self.segment: str | None = None  # the open row segment, relative to out_dir ('.': out_dir); None: none open
        self.first: int | None = None  # the frame of the open segment's first row; None before it
        self.started = 0.0  # that row's time
        self.changes = 0  # row segments opened, closed or deleted after the first: the summary names them anew
        # what went wrong with the last closed segment (not durable, the oldest not deleted), found once the next was
        # open and its first row written: raised by the next ``score`` or ``close_rows``
        self._failure: DataError | None = None
        # a closed segment that could not be made durable: its rows may not be on the disk, so no state may be saved
        # past them (``sync`` raises it from then on, whatever segment is open)
        self.not_durable: DataError | None = None
        self._handles: tuple[Any, ...] = ()
        # a resumed run's writer that has written nothing of its own yet (no row, no event): no segment of its own is
        # open; its first row or event opens one (``_begin``)
        self.resuming = resume is not None
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if maps:
                (self.out_dir / MAPS_DIR).mkdir(exist_ok=resume is not None)
        except OSError as exc:
            raise DataError(f"{self.out_dir}: cannot write the outputs ({exc.strerror or exc})") from exc
        if resume is not None:
            self._adopt(*resume)
        else:
            self._open(".")

    def _adopt(self, rows_deleted: int, maps_deleted: int) -> None:
        """Continue the earlier run in ``out_dir`` (``mnad detect --resume``): its row segments (``row_segments_in``:
        its own row files and rows/, the one a killed run was writing among them) and its map shards are listed as
        closed and kept (its last shard stays open: the next maps may belong to it); nothing of it is rewritten. The
        resumed run's rows go into segments of their own, from its first row (``_begin``)."""
        self.kept.deleted, self.maps_kept.deleted = rows_deleted, maps_deleted
        for segment in row_segments_in(self.out_dir):
            self.kept.append(segment, _segment_size(self.out_dir / segment))
        shards = sorted(p.name for p in (self.out_dir / MAPS_DIR).iterdir()
                        if MAP_SHARD.fullmatch(p.name) and p.is_dir()) if (self.out_dir / MAPS_DIR).is_dir() else []
        for shard in shards[:-1]:
            self._shard = shard
            self._close_shard()
        self._shard = shards[-1] if shards and self.maps else ""
        if shards and not self.maps:  # no maps this time: the last one is closed as it is
            self._shard = shards[-1]
            self._close_shard()

    def _begin(self, first: int) -> None:
        """The resumed run's first row, frame ``first``: an earlier run's own row files ('.') move into
        ``rows/<their first frame>`` (header-only ones, a run that scored nothing there, are deleted), then a segment of
        this run's opens at ``rows/<first>``."""
        self.resuming = False
        if "." in self.kept.names:
            head = first_row_frame(self.out_dir / SCORES_FILE)
            try:
                if head is None:
                    for name in reversed(ROW_FILES):  # scores.csv last: a kill leaves it listed, deleted again next time
                        (self.out_dir / name).unlink(missing_ok=True)
                else:
                    target = row_segment_name(head)
                    (self.out_dir / ROWS_DIR).mkdir(exist_ok=True)
                    (self.out_dir / target).mkdir(exist_ok=True)  # a killed move left part of it there
                    for name in reversed(ROW_FILES):  # scores.csv last, as ``_close_segment`` moves them
                        if (self.out_dir / name).exists():
                            (self.out_dir / name).rename(self.out_dir / target / name)
            except OSError as exc:
                raise DataError(f"{self.out_dir / ROWS_DIR}: cannot move the earlier run's rows into their segment "
                                f"({os_reason(exc)})") from exc
            where = self.kept.names.index(".")
            if head is None or target in self.kept.names:  # no rows, or the rest of a move a kill cut short
                del self.kept.names[where], self.kept.sizes[where]
            else:
                self.kept.names[where] = target
            self.changes += 1
        try:
            (self.out_dir / ROWS_DIR).mkdir(exist_ok=True)
        except OSError as exc:
            raise DataError(f"{self.out_dir / ROWS_DIR}: cannot write the row segments ({os_reason(exc)})") from exc
        self._open(row_segment_name(first))
        self.changes += 1

    @property
    def open_segment(self) -> str | None:
        """The row segment being written, relative to ``out_dir`` ('.': ``out_dir`` itself), or None."""
        return self.segment

    def _open(self, segment: str) -> None:
        """Open the row files of ``segment`` (relative to ``out_dir``; a folder of its own unless '.') with their headers."""
        folder = self.out_dir / segment
        try:
            if segment != ".":
                folder.mkdir()  # not exist_ok: a folder already there is no segment of this run's, never mixed with it
            self._handles = tuple((folder / name).open("w", newline="", encoding="utf-8") for name in ROW_FILES)
        except OSError as exc:
            self._release()
            raise DataError(f"{folder}: cannot write the outputs ({exc.strerror or exc})") from exc
        self.segment = segment
        self._scores, self._events, self._events_csv = self._handles
        self._csv = csv.writer(self._scores)
        self._write(self._csv.writerow, DETECT_SCORES_HEADER)
        from mnad.events import Event

        self._event_table = csv.DictWriter(self._events_csv, fieldnames=[f.name for f in fields(Event)])
        self._write(self._event_table.writeheader)  # the header even without events
        self._write(self._events_csv.flush)

    def _release(self) -> None:
        for handle in self._handles:
            with contextlib.suppress(OSError):
                handle.close()
        self._handles = ()

    def _close_segment(self, *, move: bool) -> DataError | None:
        """Close the open row segment (its files made durable: a power cut after it keeps it whole) and list it in
        ``kept`` (nothing deleted yet: ``_prune``); ``move``: a next one begins, so '.' moves into rows/ first. Returns
        the failure to make it durable (its rows may not be on the disk: the source fails), once it is listed.

        A kill at any point leaves every row of it: each file is renamed whole, and scores.csv last, so that while the
        first segment moves its rows are still in out_dir (``read_detect_scores`` reads out_dir's scores.csv before
        rows/) and no later segment exists yet."""
        segment, self.segment = self.segment, None
        if segment is None:
            return None
        lost: OSError | None = None
        for handle in self._handles:
            try:  # every row was flushed as written; this makes them durable
                handle.flush()
                os.fsync(handle.fileno())
            except OSError as exc:
                lost = lost or exc
        self._release()
        if move and segment == ".":
            assert self.first is not None
            segment = row_segment_name(self.first)
            try:
                (self.out_dir / ROWS_DIR).mkdir()  # not exist_ok: a rows/ already there is not this run's
                (self.out_dir / segment).mkdir()
                for name in reversed(ROW_FILES):
                    (self.out_dir / name).rename(self.out_dir / segment / name)
            except OSError as exc:  # its rows may be half moved: no state may count them (``sync``)
                self.not_durable = DataError(f"{self.out_dir / ROWS_DIR}: cannot write the row segments "
                                             f"({exc.strerror or exc}; an earlier run's? move it)")
                raise self.not_durable from exc
            from mnad.atomic import fsync_dir

            for moved in (self.out_dir / segment, self.out_dir / ROWS_DIR, self.out_dir):  # the renames made durable
                fsync_dir(moved)
        folder = self.out_dir / segment
        try:
            size = sum((folder / name).stat().st_size for name in ROW_FILES)
        except OSError as exc:  # no state may count its rows (``sync``)
            self.not_durable = DataError(f"{folder}: a row segment is gone once written ({os_reason(exc)})")
            raise self.not_durable from exc
        self.changes += 1
        self.kept.append(segment, size)
        if lost is not None:
            self.not_durable = DataError(f"{folder}: cannot make the row segment durable ({os_reason(lost)}): its rows "
                                         "may not be on the disk")
            return self.not_durable
        return None

    def _prune(self) -> DataError | None:
        """The oldest closed row segments past --rows-keep deleted (``OldestFirst.prune``); the failure, if any."""
        deleted = self.kept.deleted
        try:
            self.kept.prune(self.out_dir)
        except DataError as exc:
            return exc
        finally:
            self.changes += self.kept.deleted - deleted
        return None

    def close_rows(self) -> None:
        """Close the open row segment, listed as kept (the oldest past --rows-keep deleted); no more rows or events.
        ``DataError`` when a closed segment could not be made durable or the oldest deleted (each listed)."""
        closed = pruned = None
        if self.segment is not None:  # closed once (``close`` calls it again): a failure is said once
            rows = self.first is not None  # a resumed file's segment holding only the event open at its end has none:
            closed = self._close_segment(move=False)
            pruned = self._prune() if rows else None  # it prunes nothing (the newest kept would be no row at all)
        failure, self._failure = self._failure or closed or pruned, None
        if failure is not None:
            raise failure

    def sync(self) -> None:
        """Make the rows, events and error maps written so far durable (the open segment's files, the maps written
        since the last call, and their folders' entries fsynced): ``mnad detect`` calls it before it saves a source's
        state, about once a minute, so that a power cut never leaves a state ahead of the outputs on the disk (a resumed
        file does not write again the rows, events or maps of the frames its state counts). ``DataError`` when they
        cannot be, or when a closed segment could not be (``not_durable``: the rows a state would count may not be on
        the disk)."""
        if self.not_durable is not None:
            raise self.not_durable
        self._sync_maps()
        if self.segment is None:
            return
        folder = self.out_dir / self.segment
        try:
            for handle in self._handles:
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise DataError(f"{folder}: cannot make the rows durable ({os_reason(exc)}): they may not be on the disk") from exc
        from mnad.atomic import fsync_dir

        fsync_dir(folder)
        if self.segment != ".":  # a segment's folder in rows/, itself new
            fsync_dir(folder.parent)
            fsync_dir(self.out_dir)

    def _sync_maps(self) -> None:
        """The maps written since the last ``sync`` made durable, then their shard folders' entries (maps/ itself, in
        ``out_dir``, is ``sync``'s). One deleted since (--maps-keep) needs nothing."""
        from mnad.atomic import fsync_dir, fsync_file

        try:
            for path in self._unsynced_maps:
                fsync_file(path)
        except OSError as exc:
            raise DataError(f"{path.parent}: cannot make the error maps durable ({os_reason(exc)}): they may not be on "
                            "the disk") from exc
        shards = dict.fromkeys(path.parent for path in self._unsynced_maps)
        for shard in shards:
            fsync_dir(shard)
        if shards:
            fsync_dir(self.out_dir / MAPS_DIR)  # a shard folder made since
        self._unsynced_maps = []

    def _check_open(self) -> None:
        if self.segment is None:  # closed, or its close or the next one's opening failed (said then)
            raise DataError(f"{self.out_dir}: no row segment is open to write into")

    def _write(self, call: Callable[..., Any], *args: Any) -> None:
        try:
            call(*args)
        except OSError as exc:
            reason = os_reason(exc)
            raise DataError(f"{self.out_dir}: cannot write the outputs ({reason})") from exc

    def score(self, row: FrameResult, seconds: float, alert: bool) -> None:
        """Frame ``row.index``'s row, at ``seconds``: into a new segment when the open one's time is up. The closed one
        is pruned (--rows-keep) once the new one holds this row, so a failure there loses no row; it is raised by the
        next call (or ``close_rows``): this row is written and counted."""
        if self.resuming:
            self._begin(row.index)
        self._check_open()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        closed: DataError | None = None
        rotated = False
        if self.first is None:
            self.first, self.started = row.index, seconds
        elif seconds - self.started >= self.rows_segment - ROWS_TIME_SLACK:
            closed = self._close_segment(move=True)
            self._open(row_segment_name(row.index))
            self.first, self.started = row.index, seconds
            self.changes += 1
            rotated = True
        terms = frame_columns(psnr=row.psnr, patch_psnr=row.patch_psnr, distance=row.distance, patch_distance=row.patch_distance,
                              regular=row.regular, updated=row.updated, score=row.score)
        self._write(self._csv.writerow, [row.index, f"{seconds:.3f}", *terms, smoothed_text(row.smoothed), int(alert)])
        self._write(self._scores.flush)
        if rotated:
            self._failure = closed or self._prune()

    def event(self, event: Event, clock_start: float | None = None, *, frame: int | None = None) -> None:
        """One line of events.jsonl; with ``clock_start`` (a camera's: its times are seconds after it) also when the event
        began, was confirmed (its alert) and ended by the wall clock (``wall_clock``), so that a line read during a run of
        days says when. ``frame``: the frame whose row comes next (the one that ended it), where a resumed run's first
        segment opens should the event come before its first row (``_begin``)."""
        if self.resuming and frame is not None:
            self._begin(frame)
        self._check_open()
        record = asdict(event)
        if clock_start is not None:
            record |= {"start_clock": wall_clock(clock_start + event.start_time), "end_clock": wall_clock(clock_start + event.end_time)}
            if event.alert_time is not None:  # when its alert was raised (it was confirmed)
                record["alert_clock"] = wall_clock(clock_start + event.alert_time)
        self._write(self._events.write, json.dumps(record) + "\n")
        self._write(self._events.flush)
        self._write(self._event_table.writerow, asdict(event))
        self._write(self._events_csv.flush)

    def error_map(self, index: int, error: np.ndarray) -> None:
        """Frame ``index``'s error map, at ``map_name``. The first map of a new shard closes the one before
        (``maps_kept``); the oldest closed shards past --maps-keep are deleted once this map is written, so that the
        run is never left without maps: ``DataError`` when one cannot be (it stays listed; this map is written)."""
        import cv2

        if self.maps not in ("npy", "png"):
            return
        path = self.out_dir / map_name(index, self.maps)
        closed = path.parent.name != self._shard and self._shard != ""
        if path.parent.name != self._shard:  # frames come in order: each shard's folder is made once
            if closed:
                self._close_shard()
            self._write(lambda: path.parent.mkdir(exist_ok=True))
            self._shard = path.parent.name
        if self.maps == "npy":
            self._write(np.save, path, error.astype(np.float32))
        else:
            picture = (np.clip(error / max(float(error.max()), 1e-6), 0, 1) * 255).astype(np.uint8)
            if not cv2.imwrite(str(path), picture):
                raise DataError(f"{path.parent}: cannot write the error maps")
        self._unsynced_maps.append(path)
        if closed:
            self.maps_kept.prune(self.out_dir)

    def _close_shard(self) -> None:
        """The shard being written is closed: listed in ``maps_kept`` with its size (its files'), nothing deleted yet."""
        shard, self._shard = f"{MAPS_DIR}/{self._shard}", ""
        try:
            with os.scandir(self.out_dir / shard) as entries:
                size = sum(entry.stat(follow_symlinks=False).st_size for entry in entries)
        except OSError as exc:
            raise DataError(f"{self.out_dir / shard}: a map shard is gone once written ({os_reason(exc)})") from exc
        self.maps_kept.append(shard, size)

    def close_maps(self) -> None:
        """Close the map shard being written, listed as kept (the oldest past --maps-keep deleted); no more maps.
        ``DataError`` when the oldest could not be deleted (it stays listed). Once: a second call does nothing."""
        if self._shard:
            self._close_shard()
            self.maps_kept.prune(self.out_dir)

    def close(self, summary: dict) -> None:
        """Close the row files and the map shard (``close_rows``, ``close_maps``, if not yet) and write summary.json
        (atomically)."""
        try:
            try:
                self.close_rows()
            finally:
                self.close_maps()
        finally:
            self._release()
        write_detect_summary(self.out_dir, summary)


def row_segments_in(out_dir: Path) -> list[str]:
    """The row segments a detect run left in ``out_dir`` (relative to it, in time order): its own row files ('.'),
    then ``rows/<first frame>`` each, as ``read_detect_scores`` reads them."""
    names = ["."] if (out_dir / SCORES_FILE).is_file() else []
    if (out_dir / ROWS_DIR).is_dir():
        names += [f"{ROWS_DIR}/{p.name}" for p in sorted((out_dir / ROWS_DIR).iterdir()) if ROW_SEGMENT.fullmatch(p.name) and p.is_dir()]
    return names


def mend_row_segments(out_dir: Path) -> None:
    """Make whole what a kill left of the row segments of a detect run in ``out_dir`` (``mnad detect --resume``, before
    any of them is read): ``out_dir``'s own row files moving into ``rows/<their first row's frame>`` (at the second
    segment's first row, ``DetectWriter._close_segment``, or a resumed run's first, ``_begin``), that folder made and
    some of them renamed into it, scores.csv last, finish their move (was: the resume failed on that folder's missing
    scores.csv); and the latest segment in rows/ cut while it opened (its folder made, its files all or some, no row
    or event in them yet) is removed, so that the resumed run opens it again (was: refused, a folder already there).
    Nothing that holds a row or an event is removed; the renames and removals are made durable."""
    from mnad.atomic import fsync_dir

    rows = out_dir / ROWS_DIR
    try:
        head = first_row_frame(out_dir / SCORES_FILE) if (out_dir / SCORES_FILE).is_file() else None
        target = out_dir / row_segment_name(head) if head is not None else None
        if target is not None and target.is_dir():
            moved = [name for name in reversed(ROW_FILES) if (out_dir / name).exists() and not (target / name).exists()]
            for name in moved:  # in the order the move renames them
                (out_dir / name).rename(target / name)
            log.warning(f"{target}: the earlier run was killed while its rows moved here; moved ({', '.join(moved)})")
            for folder in (target, rows, out_dir):
                fsync_dir(folder)
        segments = sorted(p for p in rows.iterdir() if ROW_SEGMENT.fullmatch(p.name) and p.is_dir()) if rows.is_dir() else []
        if segments and _holds_nothing(last := segments[-1]):
            for name in ROW_FILES:
                (last / name).unlink(missing_ok=True)
            last.rmdir()
            log.warning(f"{last}: a row segment the earlier run was killed while it opened, with no row or event: removed")
            for folder in (rows, out_dir):
                fsync_dir(folder)
    except OSError as exc:
        raise DataError(f"{rows}: cannot mend the row segments a kill left ({os_reason(exc)})") from exc


def _holds_nothing(folder: Path) -> bool:
    """A row segment's folder with no row (nothing past scores.csv's header line, or no scores.csv) and no event
    (events.jsonl empty or missing), and no other file: what a kill while it opened leaves."""
    if any(p.name not in ROW_FILES for p in folder.iterdir()):
        return False
    events = folder / EVENTS_JSONL
    if events.exists() and events.stat().st_size:
        return False
    if not (folder / SCORES_FILE).exists():
        return True
    with (folder / SCORES_FILE).open("rb") as handle:
        handle.readline()  # the header, or what a kill left of it
        return not handle.read(1)


def _segment_size(folder: Path) -> int:
    return sum((folder / name).stat().st_size for name in ROW_FILES if (folder / name).is_file())


_TAIL_BYTES = 1 << 20  # what ``last_row_frame`` reads of a row file's end: thousands of rows


def _frame_of(line: str) -> int | None:
    """The frame number of one row line of a detect scores.csv (its first field), or None (the header, or not a row)."""
    head = line.split(",", 1)[0]
    return int(head) if head.isdecimal() else None


def first_row_frame(path: Path) -> int | None:
    """The frame of the first whole row of the detect scores.csv at ``path``; None when it has none."""
    try:
        with path.open("rb") as handle:
            handle.readline()  # the header
            line = handle.readline()
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({os_reason(exc)})") from exc
    return _frame_of(line.decode("utf-8", "replace")) if line.endswith(b"\n") else None


def last_row_frame(out_dir: Path) -> int | None:
    """The frame of the last whole row a detect run left in ``out_dir`` (``row_segments_in``, the latest segment that
    holds one; a last line cut by a kill is no row, as ``read_detect_scores`` reads it); None when it left none. Only
    the files' ends are read (``_TAIL_BYTES``): a day's segment is hundreds of MB."""
    for segment in reversed(row_segments_in(out_dir)):
        path = out_dir / segment / SCORES_FILE
        try:
            with path.open("rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                handle.seek(max(size - _TAIL_BYTES, 0))
                text = handle.read().decode("utf-8", "replace")
        except OSError as exc:
            raise DataError(f"{path}: cannot read it ({os_reason(exc)})") from exc
        lines = text.split("\n")[:-1]  # the part after the last line break is cut (or empty)
        for line in reversed(lines):
            if (frame := _frame_of(line)) is not None:
                return frame
    return None


def rows_after(out_dir: Path, frame: int) -> list[dict[str, str]]:
    """The whole rows a detect run left in ``out_dir`` after frame ``frame`` (``mnad detect --resume``: those written
    after the saved state, which counted the rows up to ``frame``), in frame order, each as ``read_detect_scores``
    gives it. Only the end of each segment that holds them is read (from ``_TAIL_BYTES`` on, more as needed), the
    latest segments first, down to the first row at or before ``frame``; a last line cut by a kill is no row."""
    found: list[dict[str, str]] = []
    for segment in reversed(row_segments_in(out_dir)):
        path = out_dir / segment / SCORES_FILE
        tail = _TAIL_BYTES
        try:
            with path.open("rb") as handle:
                header = handle.readline().decode("utf-8", "replace").rstrip("\r\n")
                start, size = handle.tell(), handle.seek(0, os.SEEK_END)
                while True:
                    at = max(size - tail, start)
                    handle.seek(at)
                    lines = [line.rstrip("\r") for line in handle.read().decode("utf-8", "replace").split("\n")[:-1]]
                    if at > start:  # the first line may be cut by where the read began
                        lines = lines[1:]
                    frames = [_frame_of(line) for line in lines]
                    reached = any(f is not None and f <= frame for f in frames)
                    if reached or at == start:
                        break
                    tail *= 4
        except OSError as exc:
            raise DataError(f"{path}: cannot read it ({os_reason(exc)})") from exc
        found[:0] = csv.DictReader([header, *(line for line, f in zip(lines, frames, strict=True) if f is not None and f > frame)])
        if reached:
            break
    return found


def events_after(out_dir: Path, after: tuple[int, int, bool] | None, frame: int, *, mend: bool = False) -> list[dict]:
    """The events a detect run left in ``out_dir`` (the whole lines of its events.jsonl files) written after the
    event line ``after`` (``mnad detect --resume``: the last line the saved state counted, as (start frame, end frame,
    marked ``open``); None: none), in the order written: the lines after that very line, in file order. Where that
    line is not found (its segment deleted by --rows-keep), those that came after it (``_after``).
    Events go into the row segment open when they end, so only the latest segments are read: down to the one holding
    the row of frame ``frame`` (the last row the state counts: the segment open when it was saved), and on to earlier
    ones until that line is found. A last line cut by a kill is no event; a line that is not an event's JSON is left
    out with a warning. ``mend`` (a resumed run's): the events.csv of each segment read is made whole first
    (``mend_events_csv``); a kill can leave rows out only in the latest, and the closed ones were made durable whole."""
    found: list[dict] = []  # the lines of the segments read, in file order
    fallback: list[dict] | None = None
    for segment in reversed(row_segments_in(out_dir)):
        path = out_dir / segment / EVENTS_JSONL
        if mend:
            mend_events_csv(out_dir / segment)
        try:
            text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        except OSError as exc:
            raise DataError(f"{path}: cannot read it ({os_reason(exc)})") from exc
        events = []
        for number, text_line in enumerate(text.split("\n")[:-1], 1):  # the part after the last line break is cut (or empty)
            try:
                record = json.loads(text_line)
                frames = (record["start_frame"], record["end_frame"])
            except (ValueError, TypeError, KeyError):
                frames = (None,)
            if not all(isinstance(f, int) and not isinstance(f, bool) for f in frames):  # what event_line keys it by
                log.warning(f"{path}: line {number} is not an event; left out")
                continue
            events.append(record)
        found[:0] = events
        if after is not None and (at := [i for i, e in enumerate(events) if event_line(e) == after]):
            return found[at[-1] + 1:]  # the lines after it, in this segment and the later ones
        if segment == "." or int(Path(segment).name) <= frame:
            if after is None:
                return found
            if fallback is None:  # that line may be in an earlier segment: read on, this the answer should it be gone
                fallback = [e for e in found if _after(e, after)]
    if fallback is not None:
        return fallback
    return found if after is None else [e for e in found if _after(e, after)]


def mend_events_csv(folder: Path) -> int:
    """Make the events.csv of the row segment ``folder`` hold a row for each whole line of its events.jsonl, in order
    (``DetectWriter.event`` writes an event's line, then its row: a kill in between, or one that cut the row, left it
    without that row, and a resumed run writes no line events.jsonl holds). events.jsonl is the record: its lines, as
    the writer writes them to events.csv (the columns of its header), must begin with events.csv's whole lines; a cut
    last row is truncated and the missing rows appended. The number of rows written; 0 when it holds them all, when
    either file is not there (a segment a kill cut in the middle of its move into rows/: never made up from nothing)
    or when events.csv is not a beginning of them (another file: left as it is, with a warning)."""
    table, record = folder / EVENTS_CSV, folder / EVENTS_JSONL
    if not (table.is_file() and record.is_file()):
        return 0
    try:
        held = table.read_bytes()
        lines = record.read_text(encoding="utf-8", errors="replace").split("\n")[:-1]  # after the last line break: cut
    except OSError as exc:
        raise DataError(f"{table}: cannot read it ({os_reason(exc)})") from exc
    whole = held[: held.rfind(b"\n") + 1]  # b"" where the header itself is cut
    header = next(csv.reader(io.StringIO(whole.decode("utf-8", "replace"), newline="")), None)
    if header is None:
        from mnad.events import Event

        header = [f.name for f in fields(Event)]
    text = io.StringIO(newline="")
    writer = csv.writer(text)  # the writer's dialect: its csv.DictWriter's
    writer.writerow(header)
    try:
        for line in lines:
            writer.writerow([json.loads(line).get(name) for name in header])
        want = text.getvalue().encode("utf-8")
    except (ValueError, AttributeError):  # not an event's line: events.jsonl is no record to write events.csv from
        want = b""
    if not want.startswith(whole) or not want:
        log.warning(f"{table}: its rows are not those of {EVENTS_JSONL} beside it; left as it is")
        return 0
    if held == want:
        return 0
    missing = len(lines) - max(whole.count(b"\n") - 1, 0)  # the rows past the header
    # In place, not rewritten whole: only the cut last row (no row) is truncated, then the missing rows appended, so
    # that a second kill in the middle leaves whole rows and at most a cut last one, which the next resume mends
    # again; the rows already there are never rewritten (a temporary file renamed over it would copy a day's rows).
    try:
        with table.open("r+b") as handle:
            handle.truncate(len(whole))
            handle.seek(len(whole))
            handle.write(want[len(whole):])
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise DataError(f"{table}: cannot write the event rows a kill left out ({os_reason(exc)})") from exc
    log.warning(f"{table}: made whole from {EVENTS_JSONL} ({missing} event row(s) a kill left out written again)")
    return missing


def _after(record: dict, line: tuple[int, int, bool]) -> bool:
    """Whether the event line ``record`` came after the line ``line`` (start, end, marked ``open``) where that line is
    gone: it began later, or ``line`` was its event marked open at a run's end and ``record`` is a later line of the
    same event (its end, or the event open further on)."""
    start, end, marked = line
    return record["start_frame"] > start or (marked and record["start_frame"] == start and (
        record["end_frame"] > end or record.get("open") is not True))


def event_line(record: dict) -> tuple[int, int, bool]:
    """An events.jsonl line as (start frame, end frame, marked ``open``): what ``events_after`` and a resumed
    ``mnad detect`` know it by."""
    return (record.get("start_frame"), record.get("end_frame"), record.get("open") is True)


def wall_clock(seconds: float) -> str:
    """A wall-clock time (``time.time()``) as the outputs write it: ISO 8601 in UTC, to the millisecond."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def write_detect_summary(out_dir: Path, summary: dict) -> None:
    """A summary.json, atomically: a source's (``DetectWriter``), or that of a run over several sources, beside their
    folders (each holds a source's files)."""
    from mnad.atomic import atomic_write

    atomic_write(Path(out_dir) / SUMMARY_FILE, json.dumps(summary, indent=2).encode())


def read_detect_scores(path: str | Path) -> list[dict[str, str]]:
    """The rows of a detect run's scores.csv; given a source's output folder, those of every row segment it kept
    (``DetectWriter``: its scores.csv, or rows/<first frame>/scores.csv each), in frame order. The folder's own
    scores.csv comes first: a run killed while its first segment moved into rows/ left it there, before any later one.
    Only a detect run's scores.csv is read (``is_detect_scores``): another (an evaluation's) is a DataError naming it,
    and so is a path that is not there. Every row must have the header's number of fields (``_read_rows``)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found (a detect run's {SCORES_FILE} or output folder)")
    if not path.is_dir():
        files = [path]
    else:
        files = [path / SCORES_FILE] if (path / SCORES_FILE).is_file() else []
        if (path / ROWS_DIR).is_dir():
            files += [p / SCORES_FILE for p in sorted((path / ROWS_DIR).iterdir())
                      if ROW_SEGMENT.fullmatch(p.name) and (p / SCORES_FILE).is_file()]
        if not files:
            raise DataError(f"{path}: no {SCORES_FILE} here or in {ROWS_DIR}/ (not a detect run's folder?)")
    if other := [str(file) for file in files if not is_detect_scores(file)]:
        raise DataError(f"{', '.join(other)}: not a detect run's {SCORES_FILE} (its header is not detect's: "
                        f"{','.join(DETECT_SCORES_HEADER[:2])},...)")
    return [row for file in files for row in _read_rows(file)]


def _read_rows(path: Path) -> list[dict[str, str]]:
    """A detect scores.csv's rows as dicts by its header. Rows are written and flushed one by one (a line break ends
    each), not atomically: a last line not ended by a line break is the row a run killed (or stopped by a full disk)
    while writing it left cut, whatever its number of fields (a cut just after a comma has them all, the last one
    empty), and is left out with a warning; a run's rows up to it are whole. Any other row with another number of
    fields than the header is a DataError naming the file and its line (was: read silently, a cut row giving a wrong
    number and Nones). Empty lines are skipped, as csv.DictReader skips them."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            text = handle.read()
        cut = bool(text) and not text.endswith("\n")
        if cut:
            whole = text[: text.rfind("\n") + 1]  # "" where the header itself is cut
            log.warning(f"{path}: its last line (line {whole.count(chr(10)) + 1}) is cut short, as a run stopped while "
                        "writing it leaves it: that row is left out")
            text = whole
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, [])
        rows: list[dict[str, str]] = []
        for fields in reader:
            if not fields:
                continue
            if len(fields) != len(header):
                raise DataError(f"{path}: not a whole detect {SCORES_FILE} (line {reader.line_num} has {len(fields)} "
                                f"fields, its header {len(header)})")
            rows.append(dict(zip(header, fields, strict=True)))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read it ({exc})") from exc
    return rows
