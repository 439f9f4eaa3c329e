"""Frame files named by numbers wider than 64 bits (a timestamp with microseconds) are read in their order."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mnad.data.footage import frame_files


def test_frame_numbers_past_64_bits_are_numbers_too(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # was: an OverflowError traceback (the numbers were put into an int64 array) for frames named by a 20-digit timestamp
    folder = tmp_path / "cam"
    folder.mkdir()
    for k in (*range(6), 7):
        (folder / f"cam_20231201123456{123450 + k}.png").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="mnad"):
        files = frame_files(sorted(folder.iterdir()), folder)
    assert [p.name[-6:-4] for p in files] == ["50", "51", "52", "53", "54", "55", "57"]
    assert "frame numbers skip from cam_20231201123456123455.png to cam_20231201123456123457.png" in caplog.text


def test_a_digit_that_is_no_decimal_digit_is_text(tmp_path: Path) -> None:
    # was: a ValueError traceback: str.isdigit() is true for '²', which int() does not read ('².png', '1²2.png')
    folder = tmp_path / "cam"
    folder.mkdir()
    for name in ("0.png", "1.png", "1²2.png", "².png"):
        (folder / name).write_bytes(b"")
    assert [p.name for p in frame_files(sorted(folder.iterdir()), folder)] == ["0.png", "1.png", "1²2.png", "².png"]
