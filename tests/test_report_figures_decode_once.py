"""`mnad evaluate --report` and `mnad figures` decode each video file at most once: the report's thumbnails read
their clips from the videos the evaluation has just decoded (was: the test videos listed again, and each video file
holding a top frame decoded a second time); the figures place their clips by the containers' frame counts and decode
only the video files the clips are drawn from, once each (was: a counting pass of every video file, then a second
pass, the decode, of those drawn from)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import tiny_config
from test_evaluate_decode_once import video_dataset

from mnad import figures
from mnad.data import capture as capture_module
from mnad.data import videos as videos_module
from mnad.data.clips import spread_clips
from mnad.data.layouts import list_videos
from mnad.evaluate import evaluate
from mnad.model import MNAD
from mnad.report import create_report


def own_footage(root: Path, count: int = 4, frames: int = 20) -> Path:
    """``count`` MJPG .avi files of ``frames`` frames each, every frame a different grey."""
    folder = root / "own"
    folder.mkdir()
    for k in range(count):
        writer = cv2.VideoWriter(str(folder / f"v{k}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
        for i in range(frames):
            writer.write(np.full((32, 32, 3), (i * 10 + k) % 255, np.uint8))
        writer.release()
    return folder


def test_the_report_decodes_each_video_file_holding_a_top_frame_once(tmp_path: Path, decode_passes: Counter) -> None:
    root = video_dataset(tmp_path)
    torch.manual_seed(0)
    config = tiny_config()
    model = MNAD(config.model)
    evaluate(model, config, root, out_dir=tmp_path / "e", progress=False)
    decode_passes.clear()  # the evaluation's decode is not kept (its disk freed): the report's own passes only
    create_report(model, config, root, tmp_path / "e", tmp_path / "r", top_k=3)
    thumbs = json.loads((tmp_path / "r" / "thumbs" / "thumbs.json").read_text())
    holding = {f"{t['video']}.avi" for t in thumbs}
    assert len(holding) >= 2  # the top frames come from more than one video
    assert all(passes <= 1 for passes in decode_passes.values())  # once each
    assert {name for name, passes in decode_passes.items() if passes} <= holding  # and only those it reads from


def test_figures_decode_only_the_video_files_drawn_from_once(tmp_path: Path, decode_passes: Counter) -> None:
    folder = own_footage(tmp_path)
    torch.manual_seed(0)
    config = tiny_config()
    config.dataset = ""
    record = figures.memory_figures(MNAD(config.model), config, folder, tmp_path / "f", frames=1, clips=2, max_queries=50)
    assert {c["video"] for c in record["clips"]} == {"v0", "v3"}
    assert decode_passes == {"v0.avi": 1, "v3.avi": 1}  # was a counting pass of each of the four, then v0 and v3 decoded


@pytest.mark.parametrize("reported", [10, 0], ids=["container-count-short", "no-container-count"])
def test_figures_place_clips_by_the_true_counts_of_the_videos_drawn_from(tmp_path: Path, decode_passes: Counter,
                                                                          monkeypatch: pytest.MonkeyPatch, reported: int) -> None:
    """Containers that report 10 of the 20 frames each (the clips placed again by the true counts of those drawn
    from), or no count at all (each video file decoded to be counted, once)."""
    folder = own_footage(tmp_path)
    size, channels, window = 32, 3, 5
    truly = spread_clips(list_videos(folder), window, 2)  # every video counted by a pass of its own
    decode_passes.clear()
    for module in (capture_module, videos_module):  # where a video file's count is looked up: decoding it, and planning from it
        monkeypatch.setattr(module, "reported_frames", lambda _: reported)
    videos = list_videos(folder)
    positions = figures.clip_positions(videos, window, 2, decode_as=(size, channels))
    assert positions == [(vi, start + window - 1) for vi, start in truly] == [(0, 4), (3, 19)]
    assert decode_passes == ({"v0.avi": 1, "v3.avi": 1} if reported else {f"v{k}.avi": 1 for k in range(4)})
    for vi, last in positions:  # the clips are read from those decodes
        videos[vi].frames(last - window + 1, window, size, channels)
    assert sum(decode_passes.values()) == (2 if reported else 4)
