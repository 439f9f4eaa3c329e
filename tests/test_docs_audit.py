"""What the user documentation (README.md, docs/detect.md, docs/report.md, docs/distributed.md) says the commands do,
checked where the code had drifted from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import frames_folder

from mnad.cli import build_parser, main

TINY = ["--recipe", "synthetic_pred", "--set", "model.image_size=32", "--set", "model.width=8", "--epochs", "1",
        "--set", "train.bf16=false", "--set", "train.channels_last=false", "--quiet"]


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of own footage: two frame folders of 20 frames."""
    root = tmp_path_factory.mktemp("footage")
    frames_folder(root / "cam1", 20)
    frames_folder(root / "cam2", 20)
    return root


def held_out(run: Path) -> list[tuple[str, int, int]]:
    return sorted((Path(r["path"]).name, r["start"], r["stop"]) for r in json.loads((run / "holdout.json").read_text()))


def test_train_data_holdout_videos_instead_of_tails(footage: Path, tmp_path: Path) -> None:
    """docs/detect.md: with `mnad train --data`, whole videos can be kept aside *instead* of each video's last 10 %
    (`--set 'train.holdout_videos=[...]'`); the tails of the others were held out as well, 10 % of training lost."""
    run = tmp_path / "run"
    assert main(["train", "--data", str(footage), "--out", str(run), *TINY, "--set", 'train.holdout_videos=["cam2"]']) == 0
    assert held_out(run) == [("cam2", 0, 20)]
    assert json.loads((run / "config.json").read_text())["train"]["holdout"] == 0.0


def test_train_data_holdout_tails_by_default_and_with_holdout(footage: Path, tmp_path: Path) -> None:
    """Without whole videos, --data keeps the last 10 % (at least one clip) of each video aside; --holdout given with
    whole videos keeps both, as asked."""
    run = tmp_path / "tails"
    assert main(["train", "--data", str(footage), "--out", str(run), *TINY]) == 0
    assert held_out(run) == [("cam1", 15, 20), ("cam2", 15, 20)]  # 10 % of 20 is 2 frames: one clip (5) instead
    both = tmp_path / "both"
    assert main(["train", "--data", str(footage), "--out", str(both), *TINY, "--holdout", "0.25",
                 "--set", 'train.holdout_videos=["cam2"]']) == 0
    assert held_out(both) == [("cam1", 15, 20), ("cam2", 0, 20)]


@pytest.mark.parametrize(("command", "option", "default"), [
    ("detect", "--reconnects", "3"), ("detect", "--open-timeout", "5.0"), ("detect", "--read-timeout", "5.0"),
    ("detect", "--fps", "25.0"), ("detect", "--hysteresis", "0.05"), ("detect", "--min-event-frames", "3"),
    ("calibrate", "--false-alarm-rate", "0.01"), ("figures", "--frames", "3"), ("figures", "--queries", "1500"),
])
def test_help_states_the_documented_defaults(command: str, option: str, default: str) -> None:
    """docs/detect.md and docs/report.md give these defaults (the timeouts 5 s, 3 reconnects, ...); each option's
    --help says it too (it said none)."""
    parser = build_parser()
    sub = next(action for action in parser._actions if action.dest == "command").choices[command]
    option_action = next(action for action in sub._actions if option in action.option_strings)
    assert str(option_action.default) == default
    assert f"default {default}" in option_action.help % {"default": option_action.default}


def test_readme_qualifies_what_a_mid_epoch_resume_reproduces() -> None:
    """README said a resume from a mid-epoch checkpoint is "bit-identical to an uninterrupted run" unqualified: only a
    CPU fp32 run on one process is (docs/distributed.md: on several ranks that epoch's logged loss differs); and "one
    stopped before its first starts again" lacked its noun."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `train.checkpoint_minutes`"))
    assert "bit-identical to an uninterrupted run on a CPU on one process, in fp32 and in bf16 + channels_last" in row
    assert "docs/distributed.md" in row and "`computed`" in row  # a resume in another numeric path is said, per epoch
    assert "one stopped before its first checkpoint starts again" in readme
