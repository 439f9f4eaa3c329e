"""The annotated video of a ``mnad detect`` run (``--save-video``): one source's pictures written as Matroska files of
a bounded length, each read back when it closes, the oldest deleted past ``--video-keep`` (``SegmentedVideo``), at a
rate the encoder takes (``encoder_rate``). The pictures themselves are drawn by ``mnad.annotate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mnad.errors import DataError, os_reason
from mnad.outputs.detect_folder import OldestFirst
from mnad.outputs.names import ANNOTATED_DIR, ANNOTATED_VIDEO, VIDEO_SEGMENT, segment_name

if TYPE_CHECKING:
    import cv2

MIN_VIDEO_FPS = 1.0  # the annotated video plays a time-lapse (--fps 0.001) at this rate: mp4v refuses rates below about
# 0.01 frames/s (the writer would not open), and slower is no video to watch; each picture carries its own time
MAX_VIDEO_FPS = 1000.0  # and at most this: a camera may claim 90,000 frames/s (an RTSP clock), two frames a microsecond
# apart measure no rate, and beyond 65,535 the encoder takes none (``encoder_rate``)
VIDEO_SEGMENT_SECONDS = 600.0  # the annotated video is written as files of this much video (at the rate it plays): each
# closed file is read back (a full disk is found then, not at the run's end), a run killed by SIGKILL, a power cut or the
# OOM killer loses at most the open file's unwritten tail (Matroska: outputs.VIDEO_SUFFIX), no file grows without bound,
# and --video-keep can delete the oldest. 10 minutes (15,000 frames at 25 fps) keeps the files few (144 a day), as CCTV
# recorders do
FIRST_FILE_SECONDS = 60.0  # a camera's first annotated file plays at the rate it claims (nothing is measured yet), which
# may be off many times over: it closes after at most this much of its frames' times, so that the rest of the video plays
# at the measured rate (``SegmentedVideo``); a minute of frames measures the rate well (1,500 at 25 frames/s)


class SegmentedVideo:
    """The annotated video of one source, in files of ``seconds`` of pictures at ``rate`` each, or, for a camera or
    stream (``clocked``: its frames' times are the wall clock's), of ``seconds`` of its frames' times, whichever comes
    first (a camera that claims 1000 frames/s but sends 25 still closes a file every ``seconds``), each closed and
    read back when full. A run that stays within one file writes ``annotated.mkv``; when a second file begins, the
    first moves to ``annotated/<first frame>.mkv`` (``outputs.segment_name``) and every later one is written there, so
    the names sort in time order. The files are Matroska: a killed run's open file plays up to the muxer's last write
    (an MP4 would be unreadable without the index written at its close). ``files`` are those closed and kept.

    A camera's claimed rate is often wrong (one claiming 30 frames/s may send 10): each of its files after the first
    plays at the rate the previous file's frames came at, by their times (its pictures over the time from its first
    frame to the next file's), so the video plays in real time; the first, at the claimed rate, holds at most
    ``FIRST_FILE_SECONDS`` of its frames' times. Files of footage play at the footage's own rate.

    ``keep_bytes``: when a file closes, the oldest closed files are deleted until those kept total at most this many
    bytes, the newest always kept (a recorder's rule: the oldest goes first); ``deleted`` counts them."""

    def __init__(self, out_dir: Path, rate: float, seconds: float, *, clocked: bool = False,
                 keep_bytes: int | None = None) -> None:
        self.out_dir, self.seconds, self.clocked = out_dir, seconds, clocked  # out_dir follows a move of the outputs
        self.rate = encoder_rate(rate)  # the open file's (the next one's, while none is open)
        # the files closed, checked and kept (relative to out_dir, in time order), their sizes, and those deleted: the
        # rule the row segments keep too
        self.kept = OldestFirst(keep_bytes, "--video-keep", "annotated video file")
        self.changes = 0  # files opened, closed (annotated.mkv moved) or deleted so far: the summary names them anew
        self.writer: cv2.VideoWriter | None = None
        self.name = ""  # the open file's, relative to out_dir
        self.first = 0  # the first frame of annotated.mkv: its name once it moves into annotated/
        self.count = 0  # pictures given to the open file's writer
        self.started = 0.0  # the time (seconds) of the open file's first frame
        self.previous: tuple[int, float] | None = None  # the last closed file's pictures and first frame's time
        self.unsynced: list[str] = []  # files closed (or moved into annotated/) since the last ``sync``: not yet durable

    def adopt(self, deleted: int, first: int) -> None:
        """Continue the annotated video an earlier run left in ``out_dir`` (``mnad detect --resume``): its files
        (``video_files_in``: the one a killed run was writing among them, playable up to its last write) are listed as
        closed and kept, ``deleted`` those it deleted, ``first`` the first frame of its annotated.mkv (its name once it
        moves into annotated/); the next file begins after them. Nothing of them is rewritten."""
        for name in video_files_in(self.out_dir):
            try:
                size = (self.out_dir / name).stat().st_size
            except OSError as exc:
                raise DataError(f"{self.out_dir / name}: cannot read the earlier run's annotated video ({os_reason(exc)})") from exc
            self.kept.append(name, size)
        self.kept.deleted, self.first = deleted, first

    @property
    def files(self) -> list[str]:
        """The closed files kept, relative to out_dir, in time order."""
        return self.kept.names

    @property
    def sizes(self) -> list[int]:
        return self.kept.sizes

    @property
    def deleted(self) -> int:
        """Closed files deleted for ``keep_bytes``."""
        return self.kept.deleted

    @property
    def open_name(self) -> str | None:
        """The file being written (relative to out_dir), or None."""
        return self.name if self.writer is not None else None

    def write(self, picture: np.ndarray, frame: int, time: float) -> None:
        """Add one picture, source frame ``frame`` (names a new file) at ``time`` seconds; the file is closed once full."""
        if self.writer is None:
            self._open(frame, picture.shape[1], picture.shape[0], time)
        assert self.writer is not None
        self.writer.write(picture)
        self.count += 1
        # a camera's first file, at its claimed rate, is kept short (``FIRST_FILE_SECONDS``)
        seconds = min(self.seconds, FIRST_FILE_SECONDS) if self.clocked and self.previous is None else self.seconds
        if self.count >= self.segment_frames or (self.clocked and time - self.started >= seconds):
            self.close()

    def _open(self, frame: int, width: int, height: int, time: float) -> None:
        if self.clocked and self.previous is not None and time > self.previous[1]:
            measured = self.previous[0] / (time - self.previous[1])
            self.rate = encoder_rate(measured)
        self.segment_frames = max(round(self.rate * self.seconds), 1)
        folder = self.out_dir / ANNOTATED_DIR
        if self.files == [ANNOTATED_VIDEO]:  # a second file begins: the first joins it, so that all sort together
            first = segment_name(self.first)
            try:
                folder.mkdir()  # not exist_ok: a folder already there is not this run's, never mixed with it
                (self.out_dir / ANNOTATED_VIDEO).rename(self.out_dir / first)
            except OSError as exc:
                raise DataError(f"{folder}: cannot write the annotated video's segments ({exc.strerror or exc}; an "
                                "earlier run's? move it)") from exc
            self.kept.names[0] = first
            self.unsynced.append(first)
        if self.files:
            self.name = segment_name(frame)
        else:
            self.name, self.first = ANNOTATED_VIDEO, frame
        path = self.out_dir / self.name
        import cv2  # here, not at import: mnad.outputs is loaded by every command and by `mnad report`, which need no OpenCV

        self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), self.rate, (width, height))
        if not self.writer.isOpened():
            self.writer = None
            raise DataError(f"{path}: cannot write the annotated video (no mp4v encoder?)")
        self.count, self.started = 0, time
        self.changes += 1

    def close(self) -> None:
        """Close the open file, if any, and read it back: OpenCV's writer returns nothing and drops a picture it cannot
        encode or write (a full disk) without a word. ``DataError`` when it holds fewer pictures than it was given.
        Then the oldest files past ``keep_bytes`` are deleted."""
        if self.writer is None:
            return
        self.writer.release()
        self.writer = None
        path = self.out_dir / self.name
        import cv2

        capture = cv2.VideoCapture(str(path))
        try:
            written = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        finally:
            capture.release()
        if written != self.count:
            raise DataError(f"{path}: the annotated video holds {max(written, 0)} of its {self.count} frames (the video "
                            "writer failed: disk full?)")
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise DataError(f"{path}: the annotated video is gone once written ({os_reason(exc)})") from exc
        self.previous = (self.count, self.started)
        self.unsynced.append(self.name)
        self.changes += 1
        self.changes += self.kept.add(self.out_dir, self.name, size)  # the oldest past keep_bytes deleted


    def sync(self) -> None:
        """Make the files closed since the last call durable, and their folders' entries (``mnad detect`` calls it
        before it saves a source's state: a resumed file does not draw again the pictures of the frames its state
        counts). The open file is the encoder's until it closes: a power cut may cut its tail (``VIDEO_SEGMENT_SECONDS``).
        One deleted since (--video-keep) needs nothing. ``DataError`` when they cannot be made durable."""
        from mnad.atomic import fsync_dir, fsync_file

        for name in self.unsynced:
            try:
                fsync_file(self.out_dir / name)
            except OSError as exc:
                raise DataError(f"{self.out_dir / name}: cannot make the annotated video durable ({os_reason(exc)})") from exc
        if self.unsynced:
            if (self.out_dir / ANNOTATED_DIR).is_dir():
                fsync_dir(self.out_dir / ANNOTATED_DIR)
            fsync_dir(self.out_dir)
        self.unsynced = []


def video_files_in(out_dir: Path) -> list[str]:
    """The annotated video's files a detect run left in ``out_dir``, relative to it, in time order."""
    names = [ANNOTATED_VIDEO] if (out_dir / ANNOTATED_VIDEO).is_file() else []
    if (out_dir / ANNOTATED_DIR).is_dir():
        names += [f"{ANNOTATED_DIR}/{p.name}" for p in sorted((out_dir / ANNOTATED_DIR).iterdir())
                  if VIDEO_SEGMENT.fullmatch(p.name) and p.is_file()]
    return names


def encoder_rate(rate: float) -> float:
    """``rate`` as the MPEG-4 encoder takes it: within [``MIN_VIDEO_FPS``, ``MAX_VIDEO_FPS``], and a fraction whose
    denominator fits in 16 bits (FFmpeg refuses a time base of 1000/66667: 66.667 frames/s would fail the run at its
    first picture), to the nearest 1/1000 that does."""
    rate = min(max(rate, MIN_VIDEO_FPS), MAX_VIDEO_FPS)
    return next(round(rate * scale) / scale for scale in (1000, 100, 10, 1) if rate * scale <= 65535)
