"""Which files are footage and in what order: the image and video extensions read, frame files in natural order of
their names (``2.jpg`` before ``10.jpg``; zero-padded names sort the same either way, hidden files skipped) and their
numbering checked, and the one rule for what a folder of footage holds (``footage_in``).
"""

from __future__ import annotations

import itertools
import logging
import re
import stat
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mnad.errors import DataError, printable

log = logging.getLogger(__name__)


IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}
VIDEO_EXTENSIONS = {".avi", ".mp4", ".mov", ".mkv", ".mpg", ".mpeg", ".webm"}


def natural_key(name: str) -> tuple:
    """Sort key reading runs of digits as numbers: 'f2.jpg' < 'f10.jpg'."""
    return tuple((0, int(part), part) if part.isdecimal() else (1, 0, part) for part in re.split(r"(\d+)", name))


def frame_files(candidates: list[Path], where: str | Path) -> list[Path]:
    """The image files among ``candidates``, in natural order; hidden files skipped, special files refused. A
    sub-folder is not a frame, whatever its name (``012.jpg/``, as ``day1/``): left out, as docs/data.md says of
    sub-folders of a frame folder (a frame number it leaves missing is the gap ``check_frame_numbers`` warns of)."""
    files = []
    for p in candidates:
        if p.name.startswith(".") or p.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        try:
            mode = p.stat().st_mode
        except OSError as exc:
            raise DataError(f"{p}: cannot read frame ({exc.strerror or exc})") from exc
        if stat.S_ISDIR(mode):
            continue
        if not stat.S_ISREG(mode):
            raise DataError(f"{p}: not a regular file (a FIFO, device or socket named like an image); remove it")
        files.append(p)
    natural = sorted(files, key=lambda p: natural_key(p.name))
    check_frame_numbers(natural, where)
    if [p.name for p in natural] != sorted(p.name for p in files):
        log.warning("%s: frame names are numbered without zero padding; reading them in numeric order (%s, %s, ...)",
                    where, natural[0].name, natural[1].name)
    return natural


def frame_number_key(path: Path) -> tuple:
    """What tells frames apart by name: the stem with runs of digits read as numbers ('1.jpg', '01.jpg' and '1.png'
    are the same frame number)."""
    return tuple(int(part) if part.isdecimal() else part for part in re.split(r"(\d+)", path.stem))


def check_frame_numbers(files: list[Path], where: str | Path) -> None:
    """Frames are read by position, so two files of one frame number (``1.jpg`` beside ``001.jpg``, ``000.jpg`` beside
    ``000.png``: a copy, a re-extraction) would each count as a frame and shift every later frame off its label: an
    error. A sequence whose numbers skip (a frame missing) is read, with a warning: labels are matched by position too,
    so the frames after the gap take the labels of the frames before them."""
    seen: dict[tuple, Path] = {}
    for path in files:
        other = seen.setdefault(frame_number_key(path), path)
        if other is not path:
            a, b = (other.name, path.name) if other.name != path.name else (other, path)  # a glob over folders
            raise DataError(f"{where}: two frame files with one frame number ({a} and {b}); "
                            "frames are read by position, so each would count as a frame: remove one")
    numbers = [int(m[-1]) if (m := re.findall(r"\d+", p.stem)) else None for p in files]
    if len(files) < 3 or None in numbers:
        return
    # Python's integers, not int64: a number past 2**63 (a 20-digit timestamp in the name) is a number too (was: an
    # OverflowError traceback for cam_20231201123456123450.png)
    steps = [b - a for a, b in itertools.pairwise(numbers)]
    counts = Counter(steps)
    most = max(counts.values())
    step = min(s for s, c in counts.items() if c == most)  # the numbering's usual step (1, or n where every n-th frame was extracted)
    odd = [i for i, s in enumerate(steps) if s != step]
    if step > 0 and odd and most * 2 >= len(steps):
        first = odd[0]
        log.warning("%s: frame numbers skip from %s to %s%s (frames missing?); frames are read by position, so each "
                    "frame after a gap takes the label of its position, not of its number", where,
                    files[first].name, files[first + 1].name, f" and at {len(odd) - 1} more places" if len(odd) > 1 else "")


