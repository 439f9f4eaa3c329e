"""Checkpoints: plain safetensors with the config in the metadata, restored exactly, damage and mismatches refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from safetensors import safe_open
from safetensors.torch import load_file

from mnad.checkpoint import MODEL_FILE, load_model, read_checkpoint, save_model
from mnad.config import Config
from mnad.errors import CheckpointError
from mnad.model import MNAD


def trained_like(config: Config, seed: int = 0) -> MNAD:
    """A model whose weights, BN statistics and memory all differ from a fresh one's."""
    torch.manual_seed(seed)
    model = MNAD(config.model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    model.train()
    x = torch.rand(2, config.model.channels * config.model.input_frames, 32, 32) * 2 - 1
    out = model(x)  # updates BN running statistics
    if model.memory is not None:
        model.memory.update(out.queries.detach().reshape(-1, out.queries.shape[-1]))
    return model


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), key


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, MNAD, Config]:
    config = tiny_config()
    model = trained_like(config)
    path = tmp_path / MODEL_FILE
    save_model(path, model, config)
    return path, model, config


def test_round_trip_restores_weights_and_memory_exactly(saved: tuple[Path, MNAD, Config]) -> None:
    path, model, config = saved
    fresh = MNAD(config.model)
    assert not torch.equal(fresh.memory.items, model.memory.items)
    loaded, loaded_config = load_model(path)
    assert_same_state(loaded, model)
    assert torch.equal(loaded.memory.items, model.memory.items)
    assert loaded_config.model == config.model and loaded_config.dataset == config.dataset
    # and the loaded model computes the same thing
    loaded.eval()
    model.eval()
    x = torch.rand(1, 12, 32, 32) * 2 - 1
    torch.testing.assert_close(loaded(x).frame, model(x).frame, rtol=0, atol=0)


def test_round_trip_without_memory_and_recon(tmp_path: Path) -> None:
    for i, config in enumerate([tiny_config(memory=False), tiny_config(task="recon", t_length=1, channels=1)]):
        model = trained_like(config, seed=i)
        path = tmp_path / f"m{i}.safetensors"
        save_model(path, model, config)
        loaded, stored = load_model(path, expect=config)
        assert stored.model == config.model
        assert_same_state(loaded, model)


def test_run_folder_resolves_to_model_file(saved: tuple[Path, MNAD, Config]) -> None:
    path, model, _ = saved
    loaded, _ = load_model(path.parent)
    assert_same_state(loaded, model)


def test_half_precision_export_loads_as_float(tmp_path: Path) -> None:
    config = tiny_config()
    model = trained_like(config)
    path = tmp_path / "half.safetensors"
    save_model(path, model, config, dtype=torch.float16)
    assert all(t.dtype == torch.float16 for t in load_file(path).values() if t.is_floating_point())
    loaded, _ = load_model(path)
    assert loaded.memory.items.dtype == torch.float32
    torch.testing.assert_close(loaded.memory.items, model.memory.items, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize(
    "field,value",
    [("task", "recon"), ("image_size", 64), ("channels", 1), ("memory", False), ("width", 16), ("update_max_over", "assigned")],
)
def test_other_model_refused_naming_the_field(saved: tuple[Path, MNAD, Config], field: str, value: object) -> None:
    path, _, config = saved
    expect = tiny_config()
    setattr(expect.model, field, value)
    if field == "task":
        expect.model.t_length = 1
    with pytest.raises(CheckpointError, match=field) as info:
        load_model(path, expect=expect)
    assert str(path) in str(info.value)
    load_model(path, expect=config)  # the matching config is accepted


def test_plain_safetensors_without_pickle(saved: tuple[Path, MNAD, Config]) -> None:
    path, model, config = saved
    data = path.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])  # the safetensors header: JSON, no pickle opcodes anywhere
    assert "memory.items" in header
    assert b"\x80\x04\x95" not in data[: 8 + header_len]  # not a pickle protocol 4 stream
    tensors = load_file(path)
    assert torch.equal(tensors["memory.items"], model.memory.items)
    assert set(tensors) == set(model.state_dict())
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    stored = json.loads(metadata["config"])
    assert stored["model"]["image_size"] == 32 and stored["model"]["width"] == 8
    assert metadata["format"].startswith("mnad-")
    assert not data.startswith(b"PK") and data[0] != 0x80  # neither torch.save's zip nor a raw pickle


@pytest.mark.parametrize("keep", [0.5, 0.99, 8 / 1e9])
def test_truncated_file_refused(saved: tuple[Path, MNAD, Config], keep: float) -> None:
    path, _, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: max(int(len(data) * keep), 4)])
    with pytest.raises(CheckpointError, match=str(path)):
        load_model(path)


@pytest.mark.parametrize("where", [-1, -5000, "items"])
def test_flipped_byte_in_tensor_data_refused(saved: tuple[Path, MNAD, Config], where: int | str) -> None:
    path, _, _ = saved
    data = bytearray(path.read_bytes())
    header_len = int.from_bytes(data[:8], "little")
    if where == "items":  # a byte inside the memory items
        offsets = json.loads(data[8 : 8 + header_len])["memory.items"]["data_offsets"]
        position = 8 + header_len + offsets[0] + 5
    else:
        position = len(data) + where
    assert position >= 8 + header_len  # tensor data, not the header
    data[position] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256|damaged|altered"):
        load_model(path)


def test_edited_config_refused_or_detected(saved: tuple[Path, MNAD, Config]) -> None:
    # A header edited so that the config claims another image size: either refused outright, or the mismatch with
    # what the caller expects is reported. Never silently loaded as the expected model.
    path, _, config = saved
    data = path.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    header = data[8 : 8 + header_len].replace(b'\\"image_size\\": 32', b'\\"image_size\\": 48')
    assert header != data[8 : 8 + header_len]
    path.write_bytes(len(header).to_bytes(8, "little") + header + data[8 + header_len :])
    with pytest.raises(CheckpointError):
        load_model(path, expect=config)


def test_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "none.safetensors")
    with pytest.raises(CheckpointError):
        load_model(tmp_path)  # a folder without a model
    foreign = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(3)}, str(foreign))  # valid safetensors, but not an mnad checkpoint
    with pytest.raises(CheckpointError, match="mnad"):
        load_model(foreign)
    pickled = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(3)}, pickled)
    with pytest.raises(CheckpointError):
        load_model(pickled)


def test_read_checkpoint_returns_tensors_config_extra(tmp_path: Path) -> None:
    config = tiny_config()
    model = trained_like(config)
    path = tmp_path / "m.safetensors"
    save_model(path, model, config, extra={"epochs": 3})
    tensors, stored, extra = read_checkpoint(path)
    assert extra == {"epochs": 3}
    assert stored.model == config.model
    assert torch.equal(tensors["memory.items"], model.memory.items)


def test_memory_items_distinct_from_init_survive(tmp_path: Path) -> None:
    # Items set by hand (not reachable from the seed) come back bit for bit.
    config = tiny_config()
    model = MNAD(config.model)
    items = F.normalize(torch.randn(10, 64, generator=torch.Generator().manual_seed(9)), dim=1)
    model.memory.items.copy_(items)
    save_model(tmp_path / "m.safetensors", model, config)
    torch.manual_seed(123)
    loaded, _ = load_model(tmp_path / "m.safetensors")
    assert torch.equal(loaded.memory.items, items)
