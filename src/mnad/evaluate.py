"""Scoring test videos and frame-level AUC (method doc, section 5).

Frames are scored one at a time, in order: the test-time memory update after frame t (when E_t < gamma) changes
the memory that frame t+1 reads, so the order is part of the result. The memory evolves over the whole test set,
in sorted video order, starting from the trained items; the model's own items are restored afterwards.

Under ``torchrun`` each rank scores a contiguous share of the videos (in order, balanced by frame count), starting
from the trained items, and the scores are gathered before any AUC: the memory then carries over videos only within
a rank's share (exact when ``eval.test_update`` is off). docs/distributed.md has the details.
"""

from __future__ import annotations

import csv
import io
import json
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mnad import distributed
from mnad.checkpoint import atomic_write_many
from mnad.config import Config
from mnad.data import Video, find_label_file, load_labels, split_videos, to_tensor
from mnad.data.layouts import dataset_dir
from mnad.errors import ConfigError, DataError
from mnad.model import MNAD, inference_copy
from mnad.model.memory import updated_memory
from mnad.model.mnad import FrozenCompiled
from mnad.scoring import anomaly_score, error_map, feature_distance, psnr, regular_score, smooth


@dataclass
class FrameScore:
    index: int  # frame position in its video (0-based)
    psnr: float
    distance: float  # D: query-to-nearest-item distance
    regular: float  # E_t, the weighted regular score that gates the memory update
    updated: bool  # whether this frame updated the memory
    error_map: np.ndarray | None = None  # pixel-wise squared error (H, W), when asked for


@dataclass
class VideoScores:
    name: str
    frames: np.ndarray  # frame positions that have a score (a prediction model skips the first t_length-1)
    psnr: np.ndarray
    distance: np.ndarray
    regular: np.ndarray
    updated: np.ndarray
    score: np.ndarray = field(default_factory=lambda: np.zeros(0))  # S_t, high = abnormal
    labels: np.ndarray | None = None