def folder_entries(folder: Path) -> list[Path]:
    """A folder's entries, sorted; a folder that cannot be read (no permission, gone) is a DataError naming it."""
    try:
        return sorted(folder.iterdir())
    except OSError as exc:
        raise DataError(f"{printable(folder)}: cannot list the folder ({exc.strerror or exc})") from exc


def some_names(paths: Sequence[Path], shown: int = 3) -> str:
    """A few of ``paths``' names for a message: 'a.jpg, b.jpg, c.jpg and 7 more'."""
    names = ", ".join(printable(p.name) for p in paths[:shown])
    return f"{names} and {len(paths) - shown} more" if len(paths) > shown else names


def _is_file_of(path: Path, extensions: set[str]) -> bool:
    return not path.name.startswith(".") and path.suffix.lower() in extensions and not path.is_dir()


def holds_footage(folder: Path) -> bool:
    """Whether a folder holds image or video files at its top level (frames, or videos one level down)."""
    return any(_is_file_of(p, IMAGE_EXTENSIONS | VIDEO_EXTENSIONS) for p in folder_entries(folder))


@dataclass(frozen=True)
class Footage:
    """What a folder (or a glob's matches) holds as footage, by ``footage_in``: its image files (the frames of one
    video), its video files and its sub-folders (hidden names and ``*_gt`` mask folders left out)."""

    where: str
    images: list[Path]
    videos: list[Path]
    folders: list[Path]

    def footage_folders(self) -> list[Path]:
        """The sub-folders that hold frames or video files."""
        return [f for f in self.folders if holds_footage(f)]

    def videos_held(self) -> list[str]:
        """What it holds as videos rather than frames, for a message: its video files and its sub-folders of footage,
        a few names each ('video files (a.mp4, b.mp4)', 'frame folders (day1)'); [] for none."""
        sub = self.footage_folders()
        return ([f"video files ({some_names(self.videos)})"] if self.videos else []) + (
            [f"frame folders ({some_names(sub)})"] if sub else [])


def footage_in(where: str | Path, entries: Sequence[Path] | None = None) -> Footage:
    """The one rule for what a folder of footage is, for `train --data`, `calibrate --data` and `detect` (a folder or a
    pattern): either a frame folder (image files at its top level: one video's frames; other files, and sub-folders
    holding neither images nor videos, are not footage) or a folder of videos (video files and sub-folders, each a frame
    folder). ``entries``: what to judge (a pattern's matches), by default the folder ``where``'s entries. Image files
    beside video files, or beside sub-folders holding images or videos, are refused (one ``DataError`` naming
    ``where``, a few of each and what to do): which to read would be a guess, and either guess left footage out unsaid."""
    entries = folder_entries(Path(where)) if entries is None else list(entries)
    kinds = [(p, p.is_dir()) for p in entries if not p.name.startswith(".")]  # one stat each: a folder of 100k frames
    images = [p for p, folder in kinds if not folder and p.suffix.lower() in IMAGE_EXTENSIONS]
    videos = [p for p, folder in kinds if not folder and p.suffix.lower() in VIDEO_EXTENSIONS]
    folders = [p for p, folder in kinds if folder and not p.name.endswith("_gt")]
    footage = Footage(printable(where), images, videos, folders)
    if images:
        beside = [f"video files ({some_names(videos)})"] if videos else []
        if sub := footage.footage_folders():
            beside.append(f"sub-folders of footage ({some_names(sub)})")
        if beside:
            raise DataError(f"{footage.where}: mixes frame images ({some_names(images)}) with {' and '.join(beside)}; "
                            "a folder is either one video's frames (image files) or a folder of videos (video files "
                            "and frame folders), so some footage would be left out: move the images into a sub-folder "
                            "of their own (one frame folder per video)")
    return footage
