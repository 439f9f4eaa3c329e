"""Mid-epoch checkpoints (train.checkpoint_minutes): a run stopped part way through an epoch resumes from the batch
its last checkpoint holds and ends bit-identical to an uninterrupted run (CPU, fp32, one thread); a checkpoint whose
batches done do not fit the run is refused; 0 checkpoints only at epoch ends."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import tiny_config
from safetensors.torch import load_file

from mnad import distributed
from mnad import train as train_module
from mnad.checkpoint import MODEL_FILE, TRAIN_STATE_FILE, read_checkpoint, save_checkpoint
from mnad.cli import FIRST_EPOCH_PART_KEPT, KEPT_WHEN_STOPPED, NO_EPOCH_FINISHED, kept_when_stopped
from mnad.config import Config
from mnad.errors import CheckpointError, ConfigError, Terminated
from mnad.precision import bf16_is_native
from mnad.train import LOG_FILE, LOSS_NAMES, checkpoint_due, read_train_state, train

EPOCHS, BATCHES = 2, 10  # synthetic: 2 training videos of 24 frames, 20 clips of 5 each, batches of 4
DUE_AT = (3, 6)  # the steps of each epoch at which the interrupted runs checkpoint


class Stop(Exception):
    pass


def run_config(minutes: float = 1.0) -> Config:
    config = tiny_config()
    config.train.epochs, config.train.threads, config.train.bf16 = EPOCHS, 1, False
    config.train.checkpoint_minutes = minutes
    return config


@pytest.fixture(autouse=True)
def _threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def due_at_steps(since: float, minutes: float, step: int, batches: int) -> bool:
    """A checkpoint_due whose clock is the step count: due at DUE_AT of every epoch (where minutes > 0)."""
    return minutes > 0 and step in DUE_AT and step < batches


def stop_at_call(monkeypatch: pytest.MonkeyPatch, calls: int, stop: type[BaseException] = Stop) -> None:
    """The run's ``calls``-th train_step raises ``stop`` before it changes anything."""
    real, made = train_module.train_step, []

    def step(*args: object, **kwargs: object) -> object:
        made.append(1)
        if len(made) == calls:
            raise stop
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", step)


def log_records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / LOG_FILE).read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run, checkpointing only at epoch ends."""
    before = torch.get_num_threads()
    try:
        out = tmp_path_factory.mktemp("reference") / "run"
        train(run_config(0.0), synthetic_root, out, progress=False)
    finally:
        torch.set_num_threads(before)
    return out


def assert_same_tensors(a: Path, b: Path) -> None:
    ta, tb = load_file(a), load_file(b)
    assert sorted(ta) == sorted(tb)
    for key in ta:
        assert ta[key].dtype == tb[key].dtype and torch.equal(ta[key], tb[key]), f"{key} differs between {a} and {b}"


# each stop: the train_step call (of that run) that raises, and the (epochs done, batches done) its checkpoint then
# holds. The first two stop in epoch 1 (the second resumes mid-epoch and is stopped again before the epoch's end),
# the third in epoch 2 after an epoch-end and two mid-epoch checkpoints
STOPS = [(5, (0, 3)), (4, (0, 6)), (12, (1, 6))]


def test_stopped_mid_epoch_then_resumed_is_bit_identical(reference: Path, synthetic_root: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    for calls, (epochs_done, step) in STOPS:
        with monkeypatch.context() as patch:
            patch.setattr(train_module, "checkpoint_due", due_at_steps)
            stop_at_call(patch, calls)
            with pytest.raises(Stop):
                train(run_config(), synthetic_root, run, resume=run.exists(), progress=False)
        _, _, extra = read_checkpoint(run / TRAIN_STATE_FILE)
        assert (extra["epoch"], extra["step"]) == (epochs_done, step)
        assert len(extra["sums"]) == len(LOSS_NAMES) and extra["seconds"] >= 0
        assert (extra["record"] or {}).get("epoch") == (epochs_done or None)  # the last finished epoch's record
        assert not (run / MODEL_FILE).exists()
    # the last resume may checkpoint otherwise (checkpoint_minutes is not a setting a resume keeps)
    train(run_config(0.0), synthetic_root, run, resume=True, progress=False)

    assert_same_tensors(reference / MODEL_FILE, run / MODEL_FILE)  # weights, BatchNorm statistics, memory items
    assert_same_tensors(reference / TRAIN_STATE_FILE, run / TRAIN_STATE_FILE)  # + Adam's moments and step counts
    assert "step" not in read_checkpoint(run / TRAIN_STATE_FILE)[2]  # the epoch-end checkpoint of the last epoch
    ours, theirs = log_records(run), log_records(reference)
    assert [r["epoch"] for r in ours] == list(range(1, EPOCHS + 1))
    for mine, ref in zip(ours, theirs, strict=True):
        assert {k: v for k, v in mine.items() if k != "seconds"} == {k: v for k, v in ref.items() if k != "seconds"}


@pytest.mark.skipif(not bf16_is_native("cpu"), reason="this CPU has no native bf16 (emulated: minutes)")
def test_the_published_path_stopped_mid_epoch_then_resumed_is_bit_identical(synthetic_root: Path, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """As above, in the recipes' bf16 autocast and channels_last (the path a long run takes), one stop per epoch."""
    def config(minutes: float) -> Config:
        c = run_config(minutes)
        c.train.bf16 = c.train.channels_last = True
        return c

    reference, run = tmp_path / "reference", tmp_path / "run"
    train(config(0.0), synthetic_root, reference, progress=False)
    for calls in (5, BATCHES + 2):  # mid-epoch 1 (checkpoint at batch 3), then mid-epoch 2 (at batch 6)
        with monkeypatch.context() as patch:
            patch.setattr(train_module, "checkpoint_due", due_at_steps)
            stop_at_call(patch, calls)
            with pytest.raises(Stop):
                train(config(1.0), synthetic_root, run, resume=run.exists(), progress=False)
    train(config(0.0), synthetic_root, run, resume=True, progress=False)
    assert_same_tensors(reference / MODEL_FILE, run / MODEL_FILE)
    assert_same_tensors(reference / TRAIN_STATE_FILE, run / TRAIN_STATE_FILE)
    assert [r["computed"] for r in log_records(run)] == ["bf16, channels_last, eager"] * EPOCHS


