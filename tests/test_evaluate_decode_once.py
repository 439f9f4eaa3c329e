"""`mnad evaluate` on a dataset of video files decodes each video once (was: counted by a decode of its own for the
labels and the shares, then decoded again to be scored); under torchrun a rank decodes only the videos it scores."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import noise_video, tiny_config

from mnad import distributed
from mnad.data import split_videos
from mnad.evaluate import evaluate, scored_share
from mnad.model import MNAD

FRAMES = (9, 7, 8)


def video_dataset(root: Path) -> Path:
    """``root/synthetic``: three .avi test videos and their labels (both classes in each)."""
    folder = root / "synthetic" / "testing" / "videos"
    folder.mkdir(parents=True)
    for k, n in enumerate(FRAMES):
        noise_video(folder / f"{k + 1:02d}.avi", n, 10.0)
    labels = np.concatenate([np.arange(n) >= n // 2 for n in FRAMES]).astype(np.int64)
    np.save(root / "synthetic" / "frame_labels_synthetic.npy", labels)
    return root


def test_evaluate_decodes_each_video_file_once(tmp_path: Path, decode_passes: Counter) -> None:
    root = video_dataset(tmp_path)
    torch.manual_seed(0)
    config = tiny_config()
    metrics = evaluate(MNAD(config.model), config, root, progress=False)
    assert metrics["videos"] == 3 and metrics["frames_scored"] == sum(FRAMES) - 3 * (config.model.t_length - 1)
    assert decode_passes == {"01.avi": 1, "02.avi": 1, "03.avi": 1}  # was 2 each: a count, then the decode


def test_a_rank_decodes_only_the_videos_of_its_share(tmp_path: Path, decode_passes: Counter,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank 1 of 2 scores the last video (9, 7 | 8 frames); the others' counts come from rank 0, not a decode."""
    root = video_dataset(tmp_path)
    size, channels = 32, 3
    videos = split_videos(root, "synthetic", "testing", decode_as=(size, channels))
    assert decode_passes == {}  # listed and checked for room: nothing decoded
    ctx = distributed.Context(rank=1, world_size=2)
    gathered: list = []

    def all_gather(counts: list[int], context: distributed.Context) -> list[list[int]]:
        gathered.append(counts)
        return [list(FRAMES[:2]), counts]  # what rank 0 counted of its share

    monkeypatch.setattr(distributed, "all_gather_objects", all_gather)
    monkeypatch.setattr(distributed, "_lowest", lambda value, context: value)  # every rank got through (no group here)
    mine = scored_share(videos, ctx)
    assert [v.name for v in mine] == ["03"] and gathered == [[8]]
    assert decode_passes == {"03.avi": 1}
    assert [len(v) for v in videos] == list(FRAMES)  # every count known, the first two not decoded here
    assert decode_passes == {"03.avi": 1}
    for video in mine:  # scoring reads the frames decoded by the count
        video.frames(0, len(video), size, channels)
    assert decode_passes == {"03.avi": 1}
