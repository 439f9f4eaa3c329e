"""Per-frame scores (docs/method.md, section 5), each formula once: PSNR, feature distance D, weighted regular score
E_t, the normalisers g and the abnormality score S_t = alpha * (1 - g(P)) + (1 - alpha) * g(D), the trailing mean,
and the error map with its regions (Fig. 4).

Frames are in [-1, 1]; errors are measured on frames mapped to [0, 1], as published.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from numbers import Real
from typing import TYPE_CHECKING, Any, TypeVar

import cv2
import numpy as np
import torch

from mnad.calibration import Calibration
from mnad.config import PSNR_PEAKS, REGULAR_SCORES, check_count
from mnad.errors import ConfigError, DataError
from mnad.model.memory import nearest_item_errors

if TYPE_CHECKING:
    from mnad.config import Config

ArrayOrFloat = TypeVar("ArrayOrFloat", np.ndarray, float)


def check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    """Refuse a mode that is not one of ``allowed`` (one ``ConfigError`` naming ``name``): an unknown one would
    otherwise be scored as the other mode without a word. A tuple lookup: cheap enough for every frame."""
    if value not in allowed:
        raise ConfigError(f"{name} must be {' or '.join(map(repr, allowed))}, got {value!r}")


def check_alpha(alpha: object) -> None:
    """S_t's weight of PSNR: a finite number in [0, 1] (outside, S_t leaves its range; NaN makes every score NaN)."""
    if isinstance(alpha, bool) or not isinstance(alpha, Real) or not 0 <= alpha <= 1:  # NaN fails the range
        raise ConfigError(f"alpha (eval.alpha, S_t's weight of PSNR) must be a number from 0 to 1, got {alpha!r}")


def psnr(predicted: torch.Tensor, target: torch.Tensor, *, peak: str = "one") -> torch.Tensor:
    """PSNR per sample of (B, C, H, W) frames. ``peak``: 'one' (published code) or 'max' of the prediction (paper)."""
    check_choice("peak (eval.psnr_peak)", peak, PSNR_PEAKS)
    pred01, target01 = (predicted.float() + 1) / 2, (target.float() + 1) / 2
    mse = ((pred01 - target01) ** 2).flatten(1).mean(1)
    top = torch.ones_like(mse) if peak == "one" else pred01.flatten(1).amax(1) ** 2
    return 10 * torch.log10(top / mse.clamp_min(1e-12))


PATCHES = 8  # patch_psnr: patches of 1/8 of the frame's side, overlapping by half (a 15 x 15 grid)