def test_an_epoch_resumed_in_another_layout_says_both(synthetic_root: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(train_module, "checkpoint_due", due_at_steps)
        stop_at_call(patch, BATCHES + 5)  # in epoch 2, after its checkpoint at batch 3
        with pytest.raises(Stop):
            train(run_config(), synthetic_root, run, progress=False)
    assert read_checkpoint(run / TRAIN_STATE_FILE)[2]["computed"] == "fp32, NCHW, eager"
    resumed = run_config(0.0)
    resumed.train.channels_last = True
    train(resumed, synthetic_root, run, resume=True, progress=False)
    # epoch 2's batches 1-3 ran in NCHW, the rest in channels_last: its record says both, in order
    assert [r["computed"] for r in log_records(run)] == ["fp32, NCHW, eager", "fp32, NCHW, eager then fp32, channels_last, eager"]


@pytest.fixture
def stopped(synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run stopped in epoch 2 after a mid-epoch checkpoint at batch 3."""
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(train_module, "checkpoint_due", due_at_steps)
        stop_at_call(patch, BATCHES + 5)
        with pytest.raises(Stop):
            train(run_config(), synthetic_root, run, progress=False)
    return run


def rewritten(path: Path, **changes: object) -> None:
    """The checkpoint ``path`` written again (its hashes recomputed) with its metadata changed."""
    tensors, config, extra = read_checkpoint(path)
    save_checkpoint(path, tensors, config, extra | changes)


@pytest.mark.parametrize(("changes", "said"), [
    ({"step": BATCHES}, f"10 batches of epoch 2 were done, outside the epoch's 1 to {BATCHES - 1}"),
    ({"step": 0}, "0 batches of epoch 2 were done"),
    ({"step": "3"}, "step '3'"),
    ({"step": True}, "step True"),
    ({"sums": [1.0, 2.0]}, "sums [1.0, 2.0]"),
    ({"sums": ["1", 0, 0, 0]}, "sums ['1', 0, 0, 0]"),
    ({"seconds": -1.0}, "seconds -1.0"),
    ({"seconds": None}, "seconds None"),
    ({"epoch": EPOCHS}, f"{EPOCHS} epochs were done and the next was under way"),
])
def test_a_mid_epoch_checkpoint_that_does_not_fit_is_refused(stopped: Path, synthetic_root: Path, changes: dict,
                                                             said: str) -> None:
    path = stopped / TRAIN_STATE_FILE
    rewritten(path, **changes)
    before = path.read_bytes()
    with pytest.raises(CheckpointError) as info:
        train(run_config(), synthetic_root, stopped, resume=True, progress=False)
    assert str(path) in str(info.value) and said in str(info.value)
    assert path.read_bytes() == before and not (stopped / MODEL_FILE).exists()


def test_read_train_state_checks_the_step_against_the_batches_given(stopped: Path) -> None:
    path = stopped / TRAIN_STATE_FILE
    assert read_train_state(path, run_config(), batches=4)[2]["step"] == 3  # within 1 to 3
    with pytest.raises(CheckpointError, match="outside the epoch's 1 to 2"):
        read_train_state(path, run_config(), batches=3)
    tensors, config, extra = read_checkpoint(path)
    epoch_end = {k: v for k, v in extra.items() if k not in ("step", "sums", "seconds")}
    save_checkpoint(path, tensors, config, epoch_end)
    assert "step" not in read_train_state(path, run_config(), batches=3)[2]  # an epoch-end one, checked as before
    save_checkpoint(path, tensors, config, epoch_end | {"epoch": 0})
    with pytest.raises(CheckpointError, match="0 epochs were done, outside the run's 1 to 2"):
        read_train_state(path, run_config(), batches=3)


def test_changed_footage_is_refused_as_such_before_the_step_is_checked(stopped: Path) -> None:
    """Resumed on other footage (fewer batches an epoch), a mid-epoch checkpoint was refused for its step, "outside the
    epoch's 1 to -1 (the footage or batch size changed?)", not as trained on other footage; the batch size cannot
    change on a resume (RESUME_FIXED), and an epoch of one batch or none gives no "1 to 0" or "1 to -1"."""
    path = stopped / TRAIN_STATE_FILE
    recorded = read_checkpoint(path)[2]["clips"]
    for batches in (0, 1, 3):
        with pytest.raises(CheckpointError, match="the run was trained on other footage"):
            read_train_state(path, run_config(), clips=recorded[:1], batches=batches)
    assert read_train_state(path, run_config(), clips=recorded, batches=4)[2]["step"] == 3
    for batches, said in ((0, "outside any: an epoch of 0 batches writes none part way"),
                          (1, "outside any: an epoch of 1 batch writes none part way"),
                          (3, "outside the epoch's 1 to 2 (the footage changed?)")):
        with pytest.raises(CheckpointError) as info:
            read_train_state(path, run_config(), clips=recorded, batches=batches)
        assert said in str(info.value) and "batch size" not in str(info.value) and "1 to -1" not in str(info.value)


class Clock:
    """time.monotonic for mnad.train: each reading a minute after the last."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 60.0
        return self.now


def saved_steps(synthetic_root: Path, out: Path, minutes: float, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int | None]]:
    """(epoch, step) of every training checkpoint one epoch of training writes, its clock a minute a reading."""
    written: list[tuple[int, int | None]] = []
    real = train_module.save_checkpoint

    def save(path: Path, tensors: dict, config: Config, extra: dict) -> None:
        written.append((extra["epoch"], extra.get("step")))
        real(path, tensors, config, extra)

    config = run_config(minutes)
    config.train.epochs = 1
    with monkeypatch.context() as patch:
        patch.setattr(train_module, "time", types.SimpleNamespace(perf_counter=time.perf_counter, monotonic=Clock().monotonic))
        patch.setattr(train_module, "save_checkpoint", save)
        train(config, synthetic_root, out, progress=False)
    return written


def test_checkpoint_minutes_zero_writes_none_mid_epoch(synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert saved_steps(synthetic_root, tmp_path / "zero", 0.0, monkeypatch) == [(1, None)]  # the epoch's end only
    # the same clock with 2.5 minutes: a checkpoint every third batch, none at the last (the epoch's end writes one)
    assert saved_steps(synthetic_root, tmp_path / "some", 2.5, monkeypatch) == [(0, 3), (0, 6), (0, 9), (1, None)]


def test_checkpoint_due(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_module, "time", types.SimpleNamespace(monotonic=lambda: 1000.0))
    assert checkpoint_due(400.0, 10.0, 3, 10)  # 10 minutes since
    assert not checkpoint_due(401.0, 10.0, 3, 10)
    assert not checkpoint_due(0.0, 10.0, 10, 10)  # the epoch's last batch
    assert not checkpoint_due(0.0, 0.0, 3, 10)  # 0: epoch ends only


@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf])
def test_checkpoint_minutes_is_checked(value: float) -> None:
    with pytest.raises(ConfigError, match="train.checkpoint_minutes must be"):
        Config.from_dict({"train": {"checkpoint_minutes": value}}, source="run")


