"""The files an evaluation and a training run leave behind, each format written and read here.

- ``scores.csv``: one row per scored frame (``scores_csv_bytes``, ``read_scores``).
- ``metrics.json``: the AUCs and scoring settings, with the config that made them (``metrics_json_bytes``,
  ``read_metrics``).
- ``train_log.jsonl``: one JSON record per training epoch (``read_train_log``).

An evaluation's folder is checked before the scoring (``check_evaluation_output``): a ``mnad detect`` run's is refused
(``mnad.outputs.detect_folder`` says what is one).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mnad.errors import DataError
from mnad.outputs.columns import SCORES_HEADER, UNSMOOTHED_COLUMN, frame_columns, score_text
from mnad.outputs.detect_folder import is_detect_scores, is_detect_summary
from mnad.outputs.names import METRICS_FILE, ROWS_DIR, SCORES_FILE, SUMMARY_FILE
from mnad.outputs.paths import check_replace_in, output_path
from mnad.outputs.reading import config_problem, is_number, read_json, read_text, wrong_kinds


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
    # and, optionally (read by getattr), unsmoothed_score: S_t before the trailing mean; absent or None where not kept


def scores_csv_bytes(videos: list[ScoredVideo]) -> bytes:
    """scores.csv: a header, then one row per scored frame of each video, in order. ``read_scores`` reads it back:
    ``scores_csv_bytes(read_scores(path))`` is the file at ``path``, byte for byte. ``score`` is the S_t given (an
    evaluation's: after its trailing mean); where every video has an ``unsmoothed_score`` (S_t before the mean: the stream
    protocol's, or any evaluation's with ``eval.smoothing`` above 1), it is written too, as the last column."""
    unsmoothed = bool(videos) and all(getattr(v, "unsmoothed_score", None) is not None for v in videos)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(SCORES_HEADER + [UNSMOOTHED_COLUMN] * unsmoothed)
    for v in videos:
        labels = v.labels if v.labels is not None else [""] * len(v.frames)
        for i, frame in enumerate(v.frames):
            psnr, patch_psnr, distance, patch_distance, regular, updated, score = frame_columns(
                psnr=v.psnr[i], patch_psnr=v.patch_psnr[i], distance=v.distance[i], patch_distance=v.patch_distance[i],
                regular=v.regular[i], updated=v.updated[i], score=v.score[i])
            row = [v.name, int(frame), psnr, distance, regular, updated, score, labels[i], patch_psnr, patch_distance]
            writer.writerow([*row, score_text(v.unsmoothed_score[i])] if unsmoothed else row)
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
    unsmoothed_score: np.ndarray | None = None  # the unsmoothed_score column, S_t before the trailing mean; None: not there

    def __post_init__(self) -> None:
        for key in ("distance", "regular", "patch_psnr", "patch_distance"):
            if getattr(self, key) is None:
                setattr(self, key, np.full(len(self.frames), np.nan))


# The columns read_scores takes and the type of each; another column is read as text and not kept. Only video, frame
# and score must be there: the others may be missing (files of older versions; NaN, or 0 for memory_updated), label
# may be empty (an evaluation without labels).
_SCORE_KINDS: dict[str, type] = {"video": object, "frame": np.int64, "score": np.float64, "label": object, "psnr": np.float64,
                                 "memory_updated": np.int64, "distance": np.float64, "regular_score": np.float64,
                                 "patch_psnr": np.float64, "patch_distance": np.float64, UNSMOOTHED_COLUMN: np.float64}


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
        unsmoothed = table[f"c{index[UNSMOOTHED_COLUMN]}"][mine] if UNSMOOTHED_COLUMN in index else None
        result.append(VideoRows(name=name, frames=frame[mine], score=score[mine], labels=label, psnr=psnr[mine],
                                updated=updated[mine].astype(bool), unsmoothed_score=unsmoothed,
                                **{key: values[mine] for key, values in extra.items()}))
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
            video = columns.setdefault(name, {"frame": [], "score": [], "label": [], "psnr": [], "updated": [], "unsmoothed": [],
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
            if UNSMOOTHED_COLUMN in index:
                video["unsmoothed"].append(value(row, start, UNSMOOTHED_COLUMN, float))
    except csv.Error as exc:
        raise _Bad(f"line {line}: {exc}") from exc
    return [VideoRows(name=name, frames=np.array(c["frame"], dtype=np.int64), score=np.array(c["score"], dtype=np.float64),
                      labels=np.array(c["label"], dtype=np.int64) if c["label"][0] is not None else None,
                      psnr=np.array(c["psnr"], dtype=np.float64), updated=np.array(c["updated"], dtype=np.int64).astype(bool),
                      unsmoothed_score=np.array(c["unsmoothed"], dtype=np.float64) if UNSMOOTHED_COLUMN in index else None,
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
