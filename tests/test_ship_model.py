"""scripts/ship_model.py: a shipped model is replaced only with --overwrite, a bad checkpoint is one error line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import load_script

from mnad.checkpoint import load_model
from mnad.errors import CheckpointError


@pytest.fixture
def ship(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    script = load_script("scripts/ship_model.py")
    monkeypatch.setattr(script, "PRETRAINED_DIR", tmp_path / "pretrained")
    return script


def error_lines(capsys: pytest.CaptureFixture) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_ships_a_new_name_and_replaces_it_only_with_overwrite(ship, model_file: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    assert ship.main(["--checkpoint", str(model_file), "--name", "tiny-test"]) == 0
    shipped = tmp_path / "pretrained" / "tiny-test.safetensors"
    model, _ = load_model(shipped)
    assert all(t.dtype == torch.float32 for t in model.state_dict().values() if t.is_floating_point())
    before = shipped.read_bytes()
    capsys.readouterr()

    assert ship.main(["--checkpoint", str(model_file), "--name", "tiny-test"]) == 1
    (line,) = error_lines(capsys)
    assert line.startswith("ship_model.py: error: ") and "--overwrite" in line and shipped.read_bytes() == before

    other = tmp_path / "other"
    assert ship.main(["--checkpoint", str(other), "--name", "tiny-test", "--overwrite"]) == 1  # a bad checkpoint: kept
    (line,) = error_lines(capsys)
    assert line.startswith("ship_model.py: error: ") and "not found" in line and shipped.read_bytes() == before

    assert ship.main(["--checkpoint", str(model_file), "--name", "tiny-test", "--overwrite"]) == 0
    assert load_model(shipped)[1].to_dict() == load_model(model_file)[1].to_dict()
    assert [p.name for p in shipped.parent.iterdir()] == [shipped.name]  # no temporary file left


def test_a_damaged_checkpoint_is_one_error_line_and_writes_nothing(ship, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    with pytest.raises(CheckpointError):  # what the script turns into its one line
        load_model(bad)
    assert ship.main(["--checkpoint", str(bad), "--name", "tiny-test"]) == 1
    (line,) = error_lines(capsys)
    assert line.startswith("ship_model.py: error: ") and str(bad) in line
    assert not (tmp_path / "pretrained").exists() or not any((tmp_path / "pretrained").iterdir())
