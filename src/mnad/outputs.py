"""The files an evaluation and a training run leave behind, each format written and read here.

- ``scores.csv``: one row per scored frame (``scores_csv_bytes``, ``read_scores``).
- ``metrics.json``: the AUCs and scoring settings, with the config that made them (``metrics_json_bytes``,
  ``read_metrics``).
- ``train_log.jsonl``: one JSON record per training epoch (``read_train_log``).
- the report's optional JSON files (provenance.json, thumbs/thumbs.json, figures/figures.json): read by
  ``read_json_if_present`` with the check ``mnad.report.inputs`` gives for each.
- ``mnad detect``'s folder: ``scores.csv`` (per frame, with time, smoothed score and alert), ``events.jsonl`` and
  ``events.csv`` (a longer run: in ``rows/<first frame>/`` each, ``row_segment_name``), ``summary.json``, ``maps/``
  (``DetectWriter``, ``map_name``, ``read_detect_scores``), the annotated
  video (``ANNOTATED_VIDEO``, ``segment_name``; written by ``detect.SegmentedVideo``); with several sources, one
  such folder per source and a ``summary.json`` of the whole run beside them, which names those folders from the
  run's start (``write_detect_summary``; ``detect_run_entries`` reads it back).

The report (``mnad.report``) and ``scripts/`` read these files through this module, so a change of format is made
in one place.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mnad.errors import ConfigError, DataError, MNADError, os_reason

log = logging.getLogger(__name__)

SCORES_FILE = "scores.csv"
METRICS_FILE = "metrics.json"
TRAIN_LOG = "train_log.jsonl"
FIGURES_DIR = "figures"  # `mnad figures --out <report>/figures` puts the memory figures on the report page
FIGURES_INDEX = "figures.json"

SCORES_HEADER = ["video", "frame", "psnr", "distance", "regular_score", "memory_updated", "score", "label", "patch_psnr", "patch_distance"]


def output_path(path: str | Path, option: str) -> Path:
    """``path`` where a command writes (``option``: its name for messages, e.g. '--out'); an empty one is refused,
    since Path('') is the current folder, which nobody means."""
    if not isinstance(path, str | os.PathLike):
        raise ConfigError(f"{option} must be a path, got {type(path).__name__}")
    if str(path) == "":
        raise ConfigError(f"{option} is empty: name a folder or file")
    return Path(path)


def writable_ancestor(path: Path) -> str | None:
    """Why nothing could be written at ``path`` (missing folders are created when it is): its nearest existing
    ancestor is a file or not writable; None when it can be."""
    folder = path.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder} is not writable"
    return None


def check_output_folder(path: str | Path, option: str = "--out") -> Path:
    """Refuse at once, before the work that precedes the write, an output folder that could not be written then (a
    file in its place, no writable folder to hold it); nothing is created here. Returns it as a ``Path``."""
    path = output_path(path, option)
    if (why := writable_ancestor(path)) is not None:
        raise DataError(f"{path}: cannot write there ({why})")
    return path


def check_output_file(path: str | Path, option: str = "--out", *, error: type[MNADError] = DataError) -> Path:
    """Refuse at once, before the minutes of scoring or quantising that precede the write, an output file that could
    not be written then: a folder in its place, or no writable folder to hold it. Returns it as a ``Path``."""
    path = output_path(path, option)
    if path.is_dir():
        raise error(f"{path}: cannot write a file there (it is a folder; {option} names the file to write)")
    if (why := writable_ancestor(path.parent)) is not None:
        raise error(f"{path}: cannot write there ({why})")
    return path


def check_replace(paths: list[Path], *, overwrite: bool, option: str = "--out") -> None:
    """The one rule for a command's outputs where an earlier result already is: the files (or folders) this command
    would write at ``paths`` (under ``option``), where any exists, are refused unless ``overwrite``; called by the
    API before any work, not when it writes. With ``overwrite`` the earlier files stay whole until the new ones
    replace them: every write is atomic (``atomic.atomic_write_many``), a set of files all or none. (A training
    run's folder and a detect folder, written over hours, refuse an earlier run the same way, in
    ``checkpoint.check_run_folder`` and ``detect.detect``, and keep it aside until the new run has its own result:
    ``checkpoint.set_aside_run``, ``DetectFolder``.)"""
    earlier = [p for p in paths if os.path.lexists(p)]
    if earlier and not overwrite:
        shown = ", ".join(str(p) for p in earlier)
        raise DataError(f"{shown}: {'holds' if len(earlier) == 1 else 'hold'} the output of an earlier run; choose another "
                        f"{option} or pass --overwrite to replace {'it' if len(earlier) == 1 else 'them'}")


def check_replace_in(folder: str | Path, names: tuple[str, ...], *, overwrite: bool, option: str = "--out") -> Path:
    """``check_replace`` for a command that writes the files ``names`` into the folder ``folder`` (``option``): a
    folder that cannot be written is refused first (``check_output_folder``); the folder's other files are not the
    command's and are left alone. Returns the folder as a ``Path``."""
    if output_path(folder, option).exists() and not Path(folder).is_dir():
        raise DataError(f"{folder}: {option} must be a folder, and this is a file")
    folder = check_output_folder(folder, option)
    check_replace([folder / name for name in names], overwrite=overwrite, option=option)
    return folder


