"""Where frames come from, with the same checks everywhere: a folder of images, a video file, a glob of images, a
camera index or a network stream, decoded with OpenCV.

Every frame comes out as uint8 (H, W, channels), resized to a square ``size`` with bilinear interpolation and in
OpenCV's BGR order, as in the published runs; 16-bit frames (TIFF, PNG) are mapped onto 0..255 by the model's
``model.pixel_range`` (``to_8bit``), which every reader of a model's frames is given (a Video's ``pixel_range``).
Frame files are read in natural order of their names (``2.jpg`` before ``10.jpg``; zero-padded names sort the same
either way); hidden files are skipped.
"""

from __future__ import annotations

import errno
import functools
import glob
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

import cv2
import numpy as np

from mnad.config import MAX_IMAGE_SIZE, check_pixel_range
from mnad.errors import ConfigError, DataError, printable

try:
    import resource
except ImportError:  # not POSIX (Windows)
    resource = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


def quiet_opencv() -> None:
    """FFmpeg's and OpenCV's own log lines off (a damaged file's '[mov,mp4,...] moov atom not found', a camera's V4L2
    warnings): the failures they describe are mnad's to say, once, naming the file (DataError), and their lines before
    it only confused. Called as this module loads, which every reader of footage (every command, the Python API) goes
    through before it opens a video. FFmpeg's level is read from OPENCV_FFMPEG_LOGLEVEL when OpenCV first opens a video
    or a stream (not at import: setting it now works), OpenCV's own is set at once (its variable is read only as cv2
    loads). A user's own OPENCV_FFMPEG_LOGLEVEL or OPENCV_LOG_LEVEL wins, to see their lines when debugging."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


quiet_opencv()

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}
VIDEO_EXTENSIONS = {".avi", ".mp4", ".mov", ".mkv", ".mpg", ".mpeg", ".webm"}


# 16-bit frames whose values span less than this (1/16 of 0..65535) keep at most 16 grey levels in their high byte:
# a 12-bit camera's 0..4095, or radiometric counts in a narrow band such as 7000..9000
NARROW_SPAN = 4096
# frames of a video looked at before its narrow-range warning is decided (2 s at 25 fps), warned where most of them are
# narrow: one frame misleads (a lens cap, a dark scene at the start of a full-range camera's video)
NARROW_FRAMES = 50


@dataclass
class _Span:
    """What ``warn_narrow`` has seen of one video's 16-bit frames so far."""

    frames: int = 0  # frames looked at
    narrow: int = 0  # of them, frames spanning less than NARROW_SPAN
    low: int = 65535  # the values of the narrow frames
    high: int = 0
    first: str = ""  # the first narrow frame's file (or source), named by the warning


_narrow_seen: dict[str, _Span] = {}  # videos and sources not yet decided
_narrow_decided: set[str] = set()  # videos and sources decided (warned or not): once each, not once per frame
_narrow_readers: Counter[str] = Counter()  # frame folders open on each folder: the last one released decides it
# reentrant: a frame folder's release (``release_narrow``) may come from the garbage collector inside a locked section
_narrow_lock = threading.RLock()


def pixel_range_of(value: object) -> tuple[int, ...]:
    """``model.pixel_range`` as readers use it: () or (low, high); a ``ConfigError`` naming it if it is neither."""
    return check_pixel_range(value)


@functools.lru_cache(maxsize=8)
def _range_table(low: int, high: int) -> np.ndarray:
    """uint8 of every 16-bit value: low..high mapped linearly onto 0..255 (rounded), clipped outside."""
    values = (np.arange(65536, dtype=np.float64) - low) * (255.0 / (high - low))
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def suggested_range(low: int, high: int) -> tuple[int, int]:
    """The pixel_range to suggest for 16-bit values seen spanning low..high: a camera's whole N-bit range where the
    values start near 0 and stay under 2**N (10, 12 or 14 bits), else what was seen."""
    for bits in (10, 12, 14):
        if high < 2**bits and low < 2**bits // 4:
            return 0, 2**bits - 1
    return (low, high) if low < high else (max(low - 1, 0), min(high + 1, 65535))


def warn_narrow(image: np.ndarray, source: str | Path, video: str | Path, frames: int | None = None) -> None:
    """Warn, once per ``video``, where its 16-bit frames read without a pixel range use little of 0..65535: their high
    byte, what the model would see, is then nearly uniform (a 12-bit camera's frames nearly black). Decided on the
    first ``NARROW_FRAMES`` frames looked at (all of a video of fewer ``frames``, where its length is known), or on
    those seen when its reading ends before (``finish_narrow``): warned when most of them are narrow. Each costs a min
    and a max until then, nothing after."""
    key = str(video)
    if key in _narrow_decided:
        return
    low, high = int(image.min()), int(image.max())
    with _narrow_lock:
        if key in _narrow_decided:
            return
        seen = _narrow_seen.setdefault(key, _Span())
        seen.frames += 1
        if high - low < NARROW_SPAN:
            seen.narrow += 1
            seen.low, seen.high = min(seen.low, low), max(seen.high, high)
            seen.first = seen.first or str(source)
        if seen.frames < min(NARROW_FRAMES, frames or NARROW_FRAMES) or _narrow_seen.pop(key, None) is None:
            return  # not yet, or decided meanwhile by a release (``release_narrow``) the collector ran in here
        _narrow_decided.add(key)
    _say_narrow(video, seen)


def finish_narrow(video: str | Path) -> None:
    """Decide ``video``'s narrow-range warning (``warn_narrow``) on the 16-bit frames seen of it so far: called where a
    reading of it ends, which may be before the decision point (--max-frames, a camera lost after a few frames, all the
    clips of a dataset read once); nothing where it was decided already or no 16-bit frame was seen. A frame folder's
    reading ends at the latest when the last ``FrameFolder`` open on it is released (``release_narrow``), whatever read
    it (a few clips for figures or int8 calibration, thumbnails)."""
    key = str(video)
    with _narrow_lock:
        seen = _narrow_seen.pop(key, None)
        if seen is None:
            return
        _narrow_decided.add(key)
    _say_narrow(video, seen)


