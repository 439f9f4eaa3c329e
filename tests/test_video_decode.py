"""The one pass that decodes a video file's frames (``capture.decode_frames``), which ``VideoFile`` (decoding to disk)
and ``FrameSource`` (detect's frames) both use: every frame in order, the capture released however the pass ends, and
the file's checks (no frame, cut short) after the caller's own end of reading."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mnad.data.capture import decode_frames
from mnad.errors import DataError


class FakeCapture:
    """An opened capture of ``count`` 2x2 frames (frame i filled with i) whose container reports ``reported``."""

    def __init__(self, count: int, reported: int, fps: float = 25.0) -> None:
        self.count, self.reported, self.fps, self.read_so_far, self.released = count, reported, fps, 0, 0

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.read_so_far >= self.count:
            return False, None
        self.read_so_far += 1
        return True, np.full((2, 2, 3), self.read_so_far - 1, np.uint8)

    def get(self, prop: int) -> float:
        position = (self.read_so_far - 1) * 1000 / self.fps  # the last decoded frame's timestamp
        return {cv2.CAP_PROP_FRAME_COUNT: self.reported, cv2.CAP_PROP_FPS: self.fps, cv2.CAP_PROP_POS_MSEC: position}[prop]

    def release(self) -> None:
        self.released += 1


def test_every_frame_in_order_then_the_callers_end_then_the_capture_released() -> None:
    capture, said = FakeCapture(5, reported=5), []
    frames = [int(image[0, 0, 0]) for image in decode_frames(capture, "cam.avi", lambda: said.append(capture.released))]
    assert frames == [0, 1, 2, 3, 4]
    assert said == [1]  # the caller's end came once, after the capture was released
    assert capture.released == 1


def test_a_file_with_no_frame_is_an_error_naming_it_after_the_callers_end() -> None:
    capture, said = FakeCapture(0, reported=0), []
    with pytest.raises(DataError, match=r"^cam\.avi: video has no decodable frames$"):
        list(decode_frames(capture, "cam.avi", lambda: said.append("ended")))
    assert said == ["ended"] and capture.released == 1


def test_a_file_cut_short_is_an_error_after_its_frames() -> None:
    capture, frames = FakeCapture(10, reported=100), []
    with pytest.raises(DataError, match=r"^cam\.avi: the video was cut short after 10 of its 100 frames \(truncated or "
                                        r"damaged file\)$"):
        for image in decode_frames(capture, "cam.avi"):
            frames.append(image)
    assert len(frames) == 10 and capture.released == 1


def test_a_caller_that_stops_early_releases_the_capture_and_checks_nothing() -> None:
    capture, said = FakeCapture(10, reported=100), []
    decoding = decode_frames(capture, "cam.avi", lambda: said.append("ended"))
    assert int(next(decoding)[0, 0, 0]) == 0
    decoding.close()  # --max-frames: a cut-short file is not said to be one, nor is the caller's end run
    assert capture.released == 1 and said == []