# ----------------------------------------------------------------------------------------------- scores.csv


class ScoredVideo(Protocol):
    """What ``scores_csv_bytes`` needs of a video's scores (``mnad.evaluate.VideoScores`` has it, and ``VideoRows``,
    what ``read_scores`` gives)."""

    name: str
    frames: Any  # frame positions, ints
    psnr: Any
    patch_psnr: Any
    distance: Any
    patch_distance: Any
    regular: Any
    updated: Any
    score: Any
    labels: Any  # None when the evaluation had no labels


def scores_csv_bytes(videos: list[ScoredVideo]) -> bytes:
    """scores.csv: a header, then one row per scored frame of each video, in order. ``read_scores`` reads it back:
    ``scores_csv_bytes(read_scores(path))`` is the file at ``path``, byte for byte."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(SCORES_HEADER)
    for v in videos:
        labels = v.labels if v.labels is not None else [""] * len(v.frames)
        for i, frame in enumerate(v.frames):
            writer.writerow([v.name, int(frame), f"{v.psnr[i]:.6f}", f"{v.distance[i]:.9g}", f"{v.regular[i]:.8f}",
                             int(v.updated[i]), f"{v.score[i]:.6f}", labels[i], f"{v.patch_psnr[i]:.6f}",
                             f"{v.patch_distance[i]:.9g}"])
    return buffer.getvalue().encode()


@dataclass
class VideoRows:
    """One video's rows of scores.csv, every column: a ``ScoredVideo``, so ``scores_csv_bytes`` writes back the bytes
    that ``read_scores`` read from a file mnad wrote."""

    name: str
    frames: np.ndarray  # frame positions
    score: np.ndarray
    labels: np.ndarray | None  # None when the evaluation had no labels
    psnr: np.ndarray
    updated: np.ndarray
    # None (not in the file: an older version's, or not given): NaN on every row, as a missing psnr is read
    distance: np.ndarray | None = None
    regular: np.ndarray | None = None
    patch_psnr: np.ndarray | None = None
    patch_distance: np.ndarray | None = None

    def __post_init__(self) -> None:
        for key in ("distance", "regular", "patch_psnr", "patch_distance"):
            if getattr(self, key) is None:
                setattr(self, key, np.full(len(self.frames), np.nan))


# The columns read_scores takes and the type of each; another column is read as text and not kept. Only video, frame
# and score must be there: the others may be missing (files of older versions; NaN, or 0 for memory_updated), label
# may be empty (an evaluation without labels).
_SCORE_KINDS: dict[str, type] = {"video": object, "frame": np.int64, "score": np.float64, "label": object, "psnr": np.float64,
                                 "memory_updated": np.int64, "distance": np.float64, "regular_score": np.float64,
                                 "patch_psnr": np.float64, "patch_distance": np.float64}


# VideoRows' float fields beside psnr and score -> their columns
_EXTRA_COLUMNS = {"distance": "distance", "regular": "regular_score", "patch_psnr": "patch_psnr", "patch_distance": "patch_distance"}


class _Bad(Exception):
    """A row of scores.csv that is not as ``scores_csv_bytes`` writes it: its line and what is wrong."""


def read_scores(path: str | Path) -> list[VideoRows]:
    """scores.csv, split per video in the order the videos appear.

    Every row must have the header's number of fields, an integer frame, a numeric score (NaN and inf are read: the
    report refuses them by video and frame, ``mnad.report.inputs.scores_problem``), an integer label or none (none for
    every row of a video, or a label on each) and, where the file has them, a numeric psnr, distance, regular_score,
    patch_psnr and patch_distance and an integer memory_updated; anything else is a DataError naming the file and the
    line. Read by numpy's C parser (a day of a camera, 1 M rows, in seconds); a file it cannot take (a value Python
    reads and numpy not, a damaged row) is read row by row (``_scores_by_rows``), which is the rule and names the line
    of the first bad row. ``scores_csv_bytes`` of what it returns is the file mnad wrote, byte for byte."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: scores file not found (written by `mnad evaluate --out`)")
    text = read_text(path)
    end = text.find("\n")
    first = text if end < 0 else text[:end + 1]
    # a StringIO of the whole text would copy it (4 bytes a character): the header is its first line, unless a quote
    # there may carry it over several
    reader = csv.reader(io.StringIO(text if '"' in first else first, newline=""))
    try:
        header = next(reader, [])
    except csv.Error as exc:
        raise DataError(f"{path}: not an mnad scores file (line 1: {exc})") from exc
    missing = {"video", "frame", "score"} - set(header)
    if missing:
        raise DataError(f"{path}: not an mnad scores file (missing columns {', '.join(sorted(missing))})")
    # numpy's reader splits lines at '\n' only: a file with other line breaks ('\r' alone, which csv takes), or a header
    # over several lines (a quoted line break), is left to the row-by-row reader
    if reader.line_num == 1 and text.count("\r") == text.count("\r\n"):
        try:
            return _scores_by_columns(path, header)
        except (ValueError, TypeError, OverflowError, OSError):
            pass  # said with its line by the row-by-row reader (an OSError: the file moved since; its text is read)
    try:
        return _scores_by_rows(text, header)
    except _Bad as exc:
        raise DataError(f"{path}: not an mnad scores file ({exc})") from None


