"""The memory module (docs/method.md, section 2): M unit-norm items that queries read and update.

Items are a buffer, not a parameter: they change only through the update rule, never by backprop, and they are
saved and loaded with the weights. Queries are passed flattened to (N, C), already L2-normalised.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mnad.config import UPDATE_MAX_OVER

Reduce = Callable[[torch.Tensor], torch.Tensor]


def item_scores(queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """q_k . p_m for every query and item (paper Eq. 1's exponent): their cosine similarity, both being unit-norm, with
    no temperature, as published. (N, M) for queries (N, C) and items (M, C); (B, K, M) for queries (B, K, C) and
    items (M, C) or each sample's own (B, M, C)."""
    return queries @ items.transpose(-2, -1)


def matching_probabilities(queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Softmax over items of q . p (paper Eq. 1): the weights with which each query reads the memory, (N, M), or
    (B, K, M) for queries (B, K, C) and items (B, M, C)."""
    return F.softmax(item_scores(queries, items), dim=-1)


def nearest_item_errors(queries: torch.Tensor, items: torch.Tensor, nearest: torch.Tensor | None = None) -> torch.Tensor:
    """(q_k - p_p)^2 element-wise, p_p the item nearest to q_k (largest q . p): what the compactness loss averages in
    training and D at test time (docs/method.md 2.5, 5.2), one definition for both. Queries (N, C) or (B, K, C) against
    items (M, C), or against each sample's own items (B, M, C); the result has the queries' shape. ``nearest``: the
    nearest items' indices where the caller has them (the losses, whose separateness needs the second nearest too, so
    that both terms take the same item on a tie)."""
    if nearest is None:
        nearest = item_scores(queries, items).argmax(-1)
    chosen = items[nearest] if items.dim() == 2 else torch.take_along_dim(items, nearest[..., None], dim=-2)
    return (queries - chosen) ** 2


def read_memory(queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Each query's softmax-weighted sum of items (paper Eqs. 1-2). Weights carry no gradient.

    Queries (N, C) read items (M, C); or, per sample, queries (B, K, C) read their own items (B, M, C)."""
    weights = matching_probabilities(queries, items).detach()
    return weights @ items


def updated_memory(
    queries: torch.Tensor,
    items: torch.Tensor,
    *,
    max_over: str = "all",
    reduce_max: Reduce | None = None,
    reduce_sum: Reduce | None = None,
) -> torch.Tensor:
    """p_m <- normalize(p_m + sum_{k in U_m} v'_km q_k), all items at once (paper Eqs. 3-5); returns new items.

    v_km is a softmax over the queries, divided by its max over queries. The softmax denominator cancels in
    that ratio, so v'_km = exp(s_km - max_k s_km): no softmax over N is needed, and across processes the max
    and the weighted sums reduce independently (``reduce_max`` / ``reduce_sum``, e.g. all-reduce in DDP).
    Written with one-hot masks rather than scatter ops so that it exports to ONNX as it is.

    Queries (N, C) update items (M, C); or, one item set per sample (several streams scored in one batch), queries
    (B, K, C) update their own items (B, M, C), every sum and max taken within the sample (the same operations on
    a leading batch axis, hence the negative dims).
    """
    queries = queries.to(items.dtype)  # bf16 queries -> fp32 items; fp64 items keep fp64
    scores = item_scores(queries, items)  # (N, M), or (B, K, M)
    assigned = F.one_hot(scores.argmax(dim=-1), items.shape[-2]).to(scores.dtype)  # U_m as a mask
    if max_over == "all":  # published code: max over every query of the batch
        max_score = scores.amax(dim=-2)  # (M,), or (B, M)
    else:  # paper Eq. 5: max over the queries assigned to the item
        max_score = scores.masked_fill(assigned == 0, -torch.inf).amax(dim=-2)
    if reduce_max is not None:
        max_score = reduce_max(max_score)
    # v'_km for the assigned pairs only; elsewhere 0 (the where() keeps exp(-inf - -inf) = nan out)
    weights = torch.where(assigned > 0, torch.exp(scores - max_score.unsqueeze(-2)), torch.zeros_like(scores))
    delta = weights.transpose(-2, -1) @ queries  # (M, C), or (B, M, C)
    if reduce_sum is not None:
        delta = reduce_sum(delta)
    return F.normalize(items + delta, dim=-1)


class Memory(nn.Module):
    def __init__(self, size: int = 10, dim: int = 512, *, update_max_over: str = "all") -> None:
        super().__init__()
        if update_max_over not in UPDATE_MAX_OVER:
            raise ValueError(f"update_max_over must be 'all' or 'assigned', got {update_max_over!r}")
        self.update_max_over = update_max_over
        # Uniform [0, 1) rows, normalised: the published initialisation (the items start nearly parallel).
        self.register_buffer("items", F.normalize(torch.rand(size, dim), dim=1))

    def read(self, queries: torch.Tensor) -> torch.Tensor:
        return read_memory(queries, self.items)

    @torch.no_grad()
    def update(self, queries: torch.Tensor, *, reduce_max: Reduce | None = None, reduce_sum: Reduce | None = None) -> None:
        """Update the items in place from ``queries`` (N, C); see ``updated_memory``."""
        new = updated_memory(queries, self.items, max_over=self.update_max_over, reduce_max=reduce_max, reduce_sum=reduce_sum)
        self.items.copy_(new)
