"""`mnad train --data DIR` on own footage: every video in DIR is read whatever its name, a video shorter than a clip is
no calibration footage, and a refused option value names the option the user typed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import frames_folder, noise_video

from mnad.checkpoint import read_checkpoint
from mnad.cli import main
from mnad.train import HOLDOUT_FILE, holdout_videos

# a tiny training: 32x32 frames, width 8, one epoch, batches of 2
TINY = ["--recipe", "ped2_pred_fast", "--image-size", "32", "--width", "8", "--epochs", "1", "--batch-size", "2",
        "--threads", "1", "--quiet"]


def train_on(footage: Path, run: Path, *extra: str) -> int:
    return main(["train", "--data", str(footage), "--out", str(run), *TINY, *extra])


@pytest.mark.parametrize("name", ["Train", "training", "training_videos"])
def test_a_camera_folder_named_like_a_training_split_is_one_video_of_the_footage(tmp_path: Path, name: str) -> None:
    footage = tmp_path / "station"
    frames_folder(footage / "Platform", 12)
    frames_folder(footage / name, 12)
    noise_video(footage / "gate.avi", 12, 10.0)
    assert train_on(footage, tmp_path / "run") == 0
    # was: only <name>/ trained on and held out, Platform/ and gate.avi left out, unsaid
    held = [Path(r["path"]).name for r in json.loads((tmp_path / "run" / HOLDOUT_FILE).read_text())]
    assert sorted(held) == sorted(["Platform", name, "gate.avi"])
    _, _, extra = read_checkpoint(tmp_path / "run" / "model.safetensors")
    assert sorted(Path(p).name for p, _, _ in extra["footage"]) == sorted(["Platform", name, "gate.avi"])


def test_a_video_shorter_than_a_clip_is_neither_trained_on_nor_held_out(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    footage = tmp_path / "lengths"
    frames_folder(footage / "long", 40)
    frames_folder(footage / "short3", 3)
    with caplog.at_level("WARNING", logger="mnad"):
        assert train_on(footage, tmp_path / "run") == 0
    assert "short3 (neither trained on nor held out: too short for calibration too)" in caplog.text
    # was: short3[0:3] recorded as held-out footage, on which `mnad calibrate --checkpoint RUN` then failed
    assert [(Path(r["path"]).name, r["start"], r["stop"]) for r in json.loads((tmp_path / "run" / HOLDOUT_FILE).read_text())] \
        == [("long", 35, 40)]
    assert [len(v) for v in holdout_videos(tmp_path / "run")] == [5]  # what calibrate reads: one clip


def test_calibrate_says_so_when_no_held_out_part_is_left(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    footage = tmp_path / "lengths"
    frames_folder(footage / "long", 20)
    frames_folder(footage / "short3", 3)
    run = tmp_path / "run"
    with caplog.at_level("WARNING", logger="mnad"):  # the one video held out whole is too short for a clip
        assert train_on(footage, run, "--set", 'train.holdout_videos=["short3"]') == 0
    assert "no footage is held out for calibration" in caplog.text
    assert not (run / HOLDOUT_FILE).exists()
    capsys.readouterr()
    code = main(["calibrate", "--checkpoint", str(run), "--out", str(tmp_path / "c.safetensors"), "--quiet"])
    err = capsys.readouterr().err
    # was: short3[0:3] recorded, and calibrate failed on it: "3 frame(s), fewer than the 5 of one clip"
    assert code == 2 and err.count("mnad: error:") == 1 and "the run kept no held-out footage" in err and "pass --data" in err, err
    assert not (tmp_path / "c.safetensors").exists()


@pytest.mark.parametrize(("command", "option", "value", "expected"), [
    ("train", "--holdout", "1", "--holdout: train.holdout must lie in [0, 1), got 1.0"),
    ("train", "--lr", "0", "--lr: train.lr must be > 0"),
    ("train", "--width", "0", "--width: model.width must be >= 1"),
    ("train", "--batch-size", "0", "--batch-size: train.batch_size"),
    ("train", "--epochs", "abc", "--epochs: [train]: epochs must be int"),
    ("train", "--gamma", "-1", "--gamma: eval.gamma (--gamma) must be >= 0"),
    ("train", "--set", "train.seed=-1", "--set train.seed=-1: train.seed must lie in"),
    ("demo", "--seed", "-1", "--seed: train.seed must lie in"),
])
def test_a_refused_option_value_names_the_option_typed(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str,
                                                       option: str, value: str, expected: str) -> None:
    footage = tmp_path / "footage"
    frames_folder(footage / "cam", 12)
    where = ["--data", str(footage)] if command == "train" else []
    assert main([command, *where, "--out", str(tmp_path / "run"), option, value]) == 2
    err = capsys.readouterr().err
    # was: "mnad: error: overrides: train.holdout must lie in [0, 1), got 1.0"
    assert err == f"mnad: error: {expected}" + err.removeprefix(f"mnad: error: {expected}") and err.count("\n") == 1, err
    assert "overrides" not in err and not (tmp_path / "run").exists()


def test_options_checked_against_each_other_pass_in_any_order(tmp_path: Path) -> None:
    """Fields checked together (model.memory_size >= 1 without memory, 2 with) are applied together, as before: only
    a refused whole is taken apart to name the option at fault."""
    from mnad.cli import apply_options, build_parser
    from mnad.config import load_config

    args = build_parser().parse_args(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"),
                                      "--set", "model.memory_size=1", "--set", "model.memory=false"])
    config = apply_options(load_config("ped2_pred_fast"), args)
    assert config.model.memory_size == 1 and not config.model.memory
