"""Issue #16: run folders (lock, overwrite, resume), file modes, --version, help texts, validation, labels.

Each test fails without its fix. Trainings use the tiny config (32x32, width 8, 1 epoch) on the session's
synthetic data: a few seconds each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

import mnad
import mnad.run_folder as run_folder
import mnad.train as train_module
from mnad.atomic import atomic_write, atomic_write_many
from mnad.checkpoint import MODEL_FILE, TRAIN_STATE_FILE, read_checkpoint
from mnad.cli import build_parser, main
from mnad.config import Config, recipe_names
from mnad.data import find_label_file, load_labels, split_videos
from mnad.data.layouts import dataset_dir, list_videos
from mnad.errors import CheckpointError, ConfigError, DataError
from mnad.train import train

TINY = ["--recipe", "synthetic_pred", "--set", "model.image_size=32", "--set", "model.width=8", "--epochs", "1",
        "--set", "train.bf16=false", "--set", "train.channels_last=false", "--quiet"]


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(err: str, *parts: str) -> None:
    """The CLI's way of refusing: one `mnad: error:` line holding every part, no traceback."""
    assert err.startswith("mnad: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for part in parts:
        assert part in err, (part, err)


class Interrupt(Exception):
    pass


LOCK_FILE = ".lock"  # run_folder.LOCK_FILE


# ------------------------------------------------------------------------------------------ 1. run folders

HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(120)
"""


def test_second_writer_of_a_run_folder_fails_at_once(synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run / LOCK_FILE)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        code, _, err = cli(["train", "--data-root", str(synthetic_root), "--out", str(run), *TINY], capsys)
        assert code == 2
        one_line_error(err, f"{run}: another mnad process is writing this run folder")
        assert time.monotonic() - started < 5  # before the data is decoded or a model is built
        assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]  # nothing written
        with pytest.raises(DataError, match="another mnad process"):  # the API refuses the same way
            train(tiny_config(), synthetic_root, run, progress=False)
    finally:
        holder.kill()
        holder.wait()
    # the holder died: its lock went with it, the folder can be written
    assert train(tiny_config(), synthetic_root, run, progress=False) == run / MODEL_FILE


def test_run_folder_lock_is_released_when_training_fails(synthetic_root: Path, tmp_path: Path) -> None:
    """A failed train() (its exception, holding the frame, still referenced) does not keep the folder locked."""
    run = tmp_path / "run"

    def stop(epoch: int, record: dict) -> None:
        raise Interrupt

    with pytest.raises(Interrupt) as info:
        train(tiny_config(), synthetic_root, run, progress=False, on_epoch=stop)
    assert info.value.__traceback__ is not None
    train(tiny_config(), synthetic_root, run, resume=True, progress=False)  # same process, same folder
    with run_folder.RunFolderLock(run) as lock:  # and nobody holds it any more
        lock.acquire()
        assert lock.held


def test_training_into_an_existing_run_needs_overwrite(synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    train(tiny_config(), synthetic_root, run, progress=False)
    model_bytes = (run / MODEL_FILE).read_bytes()
    code, _, err = cli(["train", "--data-root", str(synthetic_root), "--out", str(run), *TINY], capsys)
    assert code == 2
    one_line_error(err, f"{run}: already holds a training run", "config.json", MODEL_FILE, "--overwrite", "--resume")
    # a run killed before its first checkpoint cannot be resumed: the message says so instead of sending to --resume
    started = tmp_path / "started"
    started.mkdir()
    (started / "config.json").write_text((run / "config.json").read_text())
    code, _, err = cli(["train", "--data-root", str(synthetic_root), "--out", str(started), *TINY], capsys)
    assert code == 2
    one_line_error(err, f"{started}: already holds a training run (config.json)", "no training checkpoint", "--overwrite")
    assert "--resume" not in err
    assert (run / MODEL_FILE).read_bytes() == model_bytes  # untouched
    with pytest.raises(DataError, match="already holds a training run"):
        train(tiny_config(), synthetic_root, run, progress=False)
    # a started run (config and checkpoint, no final model) is a run too
    (run / MODEL_FILE).unlink()
    with pytest.raises(DataError, match=r"already holds a training run \(config.json, last.safetensors\)"):
        train(tiny_config(), synthetic_root, run, progress=False)

    code, out, _ = cli(["train", "--data-root", str(synthetic_root), "--out", str(run), "--overwrite", "--seed", "5", *TINY], capsys)
    assert code == 0 and "model written to" in out
    assert json.loads((run / "config.json").read_text())["train"]["seed"] == 5
    assert read_checkpoint(run / MODEL_FILE)[1].train.seed == 5
    with pytest.raises(ConfigError, match="exclude each other"):
        train(tiny_config(), synthetic_root, run, resume=True, overwrite=True, progress=False)


def test_resume_without_a_checkpoint_is_an_error(synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no run here"
    code, _, err = cli(["train", "--data-root", str(synthetic_root), "--out", str(missing), "--resume", *TINY], capsys)
    assert code == 2
    one_line_error(err, f"{missing}: run folder not found, nothing to resume")
    assert not missing.exists()  # not a silent fresh start
    started = tmp_path / "started"  # killed before its first checkpoint: a config and nothing else
    started.mkdir()
    (started / "config.json").write_text(json.dumps(tiny_config().to_dict()))
    with pytest.raises(CheckpointError, match=f"no training checkpoint \\({TRAIN_STATE_FILE}\\) to resume from"):
        train(tiny_config(), synthetic_root, started, resume=True, progress=False)
    assert not (started / TRAIN_STATE_FILE).exists()


def test_overwrite_removes_the_old_model_before_writing_the_new_config(synthetic_root: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    old = tiny_config()
    old.train.keep_epochs = True
    train(old, synthetic_root, run, progress=False)
    assert {MODEL_FILE, TRAIN_STATE_FILE, "epoch_001.safetensors", "config.json"} <= {p.name for p in run.iterdir()}

    real_write = train_module.atomic_write

    def killed_after_config(path: Path, data: bytes, **kwargs: object) -> None:
        real_write(path, data, **kwargs)
        if Path(path).name == "config.json":
            raise Interrupt  # the retrain dies right after writing its config

    monkeypatch.setattr(train_module, "atomic_write", killed_after_config)
    new = tiny_config()
    new.train.seed = 9
    with pytest.raises(Interrupt):
        train(new, synthetic_root, run, overwrite=True, progress=False)
    assert json.loads((run / "config.json").read_text())["train"]["seed"] == 9
    left = sorted(p.name for p in run.iterdir() if not p.name.startswith("."))
    assert left == ["config.json"], f"the old run's files beside the new config: {left}"


def test_out_that_is_a_file_is_refused(synthetic_root: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a file"
    blocker.write_text("x")
    with pytest.raises(DataError, match="is a file, expected a run folder"):
        train(tiny_config(), synthetic_root, blocker, progress=False)
    assert blocker.read_text() == "x"


# ------------------------------------------------------------------------------------------ 2. file modes


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_honour_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    before = os.umask(umask)
    try:
        atomic_write(tmp_path / "one.json", b"{}")
        atomic_write_many({tmp_path / "a.csv": b"a", tmp_path / "b.json": b"{}"})
    finally:
        os.umask(before)
    for name in ("one.json", "a.csv", "b.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


def test_rewritten_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_text("{}")
    path.chmod(0o640)
    atomic_write(path, b'{"a": 1}')
    assert path.stat().st_mode & 0o777 == 0o640 and path.read_bytes() == b'{"a": 1}'


# ---------------------------------------------------------------------------------------------- 3. --version


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"mnad {mnad.__version__}\n"


# ------------------------------------------------------------------------------------------ 4. help texts


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_option_has_help_text() -> None:
    parsers = subcommands()
    owned = {name: parsers[name] for name in ("train", "demo", "report", "figures", "recipes")}
    for name, parser in [("mnad", build_parser()), *owned.items()]:
        for action in parser._actions:
            assert action.help, f"{name} {'/'.join(action.option_strings) or action.dest}: no help text"
    for name, parser in parsers.items():  # the config options, wherever they are offered
        for group in parser._action_groups:
            if group.title == "config overrides":
                for action in group._group_actions:
                    assert action.help, f"{name} {action.option_strings}: no help text"


def option_help(parser: argparse.ArgumentParser, option: str) -> str | None:
    action = next((a for a in parser._actions if option in a.option_strings), None)
    return None if action is None else action.help


def test_scoring_commands_say_what_device_and_threads_do() -> None:
    parsers = subcommands()
    for name in ("evaluate", "calibrate", "detect"):
        for option in ("--device", "--threads"):
            text = option_help(parsers[name], option)
            assert text and "scor" in text and "train." not in text, (name, option, text)
    assert "train" in (option_help(parsers["train"], "--device") or "")


def test_dataset_is_offered_only_where_it_does_something() -> None:
    parsers = subcommands()
    for name in ("train", "evaluate"):  # training videos / test videos are found under <root>/<dataset>
        assert option_help(parsers[name], "--dataset"), name
    for name in ("demo", "calibrate", "detect", "figures", "export", "report", "recipes"):
        assert option_help(parsers[name], "--dataset") is None, name


def test_recipes_are_listed_with_what_they_are_for(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == recipe_names()
    described = {line.split()[0]: line.split(None, 1)[1] for line in lines}
    assert described["synthetic_pred"].startswith("The embedded demo: a generated scene")
    assert described["ped2_pred"] == "UCSD Ped2, prediction with memory: the hyper-parameters of the paper and of the published code."
    assert "Sec. 4.2" in described["ped2_recon_motion"] and described["ped2_recon_motion"].endswith("without skips.")
    assert all(len(text) > 20 for text in described.values())


# --------------------------------------------------------------------------------------------- 5. validation


@pytest.mark.parametrize("field,value,bound", [("memory_size", 10**9, 10_000), ("image_size", 100_000, 2048),
                                               ("width", 100_000, 1024), ("t_length", 10_000, 64)])
def test_huge_model_sizes_are_refused(synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      field: str, value: int, bound: int) -> None:
    run = tmp_path / "run"
    code, _, err = cli(["train", "--data-root", str(synthetic_root), "--out", str(run), *TINY, "--set", f"model.{field}={value}"], capsys)
    assert code == 2
    one_line_error(err, f"model.{field} must be at most {bound}, got {value}")
    assert not run.exists()
    config = tiny_config()
    setattr(config.model, field, value)  # a Config changed in Python gets the same check
    with pytest.raises(ConfigError, match=f"model.{field} must be at most {bound}"):
        train(config, synthetic_root, run, progress=False)
    assert not run.exists()


def test_unavailable_device_is_a_clean_error(synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # this machine, whatever it has
    run = tmp_path / "run"
    code, _, err = cli(["train", "--data-root", str(synthetic_root), "--out", str(run), *TINY, "--device", "cuda"], capsys)
    assert code == 2
    one_line_error(err, "mnad: error: --device cuda: CUDA is not available on this machine")
    assert not run.exists()
    code, _, err = cli(["train", "--data-root", str(synthetic_root), "--out", str(run), *TINY, "--device", "gpu"], capsys)
    assert code == 2
    one_line_error(err, "--device gpu: not a device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    config = tiny_config()
    config.train.device = "cuda:3"
    with pytest.raises(ConfigError, match="--device cuda:3: this machine has 1 CUDA device"):
        train(config, synthetic_root, run, progress=False)
    assert not run.exists()


def test_unavailable_device_in_evaluate(synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mnad.evaluate import evaluate
    from mnad.model import MNAD

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = tiny_config()
    with pytest.raises(ConfigError, match="--device cuda: CUDA is not available on this machine"):
        evaluate(MNAD(config.model), config, synthetic_root, device="cuda", progress=False)


@pytest.mark.parametrize("dataset", ["../synthetic", "/etc", ".."])
def test_dataset_must_be_a_folder_name(dataset: str) -> None:
    config = Config()
    config.dataset = dataset
    with pytest.raises(ConfigError, match="dataset must be a folder name"):
        config.validate()


# ------------------------------------------------------------------------------------------------- 6. labels


def test_csv_labels_with_a_byte_order_mark(synthetic_root: Path, tmp_path: Path) -> None:
    videos = split_videos(synthetic_root, "synthetic", "testing")
    path = tmp_path / "test_anomalies.csv"
    path.write_bytes("video, first_abnormal_frame, last_abnormal_frame\r\n01,3,5\r\n".encode("utf-8-sig"))  # Excel's "CSV UTF-8"
    labels = load_labels(path, videos)
    assert labels[0][:5].tolist() == [0, 0, 1, 1, 1] and labels[0].sum() == 3 and labels[1].sum() == 0


def write_ucsd_archive(root: Path, name: str = "UCSDped2") -> Path:
    """The original UCSD layout: <name>/Train/Train001, <name>/Test/Test001 (+ Test001_gt) and Test/<name>.m."""
    frame = np.full((24, 24), 128, dtype=np.uint8)
    import cv2

    for split, video in (("Train", "Train001"), ("Test", "Test001"), ("Test", "Test002")):
        folder = root / name / split / video
        folder.mkdir(parents=True)
        for i in range(1, 8):
            cv2.imwrite(str(folder / f"{i:03d}.tif"), frame)
    (root / name / "Test" / "Test001_gt").mkdir()
    m_file = root / name / "Test" / f"{name}.m"
    m_file.write_text("TestVideoFile = {};\nTestVideoFile{end+1}.gt_frame = [2:4];\nTestVideoFile{end+1}.gt_frame = [7];\n")
    return m_file


@pytest.mark.parametrize("dataset,name", [("ped2", "UCSDped2"), ("ped1", "UCSDped1")])
def test_ucsd_m_file_in_the_test_folder_is_found(tmp_path: Path, dataset: str, name: str) -> None:
    m_file = write_ucsd_archive(tmp_path, name)
    directory = dataset_dir(tmp_path, dataset)
    assert find_label_file(directory, dataset) == m_file
    videos = split_videos(tmp_path, dataset, "testing")
    assert [v.name for v in videos] == ["Test001", "Test002"]
    labels = load_labels(m_file, videos)
    assert labels[0].tolist() == [0, 1, 1, 1, 0, 0, 0] and labels[1].tolist() == [0] * 6 + [1]


def test_ucsd_m_file_beside_a_standard_layout_is_found(tmp_path: Path) -> None:
    (tmp_path / "ped2" / "testing" / "frames").mkdir(parents=True)
    m_file = tmp_path / "ped2" / "UCSDped2.m"
    m_file.write_text("TestVideoFile{end+1}.gt_frame = [1];\n")
    assert find_label_file(tmp_path / "ped2", "ped2") == m_file


# ------------------------------------------------------------------------------------- 7. degenerate inputs


def test_unreadable_video_folder_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "videos"
    (folder / "01").mkdir(parents=True)
    real_iterdir = Path.iterdir

    def iterdir(self: Path):  # a folder without read permission (root ignores modes, so simulate it)
        if self.name == "01":
            raise PermissionError(13, "Permission denied")
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    with pytest.raises(DataError, match=r"01: cannot list the folder \(Permission denied\)"):
        list_videos(folder)