def _scores_by_columns(path: Path, header: list[str]) -> list[VideoRows]:
    """``_scores_by_rows``'s result, by numpy's parser; raises ValueError (or TypeError, OverflowError) on anything it
    does not take, without saying where: the row-by-row reader says it."""
    index = {name: i for i, name in enumerate(header)}  # a repeated name: its last column, as csv.DictReader takes it
    kinds = {i: _SCORE_KINDS[name] for name, i in index.items() if name in _SCORE_KINDS}
    # every column is parsed, so that a row with more or fewer fields than the header is refused; one not kept as
    # 'U1' (its first character: no conversion, hardly any memory)
    dtype = np.dtype([(f"c{i}", kinds.get(i, "U1")) for i in range(len(header))])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "loadtxt: input contained no data", UserWarning)  # a header alone: no videos
        with path.open(encoding="utf-8", newline="") as handle:  # read as it is, line breaks untranslated, as csv reads it
            table = np.loadtxt(handle, dtype=dtype, delimiter=",", quotechar='"', comments=None, skiprows=1, ndmin=1)
    names = table[f"c{index['video']}"]
    if names.size == 0:
        return []
    starts = np.flatnonzero(np.r_[True, names[1:] != names[:-1]])  # where the video changes (rows are grouped, usually)
    order: dict[str, int] = {}
    codes = np.repeat([order.setdefault(names[s], len(order)) for s in starts], np.diff(np.r_[starts, names.size]))
    rows = np.split(np.argsort(codes, kind="stable"), np.cumsum(np.bincount(codes))[:-1])

    def column(name: str, default: float) -> np.ndarray:
        return table[f"c{index[name]}"] if name in index else np.full(names.size, default, dtype=_SCORE_KINDS[name])

    frame, score, psnr, updated = column("frame", 0), column("score", 0), column("psnr", np.nan), column("memory_updated", 0)
    extra = {key: column(name, np.nan) for key, name in _EXTRA_COLUMNS.items()}
    result = []
    for name, mine in zip(order, rows, strict=True):
        label = None
        if "label" in index:
            labels = table[f"c{index['label']}"][mine]
            empty = labels == ""
            if empty.any() and not empty.all():
                raise ValueError("a video labelled on some rows only")
            label = None if empty.all() else labels.astype(np.int64)
        result.append(VideoRows(name=name, frames=frame[mine], score=score[mine], labels=label, psnr=psnr[mine],
                                updated=updated[mine].astype(bool), **{key: values[mine] for key, values in extra.items()}))
    return result