def open_narrow(video: str | Path) -> None:
    """A reader of ``video``'s frames is opened (a ``FrameFolder``); ``release_narrow`` says when it is done."""
    with _narrow_lock:
        _narrow_readers[str(video)] += 1


def release_narrow(video: str | Path) -> None:
    """A reader of ``video`` opened by ``open_narrow`` is done (its ``FrameFolder`` released, or the process ends): where
    it was the last, the warning is decided on the frames seen (``finish_narrow``), no frame read for it."""
    key = str(video)
    with _narrow_lock:
        _narrow_readers[key] -= 1
        last = _narrow_readers[key] <= 0
        if last:
            del _narrow_readers[key]
    if last:
        finish_narrow(key)


def _say_narrow(video: str | Path, seen: _Span) -> None:
    """The warning of a decided video, where most of the frames seen were narrow."""
    if seen.narrow * 2 <= seen.frames:  # most frames have contrast (dark ones at the start are the scene, not the range)
        return
    a, b = suggested_range(seen.low, seen.high)
    log.warning("%s: %d of its first %d 16-bit frames span only %d..%d of 0..65535 (the first of them: %s); read by "
                "their high byte, as no model.pixel_range is set, they keep %d grey levels and the model sees almost "
                "nothing. Train with --set model.pixel_range=[%d,%d] (the values to show as black and white; the model "
                "keeps the setting) (docs/data.md). Said once per video", printable(video), seen.narrow, seen.frames,
                seen.low, seen.high, printable(seen.first), (seen.high >> 8) - (seen.low >> 8) + 1, a, b)


