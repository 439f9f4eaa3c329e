"""The shipped models (mnad.checkpoint.PRETRAINED): typed metadata that matches the installed files, and a file put in
a shipped model's place is refused before it is loaded as that model."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from mnad import checkpoint
from mnad.checkpoint import PRETRAINED, load_model, resolve_checkpoint
from mnad.config import recipe_names
from mnad.errors import CheckpointError, ConfigError
from mnad.report.provenance import checkpoint_metadata
from mnad.safetensors_header import read_header

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_a_shipped_model_is_what_its_metadata_says(name: str) -> None:
    shipped = PRETRAINED[name]
    path = resolve_checkpoint(name)
    assert path.name == shipped.file
    assert read_header(path)["__metadata__"]["meta_sha256"] == shipped.meta_sha256
    model, config = load_model(name)
    assert shipped.recipe in recipe_names() and config.name == shipped.recipe
    assert (ROOT / shipped.results / "metrics.json").is_file()
    assert f"{config.train.epochs} epochs" in shipped.trained and f"{config.model.image_size}x" in shipped.trained


def test_a_file_in_a_shipped_models_place_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A valid checkpoint (its own digests right) that is not the file this version pinned: it was loaded as the
    shipped model before."""
    name = sorted(PRETRAINED)[0]
    other = dataclasses.replace(PRETRAINED[name], meta_sha256="0" * 64)
    monkeypatch.setitem(checkpoint.PRETRAINED, name, other)
    with pytest.raises(CheckpointError, match=f"not the file mnad shipped as '{name}'.*reinstall mnad"):
        load_model(name)


def test_an_unknown_shipped_name_is_one_error() -> None:
    with pytest.raises(ConfigError, match="'ped9' is not a shipped model"):
        checkpoint.shipped_model_path("ped9")


def test_a_header_nested_too_deeply_is_a_value_error(tmp_path: Path) -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    path = tmp_path / "deep.safetensors"
    path.write_bytes(len(body).to_bytes(8, "little") + body)
    with pytest.raises(ValueError, match="nested too deeply"):
        read_header(path)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        checkpoint.read_checkpoint(path)
    assert checkpoint_metadata(path) == {}


def test_a_damaged_shipped_model_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    name = sorted(PRETRAINED)[0]
    package = tmp_path / "mnad"
    (package / "pretrained").mkdir(parents=True)
    data = resolve_checkpoint(name).read_bytes()
    (package / "pretrained" / PRETRAINED[name].file).write_bytes(data[:4] + data[8:])  # header length cut

    class Files:  # importlib.resources.files("mnad"), pointing at the copy
        def __truediv__(self, part: str) -> Path:
            return package / part

    monkeypatch.setattr(checkpoint.resources, "files", lambda _package: Files())
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        resolve_checkpoint(name)


def test_the_header_reader_is_the_one_the_report_uses(tmp_path: Path) -> None:
    shipped = resolve_checkpoint(sorted(PRETRAINED)[0])
    assert checkpoint_metadata(shipped) == read_header(shipped)["__metadata__"]
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07" + b"\xff" * 64)  # not safetensors: no header
    assert checkpoint_metadata(onnx) == {}
    with pytest.raises(ValueError, match="header length"):
        read_header(onnx)
    shutil.copy(shipped, tmp_path / "copy.safetensors")
    assert read_header(tmp_path / "copy.safetensors") == read_header(shipped)
