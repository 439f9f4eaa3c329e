"""Checks that lived only in the CLI, now in the API entries the CLI calls ("the CLI is a thin layer over the Python API;
every check lives in the API"): the refusal of a multi-process launch, --threads (train.threads), one launch rule,
--top-k."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from conftest import frames_folder, tiny_config

from mnad import cli, distributed, launch
from mnad.calibrate import calibrate, calibrate_checkpoint
from mnad.checkpoint import load_model
from mnad.detect import detect
from mnad.errors import ConfigError
from mnad.evaluate import evaluate
from mnad.export import export_onnx
from mnad.figures import memory_figures
from mnad.model import MNAD
from mnad.report.build import create_report, rebuild_report
from mnad.threads import apply_threads

ONE_PROCESS = "runs in one process: start it without torchrun (only train and evaluate split their work over torchrun's processes)"


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank 1 of a multi-process launch, as its environment says (no group is joined: the refusals come first)."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")


def _tiny_model() -> tuple[MNAD, object]:
    torch.manual_seed(0)
    config = tiny_config()
    return MNAD(config.model), config


# ------------------------------------------------------------------------- 1. single-process entries refuse a launch


def test_the_single_process_api_entries_refuse_a_launch(launched: None, model_file: Path, synthetic_root: Path,
                                                        tmp_path: Path) -> None:
    """Only the CLI refused them: under torchrun detect(), calibrate_checkpoint() and memory_figures() ran to the end
    on every rank, into the same out."""
    model, config = _tiny_model()
    footage = frames_folder(tmp_path / "footage" / "cam", 8)
    entries = {
        "detect": lambda: detect(model, config, footage, tmp_path / "out"),
        "calibrate": lambda: calibrate_checkpoint(model_file, tmp_path / "out" / "c.safetensors", data=[footage]),
        "calibrate ": lambda: calibrate(model, config, [footage]),
        "export": lambda: export_onnx(model, config, tmp_path / "out" / "m.onnx"),
        "figures": lambda: memory_figures(model, config, synthetic_root, tmp_path / "out"),
        "report": lambda: rebuild_report(tmp_path / "report"),
    }
    for command, call in entries.items():
        with pytest.raises(ConfigError) as refused:
            call()
        assert str(refused.value) == f"mnad {command.strip()} {ONE_PROCESS}"
    assert not (tmp_path / "out").exists()


def test_create_report_runs_on_rank_zero_only(launched: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`mnad evaluate --report` under torchrun calls it on rank 0 once the ranks have scored; another rank would
    draw the same report into the same folder."""
    model, config = _tiny_model()
    with pytest.raises(ConfigError, match=r"runs on rank 0 only: call it there, once the ranks have evaluated \(RANK=1\)"):
        create_report(model, config, tmp_path, tmp_path / "eval", tmp_path / "report")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match=r"top_k \(--top-k\)"):  # past the launch check, to the next one
        create_report(model, config, tmp_path, tmp_path / "eval", tmp_path / "report", top_k=-1)
    assert not (tmp_path / "report").exists()