def to_8bit(image: np.ndarray, source: str | Path, pixel_range: tuple[int, ...] = (),
            video: str | Path | None = None, frames: int | None = None) -> np.ndarray:
    """A decoded image as uint8. 8-bit as it is; 16-bit mapped linearly from ``pixel_range`` (low, high) onto 0..255,
    clipped outside it, or, with none set, its high byte (as models trained before the setting saw it), with a
    warning once per ``video`` (default ``source``, of ``frames`` frames where known) where that leaves almost nothing
    to see (``warn_narrow``)."""
    if image.dtype == np.uint16:
        if pixel_range:
            return _range_table(*pixel_range)[image]
        warn_narrow(image, source, source if video is None else video, frames)
        return (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise DataError(f"{source}: unsupported pixel type {image.dtype} (expected 8- or 16-bit integers)")
    if pixel_range:  # the model learnt from 16-bit values mapped by the range: 8-bit values mean something else
        raise DataError(f"{source}: an 8-bit frame, but model.pixel_range = [{pixel_range[0]}, {pixel_range[1]}] "
                        "maps 16-bit frames (the model was trained on 16-bit footage; video files decode to 8 bits): "
                        "give it the camera's 16-bit TIFF/PNG frames, or train a model with model.pixel_range = []")
    return image


def to_channels(image: np.ndarray, channels: int, source: str | Path, pixel_range: tuple[int, ...] = (),
                video: str | Path | None = None, frames: int | None = None) -> np.ndarray:
    """Any decoded image (gray, BGR, BGRA; 8 or 16 bit) -> uint8 (H, W, channels); 16-bit as ``to_8bit`` maps it."""
    image = to_8bit(image, source, pixel_range, video, frames)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[2] not in (1, 3):
        raise DataError(f"{source}: unsupported channel count {image.shape[2]}")
    if channels == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif channels == 1 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[:, :, None]
    return image


def _check_frame_inputs(image: object, size: object, channels: object, source: str | Path) -> None:
    """``prepare_frame``'s arguments, checked before OpenCV sees them (it answers a bad one with a cv2.error or an
    AttributeError): type checks and attribute reads only, as it runs on every frame."""
    # a bool is an Integral, but no count
    if isinstance(size, bool) or not isinstance(size, Integral) or not 1 <= size <= MAX_IMAGE_SIZE:
        raise ConfigError(f"{printable(str(source))}: the frame size must be a whole number from 1 to {MAX_IMAGE_SIZE} "
                          f"(the model's model.image_size), got {printable(repr(size))[:100]}")
    if isinstance(channels, bool) or not isinstance(channels, Integral) or channels not in (1, 3):
        raise ConfigError(f"{printable(str(source))}: the channel count must be 1 or 3 (the model's model.channels), "
                          f"got {printable(repr(channels))[:100]}")
    if image is None:  # what cv2.imread gives for a missing or unreadable file, VideoCapture.read at the end
        raise DataError(f"{printable(str(source))}: no frame (None: the image was not decoded, or the video had ended)")
    if not isinstance(image, np.ndarray):
        raise DataError(f"{printable(str(source))}: a frame must be a numpy array (H x W or H x W x C, as OpenCV "
                        f"decodes it), got a {type(image).__name__}")
    if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
        raise DataError(f"{printable(str(source))}: a frame must be an image of at least 1x1 pixels (H x W or H x W x "
                        f"C), got an array of shape {image.shape}")


def prepare_frame(image: np.ndarray, size: int, channels: int, source: str | Path, pixel_range: Sequence[int] = (),
                  video: str | Path | None = None, frames: int | None = None) -> np.ndarray:
    """A decoded frame as a model reads it: uint8 (size, size, channels), 16-bit mapped by ``pixel_range``
    (``model.pixel_range``; ``to_8bit``), warnings said once per ``video`` (default ``source``) of ``frames`` frames
    (None: a live source, whose length is not known). A ``ConfigError`` for a size or channel count no model has, a
    ``DataError`` naming ``source`` for an image that is none (``None`` from a failed ``cv2.imread``, an empty array)."""
    _check_frame_inputs(image, size, channels, source)
    image = to_channels(image, channels, source, pixel_range_of(pixel_range), video, frames)
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    return resized.reshape(size, size, channels)


def read_image(path: Path) -> np.ndarray:
    """Decode one image file as it is stored (any depth, any channels); a clear error if it cannot be."""
    try:
        data = np.fromfile(path, dtype=np.uint8)  # np.fromfile + imdecode: safe with any characters in the path
    except OSError as exc:
        raise DataError(f"{path}: cannot read frame ({exc.strerror or exc})") from exc
    if data.size == 0:
        raise DataError(f"{path}: frame file is empty (0 bytes)")
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except (cv2.error, MemoryError) as exc:  # e.g. a damaged header claiming a huge size
        raise DataError(f"{path}: not a readable image ({str(exc).strip().splitlines()[-1][:200]})") from exc
    if image is None:
        raise DataError(f"{path}: not a readable image (corrupt, truncated or not an image)")
    return image


def is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def open_capture(path: str | Path) -> cv2.VideoCapture:
    """OpenCV's capture of a local video file, opened or not. OpenCV crashes (SIGSEGV) on a str that is not valid
    UTF-8, as a name with undecodable bytes is, so such a file is opened through a symlink with a plain name, removed
    as soon as the file is open (FFmpeg holds the file itself, not the name)."""
    name = str(path)
    if is_utf8(name):
        return cv2.VideoCapture(name)
    suffix = Path(path).suffix.lower()
    try:
        with tempfile.TemporaryDirectory(prefix="mnad-video-") as tmp:
            alias = Path(tmp) / f"video{suffix if suffix in VIDEO_EXTENSIONS else ''}"
            os.symlink(os.path.abspath(path), alias)
            return cv2.VideoCapture(str(alias))
    except OSError as exc:
        raise DataError(f"{printable(path)}: cannot open a video whose name is not valid UTF-8 ({exc.strerror or exc}); "
                        "rename it") from exc


def reported_frames(capture: cv2.VideoCapture) -> int:
    """The frame count a capture's container reports; 0 where it reports none (cameras, some containers)."""
    frames = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    return int(frames) if 0 < frames < 1e9 else 0


def check_whole(source: str | Path, decoded: int, total: int, why: str, *, fps: float = 0.0, reached_ms: float = 0.0) -> None:
    """A video that reports ``total`` frames but ended well before them was cut short (truncated, damaged, stalled):
    an error, as the run would not see the footage asked for. Containers' counts may be off by a frame or two (5 %
    short is let pass), and where a stream does not record its count (Matroska, WebM) it is the duration times the
    nominal rate ``fps``, which a variable-frame-rate recording does not keep: such a file is whole when its last
    decoded frame's timestamp (``reached_ms``) reaches that duration, whatever the count."""
    if total <= 0 or decoded >= total - max(2, total // 20):
        return
    if fps > 0 and reached_ms > 0:
        length_ms = total / fps * 1000
        if reached_ms >= length_ms - max(2000 / fps, 0.05 * length_ms):  # the last frame starts one frame before the end
            log.info("%s: %d frames decoded where the container estimates %d, over its whole length: a variable frame rate",
                     printable(source), decoded, total)
            return
    raise DataError(f"{printable(source)}: the video was cut short after {decoded} of its {total} frames ({why})")


def stream_url(source: str) -> str:
    """``source`` as OpenCV may be given it: bytes of a URL that are not valid UTF-8 (a surrogate-escaped argument
    would crash OpenCV) percent-encoded, as URLs carry them anyway."""
    if is_utf8(source):
        return source
    return "".join(chr(b) if b < 0x80 else f"%{b:02X}" for b in os.fsencode(source))


SECRET_KEY = re.compile(r"pass|pwd|token|key|secret|auth|sig", re.IGNORECASE)  # query parameters that carry credentials


def shown_source(source: str) -> str:
    """``source`` as messages and outputs show it (``printable``), a URL's password and the values of query parameters
    named like credentials (token, password, key, ...) replaced by '***': summary.json and logs are shared and kept,
    the camera's password is not theirs to hold. Everything else stays, so that two sources are told apart."""
    if "://" not in source:
        return printable(source)
    scheme, rest = source.split("://", 1)
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:  # the password runs to the last '@' of the authority (users put raw '@' in passwords)
        user, host = authority.rsplit("@", 1)
        if ":" in user:
            authority = f"{user.split(':', 1)[0]}:***@{host}"
    if "?" in tail:
        path, query = tail.split("?", 1)
        query, hash_mark, fragment = query.partition("#")
        query = "&".join(f"{k}=***" if (k := part.partition("=")[0]) and "=" in part and SECRET_KEY.search(k) else part
                         for part in query.split("&"))
        tail = f"{path}?{query}{hash_mark}{fragment}"
    return printable(f"{scheme}://{authority}{tail}")


class Video:
    """A named sequence of frames. Subclasses say where the frames come from."""

    name: str
    path: Path
    keeps_frames = False  # frame() reads frames already decoded and kept (a video file's): a cache would copy them
    pixel_range: tuple[int, ...] = ()  # model.pixel_range: how 16-bit frames map onto 0..255 (to_8bit)

    def __len__(self) -> int:
        raise NotImplementedError

    def frame(self, index: int, size: int, channels: int) -> np.ndarray:
        """Frame ``index`` as uint8 (size, size, channels)."""
        raise NotImplementedError

    def expected_frames(self) -> int:
        """Its length as known without decoding a video file (``VideoFile`` overrides it): for planning, not indexing."""
        return len(self)

    def frames(self, start: int, count: int, size: int, channels: int) -> np.ndarray:
        """Frames ``start`` to ``start + count`` as uint8 (count, size, size, channels)."""
        return np.stack([self.frame(i, size, channels) for i in range(start, start + count)])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {len(self)} frames, {self.path})"


def natural_key(name: str) -> tuple:
    """Sort key reading runs of digits as numbers: 'f2.jpg' < 'f10.jpg'."""
    return tuple((0, int(part), part) if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name))


def frame_files(candidates: list[Path], where: str | Path) -> list[Path]:
    """The image files among ``candidates``, in natural order; hidden files skipped, special files refused."""
    files = []
    for p in candidates:
        if p.name.startswith(".") or p.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        try:
            mode = p.stat().st_mode
        except OSError as exc:
            raise DataError(f"{p}: cannot read frame ({exc.strerror or exc})") from exc
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
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.stem))


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
    steps = np.diff(np.array(numbers, dtype=np.int64))
    values, counts = np.unique(steps, return_counts=True)
    step = int(values[counts.argmax()])  # the numbering's usual step (1, or n where every n-th frame was extracted)
    odd = np.flatnonzero(steps != step)
    if step > 0 and odd.size and counts.max() * 2 >= steps.size:
        first = odd[0]
        log.warning("%s: frame numbers skip from %s to %s%s (frames missing?); frames are read by position, so each "
                    "frame after a gap takes the label of its position, not of its number", where,
                    files[first].name, files[first + 1].name, f" and at {odd.size - 1} more places" if odd.size > 1 else "")


