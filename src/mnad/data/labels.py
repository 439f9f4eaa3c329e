"""Frame labels (1 = abnormal) in the formats in use, split per test video and checked against the frames.

- ``.npy``: all test videos concatenated in sorted order, shape (N,) or (1, N) (both shapes are published)
- ``.csv``: abnormal intervals, columns ``video,first_abnormal_frame,last_abnormal_frame`` (or ``start,end``),
  1-based and inclusive, any number of rows per video; an optional ``frames`` column is checked
- ``.m``: the original UCSD ground truth, ``TestVideoFile{end+1}.gt_frame = [61:180];`` one line per test video
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import numpy as np

from mnad.data.footage import natural_key
from mnad.data.layouts import UCSD_NAMES, UCSD_SPLITS, check_unique_names
from mnad.data.videos import Video
from mnad.errors import DataError

log = logging.getLogger(__name__)


def find_label_file(directory: Path, dataset: str) -> Path | None:
    """The usual label file beside a dataset (or one folder up, or in its test folder, where the UCSD archive keeps
    ``UCSDped2.m``), if there is one."""
    names = [f"frame_labels_{dataset}.npy", "test_anomalies.csv", f"{directory.name}.m"]
    if dataset in UCSD_NAMES:
        names.append(f"{UCSD_NAMES[dataset]}.m")  # the UCSD ground truth beside a dataset laid out as ped2/
    for folder in (directory, directory / UCSD_SPLITS["testing"], directory / "testing", directory.parent):
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return next(iter(sorted(directory.glob("frame_labels_*.npy"))), None)


def load_labels(path: str | Path, videos: list[Video]) -> list[np.ndarray]:
    """Per-video int arrays of 0/1, one entry per frame of each video in ``videos``."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a label file (.npy, .csv or .m; see docs/data.md)")
    if not path.is_file():
        raise DataError(f"{path}: label file not found")
    check_unique_names(videos, path)  # labels are matched to videos by name (.csv) or order: one name, one video
    suffix = path.suffix.lower()
    readers = {".npy": lambda: _split(_read_npy(path), videos, path), ".csv": lambda: _read_intervals_csv(path, videos),
               ".m": lambda: _read_ucsd_m(path, videos)}
    if suffix not in readers:
        raise DataError(f"{path}: unknown label format (expected .npy, .csv or .m)")
    if suffix != ".csv":
        check_order(path, videos)
    try:
        return readers[suffix]()
    except OSError as exc:  # no permission, an I/O error, a file gone while read
        raise DataError(f"{path}: cannot read the label file ({exc.strerror or exc})") from exc


def check_order(path: Path, videos: list[Video]) -> None:
    """A .npy or .m file gives the labels of the videos in sorted name order (the published code's ``sorted(glob)``).
    Names numbered without zero padding sort as 1, 10, 11, 2, ...: whoever concatenated the labels may have taken
    them in numeric order, and with the same total the labels would go to the wrong videos without an error; say so."""
    names = [v.name for v in videos]
    numeric = sorted(names, key=natural_key)
    if names != numeric:
        first = next(i for i, (a, b) in enumerate(zip(names, numeric, strict=True)) if a != b)  # same names: they differ somewhere
        log.warning("%s: labels are matched to the test videos in sorted name order (%s), which is not their "
                    "numeric order (%s): names without zero padding; if the labels were put together in numeric "
                    "order, rename the videos with zero padding (01, 02, ..., 10) or use a .csv of intervals by name",
                    path, _names_around(names, first), _names_around(numeric, first))


def _names_around(names: list[str], first: int, shown: int = 4) -> str:
    """A few of ``names`` from one before position ``first`` (where two orders first differ), for a message:
    '..., 09, 10, 100, 11, ...' (position ``first`` is where the reader should look)."""
    start = max(0, first - 1)
    part = ", ".join(names[start:start + shown])
    return f"{'..., ' if start else ''}{part}{', ...' if start + shown < len(names) else ''}"


def _read_npy(path: Path) -> np.ndarray:
    try:
        labels = np.load(path, allow_pickle=False)
    except Exception as exc:  # a damaged header raises anything from ValueError to SyntaxError or tokenize errors
        raise DataError(f"{path}: not a readable .npy array ({type(exc).__name__}: {exc})") from exc
    if labels.ndim == 2 and labels.shape[0] == 1:
        labels = labels[0]
    if labels.ndim != 1:
        raise DataError(f"{path}: labels must have shape (N,) or (1, N), got {labels.shape}")
    if labels.dtype.kind not in "biuf":
        raise DataError(f"{path}: labels must be numbers, got dtype {labels.dtype}")
    if not np.isin(labels, (0, 1)).all():
        bad = labels[~np.isin(labels, (0, 1))][:3]
        raise DataError(f"{path}: labels must be 0 (normal) or 1 (abnormal), found {bad.tolist()}")
    return labels.astype(np.int64)


