"""Training with DDP (mnad.distributed): 2 gloo processes on CPU against one process with the same global batch.

The 2-rank run (per-rank batch 2, sync_batchnorm) and the 1-process run (batch 4) see the same global batches, so
each step computes the same thing up to float rounding. The ranks hold bit-identical memory items after every step.

How close the two runs end up is bounded by the method, not by DDP: float rounding (a different summation order)
gets amplified over the steps, by Adam (it scales each gradient element to about lr, so the rounding noise of
elements whose gradient is near zero, below its eps = 1e-8, moves weights by up to ~lr/10) and by near-ties in the
nearest/second-nearest item of a query (a flip changes that query's loss terms discretely). Measured on this setup
(max |difference| of any weight, BatchNorm buffer or memory item):

- first step, same initialisation: memory items 3e-7, gradients 7e-6 relative (STEP_TOLERANCE / GRAD_TOLERANCE);
- after 20 steps: 2e-2 .. 4e-2 with sync_batchnorm (RUN_TOLERANCE), 0.4 without it (per-rank BatchNorm statistics),
  and 3e-3 between two 1-process runs that differ only in their number of torch threads;
- replaying every step of the 2-rank run from its own pre-step state in one process (a check outside this test):
  items within 3e-7 at every step, gradients within 7e-6 relative except at the one step with a near-tie (5e-3).
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import tiny_config
from torch import nn

import mnad.train as train_module
from mnad import distributed
from mnad.checkpoint import load_model
from mnad.config import Config
from mnad.errors import ConfigError
from mnad.evaluate import evaluate
from mnad.model.memory import Memory
from mnad.train import TRAIN_STATE_FILE, train

WORLD = 2
GLOBAL_BATCH = 4
EPOCHS = 2  # 40 clips / 4 = 10 steps per epoch
STEP_TOLERANCE = 1e-5  # memory items after the first step (measured 3e-7)
GRAD_TOLERANCE = 1e-4  # relative, per parameter tensor, first step (measured 7e-6)
RUN_TOLERANCE = 0.1  # weights, buffers and items after 20 steps (measured 2e-2 .. 4e-2; 0.4 without sync_batchnorm)


def _config(**train_fields: object) -> Config:
    config = tiny_config()
    config.train.epochs = EPOCHS
    config.train.batch_size = GLOBAL_BATCH
    config.train.sync_batchnorm = True
    for key, value in train_fields.items():
        setattr(config.train, key, value)
    return config


@contextlib.contextmanager
def _recording() -> Iterator[dict[str, list]]:
    """Record the memory items after every update, the models that ``train`` builds and the first step's gradients."""
    record: dict[str, list] = {"items": [], "models": [], "grads": []}
    original_update, original_model, original_step = Memory.update, train_module.MNAD, torch.optim.Adam.step

    def update(self: Memory, *args: object, **kwargs: object) -> None:
        original_update(self, *args, **kwargs)
        record["items"].append(self.items.detach().clone())

    class RecordedMNAD(original_model):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            record["models"].append(self)

    def step(self: torch.optim.Adam, *args: object, **kwargs: object) -> object:
        if not record["grads"]:
            record["grads"] = [p.grad.detach().clone() for group in self.param_groups for p in group["params"]]
        return original_step(self, *args, **kwargs)

    Memory.update, train_module.MNAD, torch.optim.Adam.step = update, RecordedMNAD, step
    try:
        yield record
    finally:
        Memory.update, train_module.MNAD, torch.optim.Adam.step = original_update, original_model, original_step


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, port: int, root: str, out: str) -> None:
    """One rank: train 2 epochs, resume a copy of the epoch-1 checkpoint, evaluate; save what it saw."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    out_dir = Path(out)
    config = _config()
    try:
        def keep_epoch_1(epoch: int, record: dict) -> None:  # rank 0 only: a copy to resume from
            if epoch == 1:
                (out_dir / "resumed").mkdir()
                shutil.copy(out_dir / "ddp" / TRAIN_STATE_FILE, out_dir / "resumed" / TRAIN_STATE_FILE)

        with _recording() as run:
            model_path = train(config, root, out_dir / "ddp", progress=False, on_epoch=keep_epoch_1)
        with _recording() as resumed:
            train(config, root, out_dir / "resumed", resume=True, progress=False)
        model, trained = load_model(model_path)
        exact = evaluate(model, trained.override(["eval.test_update=false"]), root, out_dir=out_dir / "eval", progress=False)
        sharded = evaluate(model, trained, root, progress=False)
        torch.save({
            "items": run["items"],
            "grads": run["grads"],
            "state": _state(run["models"][0]),
            "resumed_steps": len(resumed["items"]),
            "resumed_state": _state(resumed["models"][0]),
            "exact_metrics": exact,
            "sharded_metrics": sharded,
        }, out_dir / f"rank{rank}.pt")
    finally:
        distributed.cleanup()


def _scores(path: Path) -> dict[tuple[str, str], list[float]]:
    with path.open(encoding="utf-8") as handle:
        return {(r["video"], r["frame"]): [float(r["psnr"]), float(r["distance"]), float(r["score"])] for r in csv.DictReader(handle)}


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel())


def test_two_ranks_match_one_process(synthetic_root: Path, tmp_path: Path) -> None:
    started = time.perf_counter()
    mp.spawn(_worker, args=(_free_port(), str(synthetic_root), str(tmp_path)), nprocs=WORLD, join=True)
    spawned = time.perf_counter() - started
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]

    # (a) bit-identical memory items on both ranks after every step; identical weights at the end
    steps = EPOCHS * (40 // GLOBAL_BATCH)
    assert len(ranks[0]["items"]) == len(ranks[1]["items"]) == steps
    for step, (a, b) in enumerate(zip(ranks[0]["items"], ranks[1]["items"], strict=True)):
        assert torch.equal(a, b), f"memory items differ between the ranks after step {step + 1}"
    assert _max_difference(ranks[0]["state"], ranks[1]["state"]) == 0.0

    # (b) the same as one process with the global batch: the first step tightly, the whole run within RUN_TOLERANCE
    with _recording() as single:
        train(_config(), synthetic_root, tmp_path / "single", progress=False)
    assert len(single["items"]) == steps
    step_drift = float((ranks[0]["items"][0] - single["items"][0]).abs().max())
    grad_drift = max(float((a - b).norm() / b.norm()) for a, b in zip(ranks[0]["grads"], single["grads"], strict=True) if b.norm() > 1e-6)
    state_drift = _max_difference(ranks[0]["state"], _state(single["models"][0]))
    print(f"\n2 ranks vs 1 process: first step: items {step_drift:.1e}, gradients {grad_drift:.1e} relative; "
          f"after {steps} steps: {state_drift:.1e}; the 2 ranks took {spawned:.1f} s")
    assert step_drift < STEP_TOLERANCE and grad_drift < GRAD_TOLERANCE
    assert state_drift < RUN_TOLERANCE
    assert _max_difference(ranks[0]["state"], _state(load_model(tmp_path / "ddp")[0])) == 0.0  # rank 0 wrote the model

    # resume: epoch 2 from the epoch-1 checkpoint repeats the uninterrupted run exactly
    assert ranks[0]["resumed_steps"] == steps // EPOCHS
    for rank in ranks:
        assert _max_difference(rank["resumed_state"], rank["state"]) == 0.0

    # evaluation: every rank gets the gathered metrics; without test-time updates they equal 1-process scoring
    model, trained = load_model(tmp_path / "ddp")
    single_exact = evaluate(model, trained.override(["eval.test_update=false"]), synthetic_root, out_dir=tmp_path / "eval1", progress=False)
    for rank in ranks:
        assert rank["exact_metrics"] == ranks[0]["exact_metrics"] and rank["sharded_metrics"] == ranks[0]["sharded_metrics"]
        assert rank["exact_metrics"]["ranks"] == WORLD and rank["exact_metrics"]["videos"] == 2
    assert ranks[0]["exact_metrics"]["micro_auc"] == pytest.approx(single_exact["micro_auc"], abs=1e-9)
    two, one = _scores(tmp_path / "eval" / "scores.csv"), _scores(tmp_path / "eval1" / "scores.csv")
    assert two.keys() == one.keys()
    for key, values in one.items():
        assert two[key] == pytest.approx(values, abs=1e-4), key
    log = (tmp_path / "ddp" / "train_log.jsonl").read_text().splitlines()
    assert len(log) == EPOCHS  # one writer


def test_sampler_gives_the_same_global_batches_for_any_rank_count() -> None:
    dataset = list(range(43))
    for epoch in range(3):
        reference = None
        for world in (1, 2, 4):
            per_rank = GLOBAL_BATCH // world
            shards = []
            for rank in range(world):
                sampler = distributed.sampler(dataset, distributed.Context(rank=rank, world_size=world), seed=7)
                sampler.set_epoch(epoch)
                order = list(sampler)
                shards.append([sorted(order[i:i + per_rank]) for i in range(0, len(order) - per_rank + 1, per_rank)])
            batches = [sorted(sum(parts, [])) for parts in zip(*shards, strict=True)]
            assert len(batches) == 43 // GLOBAL_BATCH
            if reference is None:
                reference = batches
            assert batches == reference, f"world size {world}, epoch {epoch}"


def test_batch_size_is_global_and_must_divide() -> None:
    assert distributed.local_batch_size(8, distributed.Context(world_size=4)) == 2
    with pytest.raises(ConfigError, match="not divisible"):
        distributed.local_batch_size(6, distributed.Context(world_size=4))


def test_contiguous_shards_keep_the_order() -> None:
    items, sizes = list("abcdefg"), [5, 1, 1, 9, 2, 2, 4]
    for world in (1, 2, 3, 8):
        parts = [distributed.shard_contiguous(items, sizes, distributed.Context(rank=r, world_size=world)) for r in range(world)]
        assert sum(parts, []) == items


def test_single_process_context_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = distributed.setup("cpu")
    assert not ctx.enabled and ctx.is_main and ctx.reduce_max is None and ctx.reduce_sum is None
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    assert distributed.wrap(model, ctx, sync_batchnorm=True) is model
    plain = model[1]
    converted = distributed.convert_sync_batchnorm(model, torch.device("cpu"))
    assert converted is model and isinstance(model[1], distributed.GlobalBatchNorm2d)
    assert model[1].weight is plain.weight and model[1].running_mean is plain.running_mean
    x = torch.randn(4, 2, 5, 5)
    reference = nn.BatchNorm2d(2)
    assert torch.allclose(converted[1](x), reference(x))  # one process: a plain BatchNorm2d
    assert torch.allclose(converted[1].running_var, reference.running_var)
