"""Raw frames as ``mnad detect`` reads them, from a video file, a frame folder, a glob of images, a camera index or a
network stream (``FrameSource``), with live sources' timeouts and reconnections (``SourceOptions``) and the rules for
what a source string names (``camera_index``, ``is_live``) and how it is shown (``shown_source``).
"""

from __future__ import annotations

import glob
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

import cv2
import numpy as np

from mnad.data.capture import check_whole, decode_frames, is_utf8, opened_capture, reported_frames
from mnad.data.footage import VIDEO_EXTENSIONS, Footage, footage_in
from mnad.data.videos import FrameFolder
from mnad.data.watched_capture import WatchedCapture
from mnad.errors import DataError, printable

log = logging.getLogger(__name__)


LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
MIN_FPS, MAX_FPS = 1e-4, 1000.0  # one frame in ~3 hours (time-lapse) .. high-speed cameras


def valid_fps(rate: float) -> bool:
    """Whether a frame rate (a container's, which may be 0, NaN or nonsense) is one mnad takes (``check_fps``'s range)."""
    return MIN_FPS <= rate <= MAX_FPS


MAX_WAIT = 86400.0  # seconds: a day; larger timeouts are typos (and overflow OpenCV's int milliseconds)
MIN_WAIT = 0.001  # seconds: OpenCV's timeouts are whole milliseconds, and 0 of them is no timeout at all (waits for ever)
STEADY_SECONDS = 60.0  # a live connection that gave frames this long was healthy: its loss starts a fresh reconnect budget


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
        for name in ("open_timeout", "read_timeout"):  # OpenCV takes whole milliseconds (``milliseconds``)
            if not MIN_WAIT <= getattr(self, name) <= MAX_WAIT:
                raise DataError(f"{names[name]} must be from {MIN_WAIT:g} to {MAX_WAIT:g} seconds (OpenCV counts it in "
                                f"whole milliseconds, 0 of them being no timeout), got {getattr(self, name)!r}")


def milliseconds(seconds: float) -> int:
    """A timeout of ``seconds`` (``SourceOptions``' range: MIN_WAIT to MAX_WAIT) as OpenCV's ``*_TIMEOUT_MSEC`` take it:
    whole milliseconds, never 0, which OpenCV reads as no timeout (was: ``int(seconds * 1000)``, 0 below 1 ms: a
    stream that went silent was waited on for ever)."""
    return max(1, round(seconds * 1000))


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
        # a file's, frame folder's or glob's frames before this position are not given (``mnad detect --resume``
        # continues there; a video file's are decoded and dropped: seeking is not frame-exact), nor a file's served over
        # the network (a URL whose stream reports a frame count); a stream that reports none is refused with one set
        self.start = 0
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
            for i in range(self.start, len(self.frames)):
                yield RawFrame(self.frames.image(i), i / self.fps)
        elif not self.live:
            yield from self._video_file()
        else:
            yield from self._live()

    def _video_file(self) -> Iterator[RawFrame]:
        capture = opened_capture(self.source, self.name)
        rate = capture.get(cv2.CAP_PROP_FPS)
        self.fps = rate if valid_fps(rate) else self.options.fps
        if not valid_fps(rate):  # its frames' times, events' and the annotated video's come from the rate used
            log.warning("%s: the file reports a frame rate of %g frames per second, outside the %g to %g taken; its frames "
                        "are timed at --fps %g instead (set --fps to the footage's true rate)", self.name, rate, MIN_FPS,
                        MAX_FPS, self.fps)
        decoded = 0
        for count, image in enumerate(decode_frames(capture, self.name)):
            decoded = count + 1
            if count >= self.start:
                yield RawFrame(image, count / self.fps)
        if decoded < self.start:  # a resumed run's file, now shorter than what the earlier run took
            raise DataError(f"{self.name}: ended after {decoded} frames, before frame {self.start} where it was to continue "
                            "(--resume): not the footage the earlier run scored")

    def _open_live(self) -> cv2.VideoCapture | WatchedCapture:
        o = self.options
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, milliseconds(o.open_timeout),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, milliseconds(o.read_timeout)]
        if self.camera is None:  # FFmpeg keeps both timeouts itself
            return cv2.VideoCapture(stream_url(self.source), cv2.CAP_FFMPEG, params)
        camera = self.camera

        def open_camera() -> cv2.VideoCapture:
            capture = cv2.VideoCapture(camera, cv2.CAP_ANY, params)
            if capture.isOpened():
                return capture
            capture.release()
            # OpenCV refuses to open a camera whose backend does not take these timeouts (its V4L2, the usual one on
            # Linux, takes neither): opened without them
            return cv2.VideoCapture(camera, cv2.CAP_ANY)

        # every camera under mnad's own timeouts: a backend that takes the parameters may still not keep them (was: a
        # camera opened with them was read with no watch of mnad's)
        return WatchedCapture(open_camera, o.open_timeout, o.read_timeout)

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
                    if self.start and not total:  # --resume of a file served over the network, now a live stream
                        raise DataError(f"{self.name}: reports no frame count (a live stream), but the earlier run scored "
                                        "it as a file served over the network, to continue at frame "
                                        f"{self.start} (--resume): not the footage it scored; start afresh with --overwrite")
                    while True:
                        ok, image = capture.read()  # returns within read_timeout on a silent stream
                        if not ok or image is None:
                            break
                        last, reached = time.monotonic(), capture.get(cv2.CAP_PROP_POS_MSEC)
                        fresh, first = first is None and count > 0, last if first is None else first
                        # a file's frames come as fast as they decode: their time is their place in the file; a resumed
                        # one's before ``start`` are decoded and dropped, as a local file's
                        if count >= self.start:
                            yield RawFrame(image, count / self.fps if total > 0 else last - started, fresh)
                        count += 1
            finally:
                capture.release()
            if total > 0 and first is not None:
                check_whole(self.name, count - before, total,
                            f"the connection closed or stayed silent for --read-timeout {o.read_timeout:g} s", fps=rate,
                            reached_ms=reached)
                if count < self.start:  # a resumed run's file, now shorter than what the earlier run took
                    raise DataError(f"{self.name}: ended after {count} frames, before frame {self.start} where it was to "
                                    "continue (--resume): not the footage the earlier run scored")
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
