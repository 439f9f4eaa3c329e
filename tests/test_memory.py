"""Memory module maths (method doc 2.2-2.5) against plain per-item, per-query references written from the formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mnad.losses import feature_losses
from mnad.model import Memory


def unit(rows: int, dim: int, *, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, dim, generator=g, dtype=dtype), dim=1)


def reference_update(items: torch.Tensor, queries: torch.Tensor, max_over: str) -> list[list[float]]:
    """Method doc 2.4 as loops, in Python floats (double precision).

    s_km = q_k . p_m; v_km = softmax over ALL N queries of the batch (column softmax); each query k is assigned to its
    nearest item; v'_km = v_km / max over all queries (code) or over the queries assigned to m (paper Eq. 5);
    p_m <- normalize(p_m + sum_{k in U_m} v'_km q_k); an item with no query stays as it is.
    """
    p = items.tolist()
    q = queries.tolist()
    n, m_count, c = len(q), len(p), len(p[0])
    s = [[sum(q[k][i] * p[m][i] for i in range(c)) for m in range(m_count)] for k in range(n)]
    v = [[0.0] * m_count for _ in range(n)]
    for m in range(m_count):
        denominator = sum(math.exp(s[k][m]) for k in range(n))
        for k in range(n):
            v[k][m] = math.exp(s[k][m]) / denominator
    nearest = [max(range(m_count), key=lambda m, k=k: s[k][m]) for k in range(n)]
    new_items = []
    for m in range(m_count):
        assigned = [k for k in range(n) if nearest[k] == m]
        if not assigned:
            new_items.append(list(p[m]))
            continue
        pool = range(n) if max_over == "all" else assigned
        v_max = max(v[k][m] for k in pool)
        updated = list(p[m])
        for k in assigned:
            for i in range(c):
                updated[i] += v[k][m] / v_max * q[k][i]
        norm = math.sqrt(sum(x * x for x in updated))
        new_items.append([x / norm for x in updated])
    return new_items


def reference_read(items: torch.Tensor, queries: torch.Tensor) -> list[list[float]]:
    """p_hat_k = sum_m w_km p_m with w_km = softmax over the items of q_k . p_m (paper Eqs. 1-2)."""
    p, q = items.tolist(), queries.tolist()
    out = []
    for qk in q:
        logits = [sum(a * b for a, b in zip(qk, pm, strict=True)) for pm in p]
        top = max(logits)
        weights = [math.exp(x - top) for x in logits]
        total = sum(weights)
        out.append([sum(w / total * pm[i] for w, pm in zip(weights, p, strict=True)) for i in range(len(p[0]))])
    return out


def memory_with(items: torch.Tensor, max_over: str = "all") -> Memory:
    memory = Memory(items.shape[0], items.shape[1], update_max_over=max_over).to(items.dtype)
    memory.items.copy_(items)
    return memory


@pytest.mark.parametrize("max_over", ["all", "assigned"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_update_matches_reference_loops(max_over: str, dtype: torch.dtype, seed: int) -> None:
    items, queries = unit(5, 6, seed=seed), unit(23, 6, seed=100 + seed)
    expected = torch.tensor(reference_update(items, queries, max_over), dtype=torch.float64)
    memory = memory_with(items.to(dtype), max_over)
    memory.update(queries.to(dtype))
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(memory.items.double(), expected, atol=tol, rtol=tol)
    assert not torch.allclose(memory.items.double(), items, atol=1e-3)  # the update did move the items


def test_update_modes_differ_when_global_max_belongs_to_another_item() -> None:
    # p0 at 0 deg, p1 at ~53 deg. Query A (40 deg) is nearest to p1 but is also the query most similar to p0;
    # query B (-60 deg) is the only one assigned to p0. Code: B's weight is exp(s_B0 - s_A0) < 1; paper: 1.
    angle = torch.deg2rad(torch.tensor([40.0, -60.0], dtype=torch.float64))
    queries = torch.stack([angle.cos(), angle.sin()], dim=1)
    items = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    s_a0, s_b0 = float(queries[0] @ items[0]), float(queries[1] @ items[0])
    code, paper = memory_with(items, "all"), memory_with(items, "assigned")
    code.update(queries)
    paper.update(queries)
    torch.testing.assert_close(paper.items[0], F.normalize(items[0] + queries[1], dim=0))
    torch.testing.assert_close(code.items[0], F.normalize(items[0] + math.exp(s_b0 - s_a0) * queries[1], dim=0))
    assert not torch.allclose(code.items[0], paper.items[0], atol=1e-3)
    # p1 owns the global max (query A), so both modes agree on it
    torch.testing.assert_close(code.items[1], paper.items[1])
    torch.testing.assert_close(code.items, torch.tensor(reference_update(items, queries, "all"), dtype=torch.float64))
    torch.testing.assert_close(paper.items, torch.tensor(reference_update(items, queries, "assigned"), dtype=torch.float64))


@pytest.mark.parametrize("max_over", ["all", "assigned"])
def test_item_without_query_is_unchanged(max_over: str) -> None:
    # Items 0 and 1 face each other; item 2 points away from every query, so no query is assigned to it.
    items = F.normalize(torch.tensor([[1.0, 0.2, 0.0], [0.2, 1.0, 0.0], [0.0, 0.0, -1.0]], dtype=torch.float64), dim=1)
    g = torch.Generator().manual_seed(3)
    queries = F.normalize(torch.rand(12, 3, generator=g, dtype=torch.float64) + torch.tensor([0.0, 0.0, 0.1]), dim=1)
    assert ((queries @ items.t()).argmax(1) != 2).all()
    memory = memory_with(items, max_over)
    memory.update(queries)
    torch.testing.assert_close(memory.items[2], items[2], atol=1e-15, rtol=0)
    assert not torch.allclose(memory.items[:2], items[:2], atol=1e-3)
    torch.testing.assert_close(memory.items, torch.tensor(reference_update(items, queries, max_over), dtype=torch.float64))


def test_single_assigned_query_gets_full_weight_under_paper_max() -> None:
    # Paper mode: an item with exactly one assigned query gets v'=1 for it, so p <- normalize(p + q).
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    queries = F.normalize(torch.tensor([[1.0, 0.3], [0.1, 1.0], [0.2, 1.0]], dtype=torch.float64), dim=1)
    memory = memory_with(items, "assigned")
    memory.update(queries)
    torch.testing.assert_close(memory.items[0], F.normalize(items[0] + queries[0], dim=0))


@pytest.mark.parametrize("max_over", ["all", "assigned"])
def test_items_stay_unit_norm(max_over: str) -> None:
    memory = Memory(10, 16, update_max_over=max_over)
    torch.testing.assert_close(memory.items.norm(dim=1), torch.ones(10))
    for step in range(5):
        memory.update(unit(50, 16, seed=step, dtype=torch.float32))
        torch.testing.assert_close(memory.items.norm(dim=1), torch.ones(10))


def test_initial_items_are_normalised_uniform_rows() -> None:
    torch.manual_seed(0)
    memory = Memory(10, 512)
    assert memory.items.shape == (10, 512)
    assert (memory.items >= 0).all()  # uniform [0, 1) before normalising: all entries positive (method doc 2.1)
    cosines = memory.items @ memory.items.t()
    off_diagonal = cosines[~torch.eye(10, dtype=torch.bool)]
    assert off_diagonal.min() > 0.6  # nearly parallel, not Gaussian (expected ~0.75)


def test_read_is_softmax_weighted_sum_of_items() -> None:
    items, queries = unit(4, 6, seed=11), unit(9, 6, seed=12)
    memory = memory_with(items)
    torch.testing.assert_close(memory.read(queries), torch.tensor(reference_read(items, queries), dtype=torch.float64))


def test_read_passes_no_gradient() -> None:
    memory = memory_with(unit(4, 6, seed=1, dtype=torch.float32))
    raw = torch.randn(7, 6, requires_grad=True)
    queries = F.normalize(raw, dim=1)
    read = memory.read(queries)
    assert not read.requires_grad  # weights detached and items without grad: nothing flows back
    assert not memory.items.requires_grad
    # The query path of the decoder input still carries gradient: through cat([q, read]) only q contributes.
    (torch.cat([queries, read], dim=1) * 3.0).sum().backward()
    reference = raw.detach().clone().requires_grad_(True)
    (F.normalize(reference, dim=1) * 3.0).sum().backward()
    torch.testing.assert_close(raw.grad, reference.grad)  # the read half added nothing to the query's gradient


def test_read_gradient_of_query_is_zero_through_read_path() -> None:
    memory = memory_with(unit(4, 6, seed=4, dtype=torch.float32))
    queries = F.normalize(torch.randn(5, 6), dim=1).requires_grad_(True)
    read = memory.read(queries)
    # Any loss on the read alone has no path to the query.
    loss = (read * torch.randn_like(read)).sum() + 0.0 * queries.sum()
    loss.backward()
    torch.testing.assert_close(queries.grad, torch.zeros_like(queries))


def test_losses_do_not_reach_items() -> None:
    memory = memory_with(unit(4, 6, seed=2, dtype=torch.float32))
    raw = torch.randn(9, 6, requires_grad=True)
    compact, separate = feature_losses(F.normalize(raw, dim=1), memory.items)
    (compact + separate).backward()
    assert raw.grad is not None and raw.grad.abs().sum() > 0
    assert memory.items.grad is None


def test_items_are_a_buffer_not_a_parameter() -> None:
    memory = Memory(10, 32)
    assert list(memory.parameters()) == []
    assert "items" in dict(memory.named_buffers())
    state = memory.state_dict()
    assert set(state) == {"items"}
    torch.testing.assert_close(state["items"], memory.items)


def test_update_is_not_tracked_by_autograd() -> None:
    memory = Memory(4, 8)
    queries = F.normalize(torch.randn(16, 8, requires_grad=True), dim=1)
    memory.update(queries)
    assert not memory.items.requires_grad
    assert memory.items.grad_fn is None


def test_update_reducers_see_max_and_sum() -> None:
    # The hooks for several processes: reduce_max gets the per-item maxima, reduce_sum the per-item deltas.
    items, queries = unit(3, 4, seed=5, dtype=torch.float32), unit(12, 4, seed=6, dtype=torch.float32)
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def reducer(t: torch.Tensor) -> torch.Tensor:
            seen[name] = t.clone()
            return t

        return reducer

    memory = memory_with(items)
    memory.update(queries, reduce_max=keep("max"), reduce_sum=keep("sum"))
    torch.testing.assert_close(seen["max"], (queries @ items.t()).amax(0))
    assert seen["sum"].shape == items.shape
    plain = memory_with(items)
    plain.update(queries)
    torch.testing.assert_close(memory.items, plain.items)


def test_unknown_update_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="update_max_over"):
        Memory(4, 8, update_max_over="some")


def test_compactness_is_d_one_definition_for_both() -> None:
    """The compactness loss on a frame's queries is its feature distance D (docs/method.md 2.5: exactly D at test time),
    both from model.memory.nearest_item_errors; each sample's own items give each its own D."""
    from mnad.scoring import feature_distance

    items, queries = unit(5, 8, seed=7, dtype=torch.float32), unit(12, 8, seed=8, dtype=torch.float32)
    compact, _ = feature_losses(queries, items)
    torch.testing.assert_close(feature_distance(queries[None], items), compact[None])
    other = unit(5, 8, seed=9, dtype=torch.float32)
    per_sample = feature_distance(torch.stack([queries, queries]), torch.stack([items, other]))
    torch.testing.assert_close(per_sample, torch.stack([compact, feature_losses(queries, other)[0]]))


def test_both_feature_losses_take_the_same_nearest_item_on_a_tie() -> None:
    """A query equally near two items: compactness pulls it towards the item separateness takes as nearest (the indices
    separateness ranks, not a separate argmax, which breaks this tie the other way: same loss, another gradient)."""
    items = torch.eye(4)
    raw = torch.tensor([[1.0, 1.0, 0.0, 0.0]], requires_grad=True)
    query = F.normalize(raw, dim=1)  # as near item 0 as item 1
    positive = items[(query @ items.t()).topk(2, dim=-1).indices[:, 0]]
    compact, _ = feature_losses(query, items)
    (got,) = torch.autograd.grad(compact, raw, retain_graph=True)
    (expected,) = torch.autograd.grad(F.mse_loss(query, positive), raw)
    torch.testing.assert_close(got, expected)