class FrameFolder(Video):
    """A folder of image files (or a given list of them), one per frame, in natural name order."""

    def __init__(self, path: str | Path, name: str | None = None, *, files: list[Path] | None = None,
                 pixel_range: Sequence[int] = ()) -> None:
        self.path = Path(path)
        self.name = name or self.path.name
        self.pixel_range = pixel_range_of(pixel_range)
        if files is None:
            if not self.path.is_dir():
                raise DataError(f"{self.path}: frame folder not found")
            files = list(self.path.iterdir())
        self.files = frame_files(files, self.path)
        if not self.files:
            raise DataError(f"{self.path}: no frames (no {'/'.join(sorted(IMAGE_EXTENSIONS))} files)")
        self._shape: tuple[int, int] | None = None
        # a reader may stop before the 16-bit warning's decision point (a few clips): it is decided when the folder
        # is released (weakref.finalize: also at the process's end), on the frames read, none read for it
        open_narrow(self.path)
        weakref.finalize(self, release_narrow, str(self.path))

    def __len__(self) -> int:
        return len(self.files)

    def image(self, index: int) -> np.ndarray:
        """Frame ``index`` as decoded (any size and depth), checked to have the size of the video's first frame."""
        path = self.files[index]
        image = read_image(path)
        if self._shape is None:
            self._shape = image.shape[:2]
        elif image.shape[:2] != self._shape:
            raise DataError(f"{path}: frame is {image.shape[1]}x{image.shape[0]}, the video's first frame is {self._shape[1]}x{self._shape[0]}")
        return image

    def frame(self, index: int, size: int, channels: int, *, reading: int | None = None) -> np.ndarray:
        """Frame ``index``; ``reading``: the frames of it a reader reads (a part: ``FrameRange``), on which the 16-bit
        warning decides where fewer than the folder's (default: all of them)."""
        return prepare_frame(self.image(index), size, channels, self.files[index], self.pixel_range, self.path,
                             len(self.files) if reading is None else min(reading, len(self.files)))


# ------------------------------------------------------------------------------------------------ folders of footage

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


def decode_dir() -> Path:
    """Where video files' decoded frames are written: $TMPDIR if set, else /var/tmp (on disk by convention, where /tmp
    is often a tmpfs held in memory), else the system's temporary folder."""
    if os.environ.get("TMPDIR"):
        return Path(os.environ["TMPDIR"])
    if os.path.isdir("/var/tmp") and os.access("/var/tmp", os.W_OK | os.X_OK):
        return Path("/var/tmp")
    return Path(tempfile.gettempdir())


