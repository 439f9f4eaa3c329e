"""Clips of consecutive frames as tensors, for training and scoring."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mnad.config import ModelConfig
from mnad.data.decoded import available_memory
from mnad.data.pixels import finish_narrow
from mnad.data.videos import Video, check_decode_room

log = logging.getLogger(__name__)


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, C) -> float (..., C, H, W) in [-1, 1], the published x / 127.5 - 1."""
    return torch.from_numpy(frames).movedim(-1, -3).float().div_(127.5).sub_(1.0)


def split_clip(clip: torch.Tensor, model: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, C, H, W) clip -> (model input, input frames stacked on channels oldest first; target frame (B, C, H, W)).
    The one place that says which frames a clip feeds and which it scores (``ModelConfig.target_index``)."""
    inputs = clip[:, :-1] if model.task == "pred" else clip  # recon sees its own target among the inputs
    return inputs.flatten(1, 2), clip[:, model.target_index]


def spread_clips(videos: Sequence[Video], length: int, count: int) -> list[tuple[int, int]]:
    """(video index, first frame) of ``count`` clips of ``length`` frames spread evenly over every clip position of
    ``videos``: fewer where there are fewer positions, none where no video is that long."""
    positions = [(v, start) for v, video in enumerate(videos) for start in range(len(video) - length + 1)]
    if not positions:
        return []
    picks = np.unique(np.linspace(0, len(positions) - 1, min(count, len(positions))).round().astype(int))
    return [positions[i] for i in picks]


class FrameStore:
    """Decoded, resized frames of a list of videos, optionally kept in memory so each is decoded once
    (a training clip of 5 frames would otherwise decode every frame 5 times per epoch).

    The cache holds at most ``max_bytes`` (by default half the memory available when the first frame is kept): the
    frames of a large dataset (ShanghaiTech's 274,515 training frames are 54 GB at 256x256) would otherwise fill the
    memory until the system kills the run, with no message. Frames beyond it are decoded each time they are used.
    Videos that keep their decoded frames themselves (``Video.keeps_frames``: video files, on disk) are not cached:
    their frames have one owner, and a copy here would only take memory from the frame folders'. ``cache`` is thus
    about frame folders only: a video file is decoded whole to disk at its first frame whatever it says (clips are
    read at random, and codecs cannot seek exactly), which a store without cache says once. The video files' decoded
    frames are checked to fit on disk together, here, before any is decoded (``check_decode_room``)."""

    def __init__(self, videos: list[Video], size: int, channels: int, *, cache: bool = True,
                 max_bytes: int | None = None) -> None:
        self.videos, self.size, self.channels, self.cache = videos, size, channels, cache
        self.max_bytes, self.cached_bytes = max_bytes, 0
        self._frames: dict[tuple[int, int], np.ndarray] = {}
        self._full = False
        self._cached = [cache and not v.keeps_frames for v in videos]  # by video: whether its frames are kept here
        check_decode_room(videos, size, channels)
        on_disk = sum(v.keeps_frames for v in videos)
        if not cache and on_disk:  # the setting would otherwise seem to apply to them, and silently not
            log.warning("train.cache_frames = false keeps frame folders' frames out of memory; the %d video files "
                        "among the %d training videos are decoded to disk all the same (each whole, once, at its "
                        "first frame: clips are read at random and video codecs cannot seek exactly), and take no "
                        "memory either way", on_disk, len(videos))

    def frame(self, video: int, index: int) -> np.ndarray:
        key = (video, index)
        found = self._frames.get(key)
        if found is None:
            found = self.videos[video].frame(index, self.size, self.channels)
            if self._cached[video] and not self._full:
                self._keep(key, found)
        return found

    def _keep(self, key: tuple[int, int], frame: np.ndarray) -> None:
        if self.max_bytes is None:
            self.max_bytes = available_memory() // 2
        if self.cached_bytes + frame.nbytes > self.max_bytes:
            self._full = True
            total = sum(len(v) for v, kept in zip(self.videos, self._cached, strict=True) if kept) * frame.nbytes
            log.warning("the frame cache is full: %d frames (%.1f GB) are kept in memory, of the %.1f GB all frames "
                        "need at %dx%d; the others are decoded each time they are used (slower). A smaller "
                        "model.image_size needs less",
                        len(self._frames), self.cached_bytes / 1e9, total / 1e9, self.size, self.size)
            return
        self._frames[key] = frame
        self.cached_bytes += frame.nbytes

    def clip(self, video: int, start: int, length: int) -> np.ndarray:
        if self.videos[video].keeps_frames:  # not cached here; its frames lie in order: read at once
            return self.videos[video].frames(start, length, self.size, self.channels)
        return np.stack([self.frame(video, i) for i in range(start, start + length)])


class ClipDataset(Dataset):
    """Every window of ``length`` consecutive frames of every video (stride 1 by default), as (T, C, H, W)."""

    def __init__(self, store: FrameStore, length: int, *, stride: int = 1) -> None:
        self.store, self.length = store, length
        self._reads = 0  # clips read (``__getitem__``): as many as there are ends the first reading of every clip
        self.index = [
            (v, start)
            for v, video in enumerate(store.videos)
            for start in range(0, len(video) - length + 1, stride)
        ]

    def preload(self) -> None:
        """Decode every frame the clips use, now, in order: a damaged frame or one of another size fails here,
        before training writes anything, and with ``cache`` the frames are kept for the epochs. A video that keeps
        its frames (a video file) decodes them all at its first frame: reading each back would check nothing more."""
        videos, decoded = self.store.videos, set()
        for video, index in dict.fromkeys((v, start + i) for v, start in self.index for i in range(self.length)):
            if videos[video].keeps_frames:
                if video in decoded:
                    continue
                decoded.add(video)
            self.store.frame(video, index)
        self._finish_narrow()

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> torch.Tensor:
        video, start = self.index[i]
        clip = to_tensor(self.store.clip(video, start, self.length))
        self._reads += 1
        if self._reads == len(self.index):  # an epoch's clips read (not preloaded: train.cache_frames = false): clips
            self._finish_narrow()  # with a stride may skip frames, and a short folder's decision point is never reached
        return clip

    def _finish_narrow(self) -> None:
        """Every frame the clips use is read: a 16-bit warning not yet decided decides on them (``finish_narrow``)."""
        for video in self.store.videos:
            finish_narrow(video.path)
