"""Videos handed to the evaluation through the Python API (``score_videos``) are read as the model reads frames: a
video opened without the model's model.pixel_range is refused with one error, not scored on other pixels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import tiny_config

from mnad.data import split_videos
from mnad.data.videos import open_video
from mnad.errors import ConfigError
from mnad.evaluate import score_videos
from mnad.model import MNAD


def model_and_config(**model: object) -> tuple[MNAD, object]:
    torch.manual_seed(0)
    config = tiny_config(**model)
    return MNAD(config.model).eval(), config


def thermal_videos(root: Path, n: int = 2, frames: int = 6) -> list[Path]:
    """Folders of 12-bit frames in 16-bit PNGs (a thermal camera's): read by their high byte, nearly black."""
    rng = np.random.default_rng(0)
    folders = []
    for v in range(n):
        folder = root / f"cam{v}"
        folder.mkdir()
        for i in range(frames):
            cv2.imwrite(str(folder / f"{i:03d}.png"), rng.integers(0, 4096, (32, 32, 3), dtype=np.uint16))
        folders.append(folder)
    return folders


def test_videos_opened_without_the_models_pixel_range_are_refused(tmp_path: Path) -> None:
    model, config = model_and_config(pixel_range=[0, 4095])
    folders = thermal_videos(tmp_path)
    by_hand = [open_video(f) for f in folders]  # without the range: each frame's high byte, 0..15
    with pytest.raises(ConfigError, match=r"cam0 and 1 other videos: read with pixel_range \[\], but the model's "
                                          r"model.pixel_range is \[0, 4095\]"):
        score_videos(model, config, by_hand, progress=False)
    with pytest.raises(ConfigError, match=r"cam1: read with pixel_range \[0, 1023\]"):  # another range: refused too
        score_videos(model, config, [open_video(folders[1], [0, 1023]), open_video(folders[0], [0, 4095])], progress=False)
    scored = score_videos(model, config, [open_video(f, config.model.pixel_range) for f in folders], progress=False)
    assert [len(v.frames) for v in scored] == [6 - (config.model.t_length - 1)] * 2  # opened with it: scored


def test_a_config_of_another_pixel_range_than_the_model_is_refused(synthetic_root: Path) -> None:
    """Otherwise videos opened with the config's range would pass the check and be read otherwise than the model saw."""
    model, _ = model_and_config()
    _, config = model_and_config(pixel_range=[0, 4095])
    videos = split_videos(synthetic_root, "synthetic", "testing", config.model.pixel_range)
    with pytest.raises(ConfigError, match=r"model settings differ from the model's: model\.pixel_range"):
        score_videos(model, config, videos, progress=False)