def test_a_config_without_checkpoint_minutes_loads_with_the_default() -> None:
    data = Config().to_dict()
    del data["train"]["checkpoint_minutes"]  # a config.json or checkpoint written before the setting
    assert Config.from_dict(data).train.checkpoint_minutes == 10.0
    assert Config.from_dict({"train": {"checkpoint_minutes": 2}}).train.checkpoint_minutes == 2.0


def test_a_run_stopped_after_a_checkpoint_in_its_first_epoch_says_it_can_resume(synthetic_root: Path, tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The last line of a stopped `mnad train` said no epoch had finished, so nothing could be resumed: a mid-epoch
    checkpoint of the first epoch can be, stopped before (no checkpoint yet) or after a resume from one."""
    run = tmp_path / "run"
    for calls, said in ((2, NO_EPOCH_FINISHED), (5, FIRST_EPOCH_PART_KEPT), (1, FIRST_EPOCH_PART_KEPT)):
        with monkeypatch.context() as patch:
            patch.setattr(train_module, "checkpoint_due", due_at_steps)
            stop_at_call(patch, calls, Terminated)
            with pytest.raises(Terminated) as info:
                train(run_config(), synthetic_root, run, resume=(run / TRAIN_STATE_FILE).exists(), overwrite=run.exists()
                      and not (run / TRAIN_STATE_FILE).exists(), progress=False)
        assert kept_when_stopped("train", info.value) == said


def test_a_run_stopped_after_a_checkpoint_in_a_later_epoch_says_where_it_resumes(synthetic_root: Path, tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped after a mid-epoch checkpoint of its second epoch, `mnad train` said "the last finished epoch is kept",
    though the resume starts part way through the second; stopped in it before that checkpoint, it still says so."""
    for calls, said in ((BATCHES + 2, KEPT_WHEN_STOPPED["train"]),  # the second epoch's first checkpoint is at its step 3
                        (BATCHES + 5, "a checkpoint part way through epoch 2 is kept: continue with --resume")):
        with monkeypatch.context() as patch:
            patch.setattr(train_module, "checkpoint_due", due_at_steps)
            stop_at_call(patch, calls, Terminated)
            with pytest.raises(Terminated) as info:
                train(run_config(), synthetic_root, tmp_path / str(calls), progress=False)
        assert kept_when_stopped("train", info.value) == said
    with monkeypatch.context() as patch:  # resumed part way through epoch 2 and stopped again at once
        patch.setattr(train_module, "checkpoint_due", due_at_steps)
        stop_at_call(patch, 1, Terminated)
        with pytest.raises(Terminated) as info:
            train(run_config(), synthetic_root, tmp_path / str(BATCHES + 5), resume=True, progress=False)
    assert kept_when_stopped("train", info.value) == "a checkpoint part way through epoch 2 is kept: continue with --resume"


# ------------------------------------------------------------------------------------------- several ranks (DDP, gloo)

WORLD = 2


def _rank(rank: int, port: int, root: str, out: str) -> None:
    """One of 2 ranks: an uninterrupted run, and the same run stopped in epoch 2 after its mid-epoch checkpoint at
    batch 6 (each rank at the same step, as a stop of the job would) then resumed; a copy of that checkpoint is kept."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    out_dir = Path(out)
    config = run_config()
    config.train.sync_batchnorm = True
    try:
        train(config, root, out_dir / "reference", progress=False)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(train_module, "checkpoint_due", due_at_steps)
            patch.setattr(train_module, "POLL_SECONDS", 0.0)  # rank 0 asks it at every step (CheckpointClock)
            stop_at_call(patch, BATCHES + 7)
            with contextlib.suppress(Stop):
                train(config, root, out_dir / "run", progress=False)
        distributed.barrier(distributed.setup())
        if rank == 0:
            shutil.copytree(out_dir / "run", out_dir / "copy")
        train(config, root, out_dir / "run", resume=True, progress=False)
    finally:
        distributed.cleanup()


def test_several_ranks_resume_mid_epoch(synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_rank, args=(port, str(synthetic_root), str(tmp_path)), nprocs=WORLD, join=True)
    _, _, extra = read_checkpoint(tmp_path / "copy" / TRAIN_STATE_FILE)
    assert (extra["epoch"], extra["step"]) == (1, 6)  # written by rank 0 alone
    # the weights, BatchNorm statistics, memory items and optimiser state are the uninterrupted run's
    assert_same_tensors(tmp_path / "reference" / MODEL_FILE, tmp_path / "run" / MODEL_FILE)
    assert_same_tensors(tmp_path / "reference" / TRAIN_STATE_FILE, tmp_path / "run" / TRAIN_STATE_FILE)
    # (the log's loss of epoch 2 counts rank 0's share alone for the batches before the stop: docs/distributed.md)
    assert [r["epoch"] for r in log_records(tmp_path / "run")] == [1, 2]
    assert log_records(tmp_path / "run")[0] == log_records(tmp_path / "copy")[0]

    # the same checkpoint resumed by one process: batch 7 to 10 of epoch 2, each of the whole global batch
    steps: list[int] = []
    real = train_module.train_step
    monkeypatch.setattr(train_module, "train_step", lambda *a, **k: steps.append(a[2].shape[0]) or real(*a, **k))
    config = run_config()
    config.train.sync_batchnorm = True
    train(config, synthetic_root, tmp_path / "copy", resume=True, progress=False)
    assert steps == [4] * (BATCHES - 6)


def test_the_batches_skipped_are_those_done_for_any_number_of_ranks() -> None:
    """Each rank of N skipping ``step * batch / N`` of its clips leaves the global batches after ``step``, the same for
    any N: a checkpoint of one number of ranks resumes on another."""
    dataset, batch, step = list(range(43)), 4, 3
    reference = None
    for world in (1, 2, 4):
        local = batch // world
        shards = []
        for rank in range(world):
            sampler = distributed.sampler(dataset, distributed.Context(rank=rank, world_size=world), seed=7)
            rest = train_module.epoch_indices(sampler, 1, step * local)
            shards.append([rest[i:i + local] for i in range(0, len(rest) - local + 1, local)])
        batches = [sorted(sum(parts, [])) for parts in zip(*shards, strict=True)]
        if reference is None:
            whole = train_module.epoch_indices(distributed.sampler(dataset, distributed.Context(), seed=7), 1, 0)
            reference = [sorted(whole[i:i + batch]) for i in range(step * batch, len(whole) - batch + 1, batch)]
            assert len(reference) == 43 // batch - step
        assert batches == reference, f"{world} ranks"


def test_a_signal_during_a_mid_epoch_save_still_says_the_checkpoint_can_resume(
        synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A Ctrl-C that came while the first mid-epoch checkpoint was written waited for the write, then stopped the run
    before the checkpoint was recorded: the last line said no epoch had finished (start again with --overwrite),
    though the checkpoint on disk resumes. It is recorded in the same held block as it is written."""
    from mnad import cli

    real, signalled = train_module.save_checkpoint, []

    def save(path: Path, tensors: dict, config: Config, extra: dict) -> None:
        if "step" in extra and not signalled:
            signalled.append(extra["step"])
            signal.raise_signal(signal.SIGINT)  # held: raised once the held block ends
        real(path, tensors, config, extra)

    monkeypatch.setattr(train_module, "checkpoint_due", due_at_steps)
    monkeypatch.setattr(train_module, "save_checkpoint", save)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt) as info:
        train(run_config(), synthetic_root, run, progress=False)
    assert signalled == [DUE_AT[0]]
    assert (info.value.epochs_kept, info.value.steps_kept) == (0, DUE_AT[0])  # type: ignore[attr-defined]
    assert read_checkpoint(run / TRAIN_STATE_FILE)[2]["step"] == DUE_AT[0]  # the checkpoint said to be kept

    signalled.clear()
    capsys.readouterr()
    assert cli.main(["train", "--recipe", "synthetic_pred", "--data-root", str(synthetic_root), "--out", str(tmp_path / "cli"),
                     "--set", "model.image_size=32", "--set", "model.width=8", "--set", "train.bf16=false",
                     "--set", "train.checkpoint_minutes=1", "--quiet"]) == 130
    assert signalled == [DUE_AT[0]]
    assert capsys.readouterr().err.splitlines()[-1] == f"mnad: interrupted ({FIRST_EPOCH_PART_KEPT})"


