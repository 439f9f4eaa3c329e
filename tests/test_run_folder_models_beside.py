"""A run folder's models written under the user's names (a calibrated model, an export) hold the run's weights: a new
run there refuses them as it does an evaluation, and so does ``--overwrite``, which never moves or deletes them (was:
left beside the new run, scoring with the old weights, silently). And a run folder with no final model says
that its training checkpoint stands in for one."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from safetensors.torch import save_file

from mnad.checkpoint import CONFIG_FILE, MODEL_FILE, TRAIN_STATE_FILE, resolve_checkpoint, save_model
from mnad.errors import CheckpointError, DataError
from mnad.model import MNAD
from mnad.run_folder import check_run_folder, folder_outputs, models_beside, set_aside_run


@pytest.fixture
def run_with_models(tmp_path: Path) -> Path:
    """A finished run folder (config, model) with a calibrated model and an export beside it, as the docs write them."""
    run = tmp_path / "run"
    run.mkdir()
    config = tiny_config()
    torch.manual_seed(0)
    save_model(run / MODEL_FILE, MNAD(config.model), config)
    (run / CONFIG_FILE).write_text(json.dumps(config.to_dict()))
    shutil.copyfile(run / MODEL_FILE, run / "calibrated.safetensors")
    (run / "model.onnx").write_bytes(b"graph")
    (run / "model.onnx.json").write_text(json.dumps({"format": "mnad-onnx-2"}))
    return run


def test_models_beside_are_known_by_their_contents(run_with_models: Path) -> None:
    # a user's own files of the same kinds are not mnad's: never taken
    save_file({"x": torch.zeros(2)}, str(run_with_models / "features.safetensors"))
    (run_with_models / "other.onnx").write_bytes(b"someone else's graph")
    (run_with_models / "third.onnx").write_bytes(b"graph")
    (run_with_models / "third.onnx.json").write_text(json.dumps({"format": "not mnad"}))
    (run_with_models / "broken.safetensors").write_bytes(b"\x00" * 3)
    assert models_beside(run_with_models) == ["calibrated.safetensors", "model.onnx", "model.onnx.json"]
    assert folder_outputs(run_with_models)[-3:] == ["calibrated.safetensors", "model.onnx", "model.onnx.json"]


def test_a_new_run_refuses_them(run_with_models: Path) -> None:
    with pytest.raises(DataError, match="calibrated.safetensors"):
        check_run_folder(run_with_models, resume=False, overwrite=False)
    # a folder holding only a calibrated model is no empty folder either
    (run_with_models / MODEL_FILE).unlink()
    (run_with_models / CONFIG_FILE).unlink()
    with pytest.raises(DataError, match="calibrated.safetensors"):
        check_run_folder(run_with_models, resume=False, overwrite=False)


def test_overwrite_refuses_them_and_never_moves_them(run_with_models: Path) -> None:
    before = sorted(p.name for p in run_with_models.iterdir())
    with pytest.raises(DataError, match=r"calibrated.safetensors, model.onnx, model.onnx.json.*move them out"):
        check_run_folder(run_with_models, resume=False, overwrite=True)
    assert sorted(p.name for p in run_with_models.iterdir()) == before
    # and once the user moved them out, the overwrite goes ahead, the run set aside as before
    for name in ("calibrated.safetensors", "model.onnx", "model.onnx.json"):
        (run_with_models / name).rename(run_with_models.parent / name)
    check_run_folder(run_with_models, resume=False, overwrite=True)
    aside = set_aside_run(run_with_models)
    assert aside is not None and sorted(p.name for p in aside.iterdir()) == [CONFIG_FILE, MODEL_FILE]


def test_a_run_without_final_model_says_its_checkpoint_stands_in(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    run = tmp_path / "unfinished"
    run.mkdir()
    (run / TRAIN_STATE_FILE).write_bytes(b"checkpoint")
    with caplog.at_level(logging.WARNING, logger="mnad.checkpoint"):
        assert resolve_checkpoint(run) == run / TRAIN_STATE_FILE
        assert resolve_checkpoint(str(run)) == run / TRAIN_STATE_FILE  # said once for the folder, however named
    said = [r.getMessage() for r in caplog.records if "no final model" in r.getMessage()]
    assert len(said) == 1 and TRAIN_STATE_FILE in said[0]
    caplog.clear()
    (run / MODEL_FILE).write_bytes(b"model")
    with caplog.at_level(logging.WARNING, logger="mnad.checkpoint"):
        assert resolve_checkpoint(run) == run / MODEL_FILE
    assert not caplog.records


def test_an_empty_model_name_is_refused() -> None:
    with pytest.raises(CheckpointError, match="empty"):
        resolve_checkpoint("")
