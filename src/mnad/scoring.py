"""Per-frame scores (method doc, section 5): PSNR, feature distance D, weighted regular score E_t, and the
normalisation that turns them into the abnormality score S_t = alpha * (1 - g(P)) + (1 - alpha) * g(D).

Frames are in [-1, 1]; errors are measured on frames mapped to [0, 1], as published.
"""

from __future__ import annotations

import numpy as np
import torch


def psnr(predicted: torch.Tensor, target: torch.Tensor, *, peak: str = "one") -> torch.Tensor:
    """PSNR per sample of (B, C, H, W) frames. ``peak``: 'one' (published code) or 'max' of the prediction (paper)."""
    pred01, target01 = (predicted.float() + 1) / 2, (target.float() + 1) / 2
    mse = ((pred01 - target01) ** 2).flatten(1).mean(1)
    top = torch.ones_like(mse) if peak == "one" else pred01.flatten(1).amax(1) ** 2
    return 10 * torch.log10(top / mse.clamp_min(1e-12))


def feature_distance(queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """D per sample: mean squared distance of each query (B, K, C) to its nearest item (M, C), as an MSE."""
    nearest = (queries @ items.t()).argmax(-1)
    return ((queries - items[nearest]) ** 2).flatten(1).mean(1)


def regular_score(predicted: torch.Tensor, target: torch.Tensor, *, kind: str = "code") -> torch.Tensor:
    """Weighted regular score E_t per sample (paper Eqs. 6-7), which gates the test-time memory update.

    'code': per-element squared errors (what the published gamma values are calibrated to);
    'paper': per-pixel L2 norms over the colour channels.
    """
    diff = (predicted.float() - target.float()) / 2  # difference of the frames mapped to [0, 1]
    error = diff**2 if kind == "code" else diff.norm(dim=1, keepdim=True)
    weight = 1 - torch.exp(-error)
    return (weight * error).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp_min(1e-12)


def minmax(values: np.ndarray) -> np.ndarray:
    """Min-max normalise to [0, 1]; a constant series maps to zeros rather than dividing by zero."""
    values = np.asarray(values, dtype=np.float64)
    span = values.max() - values.min() if values.size else 0.0
    return (values - values.min()) / span if span > 0 else np.zeros_like(values)


def causal_minmax(values: np.ndarray) -> np.ndarray:
    """Min-max normalise each value by the range of the values seen so far: no look-ahead."""
    values = np.asarray(values, dtype=np.float64)
    low, high = np.minimum.accumulate(values), np.maximum.accumulate(values)
    span = high - low
    return np.divide(values - low, span, out=np.zeros_like(values), where=span > 0)


class RunningMinMax:
    """``causal_minmax`` one value at a time, for streams: constant memory."""

    def __init__(self) -> None:
        self.low, self.high = np.inf, -np.inf

    def __call__(self, value: float) -> float:
        self.low, self.high = min(self.low, value), max(self.high, value)
        span = self.high - self.low
        return (value - self.low) / span if span > 0 else 0.0


NORMALIZERS = {"video": minmax, "causal": causal_minmax}
CALIBRATION_KEYS = ("psnr_low", "psnr_high", "distance_low", "distance_high")


def calibrated(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Scale by a range fitted on normal footage (``mnad calibrate``); values outside it go beyond [0, 1]."""
    return (np.asarray(values, dtype=np.float64) - low) / max(high - low, 1e-12)


def anomaly_score(
    psnr_values: np.ndarray,
    distances: np.ndarray,
    *,
    alpha: float,
    normalization: str = "video",
    calibration: dict[str, float] | None = None,
) -> np.ndarray:
    """S_t of one video: high PSNR and small D are normal, so S = alpha (1 - g(P)) + (1 - alpha) g(D).

    g is per-video min-max ('video', the published protocol), min-max over the frames so far ('causal'), or the
    fixed ranges of a calibration on normal footage ('calibrated').
    """
    if normalization == "calibrated":
        if not calibration or any(k not in calibration for k in CALIBRATION_KEYS):
            raise ValueError("calibrated normalisation needs a calibration (run `mnad calibrate`)")
        g_p = calibrated(psnr_values, calibration["psnr_low"], calibration["psnr_high"])
        g_d = calibrated(distances, calibration["distance_low"], calibration["distance_high"])
    else:
        g = NORMALIZERS[normalization]
        g_p = g(psnr_values)
        g_d = g(distances) if alpha < 1 else np.zeros_like(g_p)
    return alpha * (1 - g_p) + (1 - alpha) * g_d


def smooth(scores: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (causal): the mean of the last ``window`` scores; window 1 leaves them as they are."""
    scores = np.asarray(scores, dtype=np.float64)
    if window <= 1 or scores.size == 0:
        return scores
    cumulative = np.concatenate([[0.0], np.cumsum(scores)])
    idx = np.arange(1, scores.size + 1)
    start = np.maximum(idx - window, 0)
    return (cumulative[idx] - cumulative[start]) / (idx - start)


def error_map(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixel-wise abnormality map (paper Fig. 4): squared prediction error on [0, 1] frames, mean over channels, (B, H, W)."""
    return (((predicted.float() - target.float()) / 2) ** 2).mean(dim=1)
