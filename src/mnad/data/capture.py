"""OpenCV's captures of video files: opened whatever their names, their containers' frame counts, the one pass that
decodes a file's frames in order (``decode_frames``) and the check that a file was whole. FFmpeg's and OpenCV's own log
lines are turned off as this module loads (``quiet_opencv``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from mnad.data.footage import VIDEO_EXTENSIONS
from mnad.errors import DataError, printable

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


def opened_capture(path: str | Path, name: str) -> cv2.VideoCapture:
    """``open_capture`` of a video file that must open: a ``DataError`` naming it as ``name`` where it does not."""
    capture = open_capture(path)
    if not capture.isOpened():
        raise DataError(f"{name}: cannot open video (unknown format or damaged file)")
    return capture


def decode_frames(capture: cv2.VideoCapture, name: str | Path,
                  ended: Callable[[], None] | None = None) -> Iterator[np.ndarray]:
    """The one pass that decodes a video file's frames: each frame of an opened ``capture``, as decoded, in order,
    the capture released at the end or where the caller stops. Then ``ended`` (what the caller does once every frame
    is read) and the file's checks: no frame decoded, or fewer than its container reports (``check_whole``), is a
    ``DataError`` naming it as ``name``."""
    count, total, rate, reached = 0, reported_frames(capture), capture.get(cv2.CAP_PROP_FPS), 0.0
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                break
            reached = capture.get(cv2.CAP_PROP_POS_MSEC)  # the last decoded frame's timestamp
            yield image
            count += 1
    finally:
        capture.release()
    if ended is not None:
        ended()
    if count == 0:
        raise DataError(f"{name}: video has no decodable frames")
    check_whole(name, count, total, "truncated or damaged file", fps=rate, reached_ms=reached)
