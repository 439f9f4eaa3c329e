"""An audit of the benchmark data path and the offline evaluation: frame folders, layouts, label files and AUCs on the
edge cases a researcher meets (duplicate or missing frame numbers, non-finite scores, large datasets, ...)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from mnad.data.sources import FrameFolder
from mnad.errors import DataError


def write_frames(folder: Path, names: list[str]) -> None:
    """Constant 16x16 frames whose value is their position (x 10), under the given names."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        assert cv2.imwrite(str(folder / name), np.full((16, 16, 3), 10 * i, dtype=np.uint8))


# ----------------------------------------------------------------------------------------------------- frame names


@pytest.mark.parametrize("names", [
    ["1.jpg", "01.jpg", "2.jpg"],  # the same frame under two paddings
    ["000.jpg", "000.png", "001.jpg"],  # the same frame under two extensions
    ["f_0001.JPG", "f_1.jpg", "f_0002.jpg"],
])
def test_two_files_of_one_frame_number_are_refused(tmp_path: Path, names: list[str]) -> None:
    # each would count as a frame, shifting every later frame off its label (was: read as 3 frames, silently)
    write_frames(tmp_path / "v", names)
    with pytest.raises(DataError, match="two frame files with one frame number") as info:
        FrameFolder(tmp_path / "v")
    assert str(tmp_path / "v") in str(info.value)


def test_a_gap_in_the_frame_numbers_is_read_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_frames(tmp_path / "v", ["000.jpg", "001.jpg", "003.jpg", "004.jpg"])
    with caplog.at_level("WARNING"):
        assert len(FrameFolder(tmp_path / "v")) == 4
    assert "skip from 001.jpg to 003.jpg" in caplog.text
    caplog.clear()
    write_frames(tmp_path / "every5", ["000.jpg", "005.jpg", "010.jpg", "015.jpg"])  # every 5th frame kept: regular
    write_frames(tmp_path / "whole", [f"{i:03d}.jpg" for i in range(1, 6)])
    with caplog.at_level("WARNING"):
        FrameFolder(tmp_path / "every5")
        FrameFolder(tmp_path / "whole")
    assert "skip" not in caplog.text
