"""Audit of the training path (2026-11-30): each test failed before its fix (docs/reliability.md, rows from 100)."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import frames_folder, noise_video, tiny_config

from mnad import distributed
from mnad.checkpoint import MODEL_FILE, TRAIN_STATE_FILE, read_checkpoint, save_checkpoint
from mnad.data import load_labels
from mnad.data.layouts import list_videos
from mnad.errors import CheckpointError, ConfigError, DataError
from mnad.run_folder import EARLIER_RUN_DIR, set_aside_run
from mnad.train import HOLDOUT_FILE, LOG_FILE, check_diverged, holdout_videos, train


@pytest.fixture(scope="module")
def finished_run(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch tiny run (``tiny_config``): model.safetensors and last.safetensors."""
    run = tmp_path_factory.mktemp("finished") / "run"
    train(tiny_config(), synthetic_root, run, progress=False)
    return run


def copy_run(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(".lock"))
    return copy


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}


# ------------------------------------------------------------------------------ resume from a foreign checkpoint


def test_resume_from_a_model_file_named_last_is_refused(synthetic_root: Path, finished_run: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from mnad.data import ClipDataset

    run = copy_run(finished_run, tmp_path)
    shutil.copy(run / MODEL_FILE, run / TRAIN_STATE_FILE)  # a model file where the training checkpoint belongs
    before = contents(run)

    def no_decoding(self: object) -> None:
        raise AssertionError("frames decoded before the checkpoint was checked")

    monkeypatch.setattr(ClipDataset, "preload", no_decoding)  # the checkpoint is checked first
    with pytest.raises(CheckpointError, match=rf"{TRAIN_STATE_FILE}: not a training checkpoint"):  # was: RuntimeError
        train(tiny_config(), synthetic_root, run, resume=True, progress=False)
    assert contents(run) == before


@pytest.mark.parametrize("damage", ["optimiser state of another shape", "a weight missing", "epoch past the run's"])
def test_resume_from_a_training_state_that_does_not_fit_is_refused(synthetic_root: Path, finished_run: Path, tmp_path: Path,
                                                                   damage: str) -> None:
    run = copy_run(finished_run, tmp_path)
    tensors, config, extra = read_checkpoint(run / TRAIN_STATE_FILE)
    if damage == "optimiser state of another shape":
        key = next(k for k in tensors if k.startswith("optim.") and k.endswith(".exp_avg"))
        tensors[key] = torch.zeros(3)
        expected = "does not fit this run's model and optimiser"
    elif damage == "a weight missing":
        del tensors["model.encoder.stage1.0.weight"]
        expected = "does not fit this run's model and optimiser"
    else:
        extra["epoch"] = 7
        expected = "7 epochs were done, outside the run's 1 to 1"
    save_checkpoint(run / TRAIN_STATE_FILE, tensors, config, extra)  # valid hashes: a foreign file, not a damaged one
    before = contents(run)
    with pytest.raises(CheckpointError, match=expected):
        train(tiny_config(), synthetic_root, run, resume=True, progress=False)
    assert contents(run) == before


# --------------------------------------------------------------------------------------- torchrun environment


@pytest.mark.parametrize("env,expected", [
    # WORLD_SIZE=2 alone is no launch (mnad.launch.multi_process_launch): one process, warned about
    # (test_api_owns_checks.py::test_a_world_size_left_in_the_shell_runs_every_entry_in_one_process)
    ({"WORLD_SIZE": "2", "RANK": "5", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29511"}, r"RANK=5 must lie in \[0, WORLD_SIZE=2\)"),  # was: hung
    ({"WORLD_SIZE": "2", "LOCAL_RANK": "-1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29511"}, "LOCAL_RANK=-1 must be >= 0"),
    ({"WORLD_SIZE": "-3"}, "WORLD_SIZE=-3 must be >= 1"),  # was: taken as one process
    ({"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "notaport"}, "MASTER_PORT='notaport' must be a port number"),
])
def test_a_broken_launch_environment_is_one_config_error(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=expected):
        distributed.setup("cpu")
    assert not torch.distributed.is_initialized()


# ------------------------------------------------------------------------------------ videos of the same name


def test_two_videos_of_the_same_name_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    frames_folder(folder / "cam", 6)
    noise_video(folder / "cam.avi", 6, 25.0)  # was: two videos named 'cam', their labels mixed up by a CSV
    with pytest.raises(DataError, match="two videos named 'cam' \\(cam and cam.avi\\)"):
        list_videos(folder)


def test_labels_for_videos_of_the_same_name_are_refused(tmp_path: Path) -> None:
    from mnad.data.videos import FrameFolder

    videos = [FrameFolder(frames_folder(tmp_path / "a" / "v", 4)), FrameFolder(frames_folder(tmp_path / "b" / "v", 4))]
    labels = tmp_path / "labels.csv"
    labels.write_text("video,start,end\nv,1,2\n")  # was: 1 array for 2 videos
    with pytest.raises(DataError, match="two videos named 'v'"):
        load_labels(labels, videos)


# ------------------------------------------------------------------------------------ holdout.json


@pytest.mark.parametrize("text", ["{not json", "\xff\xfe", "{}", "[]", '[{"path": 3, "start": 0, "stop": 2}]',
                                  '[{"path": "v", "start": 4, "stop": 2}]', '[{"path": "v", "start": true, "stop": 2}]'])
def test_a_damaged_holdout_record_is_a_data_error(tmp_path: Path, text: str) -> None:
    (tmp_path / HOLDOUT_FILE).write_bytes(text.encode("latin-1"))  # was: JSONDecodeError, TypeError, KeyError tracebacks
    with pytest.raises(DataError, match=rf"{HOLDOUT_FILE}: not a"):
        holdout_videos(tmp_path)


def test_a_holdout_record_past_the_footage_is_a_data_error(tmp_path: Path) -> None:
    video = frames_folder(tmp_path / "v", 6)
    (tmp_path / HOLDOUT_FILE).write_text(json.dumps([{"path": str(video), "start": 4, "stop": 10}]))
    with pytest.raises(DataError, match="held-out frames 4:10 .* which has 6 frames"):  # was: IndexError when read
        holdout_videos(tmp_path)
    (tmp_path / HOLDOUT_FILE).write_text(json.dumps([{"path": str(video), "start": 4, "stop": 6}]))
    assert [len(r) for r in holdout_videos(tmp_path)] == [2]


# ------------------------------------------------------------------------------------ the log, divergence, epochs


def test_a_failed_log_write_is_a_data_error_and_resume_restores_the_line(synthetic_root: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    real_open = Path.open

    def full_disk(self: Path, mode: str = "r", *args: object, **kwargs: object):
        if self.name == LOG_FILE and "a" in mode:
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", full_disk)
    with pytest.raises(DataError, match=rf"{LOG_FILE}: cannot write \(disk full"):  # was: OSError traceback
        train(tiny_config(), synthetic_root, run, progress=False)
    monkeypatch.undo()
    train(tiny_config(), synthetic_root, run, resume=True, progress=False)
    assert [json.loads(line)["epoch"] for line in (run / LOG_FILE).read_text().splitlines()] == [1]


def test_a_diverging_run_stops_with_one_error_and_writes_no_checkpoint(synthetic_root: Path, tmp_path: Path) -> None:
    config = tiny_config()
    config.train.lr = 1e9
    run = tmp_path / "run"
    # was: CheckpointError "refusing to save a checkpoint whose tensor ... (training diverged?)"
    with pytest.raises(ConfigError, match=r"training diverged in epoch 1 \(.*NaN or Inf\); lower train.lr \(now 1e\+09\)"):
        train(config, synthetic_root, run, progress=False)
    assert not (run / TRAIN_STATE_FILE).exists() and not (run / MODEL_FILE).exists()


def test_a_non_finite_loss_is_divergence() -> None:
    finite = {"w": torch.zeros(2)}
    check_diverged({"total": 1.0}, finite, 3, tiny_config().train)
    with pytest.raises(ConfigError, match=r"epoch 3 \(loss_total nan\).*the checkpoint of epoch 2 is kept"):
        check_diverged({"total": float("nan")}, finite, 3, tiny_config().train)
    with pytest.raises(ConfigError, match=r"w holds NaN or Inf"):
        check_diverged({"total": 1.0}, {"w": torch.tensor([np.inf])}, 1, tiny_config().train)


def test_zero_epochs_is_refused_before_anything_is_written(synthetic_root: Path, tmp_path: Path) -> None:
    config = tiny_config()
    config.train.epochs = 0
    with pytest.raises(ConfigError, match="train.epochs must be >= 1 to train, got 0"):  # was: a random model, exit 0
        train(config, synthetic_root, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------ --overwrite keeps the earlier run


def test_an_overwrite_that_fails_keeps_the_earlier_run_until_a_new_one_has_its_model(synthetic_root: Path, finished_run: Path,
                                                                                     tmp_path: Path) -> None:
    run = copy_run(finished_run, tmp_path)
    before = contents(run)
    diverging = tiny_config()
    diverging.train.lr = 1e9
    with pytest.raises(ConfigError, match="training diverged"):  # was: the earlier model deleted at the start
        train(diverging, synthetic_root, run, overwrite=True, progress=False)
    assert json.loads((run / "config.json").read_text())["train"]["lr"] == 1e9
    assert not (run / MODEL_FILE).exists() and contents(run / EARLIER_RUN_DIR) == before

    replacement = tiny_config()  # a second overwrite of the unfinished run keeps the same earlier run
    replacement.train.seed = 3
    train(replacement, synthetic_root, run, overwrite=True, progress=False)
    assert not (run / EARLIER_RUN_DIR).exists(), "the earlier run stays once the new one has its model"
    assert json.loads((run / "config.json").read_text())["train"]["seed"] == 3
    assert (run / MODEL_FILE).read_bytes() != before[MODEL_FILE]


def test_a_resumed_overwrite_discards_the_earlier_run_at_its_end(synthetic_root: Path, finished_run: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import mnad.train as train_module

    run = copy_run(finished_run, tmp_path)
    before = contents(run)
    longer = tiny_config()
    longer.train.epochs = 2

    def killed(epoch: int, record: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(longer, synthetic_root, run, overwrite=True, progress=False, on_epoch=killed)
    assert contents(run / EARLIER_RUN_DIR) == before and (run / TRAIN_STATE_FILE).exists()
    monkeypatch.setattr(train_module, "set_aside_run", None)  # a resume sets nothing aside
    train(longer, synthetic_root, run, resume=True, progress=False)
    assert not (run / EARLIER_RUN_DIR).exists() and (run / MODEL_FILE).exists()


def test_a_set_aside_killed_part_way_is_completed_by_the_next_one(finished_run: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import mnad.run_folder as run_folder

    run = copy_run(finished_run, tmp_path)
    before = contents(run)
    real_replace, moves = os.replace, []

    def dies_after_two_moves(src: object, dst: object) -> None:
        if len(moves) == 2:
            raise KeyboardInterrupt
        moves.append(src)
        real_replace(src, dst)

    monkeypatch.setattr(run_folder.os, "replace", dies_after_two_moves)
    with pytest.raises(KeyboardInterrupt):
        set_aside_run(run, also=(LOG_FILE,))
    monkeypatch.undo()
    assert (run / "config.json").exists(), "the config goes last: the folder still says which run it holds"
    assert set_aside_run(run, also=(LOG_FILE,)) == run / EARLIER_RUN_DIR
    assert contents(run / EARLIER_RUN_DIR) == before and contents(run) == {}
    assert [p.name for p in run.iterdir() if p.name != ".lock"] == [EARLIER_RUN_DIR]


# ------------------------------------------------------------------------------------ resume on other footage


def test_resume_on_other_footage_is_refused(synthetic_root: Path, tmp_path: Path) -> None:
    from mnad.data.synthetic import make_synthetic_dataset

    other = tmp_path / "other"
    make_synthetic_dataset(other, n_train=2, n_test=1, n_frames=20, size=32, seed=1)
    config = tiny_config()
    config.train.epochs = 2

    def stop(epoch: int, record: dict) -> None:
        raise KeyboardInterrupt

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(config, synthetic_root, run, progress=False, on_epoch=stop)
    before = contents(run)
    # was: resumed silently on the other videos (another batch order, another run than the one asked for)
    with pytest.raises(CheckpointError, match=r"trained on other footage \(then: .*24 frames.*now: .*20 frames"):
        train(config, other, run, resume=True, progress=False)
    assert contents(run) == before
    train(config, synthetic_root, run, resume=True, progress=False)
    assert (run / MODEL_FILE).exists()


@pytest.mark.parametrize("name", ["labels.csv", "labels.m"])
def test_a_label_file_that_cannot_be_read_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    from mnad.data.videos import FrameFolder

    videos = [FrameFolder(frames_folder(tmp_path / "v", 4))]
    labels = tmp_path / name
    labels.write_text("video,start,end\n" if name.endswith(".csv") else "TestVideoFile{end+1}.gt_frame = [1:2];\n")
    real_open = Path.open

    def denied(self: Path, *args: object, **kwargs: object):
        if self == labels:
            raise PermissionError(13, "Permission denied", str(self))  # root ignores file modes: simulated
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", denied)  # Path.read_text opens through it too
    # was: PermissionError traceback (.npy files were already a DataError)
    with pytest.raises(DataError, match=rf"{name}: cannot read the label file \(Permission denied\)"):
        load_labels(labels, videos)


def test_training_videos_shorter_than_a_clip_are_named_in_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    footage = tmp_path / "footage"
    frames_folder(footage / "long", 10)
    frames_folder(footage / "one_frame", 1)
    frames_folder(footage / "three", 3)
    config = tiny_config()
    config.dataset = ""
    with caplog.at_level("WARNING", logger="mnad"):  # was: left out of training, unsaid
        train(config, footage, tmp_path / "run", progress=False)
    assert "2 of the 3 training videos have fewer frames than a clip of 5 and are not used: one_frame, three" in caplog.text


def test_the_api_refuses_an_empty_out_dir_or_data_root_and_what_is_not_a_config(synthetic_root: Path, tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"out_dir \(--out\) is empty"):  # was: trained into the current folder
        train(tiny_config(), synthetic_root, "", progress=False)
    with pytest.raises(ConfigError, match=r"data_root \(--data-root\) is empty"):
        train(tiny_config(), "", tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="train\\(\\) needs a mnad.config.Config"):  # was: AttributeError
        train("tiny", synthetic_root, tmp_path / "run", progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", ["launch", "foreign checkpoint", "two videos of one name"])
def test_the_cli_says_each_in_one_line(synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str], case: str) -> None:
    from mnad.cli import main

    tiny = ["--recipe", "synthetic_pred", "--set", "model.image_size=32", "--set", "model.width=8", "--epochs", "1",
            "--set", "train.bf16=false", "--set", "train.channels_last=false", "--quiet"]
    data, run, extra = synthetic_root, tmp_path / "run", []
    if case == "launch":
        for name, value in {"WORLD_SIZE": "2", "RANK": "5", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29511"}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("LOCAL_RANK", raising=False)
        expected = "RANK=5 must lie in [0, WORLD_SIZE=2)"
    elif case == "foreign checkpoint":
        assert main(["train", "--data-root", str(data), "--out", str(run), *tiny]) == 0
        shutil.copy(run / MODEL_FILE, run / TRAIN_STATE_FILE)
        capsys.readouterr()
        extra, expected = ["--resume"], "not a training checkpoint"
    else:
        data = tmp_path / "footage"
        frames_folder(data / "synthetic" / "training" / "cam", 8)
        noise_video(data / "synthetic" / "training" / "cam.avi", 8, 25.0)
        expected = "two videos named 'cam'"
    code = main(["train", "--data-root", str(data), "--out", str(run), *tiny, *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("mnad: error: ") and err.count("\n") == 1 and expected in err, err


def test_a_local_rank_without_its_gpu_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # this machine has no GPU: its count is simulated
    with pytest.raises(ConfigError, match="LOCAL_RANK=1: this machine has 1 CUDA device"):  # was: a RuntimeError from set_device
        distributed.check_local_gpu(1)
    distributed.check_local_gpu(0)


def test_a_problem_inside_a_training_split_is_reported_where_it_is(tmp_path: Path) -> None:
    from mnad.train import training_videos

    root = tmp_path / "ped2"
    frames_folder(root / "training" / "frames" / "v1", 8)
    (root / "training" / "frames" / "empty").mkdir()
    config = tiny_config()  # a dataset's layout, read as one
    with pytest.raises(DataError, match=r"training/frames/empty: folder has no frames"):
        training_videos(config, root)
    (root / "training" / "frames" / "empty").rmdir()
    assert [v.name for v in training_videos(config, root)] == ["v1"]
    # own footage (no dataset) is what lies in the folder, whatever its sub-folders' names (a camera folder named
    # "training" is one video of it): a layout given as own footage is said to be one
    config.dataset = ""
    with pytest.raises(DataError, match=r"ped2/training: folder has no frames .*a dataset's layout.*--data-root"):
        training_videos(config, root)
    footage = tmp_path / "footage"  # a plain folder of videos is still one
    frames_folder(footage / "cam", 8)
    assert [v.name for v in training_videos(config, footage)] == ["cam"]