def in_memory_filesystem(path: Path) -> bool:
    """Whether ``path`` is on a tmpfs or ramfs (Linux's /proc/self/mounts), whose files take memory, not disk."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as handle:
            mounts = [line.split()[1:3] for line in handle if len(line.split()) > 2]
    except OSError:
        return False
    where = os.path.realpath(path)
    inside = [(len(point), kind) for point, kind in mounts
              if where == point or where.startswith(point.rstrip("/") + "/")]
    return bool(inside) and max(inside)[1] in ("tmpfs", "ramfs")


def available_memory() -> int:
    """Bytes of memory the system can give now without swapping (Linux's MemAvailable; else its free pages)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):  # no such sysconf (macOS, Windows): no bound known
        return 1 << 62


def usable_space(folder: Path, what: str | Path) -> tuple[int, str]:
    """(bytes decoded frames may take in ``folder``, the words saying so): its free space, or in a tmpfs, whose files
    take memory, at most half the memory available. A folder that cannot be looked at is a ``DataError`` about
    ``what`` (a video, a dataset's folder)."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        raise DataError(f"{printable(what)}: cannot write its decoded frames to {printable(folder)} "
                        f"({exc.strerror or exc}); set TMPDIR to a writable folder") from exc
    if in_memory_filesystem(folder):  # what is free there may not be in memory
        free = min(free, available_memory() // 2)
        return free, f"{printable(folder)} is held in memory (tmpfs), {free / 1e9:.1f} GB of which can be used"
    return free, f"{printable(folder)} has {free / 1e9:.1f} GB free"


def check_decode_room(videos: Sequence[Video], size: int, channels: int, where: str | Path | None = None) -> None:
    """One check, before any of them is decoded, that the video files among ``videos`` (whole, each of them, as
    ``VideoFile`` decodes them) fit in ``decode_dir`` at ``size``: a folder of videos that together do not fit would
    otherwise fail at the first that does not, hours of decoding in. Frame counts are the videos' own where counted,
    else their containers' (read without decoding); a video already decoded at that size needs nothing more. Said
    as one ``DataError`` naming ``where`` (default: the folder holding the videos), the space needed and available
    and TMPDIR. Each video is checked again when decoded (the disk may fill meanwhile)."""
    files = {id(v): v for v in (getattr(v, "video", v) for v in videos)  # a FrameRange decodes its whole video
             if isinstance(v, VideoFile) and (size, channels) not in v._decoded}
    if not files:
        return
    frames = sum(v.expected_frames() for v in files.values())
    need = frames * size * size * channels
    folder = decode_dir()
    if where is None:
        where = os.path.commonpath([os.path.abspath(v.path.parent) for v in files.values()])
    free, said = usable_space(folder, where)
    if need > free:
        tmpdir = f"TMPDIR is {printable(os.environ['TMPDIR'])}" if os.environ.get("TMPDIR") else "TMPDIR is not set"
        raise DataError(f"{printable(where)}: its {len(files)} video files decoded at {size}x{size} ({frames} frames) need "
                        f"{need / 1e9:.1f} GB on disk, and {said} ({tmpdir}); set TMPDIR to a folder on a disk with room "
                        "(or use a smaller model.image_size, or fewer videos)")


def raise_open_file_limit() -> None:
    """The soft limit on open files raised to the hard one, once: each decoded video file holds one open file, and a
    folder of more than ~1000 short clips would pass the usual soft limit (1024) well before the hard one."""
    global _files_raised
    if _files_raised or resource is None:
        return
    _files_raised = True
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError):  # not allowed here: the limit stays, and reaching it is said as such
        pass


_files_raised = False


class DecodedFrames:
    """The decoded frames of one video at one size: uint8 (size, size, channels) each, in order, in a temporary file
    without a name (removed by the system when the process ends, however it ends), read back at random."""

    def __init__(self, folder: Path, size: int, channels: int) -> None:
        self.shape = (size, size, channels)
        self.frame_bytes = size * size * channels
        self.count = 0
        raise_open_file_limit()
        self.file = tempfile.TemporaryFile(dir=folder, prefix="mnad-frames-")
        self._lock = threading.Lock()

    def append(self, frame: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(frame).data)
        self.count += 1

    def finish(self) -> None:
        self.file.flush()  # written: later reads see every frame

    def read(self, index: int, count: int = 1) -> np.ndarray:
        """Frames ``index`` to ``index + count`` as (count, size, size, channels): one read, as they lie in order."""
        if not (0 <= index and count >= 1 and index + count <= self.count):
            raise IndexError(index if index < 0 or index >= self.count else index + count - 1)
        out = np.empty((count, *self.shape), np.uint8)  # a fresh array: callers may change it, the stored frame stays
        offset = index * self.frame_bytes
        if hasattr(os, "preadv"):  # no shared file position: safe across threads and forked DataLoader workers
            got = os.preadv(self.file.fileno(), [out], offset)
        else:
            with self._lock:
                self.file.seek(offset)
                got = self.file.readinto(out)
        if got != out.nbytes:
            raise OSError(f"read {got} of {count} frames' {out.nbytes} bytes")
        return out

    def close(self) -> None:
        self.file.close()


class VideoFile(Video):
    """A video file (.avi, .mp4, ...). Video codecs cannot seek cheaply and exactly, so the first frame asked at a size
    decodes the whole video, once, into a temporary file on disk (``decode_dir``), from which frames are then read at
    random: the decoded frames of an hour of footage at 256x256 (17.7 GB) do not fit in memory. The file is checked
    to fit (a ``DataError`` naming the video and the folder if not) and lasts as long as this object.

    Its length is the count of frames that decode (containers' counts are often wrong), so it costs a decode. A
    caller that will read every frame at one size says so with ``decode_as`` (size, channels): the length is then
    counted by that decode to disk, one pass (training, evaluation). Without it, the length asked before any frame is
    counted by a pass of its own (a caller that needs only an estimate asks ``expected_frames``: the container's, no
    decode), and the decode is a second; a process told the count by the one that decoded it (``counted_elsewhere``: torchrun's ranks) makes none."""

    keeps_frames = True

    def __init__(self, path: str | Path, name: str | None = None, *, pixel_range: Sequence[int] = (),
                 decode_as: tuple[int, int] | None = None) -> None:
        self.path = Path(path)
        self.name = name or self.path.stem
        self.pixel_range = pixel_range_of(pixel_range)  # OpenCV decodes video to 8 bits: a range set is refused
        self.decode_as = decode_as
        if not self.path.is_file():
            raise DataError(f"{self.path}: video file not found")
        self._decoded: dict[tuple[int, int], DecodedFrames] = {}  # by (size, channels): a second size keeps the first
        self._count: int | None = None
        self._reported: int | None = None  # the container's count (0: none), read once

    def __getstate__(self) -> dict:
        # an open file does not pickle (a spawned worker): the copy decodes again when first read
        return {**self.__dict__, "_decoded": {}}

    def _open(self) -> cv2.VideoCapture:
        capture = open_capture(self.path)
        if not capture.isOpened():
            raise DataError(f"{printable(self.path)}: cannot open video (unknown format or damaged file)")
        return capture

    def _room(self, folder: Path, frames: int, frame_bytes: int, size: int) -> None:
        """A clear error, before decoding, where the decoded frames would not fit in ``folder``."""
        need = frames * frame_bytes
        free, where = usable_space(folder, self.path)
        if need > free:
            raise DataError(f"{printable(self.path)}: its {frames} frames decoded at {size}x{size} need "
                            f"{need / 1e9:.1f} GB, and {where}; set TMPDIR to a folder on a disk with room "
                            "(or use a smaller model.image_size)")

    def expected_frames(self) -> int:
        """The frames its decode will write: its count where counted, else its container's (no decode; 0 if none)."""
        if self._count is not None:
            return self._count
        if self._reported is None:
            capture = self._open()
            self._reported = reported_frames(capture)
            capture.release()
        return self._reported

    def counted_elsewhere(self, count: int) -> None:
        """Its length as another process counted it by its decode (the torchrun rank that scores it), for a process
        that needs the count (labels, the order of the scores) but not the frames: it is not decoded here for it. Were
        it decoded here later, the decode is checked against this count."""
        if self._count is None:
            self._count = count

    def _write_error(self, folder: Path, exc: OSError, frames: DecodedFrames) -> DataError:
        return DataError(f"{printable(self.path)}: cannot write its decoded frames to {printable(folder)} "
                         f"({exc.strerror or exc}, after {frames.count} frames of {frames.frame_bytes / 1e6:.2f} MB); "
                         "set TMPDIR to a folder on a disk with room")

    def _decode(self, size: int, channels: int) -> DecodedFrames:
        found = self._decoded.get((size, channels))
        if found is not None:
            return found
        capture, reached, frames = self._open(), 0.0, None
        total, rate = reported_frames(capture), capture.get(cv2.CAP_PROP_FPS)
        folder = decode_dir()
        try:
            self._room(folder, self._count or total, size * size * channels, size)
            try:
                frames = DecodedFrames(folder, size, channels)
            except OSError as exc:
                if exc.errno == errno.EMFILE:
                    raise DataError(f"{printable(self.path)}: too many video files open at once (each decoded video "
                                    "holds one file; the limit on open files is reached): raise it (ulimit -n), or "
                                    "convert the videos to frame folders") from exc
                raise DataError(f"{printable(self.path)}: cannot write its decoded frames to {printable(folder)} "
                                f"({exc.strerror or exc}); set TMPDIR to a writable folder") from exc
            while True:
                ok, image = capture.read()
                if not ok:
                    break
                frame = prepare_frame(image, size, channels, self.path, self.pixel_range)
                reached = capture.get(cv2.CAP_PROP_POS_MSEC)
                try:
                    frames.append(frame)
                except OSError as exc:  # the disk filled up meanwhile (other files, a count that was off)
                    raise self._write_error(folder, exc, frames) from exc
            finish_narrow(self.path)  # all its frames seen: a 16-bit one's warning decides (a video of fewer than 50)
            try:
                frames.finish()
            except OSError as exc:  # the last buffered frames
                raise self._write_error(folder, exc, frames) from exc
            if not frames.count:
                raise DataError(f"{self.path}: video has no decodable frames")
            check_whole(self.path, frames.count, total, "truncated or damaged file", fps=rate, reached_ms=reached)
            if self._count is not None and frames.count != self._count:  # the clips were indexed by that count
                raise DataError(f"{printable(self.path)}: {frames.count} frames decode but {self._count} were counted "
                                "(a damaged file: frames that can be skipped but not decoded)")
        except BaseException:
            if frames is not None:
                frames.close()
            raise
        finally:
            capture.release()
        self._count = frames.count
        self._decoded[(size, channels)] = frames
        return frames

    def __len__(self) -> int:
        if self._count is None and self.decode_as is not None:
            self._decode(*self.decode_as)  # counts as it decodes
        if self._count is None:  # count by grabbing: container frame counts are often wrong
            capture, count, reached = self._open(), 0, 0.0
            total, rate = reported_frames(capture), capture.get(cv2.CAP_PROP_FPS)
            while capture.grab():
                count += 1
                reached = capture.get(cv2.CAP_PROP_POS_MSEC)
            capture.release()
            if count == 0:
                raise DataError(f"{self.path}: video has no decodable frames")
            check_whole(self.path, count, total, "truncated or damaged file", fps=rate, reached_ms=reached)
            self._count = count
        return self._count

    def frame(self, index: int, size: int, channels: int) -> np.ndarray:
        return self.frames(index, 1, size, channels)[0]

    def frames(self, start: int, count: int, size: int, channels: int) -> np.ndarray:
        decoded = self._decode(size, channels)
        try:
            return decoded.read(start, count)
        except OSError as exc:
            raise DataError(f"{printable(self.path)}: cannot read back its decoded frames {start}-{start + count - 1} "
                            f"({exc.strerror or exc})") from exc


class FrameRange(Video):
    """Frames ``start:stop`` of another video: the held-out tail of own footage, kept for calibration."""

    def __init__(self, video: Video, start: int, stop: int) -> None:
        self.video, self.start, self.stop = video, start, stop
        self.name, self.path = f"{video.name}[{start}:{stop}]", video.path
        self.keeps_frames = video.keeps_frames
        self.pixel_range = video.pixel_range  # frames are the video's, mapped as it maps them

    def __len__(self) -> int:
        return self.stop - self.start

    def frame(self, index: int, size: int, channels: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(index)
        if isinstance(self.video, FrameFolder):  # a part read alone (calibration's held-out tail): its 16-bit warning
            # decides on the part, not after frames of the folder this reader never reads
            return self.video.frame(self.start + index, size, channels, reading=len(self))
        return self.video.frame(self.start + index, size, channels)

    def frames(self, start: int, count: int, size: int, channels: int) -> np.ndarray:
        if not (0 <= start and count >= 1 and start + count <= len(self)):
            raise IndexError(start if start < 0 or start >= len(self) else start + count - 1)
        if isinstance(self.video, FrameFolder):  # frame by frame, each as ``frame`` reads it
            return Video.frames(self, start, count, size, channels)
        return self.video.frames(self.start + start, count, size, channels)


def footage_span(video: Video) -> tuple[str, int, int]:
    """(absolute path, first frame, end frame) of the footage a video covers: what training records and calibration
    compares, wherever each is run from."""
    if isinstance(video, FrameRange):
        return str(Path(video.path).resolve()), video.start, video.stop
    return str(Path(video.path).resolve()), 0, len(video)


def spans_overlap(a: tuple[str, int, int], b: tuple[str, int, int]) -> bool:
    return a[0] == b[0] and a[1] < b[2] and b[1] < a[2]


def span_intersection(a: tuple[str, int, int], b: tuple[str, int, int]) -> tuple[str, int, int] | None:
    """The footage two spans both cover (None: none): what calibration footage shares with training's."""
    return (a[0], max(a[1], b[1]), min(a[2], b[2])) if spans_overlap(a, b) else None


def span_text(span: tuple[str, int, int]) -> str:
    """A footage span as a calibration records it and messages show it: 'path[first:end]'."""
    return f"{span[0]}[{span[1]}:{span[2]}]"


def parse_span(text: str) -> tuple[str, int, int] | None:
    """The span ``span_text`` wrote (None: not one)."""
    match = re.fullmatch(r"(.*)\[(\d+):(\d+)\]", text, flags=re.DOTALL)
    return (match[1], int(match[2]), int(match[3])) if match else None


def open_video(path: str | Path, pixel_range: Sequence[int] = ()) -> Video:
    """A frame folder or a video file, chosen by what ``path`` is, its 16-bit frames mapped by ``pixel_range``."""
    path = Path(path)
    if path.is_dir():
        return FrameFolder(path, pixel_range=pixel_range)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return VideoFile(path, pixel_range=pixel_range)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    raise DataError(f"{path}: neither a frame folder nor a video file ({'/'.join(sorted(VIDEO_EXTENSIONS))})")


def check_pixel_ranges(videos: Sequence[Video], pixel_range: object) -> None:
    """Refuse videos made by hand (``open_video(p)``, ``split_videos(...)`` without the range) that would read 16-bit
    frames otherwise than the model does: its thresholds or figures would come from frames it never saw."""
    wanted = pixel_range_of(pixel_range)
    wrong = [v for v in videos if tuple(getattr(v, "pixel_range", ())) != wanted]
    if wrong:
        raise ConfigError(f"{printable(wrong[0].name)}{f' and {len(wrong) - 1} other videos' if len(wrong) > 1 else ''}: read "
                          f"with pixel_range {list(getattr(wrong[0], 'pixel_range', ()))}, but the model's model.pixel_range "
                          f"is {list(wanted)}: open them with it (open_video(path, config.model.pixel_range)) or pass paths")


# ------------------------------------------------------------------------------------------------------ streams

LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
MIN_FPS, MAX_FPS = 1e-4, 1000.0  # one frame in ~3 hours (time-lapse) .. high-speed cameras


def valid_fps(rate: float) -> bool:
    """Whether a frame rate (a container's, which may be 0, NaN or nonsense) is one mnad takes (``check_fps``'s range)."""
    return MIN_FPS <= rate <= MAX_FPS


MAX_WAIT = 86400.0  # seconds: a day; larger timeouts are typos (and overflow OpenCV's int milliseconds)
STEADY_SECONDS = 60.0  # a live connection that gave frames this long was healthy: its loss starts a fresh reconnect budget


@dataclass
class RawFrame:
    image: np.ndarray  # as decoded (BGR or gray, any size)
    time: float  # seconds from the start of the source
    fresh: bool = False  # the first frame after a reconnection: not consecutive with the frame before it


def check_fps(fps: float, name: str = "fps") -> None:
    """A frame rate a footage can have, else one ``DataError`` naming ``name``: what the caller passed it as (a
    function's argument, a field, with the CLI option where one sets it: 'fps (SourceOptions.fps, --fps)'). Bounded:
    timestamps are index / fps (1e-300 overflows them to inf, which summary.json cannot hold)."""
    if isinstance(fps, bool) or not isinstance(fps, Real) or not valid_fps(fps):  # also refuses NaN
        raise DataError(f"{name} must be > 0: a frame rate from {MIN_FPS:g} to {MAX_FPS:g} frames per second, "
                        f"got {printable(repr(fps))[:80]}")


@dataclass
class SourceOptions:
    fps: float = 25.0  # frame rate of frame folders and globs (for timestamps and the annotated video)
    reconnects: int = 3  # times a live source is reopened after it fails or stalls
    retry_delay: float = 1.0  # seconds between reconnection attempts
    open_timeout: float = 5.0  # seconds a live source may take to open
    read_timeout: float = 5.0  # seconds a live source may stay silent before it counts as stalled

    def __post_init__(self) -> None:
        # each a real number (a bool, a string or None is no count of seconds), NaN refused by the comparisons; each
        # error names the one option that is wrong
        # as API callers (SourceOptions) and the CLI (its options fill these fields) each set them
        names = {"fps": "fps (SourceOptions.fps, --fps)", "reconnects": "reconnects (SourceOptions.reconnects, --reconnects)",
                 "retry_delay": "the retry delay (SourceOptions.retry_delay)",
                 "open_timeout": "open_timeout (SourceOptions.open_timeout, --open-timeout)",
                 "read_timeout": "read_timeout (SourceOptions.read_timeout, --read-timeout)"}
        for name, option in names.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real):
                raise DataError(f"{option} must be a number, got {printable(repr(value))[:80]}")
        check_fps(self.fps, names["fps"])
        # a whole count: a NaN or fractional one would never be reached (``failures >= reconnects``), reconnecting for ever
        if not isinstance(self.reconnects, Integral) or self.reconnects < 0:
            raise DataError(f"{names['reconnects']} must be a whole number >= 0, got {self.reconnects!r}")
        if not 0 <= self.retry_delay <= MAX_WAIT:
            raise DataError(f"{names['retry_delay']} must be from 0 to {MAX_WAIT:g} seconds, got {self.retry_delay!r}")
        for name in ("open_timeout", "read_timeout"):  # OpenCV takes int milliseconds
            if not 0 < getattr(self, name) <= MAX_WAIT:
                raise DataError(f"{names[name]} must be > 0 and at most {MAX_WAIT:g} seconds, got {getattr(self, name)!r}")


CAMERA_INDEXES = 100  # camera indexes are 0..99: OpenCV reads an index of 100 or more as a backend's code plus an
# index (cv2.CAP_V4L2 + 3 is 203, camera 3 through V4L2), so a larger number names no camera; it is a typo or a path


def camera_index(source: str) -> int | None:
    """The camera index ``source`` names, or None: it names a path or a URL. The one rule, for every command and
    message: an existing file or folder is a path whatever its name (a frame folder named ``20241130``); ASCII digits
    that name no path are a camera index from 0 to CAMERA_INDEXES - 1; other digits are refused (``DataError``
    naming them), since they are neither."""
    if not re.fullmatch(r"[0-9]+", source) or os.path.lexists(source):
        return None
    index = int(source)
    if index >= CAMERA_INDEXES:
        raise DataError(f"{printable(source)}: no such file or folder, and not a camera index (0 to {CAMERA_INDEXES - 1})")
    return index


def is_live(source: str) -> bool:
    """A camera index (``camera_index``) or a URL: frames arrive as they are captured."""
    return "://" in source or camera_index(source) is not None


def videos_not_frames(footage: Footage, *, pattern: bool = False) -> None:
    """Refuse, as a source, a folder (or a ``pattern``'s matches) that holds no frames but videos: video files, or
    frame folders, each a source of its own (``mnad detect`` reads one video per source); the message says how to pass
    them (a pattern was quoted where the shell should have listed its matches)."""
    if footage.images or not (held := footage.videos_held()):
        return
    if pattern:
        what, how = "matches", "leave the pattern unquoted, so that the shell passes each as a source of its own"
    else:
        folder = footage.where.rstrip("/")
        words = [f"{folder}/*{suffix}" for suffix in sorted({p.suffix for p in footage.videos})]
        folders = [f"{folder}/*/"] if footage.footage_folders() else []
        what, how = "holds", f"pass them as sources ({' '.join(words + folders)}, unquoted)"
    raise DataError(f"{footage.where}: {what} {' and '.join(held)}, not the frames of one video; each video is a source "
                    f"of its own: {how}, each scored into a folder of its own under --out, or pass one at a time")


class FrameSource:
    """Raw frames of a video file, a frame folder, a glob of images, a camera index or a stream URL, as they come.

    Constructing it checks what can be checked without reading (the file or folder exists, the URL's scheme is known);
    iterating it opens the source. A live source has open and read timeouts and a bounded number of reconnections;
    one that gives no frame at all, or is lost for good, raises ``DataError`` (after yielding what it gave).
    URLs are never treated as globs. ``fps`` is the source's frame rate (the container's, for a video file).
    """

    def __init__(self, source: str, options: SourceOptions | None = None) -> None:
        self.source, self.options = source, options or SourceOptions()
        self.name = shown_source(source)  # what messages and outputs say: a URL's password hidden
        self.fps = self.options.fps
        self.camera = None if "://" in source else camera_index(source)  # decided once: the path may appear later
        self.live = self.camera is not None or "://" in source
        self.clocked = False  # frame times are read off the wall clock (a camera or stream without a frame count)
        self.clock_start: float | None = None  # then: the wall-clock time (time.time()) of time 0
        self.frames: FrameFolder | None = None
        if self.live:
            scheme = source.split("://", 1)[0].lower() if "://" in source else ""
            if scheme and scheme not in LIVE_SCHEMES:
                raise DataError(f"{self.name}: unknown stream scheme {scheme!r} (known: {', '.join(LIVE_SCHEMES)})")
            return
        path = Path(source)
        if path.is_dir():
            videos_not_frames(footage_in(path))
            self.frames = FrameFolder(path)
        elif not path.exists() and any(c in source for c in "*?["):
            matches = [Path(p) for p in sorted(glob.glob(source))]
            if not matches:
                raise DataError(f"{source}: no files match this pattern")
            # a pattern is one video's frames: one that matches videos or frame folders was quoted where the shell
            # should have listed them, one source each
            videos_not_frames(footage_in(source, matches), pattern=True)
            self.frames = FrameFolder(Path(source).parent, name=Path(source).parent.name, files=matches)
        elif not path.is_file():
            raise DataError(f"{source}: no such video file, frame folder, camera index or URL")
        elif path.suffix.lower() not in VIDEO_EXTENSIONS:
            raise DataError(f"{source}: not a video file ({'/'.join(sorted(VIDEO_EXTENSIONS))})")

    def __iter__(self) -> Iterator[RawFrame]:
        if self.frames is not None:
            for i in range(len(self.frames)):
                yield RawFrame(self.frames.image(i), i / self.fps)
        elif not self.live:
            yield from self._video_file()
        else:
            yield from self._live()

    def _video_file(self) -> Iterator[RawFrame]:
        capture = open_capture(self.source)
        if not capture.isOpened():
            raise DataError(f"{self.name}: cannot open video (unknown format or damaged file)")
        rate = capture.get(cv2.CAP_PROP_FPS)
        self.fps = rate if valid_fps(rate) else self.options.fps
        if not valid_fps(rate):  # its frames' times, events' and the annotated video's come from the rate used
            log.warning("%s: the file reports a frame rate of %g frames per second, outside the %g to %g taken; its frames "
                        "are timed at --fps %g instead (set --fps to the footage's true rate)", self.name, rate, MIN_FPS,
                        MAX_FPS, self.fps)
        count, total, reached = 0, reported_frames(capture), 0.0
        try:
            while True:
                ok, image = capture.read()
                if not ok:
                    break
                reached = capture.get(cv2.CAP_PROP_POS_MSEC)
                yield RawFrame(image, count / self.fps)
                count += 1
        finally:
            capture.release()
        if count == 0:
            raise DataError(f"{self.name}: video has no decodable frames")
        check_whole(self.name, count, total, "truncated or damaged file", fps=rate, reached_ms=reached)

    def _open_live(self) -> cv2.VideoCapture:
        o = self.options
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(o.open_timeout * 1000), cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(o.read_timeout * 1000)]
        if self.camera is not None:
            return cv2.VideoCapture(self.camera, cv2.CAP_ANY, params)
        return cv2.VideoCapture(stream_url(self.source), cv2.CAP_FFMPEG, params)

    def _live(self) -> Iterator[RawFrame]:
        # Reconnecting must end when the source keeps failing. The failure count restarts only after a connection that
        # gave frames for STEADY_SECONDS: a camera that drops once a day reconnects for ever, one that drops every few
        # frames uses up --reconnects. A source that reports a frame count is a file served over the network, not a
        # camera: it is read once and ends at its end like a file (reopened, it would replay from frame 0 for ever);
        # cut short (truncated, stalled) it is an error, as the run did not score the footage asked for.
        o = self.options
        failures, count, started = 0, 0, time.monotonic()
        self.clock_start = time.time()  # the wall clock at time 0: times are seconds after it, measured monotonically
        while True:
            capture, total, last, before, reached, rate = self._open_live(), 0, 0.0, count, 0.0, 0.0
            first: float | None = None  # time of this connection's first frame
            opened = capture.isOpened()  # what the last attempt's failure says: it could not open, or it opened and failed
            try:
                if opened:
                    rate = capture.get(cv2.CAP_PROP_FPS)
                    self.fps = rate if valid_fps(rate) else o.fps
                    total = reported_frames(capture)  # cameras report none
                    self.clocked = total == 0
                    while True:
                        ok, image = capture.read()  # returns within read_timeout on a silent stream
                        if not ok or image is None:
                            break
                        last, reached = time.monotonic(), capture.get(cv2.CAP_PROP_POS_MSEC)
                        fresh, first = first is None and count > 0, last if first is None else first
                        # a file's frames come as fast as they decode: their time is their place in the file
                        yield RawFrame(image, count / self.fps if total > 0 else last - started, fresh)
                        count += 1
            finally:
                capture.release()
            if total > 0 and first is not None:
                check_whole(self.name, count - before, total,
                            f"the connection closed or stayed silent for --read-timeout {o.read_timeout:g} s", fps=rate,
                            reached_ms=reached)
                return
            if first is not None and last - first >= STEADY_SECONDS:
                failures = 0
            if failures >= o.reconnects:
                what = "gave no frames" if count == 0 else f"was lost after {count} frames"
                why = (f"could not open it: refused, or no answer within --open-timeout {o.open_timeout:g} s" if not opened
                       else f"opened it, then it closed or stayed silent for --read-timeout {o.read_timeout:g} s")
                raise DataError(f"{self.name}: the source {what} (the last attempt {why}; {o.reconnects} reconnection "
                                "attempts)")
            failures += 1
            log.warning("%s: stream lost or not open, reconnecting (%d/%d)", self.name, failures, o.reconnects)
            time.sleep(o.retry_delay)
