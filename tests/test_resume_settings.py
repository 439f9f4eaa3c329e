"""A resume continues the run it finds: the settings that shape the optimisation must stay as they were (a change is
refused, naming each one), those that choose where and how fast it runs or what is kept may change."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from mnad.checkpoint import MODEL_FILE, TRAIN_STATE_FILE, load_model, read_checkpoint, save_checkpoint
from mnad.config import Config, TrainConfig
from mnad.errors import CheckpointError
from mnad.train import LOG_FILE, RESUME_FIXED, train

# where, how fast and in which numeric path it runs, and what is kept besides the model
RESUME_FREE = {"bf16", "channels_last", "compile", "device", "threads", "cache_frames", "tensorboard", "keep_epochs",
               "checkpoint_minutes"}


class Stop(Exception):
    pass


def run_config(**train_settings: object) -> Config:
    config = tiny_config()
    config.train.epochs, config.train.threads, config.train.bf16 = 2, 1, False
    for key, value in train_settings.items():
        setattr(config.train, key, value)
    return config


def stop_after_first(epoch: int, record: dict) -> None:
    if epoch == 1:
        raise Stop


@pytest.fixture(scope="module")
def runs(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A run stopped after epoch 1 of 2 and the same run finished, for the tests to copy."""
    before = torch.get_num_threads()
    root = tmp_path_factory.mktemp("runs")
    try:
        with pytest.raises(Stop):
            train(run_config(), synthetic_root, root / "partial", progress=False, on_epoch=stop_after_first)
        train(run_config(), synthetic_root, root / "finished", progress=False)
    finally:
        torch.set_num_threads(before)
    return {"partial": root / "partial", "finished": root / "finished"}


