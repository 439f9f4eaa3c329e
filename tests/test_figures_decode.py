"""`mnad figures` on own footage draws a few clips: only the videos those clips come from are decoded to disk (was:
every training video decoded whole, and the whole footage checked to fit, to draw one clip)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from conftest import tiny_config

from mnad import figures
from mnad.data.clips import spread_clips


def test_figures_decode_only_the_videos_they_draw_from(tmp_path: Path) -> None:
    folder = tmp_path / "own"
    folder.mkdir()
    for k in range(4):
        writer = cv2.VideoWriter(str(folder / f"v{k}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
        for i in range(20):
            writer.write(np.full((32, 32, 3), (i * 10 + k) % 255, np.uint8))
        writer.release()
    config = tiny_config()
    config.dataset = ""
    videos = figures._videos(config, folder)
    assert len(videos) == 4 and [len(v) for v in videos] == [20] * 4
    [(index, start)] = spread_clips(videos, config.model.t_length, 1)
    videos[index].frame(start, config.model.image_size, config.model.channels)
    assert [bool(v._decoded) for v in videos] == [i == index for i in range(4)]


def test_figures_of_own_footage_draw_from_every_video_whatever_its_name(tmp_path: Path) -> None:
    """A camera folder named like a split (`testing`, `Test`) is one video of the footage (was: taken as the test
    split, the only one drawn from)."""
    from conftest import frames_folder

    folder = tmp_path / "own"
    for name in ("testing", "cam"):
        frames_folder(folder / name, 8)
    config = tiny_config()
    config.dataset = ""
    assert sorted(v.name for v in figures._videos(config, folder)) == ["cam", "testing"]