def _scores_by_rows(text: str, header: list[str]) -> list[VideoRows]:
    """The rows of scores.csv (its header already read as ``header``), one at a time: slow, the rule of what a row
    must be, and the line of the first one that is not (``_Bad``)."""
    index = {name: i for i, name in enumerate(header)}
    reader = csv.reader(io.StringIO(text, newline=""))
    next(reader)
    columns: dict[str, dict[str, list]] = {}
    first_line: dict[str, int] = {}  # each video's first row: where a label was or was not

    def value(row: list[str], start: int, name: str, kind: type, default: str = "") -> Any:
        text = row[index[name]] if name in index else default
        try:
            number = kind(text or default)
        except ValueError:
            raise _Bad(f"line {start}: {name} {text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if kind is int and not -2**63 <= number < 2**63:  # beyond int64: numpy could not hold it
            raise _Bad(f"line {start}: {name} {text!r} is out of range")
        return number

    line = reader.line_num + 1
    try:
        for row in reader:
            line, start = reader.line_num + 1, line  # the row's first line (it may span several: a quoted line break)
            if not row:  # a blank line, skipped as csv.DictReader skips it
                continue
            if len(row) != len(header):
                raise _Bad(f"line {start}: {len(row)} fields, the header has {len(header)}")

            name = row[index["video"]]
            video = columns.setdefault(name, {"frame": [], "score": [], "label": [], "psnr": [], "updated": [],
                                              **{key: [] for key in _EXTRA_COLUMNS}})
            first_line.setdefault(name, start)
            video["frame"].append(value(row, start, "frame", int))
            video["score"].append(value(row, start, "score", float))
            label = value(row, start, "label", int) if "label" in index and row[index["label"]] != "" else None
            if video["label"] and (label is None) != (video["label"][0] is None):
                raise _Bad(f"line {start}: video {name!r} has {'no label' if label is None else 'a label'} here and "
                           f"{'one' if label is None else 'none'} on line {first_line[name]}")
            video["label"].append(label)
            video["psnr"].append(value(row, start, "psnr", float, "nan"))
            video["updated"].append(value(row, start, "memory_updated", int, "0"))
            for key, column in _EXTRA_COLUMNS.items():
                video[key].append(value(row, start, column, float, "nan"))
    except csv.Error as exc:
        raise _Bad(f"line {line}: {exc}") from exc
    return [VideoRows(name=name, frames=np.array(c["frame"], dtype=np.int64), score=np.array(c["score"], dtype=np.float64),
                      labels=np.array(c["label"], dtype=np.int64) if c["label"][0] is not None else None,
                      psnr=np.array(c["psnr"], dtype=np.float64), updated=np.array(c["updated"], dtype=np.int64).astype(bool),
                      **{key: np.array(c[key], dtype=np.float64) for key in _EXTRA_COLUMNS})
            for name, c in columns.items()]


# ----------------------------------------------------------------------------------------------- metrics.json


def metrics_json_bytes(metrics: dict, config: dict, scores: bytes | None = None) -> bytes:
    """metrics.json: the metrics and the config dict (``Config.to_dict()``) that made them, and the SHA-256 of the
    scores.csv written with them (so a pair from two different runs is caught)."""
    data: dict[str, Any] = {"metrics": metrics, "config": config}
    if scores is not None:
        data["scores_sha256"] = hashlib.sha256(scores).hexdigest()
    return json.dumps(data, indent=2).encode()


def read_evaluation(folder: str | Path) -> tuple[dict, dict, list[VideoRows]]:
    """(metrics, config dict, scores) of an evaluation folder, checked to belong together."""
    folder = Path(folder)
    data = _read_metrics_file(folder / METRICS_FILE)
    scores = read_scores(folder / SCORES_FILE)  # a file that cannot be read is said so, before whether it belongs
    stored = data.get("scores_sha256")
    if stored is not None and hashlib.sha256((folder / SCORES_FILE).read_bytes()).hexdigest() != stored:
        raise DataError(f"{folder / SCORES_FILE}: does not belong to {METRICS_FILE} beside it (its SHA-256 differs from the "
                        "one recorded there: another run's file, or altered); evaluate again")
    return data["metrics"], data.get("config", {}), scores


def read_metrics(path: str | Path) -> tuple[dict, dict]:
    """(metrics, config dict) of a metrics.json, checked to be of the shape ``metrics_json_bytes`` writes."""
    data = _read_metrics_file(Path(path))
    return data["metrics"], data.get("config", {})


def _read_metrics_file(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: metrics file not found (written by `mnad evaluate --out`)")
    return read_json(path, "metrics", metrics_problem)


def metrics_problem(data: Any) -> str | None:
    """What is wrong with a metrics.json's content (what the readers use of it), or None."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    metrics = data.get("metrics")
    if not isinstance(metrics, dict):
        return "no 'metrics' entry" if metrics is None else f"metrics must be an object, got {metrics!r}"[:200]
    for key in ("micro_auc", "macro_auc"):
        if not is_number(metrics.get(key)):
            return f"metrics.{key} must be a number or null, got {metrics[key]!r}"[:200]
    per_video = metrics.get("per_video_auc", {})
    if not isinstance(per_video, dict) or not all(is_number(v) for v in per_video.values()):
        return f"metrics.per_video_auc must map video names to numbers, got {per_video!r}"[:200]
    stream = metrics.get("stream")
    if stream is not None and not (isinstance(stream, dict) and is_number(stream.get("event_threshold"))):
        return f"metrics.stream must be an object with a numeric event_threshold, got {stream!r}"[:200]
    wrong_config = config_problem(data["config"], "config") if "config" in data else None
    return wrong_config or wrong_kinds(data, "", {"scores_sha256": str})


# ----------------------------------------------------------------------------------------------- reading checked


def read_text(path: Path) -> str:
    """A file's text, which must be UTF-8 (mnad writes all its files so)."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from exc


def read_json(path: Path, kind: str, problem: Callable[[Any], str | None]) -> Any:
    """A JSON file's content; ``problem`` says what is wrong with it (None: nothing), for the error that names it."""
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not an mnad {kind} file (not valid JSON: {exc})") from exc
    what = problem(data)
    if what:
        raise DataError(f"{path}: not an mnad {kind} file ({what})")
    return data


def read_json_if_present(path: Path, kind: str, problem: Callable[[Any], str | None], absent: Any) -> Any:
    """An optional JSON file's content: ``absent`` when there is no such file; one that is there is read as
    ``read_json`` reads it, so a damaged one (not UTF-8, not JSON, not of its shape, not a file) is a DataError naming
    it, never taken for a missing one."""
    if not os.path.lexists(path):
        return absent
    return read_json(path, kind, problem)


def is_number(value: Any, *, null: bool = True) -> bool:
    """A finite JSON number (or null, where ``null``)."""
    if value is None:
        return null
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def wrong_kinds(data: dict, where: str, kinds: dict[str, type | tuple[type, ...]]) -> str | None:
    """The first key of ``data`` whose value is present, not null and not of its kind, said; or None."""
    for key, kind in kinds.items():
        value = data.get(key)
        if value is not None and not isinstance(value, kind):
            return f"{where}{key} must be {kind_name(kind)}, got {value!r}"[:200]
    return None


JSON_KIND_NAMES = {dict: "an object", list: "a list", str: "a string", bool: "true or false", int: "an integer", float: "a number"}


def kind_name(kind: type | tuple[type, ...]) -> str:
    """A kind (or kinds) of value as a message says it: ``dict`` 'an object', ``(int, float)`` 'a number'."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names: list[str] = []
    for k in kinds:
        if k is int and float in kinds:  # an int is a number too
            continue
        name = JSON_KIND_NAMES.get(k, f"a {k.__name__}")
        if name not in names:
            names.append(name)
    return " or ".join(names)


def config_problem(config: Any, where: str) -> str | None:
    """What is wrong with a stored config dict (``Config.to_dict()``) as its readers use it, or None."""
    if not isinstance(config, dict):
        return f"{where} must be an object, got {config!r}"[:200]
    return wrong_kinds(config, f"{where}.", {"train": dict})


EVALUATION_FILES = (SCORES_FILE, METRICS_FILE)  # what `mnad evaluate --out DIR` writes into DIR


def check_evaluation_output(out_dir: str | Path, *, overwrite: bool = False, option: str = "--out") -> Path:
    """An evaluation's folder (``--out``; ``option``: its name for messages), before the scoring: writable, and no
    earlier evaluation there unless ``overwrite`` (``check_replace``). A ``mnad detect`` run's folder is refused even
    with ``overwrite`` (its scores.csv, its summary.json, or the rows/ of a run longer than one row segment): an
    evaluation there would lie beside that run's outputs, and its scores.csv be taken for the run's rows."""
    folder = Path(output_path(out_dir, option))
    scores, summary = folder / SCORES_FILE, folder / SUMMARY_FILE
    found = [name for name, is_detect in ((SCORES_FILE, os.path.isfile(scores) and is_detect_scores(scores)),
                                          (SUMMARY_FILE, os.path.isfile(summary) and is_detect_summary(summary)),
                                          (f"{ROWS_DIR}/", os.path.lexists(folder / ROWS_DIR))) if is_detect]
    if found:
        raise DataError(f"{out_dir}: holds an `mnad detect` output ({', '.join(found)}: a detect run's), not an evaluation: "
                        f"--overwrite replaces only an earlier evaluation; choose another {option}")
    return check_replace_in(out_dir, EVALUATION_FILES, overwrite=overwrite, option=option)


def write_evaluation(out_dir: str | Path, videos: list[ScoredVideo], metrics: dict, config: dict) -> None:
    """scores.csv and metrics.json into ``out_dir``, both or neither: a failure (e.g. a full disk) leaves no
    scores.csv without its metrics.json."""
    from mnad.atomic import atomic_write_many

    out_dir = Path(out_dir)
    scores = scores_csv_bytes(videos)
    atomic_write_many({out_dir / SCORES_FILE: scores, out_dir / METRICS_FILE: metrics_json_bytes(metrics, config, scores)})


# ----------------------------------------------------------------------------------------------- training log


def read_train_log(path: str | Path) -> list[dict]:
    """The per-epoch records of a training run; lines that do not parse (a crash mid-write, damaged bytes) are skipped."""
    records = []
    for line in Path(path).read_bytes().decode("utf-8", "replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "epoch" in record:
            records.append(record)
    return records


# ------------------------------------------------------------------------------------------------ mnad detect

DETECT_SCORES_HEADER = ["frame", "time", "psnr", "patch_psnr", "distance", "patch_distance", "regular_score", "memory_updated", "score",
                        "smoothed", "alert"]
# The annotated video is Matroska (mp4v inside): a file cut short by SIGKILL or a power cut plays up to the muxer's last
# write, where an MP4 is unreadable without the index written at its close
VIDEO_SUFFIX = ".mkv"
EVENTS_JSONL, EVENTS_CSV, SUMMARY_FILE, MAPS_DIR = "events.jsonl", "events.csv", "summary.json", "maps"
ANNOTATED_VIDEO = f"annotated{VIDEO_SUFFIX}"
ANNOTATED_DIR = "annotated"  # the annotated video of a run longer than one segment: its files, named by their first frame
OLD_ANNOTATED_VIDEO = "annotated.mp4"  # what runs before the Matroska files wrote: still an earlier run's output
ROWS_DIR = "rows"  # the row files of a run longer than one segment (--rows-segment): rows/<first frame>/, each a segment
ROW_FILES = (SCORES_FILE, EVENTS_JSONL, EVENTS_CSV)  # a row segment's files, as a run within one segment writes them
ROWS_SEGMENT_SECONDS = 86400.0  # footage seconds of rows per segment: a day (~216 MB of scores.csv at 25 frames/s)
DETECT_FILES = (SCORES_FILE, EVENTS_JSONL, EVENTS_CSV, SUMMARY_FILE, ANNOTATED_VIDEO, OLD_ANNOTATED_VIDEO, ANNOTATED_DIR, MAPS_DIR,
                ROWS_DIR)
FRAME_DIGITS = 12  # frame numbers in file names: 10**12 frames are 1,268 years at 25 fps
MAP_SHARD_FRAMES, SHARD_DIGITS = 10_000, 8  # maps/ holds folders of 10,000 maps each: 2 M files a day in one folder
# stalls `ls`, backups and some filesystems


def frame_name(index: int) -> str:
    """A frame number as file names carry it (error maps, the annotated video's segments): zero-padded to
    ``FRAME_DIGITS``, so that the names sort in frame order for any run; a run cannot know its length when it starts."""
    return f"{index:0{FRAME_DIGITS}d}"


def segment_name(first: int) -> str:
    """The annotated video's file that begins at frame ``first``, relative to the run's folder, once it has several."""
    return f"{ANNOTATED_DIR}/{frame_name(first)}{VIDEO_SUFFIX}"


def row_segment_name(first: int) -> str:
    """The row segment (scores.csv, events.jsonl, events.csv) that begins at frame ``first``, relative to the run's
    folder, once it has several: ``rows/<first frame, 12 digits>``, named as the annotated video's files are
    (``segment_name``), so that they sort in time order."""
    return f"{ROWS_DIR}/{Path(segment_name(first)).stem}"


ROW_SEGMENT = re.compile(rf"\d{{{FRAME_DIGITS}}}")  # a row segment's folder name in rows/


def map_name(index: int, kind: str) -> str:
    """Frame ``index``'s error map (``kind``: 'npy' or 'png'), relative to the run's folder:
    ``maps/<index // MAP_SHARD_FRAMES, 8 digits>/<index, 12 digits>.<kind>``; the names sort in frame order."""
    return f"{MAPS_DIR}/{index // MAP_SHARD_FRAMES:0{SHARD_DIGITS}d}/{frame_name(index)}.{kind}"


STREAM_FOLDER = re.compile(r"\d+_[A-Za-z0-9._-]+")  # the name of a source's folder (detect.stream_folder): no path
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
    except (OSError, ValueError):
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
    too, and so is a ``rows/`` folder that holds anything but row segments (``foreign_rows``): moving it would move a
    user's files."""
    for folder in (out_dir, *(out_dir / name for name in detect_run_folders(out_dir))):
        if folder.is_dir() and (folder == out_dir or not folder.is_symlink()) and (other := other_command_outputs(folder)):
            raise DataError(f"{folder}: holds another command's outputs ({', '.join(other)}: `mnad evaluate`'s?), not an "
                            "earlier detect run's; detect never replaces them, even with --overwrite: choose another --out")
        if folder.is_dir() and (folder == out_dir or not folder.is_symlink()) and (other := foreign_rows(folder)):
            raise DataError(f"{folder / ROWS_DIR}: holds files mnad detect did not write ({', '.join(other[:3])}); a "
                            "longer run writes its row segments there: move them, or choose another --out")
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


def foreign_rows(folder: Path) -> list[str]:
    """What ``folder/rows`` holds that detect did not write there, relative to ``folder``: anything but row segments
    (``rows/<12 digits>/`` holding row files only, a scores.csv a detect run's) and segments a killed run was deleting
    (``remove_segment``); [] when there is no rows/."""
    rows = folder / ROWS_DIR
    if not os.path.lexists(rows):
        return []
    if not rows.is_dir() or rows.is_symlink():
        return [ROWS_DIR]
    doomed, found = _doomed_segment(), []
    for segment in sorted(rows.iterdir()):
        if not segment.is_dir() or segment.is_symlink():
            found.append(f"{ROWS_DIR}/{segment.name}")
        elif not doomed.fullmatch(segment.name):
            if not ROW_SEGMENT.fullmatch(segment.name):
                found.append(f"{ROWS_DIR}/{segment.name}")
                continue
            found += [f"{ROWS_DIR}/{segment.name}/{p.name}" for p in sorted(segment.iterdir())
                      if p.name not in ROW_FILES or not p.is_file() or p.is_symlink()
                      or (p.name == SCORES_FILE and not is_detect_scores(p))]
    return found


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
    of the annotated video's files (``detect.SegmentedVideo``, --video-keep), of the row segments and of the error
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
    folder locked (``detect.locked_output``): a running writer's are not stale."""
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
                    "--overwrite run replaces them)")
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
                 rows_keep: int | None = None, maps_keep: int | None = None) -> None:
        self.out_dir, self.maps, self.rows_segment = Path(out_dir), maps, rows_segment
        self._shard = ""  # the maps/ folder being written into (``map_name``), made when its first map comes; '': none
        self.kept = OldestFirst(rows_keep, "--rows-keep", "row segment")
        self.maps_kept = OldestFirst(maps_keep, "--maps-keep", "map shard")
        self.segment: str | None = None  # the open row segment, relative to out_dir ('.': out_dir); None: none open
        self.first: int | None = None  # the frame of the open segment's first row; None before it
        self.started = 0.0  # that row's time
        self.changes = 0  # row segments opened, closed or deleted after the first: the summary names them anew
        # what went wrong with the last closed segment (not durable, the oldest not deleted), found once the next was
        # open and its first row written: raised by the next ``score`` or ``close_rows``
        self._failure: DataError | None = None
        self._handles: tuple[Any, ...] = ()
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if maps:
                (self.out_dir / MAPS_DIR).mkdir()
        except OSError as exc:
            raise DataError(f"{self.out_dir}: cannot write the outputs ({exc.strerror or exc})") from exc
        self._open(".")

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
            self._handles = tuple((folder / name).open("w", newline="") for name in ROW_FILES)
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
            except OSError as exc:
                raise DataError(f"{self.out_dir / ROWS_DIR}: cannot write the row segments ({exc.strerror or exc}; an "
                                "earlier run's? move it)") from exc
        folder = self.out_dir / segment
        try:
            size = sum((folder / name).stat().st_size for name in ROW_FILES)
        except OSError as exc:
            raise DataError(f"{folder}: a row segment is gone once written ({os_reason(exc)})") from exc
        self.changes += 1
        self.kept.append(segment, size)
        if lost is not None:
            return DataError(f"{folder}: cannot make the row segment durable ({os_reason(lost)}): its rows may not be on "
                             "the disk")
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
            closed = self._close_segment(move=False)
            pruned = self._prune()
        failure, self._failure = self._failure or closed or pruned, None
        if failure is not None:
            raise failure

    def _check_open(self) -> None:
        if self.segment is None:  # closed, or its close or the next one's opening failed (said then)
            raise DataError(f"{self.out_dir}: no row segment is open to write into")

    def _write(self, call: Callable[..., Any], *args: Any) -> None:
        try:
            call(*args)
        except OSError as exc:
            reason = os_reason(exc)
            raise DataError(f"{self.out_dir}: cannot write the outputs ({reason})") from exc

    def score(self, row: Any, seconds: float, alert: bool) -> None:
        """Frame ``row.index``'s row, at ``seconds``: into a new segment when the open one's time is up. The closed one
        is pruned (--rows-keep) once the new one holds this row, so a failure there loses no row; it is raised by the
        next call (or ``close_rows``): this row is written and counted."""
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
        self._write(self._csv.writerow, [row.index, f"{seconds:.3f}", f"{row.psnr:.5f}", f"{row.patch_psnr:.5f}",
                                         f"{row.distance:.9g}", f"{row.patch_distance:.9g}", f"{row.regular:.8f}",
                                         int(row.updated), f"{row.score:.6f}", f"{row.smoothed:.6f}", int(alert)])
        self._write(self._scores.flush)
        if rotated:
            self._failure = closed or self._prune()

    def event(self, event: Any, clock_start: float | None = None) -> None:
        """One line of events.jsonl; with ``clock_start`` (a camera's: its times are seconds after it) also when the event
        began and ended by the wall clock (``wall_clock``), so that a line read during a run of days says when."""
        self._check_open()
        record = asdict(event)
        if clock_start is not None:
            record |= {"start_clock": wall_clock(clock_start + event.start_time), "end_clock": wall_clock(clock_start + event.end_time)}
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
    and so is a path that is not there."""
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
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read it ({exc})") from exc
