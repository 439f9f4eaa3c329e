"""A step that one rank fails stops every rank at once (mnad.distributed.together), on 2 gloo processes on CPU.

Under torchrun rank 0 alone checks and writes the run folder (its lock, config.json, the checkpoints, the log, the
model) and evaluation's scores. When one of those raised on rank 0, the other ranks went on to the next barrier or
gradient all-reduce and waited there for rank 0 until torchrun's agent, the lost connection or a collective's
timeout (gloo's and NCCL's: 10 to 30 minutes) ended them. Now the ranks agree on each such step in one all-reduce:
the rank that failed raises its own error, the others a short RankFailed naming it (or the same stop, for a
Ctrl-C or SIGTERM), and every rank gets out of train() or evaluate() promptly, in step for what follows.

Each scenario below makes one rank fail at one such step; the 2 ranks run them one after another in one process
group, which stays usable only if both left every scenario at the same point. JOIN_LIMIT is a hang detector, not a
speed check: without the agreement a rank waits out gloo's 30-minute timeout.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
import types
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import tiny_config

import mnad.evaluate as evaluate_module
import mnad.train as train_module
from mnad import distributed
from mnad.config import Config
from mnad.data.videos import FrameFolder
from mnad.errors import CheckpointError, DataError, Terminated
from mnad.evaluate import evaluate
from mnad.model import MNAD
from mnad.train import train

WORLD = 2
JOIN_LIMIT = 600  # seconds for the whole job, far above what it takes (a hang detector)


def _config() -> Config:
    config = tiny_config()
    config.train.batch_size = 4  # 2 clips a rank
    config.train.checkpoint_minutes = 0.0  # the epoch's end only, unless a scenario says otherwise
    return config


def _failing(exc: BaseException):  # noqa: ANN202
    def fail(*args: object, **kwargs: object) -> None:
        raise exc
    return fail


# name: (the rank that fails, where: module, attribute, what it raises, the other rank's error starts with)
SCENARIOS = {
    "folder refused": (0, train_module, "check_run_folder", DataError("injected: the run folder is refused"),
                       "rank 0 of this job stopped with an error while checking the output folder"),
    "footage": (1, train_module, "training_videos", DataError("injected: a frame that cannot be read"),
                "rank 1 of this job stopped with an error while reading the training footage"),
    "config.json": (0, train_module, "atomic_write", OSError(errno.ENOSPC, "No space left on device"),
                    "rank 0 of this job stopped with an error while preparing the output folder"),
    "mid-epoch checkpoint": (0, train_module, "save_mid_epoch", CheckpointError("injected: disk full"),
                             "rank 0 of this job stopped with an error while writing a checkpoint part way into epoch 1"),
    "epoch checkpoint": (0, train_module, "save_checkpoint", CheckpointError("injected: disk full"),
                         "rank 0 of this job stopped with an error at the end of epoch 1"),
    "stopped in a write": (0, train_module, "save_checkpoint", Terminated("SIGTERM"), None),
    "final model": (0, train_module, "save_model", CheckpointError("injected: disk full"),
                    "rank 0 of this job stopped with an error while writing the final model"),
    "scores": (0, evaluate_module, "write_evaluation", DataError("injected: cannot write scores.csv"),
               "rank 0 of this job stopped with an error while writing the scores and metrics"),
    # a test video of rank 1's share that cannot be decoded: rank 0 waited for its counts in the gather
    "test videos": (1, FrameFolder, "__len__", DataError("injected: a test frame that cannot be read"),
                    "rank 1 of this job stopped with an error while reading its share of the test videos"),
}


def _run(name: str, root: str, out: Path) -> None:
    if name in ("scores", "test videos"):
        torch.manual_seed(0)
        evaluate(MNAD(tiny_config().model), tiny_config(), root, out_dir=out / "eval", progress=False)
        return
    config = _config()
    if name == "mid-epoch checkpoint":
        config.train.checkpoint_minutes = 1.0
    train(config, root, out / "run", progress=False)


def _worker(rank: int, port: int, root: str, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    said = {}
    for name, (failing, module, attribute, exc, _) in SCENARIOS.items():
        with pytest.MonkeyPatch.context() as patch:
            if rank == failing:
                patch.setattr(module, attribute, _failing(exc))
            if name == "mid-epoch checkpoint":  # due at batch 3, asked at every step
                patch.setattr(train_module, "checkpoint_due", lambda since, minutes, step, batches: step == 3)
                patch.setattr(train_module, "POLL_SECONDS", 0.0)
            try:
                _run(name, root, Path(out) / name)
                said[name] = ("returned", "")
            except BaseException as caught:  # noqa: BLE001 (what each rank met is the result)
                said[name] = (type(caught).__name__, str(caught))
        (Path(out) / f"rank{rank}.json").write_text(json.dumps(said))  # so far: a hang still shows where

    # the command: rank 0's own error line, the other rank's short one; no traceback, exit status 2 on both
    from mnad import cli

    with open(Path(out) / f"rank{rank}.err", "w", encoding="utf-8") as err, pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stderr", err)
        if rank == 0:
            patch.setattr(train_module, "save_checkpoint", _failing(CheckpointError("injected: disk full")))
        code = cli.main(["train", "--recipe", "synthetic_pred", "--data-root", root, "--out", str(Path(out) / "cli"),
                         "--set", "model.image_size=32", "--set", "model.width=8", "--set", "train.bf16=false",
                         "--set", "train.epochs=1", "--set", "train.batch_size=4", "--set", "train.checkpoint_minutes=0",
                         "--quiet"])
        err.write(f"exit {code}\n")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_step_one_rank_fails_stops_every_rank(synthetic_root: Path, tmp_path: Path) -> None:
    job = mp.spawn(_worker, args=(_free_port(), str(synthetic_root), str(tmp_path)), nprocs=WORLD, join=False)
    deadline = time.monotonic() + JOIN_LIMIT
    try:
        while not job.join(timeout=5):
            if time.monotonic() > deadline:
                pytest.fail(f"the ranks did not end within {JOIN_LIMIT} s (a rank waits for one that failed); so far: "
                            + " | ".join((tmp_path / f"rank{r}.json").read_text() if (tmp_path / f"rank{r}.json").exists()
                                         else f"rank {r}: nothing" for r in range(WORLD)))
    finally:
        for process in job.processes:
            if process.is_alive():
                process.kill()
    said = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    for name, (failing, _, _, exc, others) in SCENARIOS.items():
        own = said[failing][name]
        other = said[1 - failing][name]
        if isinstance(exc, OSError):  # train turns it into a DataError naming the folder
            assert own[0] == "DataError" and "cannot write to the output folder (No space left on device)" in own[1], name
        else:
            assert own == [type(exc).__name__, str(exc)], name
        if others is None:  # a stop: the same stop, said by rank 0 alone (cli.says_when_stopped)
            assert other == ["Terminated", "SIGTERM"], name
        else:
            assert other[0] == "RankFailed" and other[1].startswith(others), (name, other)

    errors = [(tmp_path / f"rank{r}.err").read_text() for r in range(WORLD)]
    for text in errors:
        assert "Traceback" not in text and text.splitlines()[-1] == "exit 2", text
    assert [line for line in errors[0].splitlines() if line.startswith("mnad: error:")] == ["mnad: error: injected: disk full"]
    lines = [line for line in errors[1].splitlines() if line.startswith("mnad: error:")]
    assert len(lines) == 1 and lines[0].startswith("mnad: error: rank 0 of this job stopped with an error at the end of "
                                                   "epoch 1"), errors[1]
    assert lines[0].endswith("the other ranks stop with it")  # the same on every other rank: said once per job


def test_one_process_takes_no_collective(monkeypatch: pytest.MonkeyPatch) -> None:
    """On one process a block just runs and its error is its own: nothing is communicated."""
    monkeypatch.setattr(distributed.dist, "all_reduce", _failing(AssertionError("a collective on one process")))
    ctx = distributed.Context()
    with distributed.together(ctx, "while testing"):
        pass
    with pytest.raises(DataError, match="mine"), distributed.together(ctx, "while testing"):
        raise DataError("mine")
    assert distributed.from_main([1.0, 2.0], ctx) == [1.0, 2.0]


def test_rank_0_shares_its_clock_about_every_poll_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """On several ranks the mid-epoch checkpoint is asked for at agreed steps only, about POLL_SECONDS apart by rank
    0's time a step, and its answer is shared (one broadcast each: ``distributed.from_main``)."""
    now, shared, asked = [0.0], [], []
    monkeypatch.setattr(train_module, "time", types.SimpleNamespace(perf_counter=lambda: now[0], monotonic=lambda: now[0]))
    monkeypatch.setattr(distributed, "from_main", lambda values, ctx: shared.append(list(values)) or list(values))
    monkeypatch.setattr(train_module, "checkpoint_due", lambda since, minutes, step, batches: asked.append(step) or step == 31)
    clock = train_module.CheckpointClock(1.0, distributed.Context(world_size=2))
    clock.start_epoch(0)
    due = []
    for step in range(1, 101):
        now[0] += train_module.POLL_SECONDS / 10  # ten steps a poll
        if clock.due(step, 100):
            due.append(step)
    assert asked == list(range(1, 100, 10)) and len(shared) == len(asked) and due == [31]
    shared.clear()
    idle = train_module.CheckpointClock(0.0, distributed.Context(world_size=2))  # 0: epoch ends only, nothing shared
    idle.start_epoch(0)
    assert not any(idle.due(step, 100) for step in range(1, 101)) and not shared