def patch_psnr(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR of the worst-predicted patch per sample, -10 log10(max_r MSE_r) over patches r of 1/PATCHES of the side
    (peak 1): an object that covers a small part of the frame is not averaged away with the rest of it (not in the
    paper; a localised score, as video anomaly detectors that score regions use). (B,)"""
    worst = _worst_patch(error_map(predicted, target)[:, None])  # the error map (B, 1, H, W) on [0, 1]
    return 10 * torch.log10(1 / worst.clamp_min(1e-12))


def _patch_starts(length: int, side: int, stride: int) -> list[int]:
    """Where the blocks along one axis begin: every ``stride`` pixels, and one more flush with the far edge where the
    strides stop short of it (a side of 40 has blocks of 5 every 2: the last pixel would be in none)."""
    starts = list(range(0, length - side + 1, stride))
    return starts if starts[-1] + side == length else [*starts, length - side]


def _patch_means(values: torch.Tensor) -> tuple[torch.Tensor, list[int], list[int], int]:
    """The means of ``values`` (B, 1, h, w) over blocks of 1/PATCHES of the width, overlapping by half and covering
    every pixel (``_patch_starts``): the regions of ``patch_psnr`` and ``patch_distance``. (B, 1, rows, cols), with
    the blocks' top rows and left columns and their side."""
    h, w = values.shape[-2:]
    side = max(w // PATCHES, 1)
    stride = max(side // 2, 1)
    rows, cols = _patch_starts(h, side, stride), _patch_starts(w, side, stride)
    means = torch.nn.functional.avg_pool2d(values, side, stride=stride)
    if len(cols) > means.shape[-1]:  # the blocks flush with the right edge, then with the bottom one (shapes are static)
        means = torch.cat([means, torch.nn.functional.avg_pool2d(values[..., -side:], side, stride=stride)], -1)
    if len(rows) > means.shape[-2]:
        means = torch.cat([means, _patch_means_of_strip(values[..., -side:, :], side, stride, len(cols))], -2)
    return means, rows, cols, side


def _patch_means_of_strip(strip: torch.Tensor, side: int, stride: int, columns: int) -> torch.Tensor:
    """The block means of the bottom strip (B, 1, side, w), at the columns ``_patch_means`` uses. (B, 1, 1, columns)"""
    means = torch.nn.functional.avg_pool2d(strip, side, stride=stride)
    if columns > means.shape[-1]:
        means = torch.cat([means, torch.nn.functional.avg_pool2d(strip[..., -side:], side)], -1)
    return means


def _worst_patch(values: torch.Tensor) -> torch.Tensor:
    """The largest block mean of ``values`` (B, 1, h, w) (``_patch_means``). (B,)"""
    return _patch_means(values)[0].flatten(1).amax(1)


def worst_patch_box(error: np.ndarray) -> tuple[int, int, int, int]:
    """Where ``patch_psnr`` looks in one frame: (x, y, width, height), in the error map's pixels, of its worst-predicted
    patch. ``error``: the frame's error map (H, W) or (1, H, W), as ``error_map`` gives it."""
    plane = np.asarray(error, dtype=np.float32)
    if plane.ndim == 3 and plane.shape[0] == 1:
        plane = plane[0]
    if plane.ndim != 2 or plane.size == 0:
        raise DataError(f"error: an error map must be one frame's (H, W), or (1, H, W), not empty, got shape {np.shape(error)}")
    means, rows, cols, side = _patch_means(torch.from_numpy(np.ascontiguousarray(plane))[None, None])
    row, col = divmod(int(means.flatten().argmax()), means.shape[-1])
    return cols[col], rows[row], side, side


def feature_distance(queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """D per sample: mean squared distance of the queries (B, K, C) to their nearest items, as an MSE. (B,)"""
    return nearest_item_errors(queries, items).flatten(1).mean(1)


def patch_distance(queries: torch.Tensor, items: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """D of the worst region per sample: each query's distance to its nearest item, averaged over blocks of 1/PATCHES
    of the query map's side (stride half a block, rounded down) and the largest block kept; the regions of ``patch_psnr``
    where the image size is a multiple of 128 (elsewhere whole queries only nearly match them: docs/method.md §9.1), so
    both terms of S_t look at where the frame is most abnormal rather than at how busy the whole frame is (not in the
    paper; ``eval.distance_region``). ``grid``: the query map's (height, width), K = height * width. (B,)"""
    return _worst_patch(nearest_item_errors(queries, items).mean(-1).reshape(-1, 1, *grid))  # per query (B, 1, h, w)


def regular_score(predicted: torch.Tensor, target: torch.Tensor, *, kind: str = "code") -> torch.Tensor:
    """Weighted regular score E_t per sample (paper Eqs. 6-7), which gates the test-time memory update.

    'code': per-element squared errors (what the published gamma values are calibrated to);
    'paper': per-pixel L2 norms over the colour channels.
    """
    check_choice("kind (eval.regular_score)", kind, REGULAR_SCORES)
    diff = (predicted.float() - target.float()) / 2  # difference of the frames mapped to [0, 1]
    error = diff**2 if kind == "code" else diff.norm(dim=1, keepdim=True)
    weight = 1 - torch.exp(-error)
    return (weight * error).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp_min(1e-12)


def score_terms(config: Config, psnr_value: ArrayOrFloat, patch_psnr_value: ArrayOrFloat, distance: ArrayOrFloat,
                patch_distance_value: ArrayOrFloat) -> tuple[ArrayOrFloat, ArrayOrFloat]:
    """The (PSNR, D) pair that S_t mixes: each over the whole frame (published) or of the worst region
    (``eval.psnr_region``, ``eval.distance_region``)."""
    e = config.eval
    return (patch_psnr_value if e.psnr_region == "patch" else psnr_value,
            patch_distance_value if e.distance_region == "patch" else distance)


def abnormality(g_psnr: ArrayOrFloat, g_distance: ArrayOrFloat, alpha: float) -> ArrayOrFloat:
    """S_t = alpha (1 - g(P)) + (1 - alpha) g(D) (docs/method.md 5.3): high PSNR and small D are normal."""
    return alpha * (1 - g_psnr) + (1 - alpha) * g_distance


# Normalisers g(.): per video (published, sees the whole video), running (causal) or calibrated (causal, fixed).


def minmax(values: np.ndarray) -> np.ndarray:
    """Min-max normalise to [0, 1] over the whole series (per video, the published protocol: not causal);
    a constant series maps to zeros rather than dividing by zero."""
    values = np.asarray(values, dtype=np.float64)
    span = values.max() - values.min() if values.size else 0.0
    return (values - values.min()) / span if span > 0 else np.zeros_like(values)


@dataclass
class RunningMinMax:
    """Min-max over the values seen so far, one value at a time: causal, constant memory; its state is the range."""

    low: float = math.inf
    high: float = -math.inf

    def __call__(self, value: float) -> float:
        self.low, self.high = min(self.low, value), max(self.high, value)
        span = self.high - self.low
        return (value - self.low) / span if span > 0 else 0.0


def causal_minmax(values: np.ndarray) -> np.ndarray:
    """``RunningMinMax`` over a whole series: each value scaled by the range of the values up to it."""
    running = RunningMinMax()
    return np.array([running(float(v)) for v in np.asarray(values, dtype=np.float64)], dtype=np.float64)


def check_rate(false_alarm_rate: object) -> float:
    """A false-alarm rate as the fits and ``frames_needed`` take it: a number strictly between 0 and 1 (0 would need
    infinitely many frames, 1 alerts on every frame; NaN or one outside makes every threshold meaningless), else one
    ``ConfigError``."""
    if isinstance(false_alarm_rate, bool) or not isinstance(false_alarm_rate, Real) or not 0 < false_alarm_rate < 1:
        raise ConfigError("the false-alarm rate (false_alarm_rate, --false-alarm-rate) must be a number strictly between "
                          f"0 and 1, got {false_alarm_rate!r}")
    return float(false_alarm_rate)


def frames_needed(false_alarm_rate: float) -> int:
    """Normal frames a threshold for ``false_alarm_rate`` is fitted on at least (one alert's worth: 1 / rate), the rule
    ``calibrate`` refuses by and the threshold table and the stream protocol leave rates out by (capped at 1e18). A
    rate ``check_rate`` refuses is refused (was: -10 frames for -0.1, a ZeroDivisionError for 0)."""
    return math.ceil(min(1 / check_rate(false_alarm_rate), 1e18))


def anomaly_score(
    psnr_values: np.ndarray,
    distances: np.ndarray,
    *,
    alpha: float,
    normalization: str = "video",
    calibration: Calibration | dict[str, Any] | None = None,
) -> np.ndarray:
    """S_t of one video's frames: g is per-video min-max ('video', the published protocol), min-max over the frames
    so far ('causal') or the ranges of a calibration on normal footage ('calibrated'). The streaming scorer computes
    the causal ones frame by frame with the same normalisers."""
    check_alpha(alpha)
    psnr_values, distances = np.asarray(psnr_values, dtype=np.float64), np.asarray(distances, dtype=np.float64)
    if normalization == "calibrated":
        if calibration is None or not calibration:
            raise ConfigError("calibrated normalisation needs a calibration (run `mnad calibrate`)")
        return abnormality(*normalised_terms(psnr_values, distances, alpha, Calibration.given(calibration)), alpha)
    if normalization in ("video", "causal"):
        g = minmax if normalization == "video" else causal_minmax
        return abnormality(*normalised_terms(psnr_values, distances, alpha, None, g, g), alpha)
    raise ConfigError(f"unknown normalisation {normalization!r}")


def normalised_terms(psnr_value: ArrayOrFloat, distance: ArrayOrFloat, alpha: float, calibration: Calibration | None,
                     g_psnr: Callable[[ArrayOrFloat], ArrayOrFloat] | None = None,
                     g_distance: Callable[[ArrayOrFloat], ArrayOrFloat] | None = None) -> tuple[ArrayOrFloat, ArrayOrFloat]:
    """(g(P), g(D)) as S_t mixes them, for a whole series or one frame alike: the ``calibration``'s fixed ranges where
    there is one, else the normalisers ``g_psnr`` and ``g_distance`` (per video, running). The one choice between the
    two, for ``anomaly_score`` and ``CausalScore``. Without a calibration D is normalised only where S_t weighs it
    (alpha < 1): without memory it is constant, and its g is 0 rather than noise scaled by an empty range."""
    if calibration is not None:
        return calibration.scale_psnr(psnr_value), calibration.scale_distance(distance)
    if g_psnr is None or g_distance is None:
        raise ConfigError("normalised_terms: without a calibration, the normalisers g_psnr and g_distance are needed")
    g_p = g_psnr(psnr_value)
    if alpha < 1:
        return g_p, g_distance(distance)
    return g_p, np.zeros_like(g_p) if isinstance(g_p, np.ndarray) else 0.0


@dataclass
class TrailingMean:
    """The mean of the last ``window`` scores, one score at a time (causal); its state is those scores."""

    window: int
    recent: list[float] = field(default_factory=list)

    def __call__(self, score: float) -> float:
        self.recent.append(score)
        del self.recent[: -self.window]
        return float(np.mean(self.recent))


@dataclass
class CausalScore:
    """S_t and its trailing mean, one frame at a time from past frames only: g is the calibration's fixed ranges,
    or a running min-max without one. What ``mnad detect`` and the stream protocol score with; its state is the
    running ranges and the trailing mean's scores."""

    alpha: float
    window: int
    calibration: Calibration | None = None
    psnr_range: RunningMinMax = field(default_factory=RunningMinMax)
    distance_range: RunningMinMax = field(default_factory=RunningMinMax)
    mean: TrailingMean | None = None

    def __post_init__(self) -> None:
        self.mean = self.mean or TrailingMean(self.window)

    def __call__(self, psnr_value: float, distance: float) -> tuple[float, float]:
        """(S_t, its trailing mean) of one frame."""
        g_p, g_d = normalised_terms(psnr_value, distance, self.alpha, self.calibration, self.psnr_range, self.distance_range)
        score = float(abnormality(g_p, g_d, self.alpha))
        return score, self.mean(score)


def smooth(scores: np.ndarray, window: int) -> np.ndarray:
    """``TrailingMean`` over a whole series; window 1 leaves the scores as they are."""
    check_count("the smoothing window (eval.smoothing, --smoothing)", window)
    scores = np.asarray(scores, dtype=np.float64)
    if window <= 1:
        return scores
    mean = TrailingMean(window)
    return np.array([mean(float(v)) for v in scores], dtype=np.float64)


def error_map(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixel-wise abnormality map (paper Fig. 4): squared prediction error on [0, 1] frames, mean over channels, (B, H, W)."""
    return (((predicted.float() - target.float()) / 2) ** 2).mean(dim=1)


def abnormal_regions(error: np.ndarray, sigma: float = 0.0) -> np.ndarray:
    """Boolean mask (H, W) of the regions whose (slightly blurred) error is above the frame's mean + ``sigma`` std
    (paper Fig. 4 uses the mean); used by ``mnad detect`` and the report's thumbnails alike.

    ``error``: one frame's map, (H, W), or ``error_map``'s output for one frame, (1, H, W), whose batch of one is
    dropped; anything else (a batch of several, a single row, an empty map) is one ``DataError``: read as an image,
    cv2 would take (H, W, C) as H rows of W pixels with C channels and outline the wrong regions without a word."""
    try:
        plane = np.asarray(error, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(f"error: an error map must be an array of numbers, got {type(error).__name__}") from exc
    if plane.ndim == 3 and plane.shape[0] == 1:
        plane = plane[0]
    if plane.ndim != 2 or plane.size == 0:
        raise DataError(f"error: an error map must be one frame's (H, W), or (1, H, W), not empty, got shape {np.shape(error)}")
    blurred = cv2.GaussianBlur(plane, (0, 0), 2.0)
    return blurred > blurred.mean() + sigma * blurred.std()