def copy_of(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def contents(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


def test_every_train_setting_is_either_kept_or_free_on_resume() -> None:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(RESUME_FIXED) | RESUME_FREE == fields and not set(RESUME_FIXED) & RESUME_FREE  # a new field needs a decision


@pytest.mark.parametrize(("field", "value", "said"), [
    ("lr", 0.1, "train.lr 0.0002 -> 0.1"),
    ("epochs", 3, "train.epochs 2 -> 3"),
    ("seed", 5, "train.seed 0 -> 5"),
    ("batch_size", 2, "train.batch_size 4 -> 2"),
    ("lambda_separate", 0.5, "train.lambda_separate 0.1 -> 0.5"),
    ("clip_stride", 2, "train.clip_stride 1 -> 2"),
    ("holdout_videos", ["01"], "train.holdout_videos [] -> ['01']"),
])
def test_resume_with_other_training_settings_is_refused(runs: dict[str, Path], synthetic_root: Path, tmp_path: Path,
                                                        field: str, value: object, said: str) -> None:
    run = copy_of(runs["partial"], tmp_path)
    before = contents(run)
    with pytest.raises(CheckpointError) as info:
        train(run_config(**{field: value}), synthetic_root, run, resume=True, progress=False)
    message = str(info.value)
    assert str(run / TRAIN_STATE_FILE) in message and said in message and "start a new run" in message
    assert contents(run) == before  # nothing written: config.json still says what ran


def test_several_changes_are_named_together(runs: dict[str, Path], synthetic_root: Path, tmp_path: Path) -> None:
    run = copy_of(runs["partial"], tmp_path)
    with pytest.raises(CheckpointError, match=r"train.epochs 2 -> 3, train.lr 0.0002 -> 0.1\)"):
        train(run_config(epochs=3, lr=0.1), synthetic_root, run, resume=True, progress=False)


def test_resume_may_change_where_and_how_fast_it_runs(runs: dict[str, Path], synthetic_root: Path, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    # bf16 and threads are free too (test_every_train_setting_is_either_kept_or_free_on_resume); not trained here:
    # bf16 is emulated on CPUs without it, and a second thread beside a busy core spins: tens of seconds each
    run = copy_of(runs["partial"], tmp_path)
    config = run_config(channels_last=True, cache_frames=False, keep_epochs=True, checkpoint_minutes=0.0)
    with caplog.at_level("WARNING", logger="mnad.train"):
        path = train(config, synthetic_root, run, resume=True, progress=False)
    # the layout changes the rounding: said once, and each epoch's record says how it computed (config.json cannot)
    said = [r.getMessage() for r in caplog.records if "computed with" in r.getMessage()]
    assert len(said) == 1 and "fp32, NCHW, eager" in said[0] and "fp32, channels_last, eager" in said[0]
    assert [json.loads(line)["computed"] for line in (run / LOG_FILE).read_text().splitlines()] == [
        "fp32, NCHW, eager", "fp32, channels_last, eager"]
    stored = json.loads((run / "config.json").read_text())["train"]
    assert (stored["channels_last"], stored["cache_frames"], stored["keep_epochs"], stored["checkpoint_minutes"]) == (True, False, True, 0.0)
    assert read_checkpoint(path)[2]["epochs"] == 2 and (run / "epoch_002.safetensors").exists()
    assert [json.loads(line)["epoch"] for line in (run / LOG_FILE).read_text().splitlines()] == [1, 2]


def test_resume_of_a_finished_run_with_fewer_epochs_is_refused(runs: dict[str, Path], synthetic_root: Path, tmp_path: Path) -> None:
    run = copy_of(runs["finished"], tmp_path)
    before = contents(run)
    with pytest.raises(CheckpointError, match="train.epochs 2 -> 1"):
        train(run_config(epochs=1), synthetic_root, run, resume=True, progress=False)
    assert contents(run) == before  # no model of 2 epochs labelled as 1


def test_resume_of_a_finished_run_trains_nothing_and_keeps_its_record(runs: dict[str, Path], synthetic_root: Path, tmp_path: Path) -> None:
    run = copy_of(runs["finished"], tmp_path)
    before = contents(run)
    path = train(run_config(threads=2, cache_frames=False), synthetic_root, run, resume=True, progress=False)
    assert (run / "config.json").read_bytes() == before["config.json"]  # threads=2 ran nothing: not recorded
    assert (run / LOG_FILE).read_bytes() == before[LOG_FILE] and (run / TRAIN_STATE_FILE).read_bytes() == before[TRAIN_STATE_FILE]
    model, stored = load_model(path)
    original, _ = load_model(runs["finished"] / MODEL_FILE)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), original.state_dict().values(), strict=True))
    assert read_checkpoint(path)[2]["epochs"] == 2 and stored.train.threads == 1


def test_cli_resume_with_another_lr_is_one_error_line(runs: dict[str, Path], synthetic_root: Path, tmp_path: Path) -> None:
    run = copy_of(runs["partial"], tmp_path)
    command = [sys.executable, "-m", "mnad", "train", "--recipe", "synthetic_pred", "--data-root", str(synthetic_root),
               "--out", str(run), "--resume", "--epochs", "2", "--lr", "0.1", "--image-size", "32", "--width", "8",
               "--set", "train.bf16=false", "--set", "train.channels_last=false", "--threads", "1", "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mnad: error: ") and str(run / TRAIN_STATE_FILE) in lines[0]
    assert "settings (train.lr 0.0002 -> 0.1)" in lines[0]  # the one change, old -> new