def _split(labels: np.ndarray, videos: list[Video], path: Path) -> list[np.ndarray]:
    counts = [len(v) for v in videos]
    if labels.size != sum(counts):
        raise DataError(f"{path}: {labels.size} labels, but the {len(videos)} test videos have {sum(counts)} frames")
    return np.split(labels, np.cumsum(counts)[:-1])


def _read_intervals_csv(path: Path, videos: list[Video]) -> list[np.ndarray]:
    try:
        return _parse_intervals_csv(path, videos)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from exc


def _parse_intervals_csv(path: Path, videos: list[Video]) -> list[np.ndarray]:
    by_name = {v.name: np.zeros(len(v), dtype=np.int64) for v in videos}
    with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: a byte-order mark (Excel's UTF-8 CSV) is skipped
        reader = csv.DictReader(handle)
        reader.fieldnames = fields = [f.strip() for f in reader.fieldnames or []]  # "video, start, end" also works
        start_key = next((k for k in ("first_abnormal_frame", "start") if k in fields), None)
        end_key = next((k for k in ("last_abnormal_frame", "end") if k in fields), None)
        if "video" not in fields or not start_key or not end_key:
            raise DataError(f"{path}: expected columns video, first_abnormal_frame, last_abnormal_frame; got {fields}")
        for line, row in enumerate(reader, start=2):
            row = {k: v.strip() if isinstance(v, str) else "" for k, v in row.items()}  # short rows give None
            name = row["video"]
            labels = by_name.get(name)
            if labels is None:
                raise DataError(f"{path}, line {line}: video {name!r} is not among the test videos")
            try:
                frames = int(row["frames"]) if row.get("frames") else labels.size
                bounds = (int(row[start_key]), int(row[end_key])) if row[start_key] or row[end_key] else None
            except ValueError as exc:
                raise DataError(f"{path}, line {line}: frame counts and interval bounds must be integers") from exc
            if frames != labels.size:
                raise DataError(f"{path}, line {line}: video {name} has {labels.size} frames, the file says {row['frames']}")
            if bounds is None:
                continue  # a video without anomalies
            first, last = bounds
            if not 1 <= first <= last <= labels.size:
                raise DataError(f"{path}, line {line}: interval {first}-{last} outside video {name} (frames 1-{labels.size})")
            labels[first - 1 : last] = 1
    return list(by_name.values())


def _read_ucsd_m(path: Path, videos: list[Video]) -> list[np.ndarray]:
    text = re.sub(r"%[^\n]*", "", path.read_text(encoding="utf-8", errors="replace"))  # MATLAB comments: a commented-out line is no entry
    entries = re.findall(r"gt_frame\s*=\s*\[([^\]]*)\]", text)
    if len(entries) != len(videos):
        raise DataError(f"{path}: ground truth for {len(entries)} videos, but there are {len(videos)} test videos")
    result = []
    for video, entry in zip(videos, entries, strict=True):
        labels = np.zeros(len(video), dtype=np.int64)
        # MATLAB's ranges: 'a', 'a:b' or 'a:step:b' (spaces allowed around ':'), separated by spaces, commas or ';'
        for token in re.split(r"[\s,;]+", re.sub(r"\s*:\s*", ":", entry).strip()):
            if not token:
                continue
            if not re.fullmatch(r"\d{1,18}(:\d{1,18}){0,2}", token):  # int() refuses very long digit strings
                raise DataError(f"{path}: cannot read {token[:40]!r} in the ground truth of video {video.name} "
                                "(expected frame numbers and ranges a:b or a:step:b)")
            numbers = [int(n) for n in token.split(":")]
            first_i, last_i = numbers[0], numbers[-1]
            step = numbers[1] if len(numbers) == 3 else 1
            if step < 1 or not 1 <= first_i <= last_i <= labels.size:
                raise DataError(f"{path}: interval {token} outside video {video.name} (frames 1-{labels.size})")
            labels[first_i - 1 : last_i : step] = 1
        result.append(labels)
    return result
