"""How a decoded image becomes the frame a model reads: every frame comes out as uint8 (H, W, channels), resized to a
square ``size`` with bilinear interpolation and in OpenCV's BGR order, as in the published runs; 16-bit frames (TIFF,
PNG) are mapped onto 0..255 by the model's ``model.pixel_range`` (``to_8bit``), which every reader of a model's frames
is given (a Video's ``pixel_range``), and a 16-bit video read without one whose values use little of 0..65535 is
warned about, once (``warn_narrow``).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import cv2
import numpy as np

from mnad.config import MAX_IMAGE_SIZE, check_pixel_range
from mnad.errors import ConfigError, DataError, printable

log = logging.getLogger(__name__)


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
            video: str | Path | None = None, frames: int | None = None, *, warn: bool = True) -> np.ndarray:
    """A decoded image as uint8. 8-bit as it is; 16-bit mapped linearly from ``pixel_range`` (low, high) onto 0..255,
    clipped outside it, or, with none set, its high byte (as models trained before the setting saw it), with a
    warning once per ``video`` (default ``source``, of ``frames`` frames where known) where that leaves almost nothing
    to see (``warn_narrow``). ``warn=False`` for a frame already read for the model (a picture of it): counted
    twice, a video's warning would be decided on half the frames it should."""
    if image.dtype == np.uint16:
        if pixel_range:
            return _range_table(*pixel_range)[image]
        if warn:
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
