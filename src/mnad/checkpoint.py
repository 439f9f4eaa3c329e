"""Checkpoints: tensors in safetensors, everything else as JSON in its metadata. Nothing is pickled.

A model file holds the weights and the memory items (a buffer of the model) and, in its metadata, the config, a
format tag, a SHA-256 of the tensors and one of the config and other metadata, both verified on load (as is that
every float is finite). A training checkpoint adds the optimiser state and the epoch. Files are written to a
temporary name, flushed to disk and renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import errno
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
from mnad.errors import CheckpointError, DataError, MNADError
from mnad.model.mnad import MNAD

FORMAT = "mnad-2"  # mnad-2 adds meta_sha256 (config and metadata); mnad-1 files (tensor hash only) are still read
KNOWN_FORMATS = ("mnad-1", FORMAT)
MODEL_FILE = "model.safetensors"
TRAIN_STATE_FILE = "last.safetensors"
TEMP_SUFFIX = ".tmp"  # atomic writes go to ``.<name>.<random>.tmp`` beside the target, then are renamed


def atomic_write(path: Path, data: bytes, *, error: type[MNADError] = DataError) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part.

    A failure (disk full, no permission, ...) leaves the previous file as it was and no temporary file, and is
    raised as ``error`` naming ``path``.
    """
    atomic_write_many({Path(path): data}, error=error)


def atomic_write_many(files: dict[Path, bytes], *, error: type[MNADError] = DataError) -> None:
    """Write several files that belong together: all are written and flushed to temporary names first, then renamed,
    so a failure while writing (e.g. a full disk) leaves none of the new files, only the previous ones."""
    temps: dict[Path, str] = {}
    current = next(iter(files), Path("."))
    try:
        for current, data in files.items():
            current.parent.mkdir(parents=True, exist_ok=True)
            fd, temps[current] = tempfile.mkstemp(dir=current.parent, prefix=f".{current.name}.", suffix=TEMP_SUFFIX)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        for current, tmp in temps.items():
            os.replace(tmp, current)
    except OSError as exc:
        reason = "disk full, no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise error(f"{current}: cannot write ({reason}); the previous file, if any, is unchanged") from exc
    finally:
        for tmp in temps.values():
            Path(tmp).unlink(missing_ok=True)


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files a killed writer left in ``folder`` (``.<name>.<random>.tmp``); returns them."""
    stale = [p for p in Path(folder).glob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def metadata_digest(metadata: dict[str, str]) -> str:
    """SHA-256 of the metadata that is not tensors (format, config, extra): a changed config is caught too."""
    return hashlib.sha256("\n".join(f"{k}={metadata.get(k, '')}" for k in ("format", "config", "extra", "sha256")).encode()).hexdigest()


def non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding NaN or Inf, if any."""
    return next((k for k in sorted(tensors) if tensors[k].is_floating_point() and not torch.isfinite(tensors[k]).all()), None)


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], config: Config, extra: dict[str, Any] | None = None) -> None:
    """Write tensors + config atomically; a write failure (disk full, ...) raises CheckpointError and keeps the old file."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    bad = non_finite(tensors)
    if bad is not None:
        raise CheckpointError(f"{path}: refusing to save a checkpoint whose tensor {bad!r} holds NaN or Inf (training diverged?)")
    metadata = {"format": FORMAT, "config": json.dumps(config.to_dict()), "sha256": tensor_digest(tensors)}
    metadata["extra"] = json.dumps(extra or {})
    metadata["meta_sha256"] = metadata_digest(metadata)
    atomic_write(Path(path), save(tensors, metadata=metadata), error=CheckpointError)


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], Config, dict[str, Any]]:
    """Tensors, config and extra metadata of a checkpoint file, verified: any damage gives a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:  # safetensors header: 8-byte length, then JSON with __metadata__
            length = int.from_bytes(handle.read(8), "little")
            if not 2 <= length <= size - 8:
                raise ValueError(f"header length {length} does not fit a file of {size} bytes")
            header = json.loads(handle.read(length))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:  # ValueError covers JSON and UTF-8 decoding errors
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or damaged: {exc})") from exc
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or metadata.get("format") not in KNOWN_FORMATS:
        found = metadata.get("format") if isinstance(metadata, dict) else None
        raise CheckpointError(f"{path}: not an mnad checkpoint (format {found!r}, expected {FORMAT!r})")
    if tensor_digest(tensors) != metadata.get("sha256"):
        raise CheckpointError(f"{path}: content does not match its stored SHA-256 (the file was altered or damaged)")
    if metadata["format"] != "mnad-1" and "meta_sha256" not in metadata:
        raise CheckpointError(f"{path}: the SHA-256 of the stored config is missing (the file was altered or damaged)")
    if "meta_sha256" in metadata and metadata_digest(metadata) != metadata["meta_sha256"]:
        raise CheckpointError(f"{path}: stored config does not match its stored SHA-256 (the file was altered or damaged)")
    try:
        stored, extra = json.loads(metadata["config"]), json.loads(metadata.get("extra", "{}"))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: stored config or metadata is missing or not valid JSON ({exc})") from exc
    if not isinstance(stored, dict) or not isinstance(extra, dict):
        raise CheckpointError(f"{path}: stored config and metadata must be JSON objects")
    config = Config.from_dict(stored, source=f"{path} (stored config)")
    bad = non_finite(tensors)
    if bad is not None:
        raise CheckpointError(f"{path}: tensor {bad!r} holds NaN or Inf values; the model is unusable")
    return tensors, config, extra


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
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of the wrong shape
        raise CheckpointError(f"{path}: weights do not fit the stored config ({str(exc).splitlines()[-1].strip()})") from exc
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the stored config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.to(map_location), config