CLI_TRAIN = ["--recipe", "synthetic_pred", "--set", "model.image_size=32", "--set", "model.width=8",
             "--set", "train.bf16=false", "--set", "train.checkpoint_minutes=1", "--quiet"]


def _cli_rank(rank: int, port: int, root: str, out: str) -> None:
    """One of 2 ranks of `mnad train`, stopped by Ctrl-C in epoch 1 after its mid-epoch checkpoint at batch 3 (each
    rank at the same step); its standard error in ``out``/rankN.err."""
    import sys

    from mnad import cli

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    with open(Path(out) / f"rank{rank}.err", "w", encoding="utf-8") as err, pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stderr", err)
        patch.setattr(train_module, "checkpoint_due", due_at_steps)
        patch.setattr(train_module, "POLL_SECONDS", 0.0)  # rank 0 asks it at every step (CheckpointClock)
        stop_at_call(patch, DUE_AT[0] + 2, KeyboardInterrupt)
        code = cli.main(["train", "--data-root", root, "--out", str(Path(out) / "run"), *CLI_TRAIN])
        err.write(f"exit {code}\n")


def test_ranks_stopped_after_a_mid_epoch_checkpoint_say_one_thing(synthetic_root: Path, tmp_path: Path) -> None:
    """Under torchrun, rank 0 said a checkpoint part way through the first epoch is kept (continue with --resume) and
    rank 1, which does not record mid-epoch checkpoints, that no epoch had finished (start again with --overwrite):
    rank 0 alone says what a stopped training run leaves."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_cli_rank, args=(port, str(synthetic_root), str(tmp_path)), nprocs=WORLD, join=True)
    assert read_checkpoint(tmp_path / "run" / TRAIN_STATE_FILE)[2]["step"] == DUE_AT[0]
    said = [(tmp_path / f"rank{rank}.err").read_text().splitlines() for rank in range(WORLD)]
    assert said[0][-2:] == [f"mnad: interrupted ({FIRST_EPOCH_PART_KEPT})", "exit 130"]
    assert said[1][-1] == "exit 130" and not any("mnad: interrupted" in line for line in said[1])


def test_says_when_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    from mnad.cli import says_when_stopped

    monkeypatch.delenv("RANK", raising=False)
    assert says_when_stopped("train") and says_when_stopped("evaluate")
    monkeypatch.setenv("RANK", "1")
    assert not says_when_stopped("train") and says_when_stopped("evaluate")  # evaluate's line is the same on every rank


def test_a_report_of_a_mid_epoch_checkpoint_says_how_far_into_the_next_epoch(stopped: Path, tmp_path: Path) -> None:
    """mnad evaluate / report on an unfinished run use its last.safetensors, which may be a mid-epoch one: the report's
    "epochs trained" said the epochs done (1), though the weights are 3 batches into epoch 2."""
    from mnad.report.provenance import collect_provenance, epochs_trained

    record = collect_provenance(run_config(), tmp_path / "report", tmp_path / "eval", checkpoint=stopped)["checkpoint"]
    assert (record["epochs"], record["steps"]) == (1, 3)
    assert epochs_trained(record) == "1 epoch and 3 batches of the next"
    assert epochs_trained({"epochs": 0, "steps": 1}) == "0 epochs and 1 batch of the next"
    path = stopped / TRAIN_STATE_FILE
    tensors, config, extra = read_checkpoint(path)
    save_checkpoint(path, tensors, config, {k: v for k, v in extra.items() if k not in ("step", "sums", "seconds")})
    record = collect_provenance(run_config(), tmp_path / "report", tmp_path / "eval", checkpoint=stopped)["checkpoint"]
    assert "steps" not in record and epochs_trained(record) == 1  # an epoch-end checkpoint: as before
