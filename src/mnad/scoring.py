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


NORMALIZERS = {"video": minmax, "causal": causal_minmax}


def anomaly_score(psnr_values: np.ndarray, distances: np.ndarray, *, alpha: float, normalization: str = "video") -> np.ndarray:
    """S_t of one video: high PSNR and small D are normal, so S = alpha (1 - g(P)) + (1 - alpha) g(D)."""
    g = NORMALIZERS[normalization]
    score = alpha * (1 - g(psnr_values))
    if alpha < 1:
        score = score + (1 - alpha) * g(distances)
    return score


def error_map(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixel-wise abnormality map (paper Fig. 4): squared prediction error on [0, 1] frames, mean over channels, (B, H, W)."""
    return (((predicted.float() - target.float()) / 2) ** 2).mean(dim=1)
