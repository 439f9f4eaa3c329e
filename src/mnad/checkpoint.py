"""Checkpoints: tensors in safetensors, everything else as JSON in its metadata. Nothing is pickled.

A model file holds the weights and the memory items (a buffer of the model) and, in its metadata, the config, a
format tag and a SHA-256 of the tensors, verified on load. A training checkpoint adds the optimiser state and the
epoch. Files are written to a temporary name, flushed to disk and renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from mnad.config import Config
from mnad.errors import CheckpointError
from mnad.model.mnad import MNAD

FORMAT = "mnad-1"
MODEL_FILE = "model.safetensors"
TRAIN_STATE_FILE = "last.safetensors"


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], config: Config, extra: dict[str, Any] | None = None) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    metadata = {"format": FORMAT, "config": json.dumps(config.to_dict()), "sha256": tensor_digest(tensors)}
    metadata["extra"] = json.dumps(extra or {})
    atomic_write(Path(path), save(tensors, metadata=metadata))


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], Config, dict[str, Any]]:
    """Tensors, config and extra metadata of a checkpoint file, verified."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        tensors = load_file(path)
        with path.open("rb") as handle:  # safetensors header: 8-byte length, then JSON with __metadata__
            header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or damaged: {exc})") from exc
    metadata = header.get("__metadata__") or {}
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an mnad checkpoint (format {metadata.get('format')!r}, expected {FORMAT!r})")
    if tensor_digest(tensors) != metadata.get("sha256"):
        raise CheckpointError(f"{path}: content does not match its stored SHA-256 (the file was altered or damaged)")
    config = Config.from_dict(json.loads(metadata["config"]), source=f"{path} (stored config)")
    return tensors, config, json.loads(metadata.get("extra", "{}"))


def save_model(path: str | Path, model: MNAD, config: Config, *, dtype: torch.dtype | None = None, extra: dict[str, Any] | None = None) -> None:
    """The model's weights and memory items; ``dtype`` (e.g. float16) shrinks a shipped model."""
    state = model.state_dict()
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    save_checkpoint(path, state, config, extra)


PRETRAINED = {"ped2-pred": "ped2-pred.safetensors"}


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A shipped model name, a model file, or a run folder (its final model, else its last training checkpoint)."""
    if str(name_or_path) in PRETRAINED:
        resource = resources.files("mnad") / "pretrained" / PRETRAINED[str(name_or_path)]
        if not resource.is_file():
            raise CheckpointError(f"shipped model {name_or_path!r} is not in this installation")
        return Path(str(resource))
    path = Path(name_or_path)
    if path.is_dir():
        for name in (MODEL_FILE, TRAIN_STATE_FILE):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path}: run folder has neither {MODEL_FILE} nor {TRAIN_STATE_FILE}")
    if not path.exists():
        known = ", ".join(PRETRAINED)
        raise CheckpointError(f"{path}: checkpoint not found (give a file, a run folder, or a shipped model: {known})")
    return path


def model_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's state dict (fp32) from a model file or from a training checkpoint (keys ``model.*``)."""
    if any(k.startswith("model.") for k in tensors):
        tensors = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    return {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}


def load_model(name_or_path: str | Path, *, expect: Config | None = None, map_location: str = "cpu") -> tuple[MNAD, Config]:
    """Build the model a checkpoint describes and load its weights and memory.

    ``expect``: refuse a checkpoint whose model settings (task, memory, channels, image size, ...) differ.
    """
    path = resolve_checkpoint(name_or_path)
    tensors, config, _ = read_checkpoint(path)
    if expect is not None and expect.model != config.model:
        diffs = [f"{k}={v!r} (expected {getattr(expect.model, k)!r})" for k, v in vars(config.model).items() if getattr(expect.model, k) != v]
        raise CheckpointError(f"{path}: checkpoint is of another model: {', '.join(diffs)}")
    model = MNAD(config.model)
    state = model_state(tensors)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the stored config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.to(map_location), config