class ScoringStep(torch.nn.Module):
    """One test-time step as a pure function: (input frames, target frame, memory items) ->
    (predicted frame, PSNR, D, E_t, items after the gated update, pixel-wise error map).

    Memory in, memory out: the same graph scores in PyTorch and, exported, in ONNX Runtime (mnad.export).
    """

    def __init__(self, model: MNAD, config: Config) -> None:
        super().__init__()
        self.cfg = config.eval
        self.model = inference_copy(model, bf16=self.cfg.bf16, channels_last=self.cfg.channels_last)
        self.update_max_over = config.model.update_max_over

    def forward(self, inputs: torch.Tensor, target: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.cfg.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
            output = self.model(inputs, items)
        p = psnr(output.frame, target, peak=self.cfg.psnr_peak)
        e = regular_score(output.frame, target, kind=self.cfg.regular_score)
        if self.model.memory is None:
            return output.frame, p, torch.zeros_like(p), e, items, error_map(output.frame, target)
        d = feature_distance(output.queries, items)
        if self.cfg.test_update:  # after scoring this frame, as published; strict '<'
            new_items = updated_memory(output.queries[0], items, max_over=self.update_max_over)
            items = torch.where(e[0] < self.cfg.gamma, new_items, items)
        return output.frame, p, d, e, items, error_map(output.frame, target)


def scoring_step(model: MNAD, config: Config) -> torch.nn.Module:
    """The step scoring runs: ``ScoringStep``, compiled as one graph with its weights frozen under ``eval.compile``
    (the memory items are an argument, so test-time updates still reach the next frame)."""
    step = ScoringStep(model, config)
    return FrozenCompiled(step) if config.eval.compile else step


def score_stream(
    model: MNAD,
    config: Config,
    frames: Iterable[np.ndarray],
    *,
    device: str = "cpu",
    maps: bool = False,
    step: Callable[..., tuple[torch.Tensor, ...]] | None = None,
) -> Iterator[FrameScore]:
    """Score a stream of uint8 (H, W, C) frames, already resized, as they arrive (causal: no look-ahead).

    Updates ``model.memory`` in place when E_t < gamma (and ``config.eval.test_update``). ``maps``: also return
    each frame's pixel-wise error map, for localisation. ``step``: another implementation of ``ScoringStep``
    (e.g. ONNX Runtime).
    """
    window_len = config.model.t_length
    lag = window_len - 1 - config.model.target_index  # a clip scores its target frame, `lag` frames before its last
    window: deque[torch.Tensor] = deque(maxlen=window_len)
    step = step or scoring_step(model, config)
    items = model.memory.items if model.memory is not None else torch.zeros(1, config.model.feature_dim)
    model.eval()
    with torch.inference_mode():
        for index, frame in enumerate(frames):
            window.append(to_tensor(frame).to(device))  # each frame converted once, not once per clip it is in
            if len(window) < window_len:
                continue
            clip = torch.stack(tuple(window))[None]
            inputs, target = model.split_clip(clip)
            _, p, d, e, new_items, error = step(inputs, target, items)
            updated = model.memory is not None and not torch.equal(new_items, items)
            if updated:
                items.copy_(new_items)
            yield FrameScore(index - lag, float(p[0]), float(d[0]), float(e[0]), updated, error[0].float().cpu().numpy() if maps else None)


def score_videos(
    model: MNAD, config: Config, videos: list[Video], *, device: str = "cpu", progress: bool = True
) -> list[VideoScores]:
    """Raw per-frame scores of every video, in order, with the memory carried across videos."""
    saved_items = model.memory.items.clone() if model.memory is not None else None
    size, channels = config.model.image_size, config.model.channels
    results = []
    step = scoring_step(model, config)  # one scoring copy of the model for all videos
    try:
        bar = tqdm(total=sum(len(v) for v in videos), desc="scoring", unit="frame", disable=not progress, leave=False)
        for video in videos:
            frames = (video.frame(i, size, channels) for i in range(len(video)))
            rows = []
            for row in score_stream(model, config, frames, device=device, step=step):
                rows.append(row)
                bar.update(1)
            if not rows:
                raise DataError(f"{video.path}: {len(video)} frames, too few for clips of {config.model.t_length}")
            results.append(VideoScores(
                name=video.name,
                frames=np.array([r.index for r in rows]),
                psnr=np.array([r.psnr for r in rows]),
                distance=np.array([r.distance for r in rows]),
                regular=np.array([r.regular for r in rows]),
                updated=np.array([r.updated for r in rows]),
            ))
        bar.close()
    finally:
        if saved_items is not None:
            model.memory.items.copy_(saved_items)
    return results


def add_scores(videos: list[VideoScores], config: Config) -> None:
    """S_t per video: PSNR and D normalised per video (or causally), mixed with alpha (PSNR only without memory),
    then averaged over the last eval.smoothing frames (1: not at all, the published protocol)."""
    alpha = config.eval.alpha if config.model.memory else 1.0
    for v in videos:
        v.score = smooth(anomaly_score(v.psnr, v.distance, alpha=alpha, normalization=config.eval.normalization,
                                       calibration=config.eval.calibration), config.eval.smoothing)


def auc_metrics(videos: list[VideoScores]) -> dict:
    """Micro AUC (all frames pooled: the paper's metric), macro AUC (mean over videos with both classes), per video."""
    from sklearn.metrics import roc_auc_score  # here, not at the top: scoring a stream never needs it (tens of MB of RSS)

    labels = np.concatenate([v.labels for v in videos])
    scores = np.concatenate([v.score for v in videos])
    per_video = {v.name: float(roc_auc_score(v.labels, v.score)) for v in videos if 0 < v.labels.sum() < v.labels.size}
    both = len(np.unique(labels)) == 2
    return {
        "micro_auc": float(roc_auc_score(labels, scores)) if both else None,
        "macro_auc": float(np.mean(list(per_video.values()))) if per_video else None,
        "per_video_auc": per_video,
        "frames_scored": int(labels.size),
        "abnormal_frames": int(labels.sum()),
        "videos": len(videos),
        "videos_in_macro": len(per_video),
    }


def attach_labels(videos: list[VideoScores], labels: list[np.ndarray]) -> None:
    for v, video_labels in zip(videos, labels, strict=True):
        v.labels = video_labels[v.frames]


def scores_csv(videos: list[VideoScores]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["video", "frame", "psnr", "distance", "regular_score", "memory_updated", "score", "label"])
    for v in videos:
        labels = v.labels if v.labels is not None else [""] * len(v.frames)
        for i, frame in enumerate(v.frames):
            writer.writerow([v.name, int(frame), f"{v.psnr[i]:.6f}", f"{v.distance[i]:.8f}", f"{v.regular[i]:.8f}",
                             int(v.updated[i]), f"{v.score[i]:.6f}", labels[i]])
    return buffer.getvalue().encode()


def evaluate(
    model: MNAD,
    config: Config,
    data_root: str | Path,
    *,
    labels_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Score the test split under ``data_root`` and compute AUCs; writes scores.csv and metrics.json to ``out_dir``."""
    if isinstance(getattr(model, "config", None), type(config.model)) and model.config != config.model:
        diffs = [f"model.{k}={v!r} (the model has {getattr(model.config, k)!r})" for k, v in vars(config.model).items()
                 if getattr(model.config, k) != v]
        raise ConfigError(f"the config's model settings differ from the model's: {', '.join(diffs)}; only eval.* can change")
    videos = split_videos(data_root, config.dataset, "testing")
    if labels_path is None:
        labels_path = find_label_file(dataset_dir(data_root, config.dataset), config.dataset)
        if labels_path is None:
            raise DataError(
                f"{data_root}: no label file found (frame_labels_<dataset>.npy, test_anomalies.csv or a UCSD .m file); pass one"
            )
    labels = load_labels(labels_path, videos)  # checked against the frame counts before any scoring
    if out_dir is not None:
        out_dir = Path(out_dir)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"{out_dir}: cannot create the output folder ({exc.strerror or exc})") from exc
    ctx = distributed.setup(device)  # under torchrun: this rank's device; one process: unchanged
    device = str(ctx.device)
    model = model.to(device)
    mine = distributed.shard_contiguous(videos, [len(v) for v in videos], ctx)
    results = score_videos(model, config, mine, device=device, progress=progress and ctx.is_main)
    results = [v for part in distributed.all_gather_objects(results, ctx) for v in part]  # all videos, in order
    attach_labels(results, labels)
    add_scores(results, config)
    skipped = config.model.t_length - 1
    before, after = config.model.target_index, skipped - config.model.target_index
    if not skipped:
        note = "every frame is scored"
    elif not after:
        note = f"the first {before} frames of each video have no prediction and are excluded, as in the published protocol"
    else:  # recon with motion cues scores the middle frame of each clip
        note = f"the first {before} and last {after} frames of each video are not the middle of any clip and are excluded"
    metrics = auc_metrics(results)
    metrics.update(
        labels=str(labels_path),
        normalization=config.eval.normalization,
        alpha=config.eval.alpha if config.model.memory else 1.0,
        smoothing=config.eval.smoothing,
        gamma=config.eval.gamma,
        test_update=config.eval.test_update,
        memory_updates=int(sum(v.updated.sum() for v in results)),
        ranks=ctx.world_size,  # > 1: the test-time memory restarted from the trained items on each rank's share
        frames_excluded_per_video=skipped,
        note=note,
    )
    if out_dir is not None and ctx.is_main:
        metrics_json = json.dumps({"metrics": metrics, "config": config.to_dict()}, indent=2).encode()
        # both or neither: a failure (e.g. a full disk) leaves no scores.csv without its metrics.json
        atomic_write_many({out_dir / "scores.csv": scores_csv(results), out_dir / "metrics.json": metrics_json})
    return metrics
