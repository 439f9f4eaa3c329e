"""Audit of `mnad train`'s run folder (2026-12-02): an evaluation's folder taken for an empty one, a finished run
rewritten by --resume, train.compile without a C++ compiler, and what the divergence error says is kept. Each test
failed before its fix (docs/reliability.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

import mnad.train as train_module
from mnad.checkpoint import MODEL_FILE, TRAIN_STATE_FILE, load_model, read_checkpoint, save_model
from mnad.cli import main
from mnad.errors import ConfigError, DataError
from mnad.run_folder import EARLIER_RUN_DIR, check_run_folder, folder_outputs, run_files
from mnad.train import HOLDOUT_FILE, LOG_FILE, TrainedRun, check_diverged, train, train_run

CLI_TINY = ["--recipe", "synthetic_pred", "--set", "model.image_size=32", "--set", "model.width=8", "--epochs", "1",
            "--set", "train.bf16=false", "--set", "train.channels_last=false", "--set", "train.device=cpu",
            "--threads", "1", "--quiet"]
# a copy of results/ped2_pred_fast: a run's log and its evaluation, without the run (commands.txt is not mnad's)
RESULTS = {LOG_FILE: b'{"epoch": 1, "loss_total": 0.5}\n{"epoch": 2, "loss_total": 0.4}\n', "metrics.json": b'{"auc": 0.9}\n',
           "scores.csv": b"video,frame,score\n01,4,0.5\n", "commands.txt": b"mnad train ...\n", HOLDOUT_FILE: b"[]\n"}


@pytest.fixture(autouse=True)
def _threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def small_config():
    config = tiny_config()
    config.train.threads, config.train.bf16, config.train.channels_last = 1, False, False
    return config


@pytest.fixture(scope="module")
def finished_run(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    before = torch.get_num_threads()
    try:
        train(small_config(), synthetic_root, run, progress=False)
    finally:
        torch.set_num_threads(before)
    return run


def results_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    for name, data in RESULTS.items():
        (path / name).write_bytes(data)
    return path


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".lock"}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mnad", "train", *args], capture_output=True, text=True, env=env)


# ----------------------------------------------------------------- 1. an evaluation's folder is not an empty one


def test_a_new_run_into_an_evaluation_folder_is_refused_in_one_line(synthetic_root: Path, tmp_path: Path) -> None:
    folder = results_folder(tmp_path / "ped2_pred_fast")
    before = contents(folder)
    # was: exit 0, the old log replaced by a 1-line one, the new model beside the old metrics.json and scores.csv
    result = run_cli("--data-root", str(synthetic_root), "--out", str(folder), *CLI_TINY)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mnad: error: ") and str(folder) in lines[0], lines
    assert all(name in lines[0] for name in (LOG_FILE, HOLDOUT_FILE, "metrics.json", "scores.csv"))
    assert "commands.txt" not in lines[0] and "--overwrite" in lines[0] and "--out" in lines[0]
    assert contents(folder) == before and not (folder / "config.json").exists()


@pytest.mark.parametrize("name", [LOG_FILE, HOLDOUT_FILE, "metrics.json", "scores.csv", "report.html", "tensorboard",
                                  "thumbs", "figures", "summary.json", EARLIER_RUN_DIR])
def test_each_kind_of_mnad_output_counts(synthetic_root: Path, tmp_path: Path, name: str) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    if name in ("tensorboard", "thumbs", "figures", EARLIER_RUN_DIR):
        (folder / name).mkdir()
    else:
        (folder / name).write_bytes(b"{}\n")
    assert folder_outputs(folder) == [name] and run_files(folder) == []  # run_files keeps its meaning (long_runs)
    with pytest.raises(DataError, match=rf"already holds the outputs of an earlier mnad run \({name}\); pass --overwrite"):
        train(small_config(), synthetic_root, folder, progress=False)
    assert sorted(p.name for p in folder.iterdir() if p.name != ".lock") == [name]
    check_run_folder(folder, resume=False, overwrite=True)  # --overwrite replaces them


def test_overwrite_keeps_the_evaluation_until_the_new_run_has_its_model(synthetic_root: Path, tmp_path: Path) -> None:
    folder = results_folder(tmp_path / "results")
    before = contents(folder)
    diverging = small_config()
    diverging.train.lr = 1e9
    with pytest.raises(ConfigError, match="training diverged"):  # was: the log and holdout record deleted at its start
        train(diverging, synthetic_root, folder, overwrite=True, progress=False)
    kept = contents(folder / EARLIER_RUN_DIR)
    assert kept == {k: v for k, v in before.items() if k != "commands.txt"}  # all of mnad's, whole
    assert (folder / "commands.txt").read_bytes() == before["commands.txt"]  # not mnad's: left where it is

    train(small_config(), synthetic_root, folder, overwrite=True, progress=False)
    assert not (folder / EARLIER_RUN_DIR).exists()
    assert not (folder / "metrics.json").exists() and not (folder / "scores.csv").exists()  # not beside the new model
    assert len((folder / LOG_FILE).read_text().splitlines()) == 1 and (folder / MODEL_FILE).exists()


# ------------------------------------------------------------------------ 2. --resume leaves a finished run alone


def test_resume_of_a_finished_run_keeps_its_calibrated_model(finished_run: Path, synthetic_root: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(finished_run, tmp_path / "run", ignore=shutil.ignore_patterns(".lock")))
    model, config = load_model(run / MODEL_FILE)
    config.eval.normalization = "causal"  # as `mnad calibrate --out RUN/model.safetensors` changes what the file holds
    save_model(run / MODEL_FILE, model, config, extra=read_checkpoint(run / MODEL_FILE)[2])
    before = contents(run)
    # was: exit 0 "model written to", eval.normalization back to 'video': the file rewritten from the checkpoint
    result = run_cli("--data-root", str(synthetic_root), "--out", str(run), "--resume", *CLI_TINY)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and "finished" in lines[0] and "left as it is" in lines[0], lines
    assert "model written" not in result.stdout and result.stderr == ""
    assert contents(run) == before and load_model(run / MODEL_FILE)[1].eval.normalization == "causal"


def test_resume_of_a_finished_run_killed_before_its_model_writes_it(finished_run: Path, synthetic_root: Path,
                                                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = Path(shutil.copytree(finished_run, tmp_path / "run", ignore=shutil.ignore_patterns(".lock")))
    (run / MODEL_FILE).unlink()  # a kill between the last checkpoint and the model
    assert main(["train", "--data-root", str(synthetic_root), "--out", str(run), "--resume", *CLI_TINY]) == 0
    assert "model written to" in capsys.readouterr().out and (run / MODEL_FILE).is_file()


def test_train_run_says_whether_a_finished_run_was_left_as_it_is(finished_run: Path, synthetic_root: Path,
                                                                   tmp_path: Path) -> None:
    """The API says it (TrainedRun.untouched), which the CLI prints (was: the CLI compared the model file's stat
    before and after train())."""
    run = Path(shutil.copytree(finished_run, tmp_path / "run", ignore=shutil.ignore_patterns(".lock")))
    before = contents(run)
    assert train_run(small_config(), synthetic_root, run, resume=True, progress=False) == TrainedRun(run / MODEL_FILE, True)
    assert contents(run) == before
    assert train(small_config(), synthetic_root, run, resume=True, progress=False) == run / MODEL_FILE  # train: the path
    (run / MODEL_FILE).unlink()  # a kill between the last checkpoint and the model: this resume writes it
    assert train_run(small_config(), synthetic_root, run, resume=True, progress=False) == TrainedRun(run / MODEL_FILE, False)
    assert (run / MODEL_FILE).is_file()
    fresh = train_run(small_config(), synthetic_root, tmp_path / "new", progress=False)
    assert fresh == TrainedRun(tmp_path / "new" / MODEL_FILE, False)


# ------------------------------------------------------------------- 3. train.compile without a C++ compiler


def test_compile_without_a_compiler_is_one_line_before_anything_is_written(synthetic_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "x"
    env = {k: v for k, v in os.environ.items() if k != "TORCH_INDUCTOR_INSTALL_GXX"} | {"CXX": "/nonexistent/g++"}
    # was: a 91-line traceback at the first step, after config.json was written (a plain rerun then refused)
    result = run_cli("--data-root", str(synthetic_root), "--out", str(out), "--set", "train.compile=true", *CLI_TINY,
                     env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mnad: error: train.compile = true needs a working C++ compiler"), lines
    assert "/nonexistent/g++" in lines[0] and "train.compile=false" in lines[0]
    assert not out.exists()


def test_a_failed_compilation_at_the_first_step_is_one_error(synthetic_root: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the compiler is found but compiling fails (headers missing...), the first step says so in one line."""
    def failing(device_type: str) -> object:
        def compiled(*args: object) -> object:
            raise torch._dynamo.exc.BackendCompilerFailed(lambda: None, RuntimeError("cannot find Python.h"), None)
        return compiled

    monkeypatch.setattr(train_module, "check_compiler", lambda cfg, device: None)
    monkeypatch.setattr(train_module, "compiled_forward_losses", failing)
    config = small_config()
    config.train.compile = True
    with pytest.raises(ConfigError, match=r"train.compile: torch.compile could not compile the training step .*"
                                          r"set train.compile=false"):
        train(config, synthetic_root, tmp_path / "run", progress=False)


