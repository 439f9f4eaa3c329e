"""A local video file cut short (a copy or download that stopped half way) is an error naming the file, in detect and
in training/calibration, as it already was over HTTP; a container whose frame count is unknown or a frame or two off
is still read."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import pytest
from conftest import noise_video

from mnad.cli import main
from mnad.data.streams import FrameSource
from mnad.data.videos import VideoFile
from mnad.errors import DataError

N_FRAMES = 144


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return noise_video(tmp_path_factory.mktemp("video") / "whole.avi", N_FRAMES, 25.0)


def decoded(path: Path) -> int:
    capture, count = cv2.VideoCapture(str(path)), 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def cut(whole: Path, path: Path, size: int) -> Path:
    path.write_bytes(whole.read_bytes()[:size])
    return path


@pytest.fixture()
def half(whole: Path, tmp_path: Path) -> Path:
    """Its header still says 144 frames; about half of them decode."""
    path = cut(whole, tmp_path / "half.avi", whole.stat().st_size // 2)
    assert 0 < decoded(path) < N_FRAMES // 2 + 5
    return path


def test_a_truncated_video_file_is_refused_when_counted_and_when_decoded(half: Path) -> None:
    with pytest.raises(DataError, match=rf"half\.avi: the video was cut short after \d+ of its {N_FRAMES} frames"):
        len(VideoFile(half))  # was the decoded count, as if the file were whole
    with pytest.raises(DataError, match=rf"half\.avi: the video was cut short after \d+ of its {N_FRAMES} frames"):
        VideoFile(half).frame(0, 16, 1)
    with pytest.raises(DataError, match=rf"half\.avi: the video was cut short after \d+ of its {N_FRAMES} frames"):
        list(FrameSource(str(half)))


def test_detect_on_a_truncated_video_file_fails(half: Path, model_file: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["detect", str(half), "--checkpoint", str(model_file), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "half.avi: the video was cut short after" in err and f"of its {N_FRAMES} frames" in err and "Traceback" not in err


def test_unknown_or_slightly_off_frame_counts_are_accepted(whole: Path, half: Path, tmp_path: Path) -> None:
    data = bytearray(half.read_bytes())  # the same cut file, its header's frame counts zeroed: nothing to compare
    for tag, offset in ((b"avih", 16), (b"strh", 32)):
        at = data.find(tag) + 8 + offset
        assert struct.unpack_from("<I", data, at) == (N_FRAMES,)
        data[at:at + 4] = struct.pack("<I", 0)
    unknown = tmp_path / "unknown.avi"
    unknown.write_bytes(bytes(data))
    assert len(VideoFile(unknown)) == decoded(half) == len(list(FrameSource(str(unknown))))
    size = whole.stat().st_size  # the last frames cut off until two are missing: within what containers get wrong
    short = next(p for p in (cut(whole, tmp_path / "short.avi", size - k) for k in range(0, 20000, 100))
                 if decoded(p) == N_FRAMES - 2)
    video = VideoFile(short)
    assert len(video) == N_FRAMES - 2 and video.frame(N_FRAMES - 3, 16, 1).shape == (16, 16, 1)
    assert len(list(FrameSource(str(short)))) == N_FRAMES - 2


def test_a_count_estimated_from_the_duration_is_not_taken_for_a_cut(caplog: pytest.LogCaptureFixture) -> None:
    """Matroska/WebM record no frame count: OpenCV reports duration x nominal rate, which a variable-frame-rate
    recording does not keep. Its last frame's timestamp still reaches the duration, where a cut file's stops short."""
    from mnad.data.capture import check_whole

    # 100 frames estimated at 25 frames/s (4 s); 70 decoded whose last starts at 3.96 s: whole
    with caplog.at_level("INFO", logger="mnad.data.capture"):
        check_whole("phone.mkv", 70, 100, "truncated or damaged file", fps=25.0, reached_ms=3960.0)
    assert "variable frame rate" in caplog.text
    for reached_ms in (2760.0, 0.0):  # stopped at 2.76 s of 4 s; or no timestamp to go by: cut short, as before
        with pytest.raises(DataError, match=r"phone\.mkv: the video was cut short after 70 of its 100 frames"):
            check_whole("phone.mkv", 70, 100, "truncated or damaged file", fps=25.0, reached_ms=reached_ms)


def test_frames_that_skip_but_do_not_decode_are_an_error_not_an_index_error(whole: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A damaged file whose frames can all be skipped (counted with grab(), as the clip index is built) but whose last
    ones do not decode: the clips asked for past the decoded frames were an IndexError traceback."""
    from mnad.data import capture

    real = capture.open_capture

    class DecodesFewer:
        def __init__(self, path: Path) -> None:
            self.capture, self.reads = real(path), 0

        def read(self) -> tuple[bool, object]:
            self.reads += 1
            return self.capture.read() if self.reads <= N_FRAMES - 3 else (False, None)

        def __getattr__(self, name: str) -> object:
            return getattr(self.capture, name)

    video = VideoFile(whole)
    assert len(video) == N_FRAMES  # counted with grab()
    monkeypatch.setattr(capture, "open_capture", DecodesFewer)
    with pytest.raises(DataError, match=rf"whole\.avi: {N_FRAMES - 3} frames decode but {N_FRAMES} were counted"):
        video.frame(N_FRAMES - 1, 16, 1)
