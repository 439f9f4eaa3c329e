"""The demo as an API (mnad.demo.demo): the command is a thin layer over it, with the same checks and results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mnad.cli import main
from mnad.config import load_config
from mnad.demo import RECIPE, DemoResult, demo
from mnad.errors import ConfigError, DataError

# a short demo: the scene as the command draws it, a narrow model trained for one epoch in fp32
TINY = ["model.width=8", "train.epochs=1", "train.bf16=false", "train.channels_last=false"]


def test_demo_api_trains_and_evaluates_into_its_folder(tmp_path: Path) -> None:
    result = demo(tmp_path / "d", config=load_config(RECIPE).override(TINY), progress=False)
    assert isinstance(result, DemoResult)
    assert result.run_dir == tmp_path / "d" / "run" and result.model_path.is_file()
    assert (result.data_root / "synthetic").is_dir()
    written = json.loads((result.run_dir / "eval" / "metrics.json").read_text())["metrics"]
    assert 0.0 <= result.metrics["micro_auc"] <= 1.0
    assert written["micro_auc"] == pytest.approx(result.metrics["micro_auc"])
    # a second demo into the same folder is refused before anything is touched, as the command's is
    with pytest.raises(DataError, match="--overwrite"):
        demo(tmp_path / "d", config=load_config(RECIPE).override(TINY), progress=False)


def test_demo_command_prints_what_the_api_returned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sets = [arg for item in TINY for arg in ("--set", item)]
    assert main(["demo", "--out", str(tmp_path / "d"), "--quiet", *sets]) == 0
    out = capsys.readouterr().out
    written = json.loads((tmp_path / "d" / "run" / "eval" / "metrics.json").read_text())["metrics"]
    assert f"micro {100 * written['micro_auc']:.2f}%" in out
    assert f"run folder: {tmp_path / 'd' / 'run'}" in out
    assert f"synthetic scene: {tmp_path / 'd' / 'data' / 'synthetic'}" in out


def test_demo_api_checks_its_config_before_the_scene(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train.epochs"):
        demo(tmp_path / "d", config=load_config(RECIPE).override(["train.epochs=0"]), progress=False)
    assert not (tmp_path / "d").exists()


def test_demo_api_refuses_a_multi_process_launch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="mnad demo runs in one process"):
        demo(tmp_path / "d", progress=False)
    assert not (tmp_path / "d").exists()


def test_demo_api_refuses_another_dataset_or_a_non_config_before_the_scene(tmp_path: Path) -> None:
    """A ped2 config passed every check, drew the scene, then failed in training (no ped2 videos there); a recipe name
    instead of a Config was an AttributeError traceback."""
    with pytest.raises(ConfigError, match="config.dataset must be 'synthetic'"):
        demo(tmp_path / "d", config=load_config("ped2_pred"), progress=False)
    with pytest.raises(ConfigError, match="must be a mnad.config.Config"):
        demo(tmp_path / "d", config=RECIPE, progress=False)  # type: ignore[arg-type]
    assert not (tmp_path / "d").exists()


def test_a_failed_demo_in_a_temporary_folder_leaves_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an out folder the demo's temporary folder is named by its result only: one that failed in training was
    left behind, unnamed."""
    import tempfile

    import mnad.train

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def broken(*args: object, **kwargs: object) -> None:
        raise DataError("injected: training failed")

    monkeypatch.setattr(mnad.train, "train", broken)
    with pytest.raises(DataError, match="injected"):
        demo(config=load_config(RECIPE).override(TINY), progress=False)
    assert list(tmp_path.iterdir()) == []