def test_cli_resume_repairs_a_log_with_a_damaged_byte(runs: dict[str, Path], synthetic_root: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A training log is read by one rule everywhere (outputs.read_train_log): a line that is not UTF-8 or not JSON
    (a kill mid-write, a damaged disk block) is skipped; resume rewrites the log from what its checkpoint holds."""
    from mnad.cli import main

    run = copy_of(runs["partial"], tmp_path)
    first = (run / LOG_FILE).read_bytes()
    (run / LOG_FILE).write_bytes(first + b"\xff\xfe damaged\n" + b'{"epoch": 2, "lo')
    before = torch.get_num_threads()
    try:
        code = main(["train", "--recipe", "synthetic_pred", "--data-root", str(synthetic_root), "--out", str(run), "--resume",
                     "--epochs", "2", "--image-size", "32", "--width", "8", "--set", "train.bf16=false", "--threads", "1",
                     "--quiet"])
    finally:
        torch.set_num_threads(before)
    assert code == 0, capsys.readouterr().err
    lines = (run / LOG_FILE).read_bytes().decode("utf-8").splitlines()  # UTF-8 again: the damaged line is gone
    assert lines[0].encode() + b"\n" == first and [json.loads(line)["epoch"] for line in lines] == [1, 2]


def test_resume_keeps_the_runs_eval_settings_and_says_so(runs: dict[str, Path], synthetic_root: Path, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    run = copy_of(runs["partial"], tmp_path)
    started = read_checkpoint(run / TRAIN_STATE_FILE)[1].eval
    config = run_config()
    config.eval.alpha, config.eval.smoothing = 0.9, 5  # not the run's: a resume does not change how its model scores
    with caplog.at_level("WARNING", logger="mnad.train"):
        train(config, synthetic_root, run, resume=True, progress=False)
    assert load_model(run / MODEL_FILE)[1].eval == started
    assert json.loads((run / "config.json").read_text())["eval"] == dataclasses.asdict(started)
    warned = [r.getMessage() for r in caplog.records if "resume: the run keeps eval." in r.getMessage()]
    assert len(warned) == 2 and f"eval.alpha = {started.alpha!r}" in warned[0] and "gives 0.9" in warned[0]
    assert "eval.smoothing = 1" in warned[1] and "--set eval.smoothing=VALUE to mnad evaluate or calibrate" in warned[1]


def test_cli_resume_keeps_the_eval_settings_the_run_started_with(synthetic_root: Path, tmp_path: Path) -> None:
    config = run_config()
    config.eval.alpha, config.eval.smoothing = 0.9, 5
    with pytest.raises(Stop):
        train(config, synthetic_root, tmp_path / "run", progress=False, on_epoch=stop_after_first)
    command = [sys.executable, "-m", "mnad", "train", "--recipe", "synthetic_pred", "--data-root", str(synthetic_root),
               "--out", str(tmp_path / "run"), "--resume", "--epochs", "2", "--image-size", "32", "--width", "8",
               "--set", "train.bf16=false", "--set", "train.channels_last=false", "--threads", "1", "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True)  # as README shows: the recipe's own eval.*
    assert result.returncode == 0, result.stderr
    model_eval = load_model(tmp_path / "run" / MODEL_FILE)[1].eval
    assert (model_eval.alpha, model_eval.smoothing) == (0.9, 5)
    assert "the run keeps eval.alpha = 0.9" in result.stderr and "the run keeps eval.smoothing = 5" in result.stderr


def test_a_resumed_channels_last_run_holds_adams_moments_in_the_weights_layout(tmp_path: Path) -> None:
    """The checkpoint stores Adam's moments contiguous; an uninterrupted channels_last run holds them channels_last
    (Adam makes them like the weights), and so does a resumed one."""
    from mnad.model import MNAD
    from mnad.train import prepared_for_training, restore_train_state, training_state

    config = run_config(channels_last=True)

    def fresh() -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        model = prepared_for_training(MNAD(config.model), config.train)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
        return model, optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=2)

    model, optimizer, scheduler = fresh()
    sum(p.float().square().sum() for p in model.parameters()).backward()
    optimizer.step()
    conv = next(p for p in model.parameters() if p.dim() == 4 and p.shape[2] > 1 and p.shape[1] > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    moments = [optimizer.state[p]["exp_avg"].clone() for p in model.parameters()]
    path = tmp_path / TRAIN_STATE_FILE
    saved, saved_extra = training_state(model, optimizer, scheduler, 1, [])
    save_checkpoint(path, saved, config, saved_extra)
    tensors, _, extra = read_checkpoint(path)
    model, optimizer, scheduler = fresh()
    restore_train_state(path, tensors, extra, model, optimizer, scheduler)
    for param, moment in zip(model.parameters(), moments, strict=True):
        for name in ("exp_avg", "exp_avg_sq"):
            assert optimizer.state[param][name].stride() == param.stride(), name
        assert torch.equal(optimizer.state[param]["exp_avg"], moment)  # the same values, in the weight's layout
