"""What a user meets under torchrun when something goes wrong (docs/distributed.md, "When something goes wrong").

torchrun starts N copies of the same command: a mistake is met by every rank at once, and a rank that stops takes
the others' connections with it. The ranks of one job say each message once, agreeing through torchrun's key-value
store (mnad.distributed.first_to_say); most tests here stand in for torchrun with a TCPStore of their own and the
environment torchrun gives its ranks, and play the ranks one after another in this process. One test runs torchrun.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from mnad import cli, distributed
from mnad.errors import ConfigError, Terminated

# what gloo raises on the ranks left when another one is killed (torch 2.13, CPU)
GLOO_LOST = ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:23426: "
             "Connection reset by peer. This is typically caused by a remote worker hanging or bugs in the application. "
             "Check the logs of the remote worker before reporting an error. GLHF!")


@pytest.fixture
def job(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], None]]:
    """A torchrun job of 2 ranks, as its ranks see it; call it with a rank to play that rank (a fresh process)."""
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(store.port))
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", uuid.uuid4().hex)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")

    def as_rank(rank: int) -> None:
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        monkeypatch.setattr(distributed, "_store", None, raising=False)  # what one process knows
        monkeypatch.setattr(distributed, "_said", Counter(), raising=False)

    yield as_rank
    del store


def _errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("mnad: error:")]


def test_a_mistake_is_said_once_per_job(job: Callable[[int], None], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["train", "--data-root", str(tmp_path), "--out", str(tmp_path / "run"), "--set", "train.no_such_field=1"]
    said = []
    for rank in (0, 1):
        job(rank)
        assert cli.main(argv) == 2
        said.append(capsys.readouterr().err)
    assert len(_errors(said[0])) == 1 and "no_such_field" in said[0]
    assert said[1] == ""  # was: the same line again, once per rank (interleaved with the first)


def test_a_usage_error_is_said_once_per_job(job: Callable[[int], None], capsys: pytest.CaptureFixture) -> None:
    said = []
    for rank in (0, 1):
        job(rank)
        with pytest.raises(SystemExit) as exit_:
            cli.main(["train", "--data-root", "d", "--out", "o", "--no-such-option"])
        assert exit_.value.code == 2
        said.append(capsys.readouterr().err)
    assert "mnad: error: unrecognized arguments: --no-such-option" in said[0]
    assert said[1] == ""


def test_warnings_are_said_once_per_job_each_time(job: Callable[[int], None], capsys: pytest.CaptureFixture) -> None:
    cli._show_warnings()
    log = logging.getLogger("mnad.test_distributed_audit")
    said = []
    for rank in (0, 1):
        job(rank)
        log.warning("a warning every rank gives")
        log.warning("a warning every rank gives")  # given twice: said twice
        if rank == 1:
            log.warning("a warning of rank 1 only")
        said.append(capsys.readouterr().err.splitlines())
    assert said[0] == ["mnad: warning: a warning every rank gives"] * 2
    assert said[1] == ["mnad: warning: a warning of rank 1 only"]


def test_a_lost_rank_is_one_error_line(job: Callable[[int], None], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    """A rank killed (SIGKILL, out of memory) mid-epoch: the others were a traceback of torch's each."""
    def lose_a_peer(args: object) -> None:
        raise RuntimeError(GLOO_LOST)

    monkeypatch.setattr(cli, "cmd_train", lose_a_peer)
    argv = ["train", "--data-root", str(tmp_path), "--out", str(tmp_path / "run")]
    said = []
    for rank in (0, 1):
        job(rank)
        assert cli.main(argv) == 2
        said.append(capsys.readouterr().err)
    assert _errors(said[0]) == said[0].splitlines() and len(said[0].splitlines()) == 1
    assert "another process of this torchrun job stopped" in said[0] and "Connection reset by peer" in said[0]
    assert "--resume" in said[0] and "GLHF" not in said[0]
    assert said[1] == ""  # the ranks left say it once