# ------------------------------------------------------------- 4. what the divergence error says is kept


def test_divergence_names_the_mid_epoch_checkpoint_it_keeps() -> None:
    finite = {"w": torch.zeros(2)}
    with pytest.raises(ConfigError, match=r"the checkpoint part way into epoch 3 \(after 5 of its batches\) is kept"):
        check_diverged({"total": float("nan")}, finite, 3, tiny_config().train, kept=(2, 5))
    with pytest.raises(ConfigError, match=r"no checkpoint was written"):
        check_diverged({"total": float("nan")}, finite, 1, tiny_config().train, kept=(0, 0))
    with pytest.raises(ConfigError, match=r"the checkpoint of epoch 4 is kept"):  # a resumed run: not epoch - 1
        check_diverged({"total": float("nan")}, finite, 6, tiny_config().train, kept=(4, 0))


def test_a_run_diverging_after_a_mid_epoch_checkpoint_says_that_one_is_kept(synthetic_root: Path, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    real = train_module.check_diverged

    def nan_at_the_end(totals: dict, tensors: dict, epoch: int, cfg: object, **kwargs: object) -> None:
        real({"total": float("nan")}, tensors, epoch, cfg, **kwargs)  # a loss that went NaN after the checkpoint

    monkeypatch.setattr(train_module, "check_diverged", nan_at_the_end)
    monkeypatch.setattr(train_module, "checkpoint_due", lambda since, minutes, step, batches: step == 2)
    config = small_config()
    config.train.checkpoint_minutes = 1.0
    run = tmp_path / "run"
    # was: "no checkpoint was written", with last.safetensors two batches into epoch 1 on disk
    with pytest.raises(ConfigError, match=r"part way into epoch 1 \(after 2 of its batches\) is kept"):
        train(config, synthetic_root, run, progress=False)
    extra = read_checkpoint(run / TRAIN_STATE_FILE)[2]
    assert (extra["epoch"], extra["step"]) == (0, 2)
    assert json.loads((run / "config.json").read_text())["train"]["checkpoint_minutes"] == 1.0