def test_the_cli_says_the_apis_refusal_and_keeps_no_copy(launched: None, model_file: Path, synthetic_root: Path,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert not hasattr(cli, "DISTRIBUTED_COMMANDS")  # the CLI's own list of the commands it let through
    code = cli.main(["figures", "--checkpoint", str(model_file), "--data-root", str(synthetic_root),
                     "--out", str(tmp_path / "figs")])
    err = capsys.readouterr().err
    assert code == 2 and err == f"mnad: error: mnad figures {ONE_PROCESS}\n"
    assert cli.main(["demo", "--out", str(tmp_path / "demo"), "--quiet"]) == 2
    assert capsys.readouterr().err == f"mnad: error: mnad demo {ONE_PROCESS}\n"
    assert not (tmp_path / "figs").exists() and not (tmp_path / "demo").exists()


# ------------------------------------------------------------------------- 2. train.threads applied by the API


def test_apply_threads_sets_the_configured_count_and_zero_leaves_it() -> None:
    config = tiny_config()
    apply_threads(config)  # train.threads = 0: torch's own count
    assert torch.get_num_threads() == 1  # conftest's
    config.train.threads = 2
    apply_threads(config)
    assert torch.get_num_threads() == 2


def test_evaluate_applies_train_threads(synthetic_root: Path) -> None:
    """evaluate(model, cfg.override(['train.threads=2']), root) left torch at its count: only the CLI applied it."""
    model, config = _tiny_model()
    evaluate(model, config.override(["train.threads=2"]), synthetic_root, progress=False)
    assert torch.get_num_threads() == 2


def test_the_other_scoring_entries_apply_train_threads(model_file: Path, synthetic_root: Path, tmp_path: Path) -> None:
    """detect, calibrate (calibrate_checkpoint's scoring), export_onnx and memory_figures apply it on entry, before
    their later checks (each call below stops at one, so the test takes no scoring)."""
    model, config = load_model(model_file)
    config = config.override(["train.threads=2"])
    calls = [
        lambda: detect(model, config, tmp_path / "cam", tmp_path / "out", options="not options"),  # type: ignore[arg-type]
        lambda: calibrate(model, config, [], scoring="no such scoring"),
        lambda: export_onnx(model, config, tmp_path / "m.onnx", calibration_clips=-1),
        lambda: memory_figures(model, config, tmp_path / "no data", tmp_path / "figs"),
    ]
    for call in calls:
        torch.set_num_threads(1)
        with pytest.raises(Exception):  # noqa: B017 - the later check each stops at: what matters is the count
            call()
        assert torch.get_num_threads() == 2, call


def test_calibrate_checkpoint_applies_the_configured_threads(model_file: Path, tmp_path: Path) -> None:
    """calibrate_checkpoint's configure (the CLI's --threads) gives the config its scoring applies."""
    footage = frames_folder(tmp_path / "footage" / "cam", 6)
    with pytest.raises(Exception):  # noqa: B017 - six frames are too few to calibrate on: the count is set before
        calibrate_checkpoint(model_file, tmp_path / "c.safetensors", data=[footage], progress=False,
                             configure=lambda model, own: own.override(["train.threads=2"]))
    assert torch.get_num_threads() == 2


# ------------------------------------------------------------------------- 3. one launch rule


def test_a_world_size_left_in_the_shell_runs_every_entry_in_one_process(monkeypatch: pytest.MonkeyPatch,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    """WORLD_SIZE=2 alone: `mnad detect` ran (no launch) but `mnad train` failed (distributed.setup's own rule, a
    job), though both docstrings said such a WORLD_SIZE is no launch. Now one rule: no launch, said in a warning."""
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not launch.multi_process_launch()
    launch.single_process("mnad detect")  # not refused
    with caplog.at_level(logging.WARNING, logger="mnad"):
        ctx = distributed.setup("cpu")
    assert ctx.world_size == 1 and not torch.distributed.is_initialized()
    assert "WORLD_SIZE=2 is set but MASTER_ADDR and MASTER_PORT not" in caplog.text and "runs in one process" in caplog.text


# ------------------------------------------------------------------------- 4. --top-k checked by the API only


def test_top_k_is_checked_by_the_api_before_the_scoring(model_file: Path, synthetic_root: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI had its own check_count('--top-k') beside create_report's; now create_report's (report.check_top_k),
    which the CLI calls before the model is loaded and the scoring."""
    assert "check_count(\"--top-k\"" not in Path(cli.__file__).read_text(encoding="utf-8")
    code = cli.main(["evaluate", "--checkpoint", str(tmp_path / "absent.safetensors"), "--data-root", str(synthetic_root),
                     "--report", str(tmp_path / "report"), "--top-k", "-1"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("mnad: error: top_k (--top-k)") and err.count("\n") == 1, err
    assert not (tmp_path / "report").exists()


def test_a_rank_without_the_rendezvous_is_a_broken_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    """WORLD_SIZE and RANK set, MASTER_ADDR/MASTER_PORT not: a launch whose rendezvous is missing, not a WORLD_SIZE
    left in a shell; run alone, each process would train everything into the same folder (row 101's refusal kept)."""
    for name in ("LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ConfigError, match=r"WORLD_SIZE=2 and RANK=1 are set but MASTER_ADDR and MASTER_PORT not"):
        distributed.setup("cpu")
    assert not torch.distributed.is_initialized()