def test_what_follows_a_ranks_error_is_not_said(job: Callable[[int], None], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    """Rank 0 fails; torchrun then terminates rank 1, or rank 1 loses its connection to rank 0 first: one line in all."""
    job(0)
    assert cli.main(["train", "--data-root", str(tmp_path), "--out", str(tmp_path / "run"), "--epochs", "-1"]) == 2
    assert len(_errors(capsys.readouterr().err)) == 1
    for stop, code in ((Terminated(), 143), (KeyboardInterrupt(), 130), (RuntimeError(GLOO_LOST), 2)):
        def stopped(args: object, stop: BaseException = stop) -> None:
            raise stop

        monkeypatch.setattr(cli, "cmd_train", stopped)
        job(1)
        assert cli.main(["train", "--data-root", str(tmp_path), "--out", str(tmp_path / "run")]) == code
        assert capsys.readouterr().err == ""


def test_an_interrupt_is_said_once(job: Callable[[int], None], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    def interrupted(args: object) -> None:
        stop = Terminated()
        stop.epochs_kept = 1  # type: ignore[attr-defined]  # as train() records it: an epoch was finished
        raise stop

    monkeypatch.setattr(cli, "cmd_train", interrupted)
    said = []
    for rank in (0, 1):
        job(rank)
        assert cli.main(["train", "--data-root", str(tmp_path), "--out", str(tmp_path / "run")]) == 143
        said.append(capsys.readouterr().err)
    assert said == ["mnad: terminated (the last finished epoch is kept: continue with --resume)\n", ""]


def test_other_runtime_errors_stay_visible(job: Callable[[int], None], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def bug(args: object) -> None:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(cli, "cmd_train", bug)
    job(0)
    with pytest.raises(RuntimeError, match="shapes"):  # a bug: its traceback is what to report
        cli.main(["train", "--data-root", str(tmp_path), "--out", str(tmp_path / "run")])


@pytest.mark.parametrize("command", [
    ["detect", "frames", "--checkpoint", "{model}", "--out", "{tmp}/out"],  # refused by detect(), once the model is loaded
    ["calibrate", "--checkpoint", "m.safetensors", "--out", "{tmp}/out/c.safetensors"],
    ["report", "{tmp}", "--out", "{tmp}/out"],
])
def test_commands_that_do_not_split_are_refused_under_torchrun(job: Callable[[int], None], tmp_path: Path, command: list[str],
                                                               capsys: pytest.CaptureFixture, model_file: Path) -> None:
    """Each rank ran the whole command into the same --out: `detect` on 2 ranks wrote its outputs twice at once and
    one rank failed with 'holds the outputs of an earlier run'."""
    job(0)
    assert cli.main([part.replace("{tmp}", str(tmp_path)).replace("{model}", str(model_file)) for part in command]) == 2
    err = capsys.readouterr().err
    assert _errors(err) == [f"mnad: error: mnad {command[0]} runs in one process: start it without torchrun (only train "
                            "and evaluate split their work over torchrun's processes)"]
    assert not (tmp_path / "out").exists()


def test_a_world_size_left_in_the_shell_is_no_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    assert not distributed.multi_process_launch() and not cli.multi_process_launch()
    assert distributed.first_to_say("anything")


def test_an_indivisible_batch_says_how_to_resume() -> None:
    """A run of batch 4 resumed on 3 ranks: 'use a multiple of 3' was the only advice, and a resume keeps its batch."""
    with pytest.raises(ConfigError, match=r"not divisible by the 3 ranks: run it on 1, 2 or 4 ranks .*--resume"):
        distributed.local_batch_size(4, distributed.Context(world_size=3))
    with pytest.raises(ConfigError, match="run it on one process"):
        distributed.local_batch_size(1, distributed.Context(world_size=2))


def test_the_log_keeps_its_key_order_on_several_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    """train_log.jsonl listed the losses in alphabetical order on several ranks, in LOSS_NAMES order on one."""
    monkeypatch.setattr(distributed, "all_reduce_sum", lambda t: t * 2)  # 2 ranks holding the same values
    means = distributed.mean_over_ranks({"total": 1.0, "frame": 2.0, "compact": 3.0}, distributed.Context(world_size=2))
    assert list(means.items()) == [("total", 1.0), ("frame", 2.0), ("compact", 3.0)]


def test_torchrun_says_a_mistake_once(tmp_path: Path) -> None:
    """The real thing: 2 ranks under torchrun, a bad option, one `mnad: error:` line and a failed exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHELASTIC", "MASTER_", "RANK", "WORLD_SIZE", "LOCAL_"))}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([*torchrun, "-m", "mnad", "train", "--recipe", "synthetic_pred", "--data-root", str(tmp_path),
                           "--out", str(tmp_path / "run"), "--set", "train.no_such_field=1"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert len(_errors(done.stderr)) == 1, done.stderr


def test_the_stream_protocol_is_refused_under_torchrun_before_out_is_made(synthetic_root: Path, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Was refused only after the evaluation folder had been created (left empty)."""
    from conftest import tiny_config

    from mnad.calibrate import calibrate, with_calibration
    from mnad.data import split_videos
    from mnad.evaluate import evaluate
    from mnad.model import MNAD

    torch.manual_seed(0)
    config = tiny_config().override(["eval.gamma=0.01"])
    model = MNAD(config.model).eval()
    cal = calibrate(model, config, split_videos(synthetic_root, "synthetic", "training"), false_alarm_rate=0.05,
                    scoring="config", progress=False)
    monkeypatch.setattr(distributed, "setup", lambda device: distributed.Context(rank=0, world_size=2))  # rank 0 of 2
    with pytest.raises(ConfigError, match="one stream: run it in one process, not under torchrun"):
        evaluate(model, with_calibration(config, cal), synthetic_root, protocol="stream", out_dir=tmp_path / "eval", progress=False)
    assert not (tmp_path / "eval").exists()


def test_several_ranks_without_synced_batchnorm_are_warned(caplog: pytest.LogCaptureFixture) -> None:
    """The published recipe's BatchNorm sees the batch of 4 together; split over ranks without train.sync_batchnorm
    it saw each rank's share and nothing said so (docs/distributed.md did)."""
    import logging

    from mnad.config import TrainConfig
    from mnad.distributed import Context
    from mnad.train import warn_unsynced_batchnorm

    with caplog.at_level(logging.WARNING, logger="mnad.train"):
        warn_unsynced_batchnorm(TrainConfig(batch_size=4), Context(rank=0, world_size=2))
    assert "train.sync_batchnorm is off" in caplog.text and "each rank's 2 clip(s)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mnad.train"):
        warn_unsynced_batchnorm(TrainConfig(batch_size=4, sync_batchnorm=True), Context(rank=0, world_size=2))
        warn_unsynced_batchnorm(TrainConfig(batch_size=4), Context(rank=1, world_size=2))  # rank 0 speaks
        warn_unsynced_batchnorm(TrainConfig(batch_size=4), Context())  # one process: nothing to sync
    assert caplog.text == ""
