"""VideoFile.expected_frames and frame_rate read the container's count and rate by one opening of the file, each
asked once (was: each opened the file with OpenCV)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import noise_video

from mnad.data import capture as capture_module
from mnad.data.videos import VideoFile


@pytest.fixture
def opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files opened with OpenCV (``capture.open_capture``, behind every VideoCapture of a file)."""
    opened: list[str] = []
    real = capture_module.open_capture

    def counting(path: str | Path) -> object:
        opened.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(capture_module, "open_capture", counting)
    return opened


@pytest.mark.parametrize("first", ["expected_frames", "frame_rate"])
def test_the_count_and_the_rate_are_read_by_one_open(tmp_path: Path, opens: list[str], first: str) -> None:
    video = VideoFile(noise_video(tmp_path / "v.avi", 7, fps=12.5))
    if first == "frame_rate":
        assert video.frame_rate() == 12.5
    assert video.expected_frames() == 7 and video.frame_rate() == 12.5
    assert video.expected_frames() == 7 and video.frame_rate() == 12.5  # asked again: read once
    assert opens == ["v.avi"]  # was: two opens, one for each


def test_a_rate_the_container_does_not_give_is_none_and_still_read_once(tmp_path: Path, opens: list[str],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import mnad.data.streams

    monkeypatch.setattr(mnad.data.streams, "valid_fps", lambda rate: False)  # 0, NaN or nonsense in the container
    video = VideoFile(noise_video(tmp_path / "v.avi", 5, fps=10))
    assert video.frame_rate() is None and video.frame_rate() is None and video.expected_frames() == 5
    assert opens == ["v.avi"]
