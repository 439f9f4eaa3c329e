"""Training objective (paper Eq. 8): frame loss + lambda_c * compactness + lambda_s * separateness."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mnad.model.memory import item_scores, nearest_item_errors
from mnad.model.mnad import MNAD, MNADOutput


@dataclass
class Losses:
    total: torch.Tensor
    frame: torch.Tensor
    compact: torch.Tensor
    separate: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {k: float(v.detach()) for k, v in vars(self).items()}


def feature_losses(queries: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature compactness and separateness of queries (N, C) against the items (M, C), scaled as in the published code
    (docs/method.md 2.5): compactness the mean of ``nearest_item_errors`` (exactly D at test time), separateness a mean
    triplet hinge, margin 1, between each query's nearest and second-nearest items."""
    top2 = item_scores(queries, items).topk(2, dim=-1).indices
    compact = nearest_item_errors(queries, items, top2[:, 0]).mean()
    separate = F.triplet_margin_loss(queries, items[top2[:, 0]], items[top2[:, 1]], margin=1.0)
    return compact, separate


def mnad_loss(model: MNAD, output: MNADOutput, target: torch.Tensor, lambda_compact: float, lambda_separate: float) -> Losses:
    """Losses against the memory *before* this batch's update, as in the published code.

    The frame loss is a per-element MSE in [-1, 1]; compactness is an MSE to the nearest item (so divided by the
    feature dimension) and separateness a mean triplet hinge with margin 1 (docs/method.md 2.5).
    """
    frame = F.mse_loss(output.frame.float(), target.float())
    zero = frame.new_zeros(())
    if model.memory is None:
        return Losses(frame, frame, zero, zero)
    compact, separate = feature_losses(output.queries.reshape(-1, output.queries.shape[-1]), model.memory.items)
    total = frame + lambda_compact * compact + lambda_separate * separate
    return Losses(total, frame, compact, separate)
