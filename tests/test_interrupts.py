"""Interrupts that arrive while a step writes what belongs together wait until the step completes."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import tiny_config
from safetensors.torch import load_file

from mnad import outputs
from mnad import train as train_module
from mnad.atomic import atomic_write_many
from mnad.checkpoint import read_checkpoint
from mnad.config import Config
from mnad.detect import DetectOptions, detect
from mnad.errors import Terminated
from mnad.interrupts import held_interrupts, raise_terminated_on_signals, restore_handlers
from mnad.model import MNAD
from mnad.stream import StreamScorer
from mnad.train import reconcile_log


@pytest.fixture
def terminated_on_sigterm():
    previous = raise_terminated_on_signals()
    yield
    restore_handlers(previous)


def test_ctrl_c_inside_waits_for_the_block_then_raises() -> None:
    done = []
    with pytest.raises(KeyboardInterrupt):
        with held_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # Python runs handlers between bytecodes: give it many chances to cut in
                pass
            done.append("whole")
    assert done == ["whole"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back


def test_sigterm_inside_raises_terminated_after_the_block(terminated_on_sigterm) -> None:
    done = []
    with pytest.raises(Terminated):
        with held_interrupts():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)  # only the first acts
            done.append("whole")
    assert done == ["whole"]


def test_an_ignored_signal_stays_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with held_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_nested_and_other_threads_do_not_touch_the_handlers() -> None:
    seen = []
    with held_interrupts():
        outer = signal.getsignal(signal.SIGINT)
        with held_interrupts():
            seen.append(signal.getsignal(signal.SIGINT) is outer)
    thread = threading.Thread(target=lambda: seen.append(_held_in_thread()))
    thread.start()
    thread.join()
    assert seen == [True, True]


def _held_in_thread() -> bool:
    with held_interrupts():
        return True


def test_a_handler_left_behind_forwards_instead_of_swallowing(terminated_on_sigterm) -> None:
    # a second signal can cut the putting back of the handlers short: what is left must act, not hold forever
    with held_interrupts():
        left = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(KeyboardInterrupt):
        left[signal.SIGINT](signal.SIGINT, None)
    with pytest.raises(Terminated):
        left[signal.SIGTERM](signal.SIGTERM, None)


def test_no_signal_changes_nothing() -> None:
    with held_interrupts():
        value = 1
    assert value == 1 and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_files_renamed_together_land_together_on_ctrl_c(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("old"), b.write_text("old")
    replace = os.replace

    def interrupted_replace(src: str, dst: str) -> None:
        replace(src, dst)
        os.kill(os.getpid(), signal.SIGINT)  # lands between the two renames

    monkeypatch.setattr(os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_many({a: b"new", b: b"new"})
    assert (a.read_text(), b.read_text()) == ("new", "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_a_frame_interrupted_while_written_is_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the race CI met: SIGTERM after a frame's row was written but before it was counted gave a summary one short
    torch.manual_seed(0)
    config = tiny_config()
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        cv2.imwrite(str(folder / f"{i:05d}.png"), rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    write_row = outputs.DetectWriter.score
    rows = []

    def row_then_signal(self, row, seconds, alert) -> None:
        write_row(self, row, seconds, alert)
        rows.append(row.index)
        if len(rows) == 10:
            os.kill(os.getpid(), signal.SIGINT)  # between the row and its count

    monkeypatch.setattr(outputs.DetectWriter, "score", row_then_signal)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        detect(MNAD(config.model), config, str(folder), out, DetectOptions(), progress=False)
    summary = json.loads((out / "summary.json").read_text())
    written = (out / "scores.csv").read_text().strip().splitlines()[1:]
    assert summary["ended_by"] == "interrupted (SIGINT)"
    assert summary["frames_scored"] == len(written) == len(rows) == 10


def test_a_stream_interrupted_inside_a_push_stays_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    config = tiny_config()
    model = MNAD(config.model)
    scorer, twin = (StreamScorer.for_model(model, config, normalization="causal") for _ in range(2))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(config.model.t_length + 3)]
    for frame in frames:
        twin.push(frame)
    for frame in frames[:-1]:
        scorer.push(frame)
    causal = type(scorer._causal)
    call = causal.__call__

    def interrupted(self, *terms):
        os.kill(os.getpid(), signal.SIGINT)  # after the memory took the frame, before the normaliser does
        return call(self, *terms)

    monkeypatch.setattr(causal, "__call__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        scorer.push(frames[-1])
    got, want = scorer.state(), twin.state()
    assert (got.frames_seen, got.psnr_range, got.distance_range, got.recent) == (want.frames_seen, want.psnr_range,
                                                                                 want.distance_range, want.recent)
    assert torch.equal(got.items, want.items) and scorer._pending is None
    assert all(np.array_equal(a, b) for a, b in zip(got.window, want.window, strict=True))


def test_a_resume_makes_the_log_say_what_the_checkpoint_holds(tmp_path: Path) -> None:
    log = tmp_path / "train_log.jsonl"
    lines = [json.dumps({"epoch": e, "loss_total": 1.0 / e}) + "\n" for e in (1, 2, 3)]
    log.write_text("".join(lines) + '{"epoch": 4, "lo')  # a line past the checkpoint, and one cut short by a kill
    reconcile_log(log, 2, {"epoch": 2, "loss_total": 0.5})
    assert log.read_text() == "".join(lines[:2])
    reconcile_log(log, 3, {"epoch": 3, "loss_total": 0.25})  # killed after the checkpoint, before the log line
    assert [json.loads(line) for line in log.read_text().splitlines()][-1] == {"epoch": 3, "loss_total": 0.25}
    missing = tmp_path / "missing.jsonl"
    reconcile_log(missing, 1, None)  # an old checkpoint without its record: nothing to restore
    assert not missing.exists()


def test_training_stopped_at_an_epoch_end_logs_what_it_checkpointed(synthetic_root: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    config = Config(name="tiny", dataset="synthetic")
    config.model.image_size, config.model.width, config.train.epochs, config.train.threads = 32, 8, 2, 1
    save = train_module.save_checkpoint

    def checkpoint_then_signal(*args, **kwargs) -> None:
        save(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # between the checkpoint and the log line

    monkeypatch.setattr(train_module, "save_checkpoint", checkpoint_then_signal)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(config, synthetic_root, tmp_path / "run", progress=False)
    _, _, extra = read_checkpoint(tmp_path / "run" / train_module.TRAIN_STATE_FILE)
    records = [json.loads(line) for line in (tmp_path / "run" / train_module.LOG_FILE).read_text().splitlines()]
    assert extra["epoch"] == 1 and [r["epoch"] for r in records] == [1] and records[0] == extra["record"]


class Interrupt(Exception):
    """Stands for a kill after an epoch's checkpoint (raised from train's on_epoch)."""


def test_a_resume_writes_the_epoch_files_a_kill_left_out(synthetic_root: Path, tmp_path: Path) -> None:
    # SIGKILL (no handler runs) right after the checkpoint: neither the kept epoch model nor the log line was written
    config = Config(name="tiny", dataset="synthetic")
    config.model.image_size, config.model.width, config.train.epochs, config.train.threads = 32, 8, 2, 1
    config.train.keep_epochs = True
    run = tmp_path / "run"

    def stop_after_epoch_1(epoch: int, record: dict) -> None:
        raise Interrupt

    with pytest.raises(Interrupt):
        train_module.train(config, synthetic_root, run, progress=False, on_epoch=stop_after_epoch_1)
    kept = train_module.epoch_model(run, 1)
    weights = load_file(kept)
    kept.unlink()
    (run / train_module.LOG_FILE).write_text("")
    train_module.train(config, synthetic_root, run, resume=True, progress=False)
    assert all(torch.equal(weights[k], v) for k, v in load_file(kept).items())
    assert [json.loads(line)["epoch"] for line in (run / train_module.LOG_FILE).read_text().splitlines()] == [1, 2]
