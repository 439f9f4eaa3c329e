"""Checkpoints: tensors in safetensors, everything else as JSON in its metadata. Nothing is pickled.

A model file holds the weights and the memory items (a buffer of the model) and, in its metadata, the config, a
format tag, a SHA-256 of the tensors and one of the config and other metadata, both verified on load (as is that
every float is finite). A training checkpoint adds the optimiser state and the epoch. Files are written to a
temporary name, flushed to disk and renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import weakref
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from mnad.atomic import atomic_write
from mnad.config import Config, check_same_model, model_differences
from mnad.errors import CheckpointError, ConfigError, printable
from mnad.model.mnad import MNAD
from mnad.precision import checked_device
from mnad.safetensors_header import read_header

FORMAT = "mnad-2"  # mnad-2 adds meta_sha256 (config and metadata); mnad-1 files (tensor hash only) are still read
KNOWN_FORMATS = ("mnad-1", FORMAT)
MODEL_FILE = "model.safetensors"
TRAIN_STATE_FILE = "last.safetensors"
CONFIG_FILE = "config.json"
EPOCH_GLOB = "epoch_*.safetensors"  # train.keep_epochs: the model after each epoch

log = logging.getLogger(__name__)
_said_partial: set[str] = set()  # run folders whose training checkpoint stood in for a final model, said once each


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


# weights_digest's digest of each model with what it was taken of, by model: kept off the model itself (a model must
# still pickle, and a copy must not carry it), dropped with the model
_DIGESTS: weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, str]] = weakref.WeakKeyDictionary()


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a model's weights and buffers (what a compiled package, a saved stream state or a calibration
    belongs to). Hashed once per state of the weights: a command asks for it several times (load_model's calibration
    check, the entry point's, the scoring step's, metrics.json's provenance), so the digest is kept for the model with
    what it was taken of (``_weights_state``: each tensor, its storage and its version counter) and taken again once
    any of them changed, as training (an optimiser step, a training forward's BatchNorm count), ``load_state_dict`` or
    a replaced parameter change them. Changes that bypass the version counter are not seen: in place through ``.data``
    or a NumPy view, a fused optimiser's step (``torch.optim.Adam(..., fused=True)``; the default and ``foreach`` steps
    are seen), and BatchNorm running statistics updated without ``num_batches_tracked``: change weights under
    ``torch.no_grad()`` instead, or use a plain optimiser, before asking for the digest again."""
    state = _weights_state(model)
    cached = _DIGESTS.get(model)
    if state is not None and cached is not None and _same_state(cached[0], state):
        return cached[1]
    digest = _hash_weights(model)
    if state is not None:
        _DIGESTS[model] = (state, digest)
    return digest


def _hash_weights(model: torch.nn.Module) -> str:
    return tensor_digest({k: v.detach().cpu() for k, v in model.state_dict().items()})


def _weights_state(model: torch.nn.Module) -> tuple | None:
    """What identifies the present state of ``model``'s tensors, cheaply: per tensor its name, a weak reference to
    it, its storage and its version counter (bumped by every in-place change); None where a tensor keeps no version
    counter (an inference-mode tensor): not cached."""
    try:
        return tuple((name, weakref.ref(t), t.data_ptr(), t._version, t.dtype, t.shape, t.device)
                     for name, t in model.state_dict(keep_vars=True).items())
    except RuntimeError:  # "Inference tensors do not track version counter"
        return None


def _same_state(kept: tuple, now: tuple) -> bool:
    return len(kept) == len(now) and all(
        a[0] == b[0] and a[1]() is b[1]() is not None and a[2:] == b[2:] for a, b in zip(kept, now, strict=True))


def loaded_digest(state: dict[str, torch.Tensor]) -> str:
    """``weights_digest`` of the model ``load_model`` builds from ``state`` (a model file's tensors): floating point
    read back as float32 (a model shipped in float16 is digested as the float32 it loads as)."""
    return tensor_digest({k: v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu() for k, v in state.items()})


def calibration_weights(model: object) -> str | None:
    """The SHA-256 of ``model``'s weights that a calibration must have been fitted on (``Calibration.check_weights``):
    ``weights_digest`` of a torch model; of an ONNX export (``export.OnnxModel``), that of the model it was exported from
    as its sidecar records it (None in one exported before it was recorded: not compared)."""
    if isinstance(model, torch.nn.Module):
        return weights_digest(model)
    return getattr(model, "weights_sha256", None)


def check_calibrated_weights(model: object, config: Config, where: str = "") -> None:
    """Refuse (one ``ConfigError``) ``config``'s calibration, if any, where it was fitted on other weights than
    ``model``'s (``Calibration.check_weights``): ``where`` (a path) prefixes the message."""
    calibration = config.calibration() if config.eval.calibration else None
    if calibration is None or calibration.weights_sha256 is None:
        return
    try:
        calibration.check_weights(calibration_weights(model))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}" if where else str(exc)) from exc


def metadata_digest(metadata: dict[str, str]) -> str:
    """SHA-256 of the metadata that is not tensors (format, config, extra): a changed config is caught too."""
    return hashlib.sha256("\n".join(f"{k}={metadata.get(k, '')}" for k in ("format", "config", "extra", "sha256")).encode()).hexdigest()


def non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding NaN or Inf, if any."""
    return next((k for k in sorted(tensors) if tensors[k].is_floating_point() and not torch.isfinite(tensors[k]).all()), None)


def is_onnx_export(path: str | Path) -> bool:
    """Whether ``path`` names an ONNX export (``mnad export`` writes only .onnx files): how every reader tells one
    from a PyTorch model or run folder."""
    return Path(path).suffix == ".onnx"


def check_model_path(path: str | Path) -> None:
    """A model or checkpoint is a .safetensors file: readers (detect.load_detector) tell it from an ONNX export by
    its name, and a calibrated model named .onnx could not be used."""
    if Path(path).suffix != ".safetensors":
        raise CheckpointError(f"{path}: a model is written as a .safetensors file")


def stored_config(path: str | Path, config: Config) -> str:
    """``config`` as a checkpoint stores it (JSON), refused with a ConfigError unless it reads back as ``read_checkpoint``
    will read it (the same ``Config.from_dict``, its calibration too): a file is never written that would not load."""
    if not isinstance(config, Config):
        raise ConfigError(f"{path}: config must be a mnad Config (mnad.load_config), got {type(config).__name__}")
    source = f"{path} (the config to save)"
    try:
        text = json.dumps(config.to_dict())
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: not storable as JSON ({exc})") from exc
    Config.from_dict(json.loads(text), source=source).calibration(f"{source}: eval.calibration")
    return text


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], config: Config, extra: dict[str, Any] | None = None) -> None:
    """Write tensors + config atomically; a write failure (disk full, ...) raises CheckpointError and keeps the old file."""
    check_model_path(path)
    config_text = stored_config(path, config)
    if extra is not None and not isinstance(extra, dict):
        raise ConfigError(f"{path}: extra must be a dict of JSON values, got {type(extra).__name__}")
    try:
        extra_text = json.dumps(extra or {})
    except (TypeError, ValueError) as exc:  # an object JSON cannot hold, a key that is not text, a cycle
        raise ConfigError(f"{path}: extra must hold only JSON values (text, numbers, lists, dicts): {exc}") from exc
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    bad = non_finite(tensors)
    if bad is not None:
        raise CheckpointError(f"{path}: refusing to save a checkpoint whose tensor {bad!r} holds NaN or Inf (training diverged?)")
    metadata = {"format": FORMAT, "config": config_text, "sha256": tensor_digest(tensors)}
    metadata["extra"] = extra_text
    metadata["meta_sha256"] = metadata_digest(metadata)
    atomic_write(Path(path), save(tensors, metadata=metadata), error=CheckpointError)


def read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The metadata and the tensors of the safetensors file ``path``, both from one opening of it (one mapping of its
    bytes), so that the digests checked are those of the tensors loaded: a file replaced between two openings (a run's
    ``last.safetensors`` rewritten by its training at each checkpoint, a model file re-saved) would pair one file's
    digests with the other's tensors (was: the header read, then the file opened again for its tensors: a spurious
    'altered or damaged'). Errors as safetensors raises them."""
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata() or {}, {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 (no iterator)


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], Config, dict[str, Any]]:
    """Tensors, config and extra metadata of a checkpoint file, verified: any damage gives a CheckpointError. The
    installed file of a shipped model is checked against its pinned digest too (``ShippedModel.meta_sha256``), in
    this same reading."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        metadata, tensors = read_safetensors(path)
    except (SafetensorError, OSError, ValueError) as exc:  # ValueError covers JSON and UTF-8 decoding errors
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or damaged: {exc})") from exc
    if not isinstance(metadata, dict) or metadata.get("format") not in KNOWN_FORMATS:
        found = metadata.get("format") if isinstance(metadata, dict) else None
        raise CheckpointError(f"{path}: not an mnad checkpoint (format {found!r}, expected {FORMAT!r})")
    if (name := shipped_name(path)) is not None:
        check_pinned(path, name, metadata)
    if bad := next((f"{k!r} ({str(v.dtype).removeprefix('torch.')})" for k, v in sorted(tensors.items())
                    if v.dtype not in STORED_DTYPES), None):
        # mnad writes floating point (SAVE_DTYPES) and int64 counts only: anything else was not written by it, and
        # would be cast silently on load (or fail in the checks below: no float8 isfinite)
        raise CheckpointError(f"{path}: tensor {bad} is of a type mnad never stores (floating point or int64 only): "
                              "not an mnad checkpoint, or damaged")
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


# what a model may be saved in (save_model's dtype): floating point that load_model reads back as float32
SAVE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# what a checkpoint's tensors may be (read_checkpoint): those, and int64 (BatchNorm's num_batches_tracked)
STORED_DTYPES = (*SAVE_DTYPES, torch.int64)


def save_model(path: str | Path, model: MNAD, config: Config, *, dtype: torch.dtype | None = None, extra: dict[str, Any] | None = None) -> None:
    """The model's weights and memory items; ``dtype`` (e.g. float16) shrinks a shipped model. Nothing is written
    unless ``load_model`` will read it back: ``config`` valid and of this model, ``dtype`` floating point."""
    if dtype is not None and dtype not in SAVE_DTYPES:  # an integer or bool dtype would store every weight as 0
        raise ConfigError(f"{path}: dtype must be None or a floating-point torch.dtype "
                          f"({', '.join(map(str, SAVE_DTYPES))}), got {dtype!r}")
    stored_config(path, config)
    if not isinstance(model, MNAD):  # a wrapped one (DDP, torch.compile) names its tensors otherwise: it would not load
        raise ConfigError(f"{path}: model must be an MNAD model (mnad.MNAD, as load_model returns), got {type(model).__name__}")
    try:  # an MNAD's tensors are what its ModelConfig makes them: the same settings, the same tensors
        check_same_model(model, config)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}; nothing was written") from exc
    state = model.state_dict()
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    calibration = config.calibration() if config.eval.calibration else None
    if calibration is not None and calibration.weights_sha256 is not None:
        # fitted on this model's weights (as given, or as they load back: a shipped float16 model resaved), else refused
        stored = loaded_digest(state)
        if calibration.weights_sha256 != stored:
            check_calibrated_weights(model, config, f"{path}")
            # float16 (bfloat16) storage rounds the weights: the calibration is recorded as of the weights as they load,
            # those it was checked against rounded (scripts/ship_model.py ships calibrated models so)
            data = config.to_dict()
            data["eval"]["calibration"]["weights_sha256"] = stored
            config = Config.from_dict(data, source=f"{path} (the config to save)")
    save_checkpoint(path, state, config, extra)


@dataclass(frozen=True)
class ShippedModel:
    """A model the package ships, loaded by name (``--checkpoint ped2-pred``): its file and what it is."""

    file: str  # in mnad/pretrained/
    # the file's metadata SHA-256, which covers its tensors' SHA-256 (both verified on load): pinned here, so that
    # another valid checkpoint put in its place is refused, not loaded as this model
    meta_sha256: str
    recipe: str  # the recipe it was trained with (mnad/configs)
    trained: str  # how, in words
    results: str  # the repository folder holding its evaluation (not installed with the package)


PRETRAINED: dict[str, ShippedModel] = {
    "ped2-pred": ShippedModel(
        file="ped2-pred.safetensors",
        meta_sha256="1f28ace506ecb497c9efdfe23cf0ebb72a8cb40f211851728fcc89e7c7d0f04b",
        recipe="ped2_pred_fast",
        trained="UCSD Ped2's 16 training videos, 128x128, 8 epochs, bf16 autocast and channels_last on 2 CPU cores, "
                "seed 0; stored in float16",
        results="results/ped2-pred-shipped",
    ),
}


def shipped_model_path(name: str) -> Path:
    """The installed file of the shipped model ``name``, checked to be the one this version of mnad pinned."""
    shipped = PRETRAINED.get(name)
    if shipped is None:
        raise ConfigError(f"{name!r} is not a shipped model (shipped: {', '.join(PRETRAINED)})")
    resource = resources.files("mnad") / "pretrained" / shipped.file
    if not resource.is_file():
        raise CheckpointError(f"shipped model {name!r} is not in this installation (no {resource})")
    path = Path(str(resource))
    try:
        metadata = read_header(path).get("__metadata__")
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or damaged: {exc})") from exc
    check_pinned(path, name, metadata)  # early, for the error; read_checkpoint checks it again on what it loads
    return path


def check_pinned(path: Path, name: str, metadata: object) -> None:
    """Refuse (``CheckpointError``) a shipped model's installed file ``path`` whose ``metadata`` (its safetensors
    metadata) is not that of the file this version of mnad pinned as ``name``."""
    pinned = PRETRAINED[name].meta_sha256
    found = metadata.get("meta_sha256") if isinstance(metadata, dict) else None
    if found != pinned:
        what = f"metadata SHA-256 {found[:16]}..." if isinstance(found, str) else "no metadata SHA-256"
        raise CheckpointError(f"{path}: not the file mnad shipped as {name!r} ({what}, pinned {pinned[:16]}...): reinstall mnad")


def shipped_name(path: Path) -> str | None:
    """The name of the shipped model whose installed file ``path`` is, if any (however it was named: by the model's
    name or by the file's path)."""
    for name, shipped in PRETRAINED.items():
        resource = Path(str(resources.files("mnad") / "pretrained" / shipped.file))
        with contextlib.suppress(OSError):
            if path.name == resource.name and os.path.samefile(path, resource):
                return name
    return None


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A shipped model name, a model file, or a run folder (its final model, else its last training checkpoint).

    Every reader of a model (load_model, detect.load_detector, calibrate, the report's and evaluation's provenance,
    train.training_record) resolves it here. A shipped name is the exact text (``ped2-pred``); ``./ped2-pred`` or any
    text with a separator is a path. A name that is also an existing path here is refused as ambiguous."""
    if not isinstance(name_or_path, str | os.PathLike):
        raise ConfigError(f"a model is named by a shipped name ({', '.join(PRETRAINED)}), a file or a run folder, "
                          f"got {name_or_path!r}")
    if str(name_or_path) in PRETRAINED:
        # a bare name (no separator): the shipped model, unless a file or folder of that name is here too; then which
        # one is meant is not guessed (was: the shipped model, silently, in place of the user's own)
        name = str(name_or_path)
        if os.path.lexists(name):
            kind = "folder" if os.path.isdir(name) else "file"
            raise ConfigError(f"{name!r} is both a shipped model's name and a {kind} in the current folder "
                              f"({Path(name).absolute()}): ambiguous; write ./{name} (or its full path) for the local "
                              f"{kind}, or rename or move it (or run from another folder) to use the shipped model")
        return shipped_model_path(name)
    if str(name_or_path) == "":  # Path('') is the current folder, which nobody names so
        raise CheckpointError("the model's name is empty: give a shipped model's name, a model file or a run folder")
    path = Path(name_or_path)
    if path.is_dir():
        if (path / MODEL_FILE).is_file():
            return path / MODEL_FILE
        if (path / TRAIN_STATE_FILE).is_file():
            # an unfinished run (still training, stopped or killed): its weights may be part way through an epoch
            if (key := str(path.absolute())) not in _said_partial:
                _said_partial.add(key)
                log.warning(f"{path}: the run has no final model ({MODEL_FILE}) yet: using its training checkpoint "
                            f"({TRAIN_STATE_FILE}), the weights where the run last stopped or checkpointed")
            return path / TRAIN_STATE_FILE
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


def load_model(name_or_path: str | os.PathLike[str], *, expect: Config | None = None,
               map_location: str | torch.device = "cpu", check_calibration: bool = True) -> tuple[MNAD, Config]:
    """Build the model a checkpoint describes and load its weights and memory.

    ``expect``: refuse a checkpoint whose model settings (task, memory, channels, image size, ...) differ.
    ``map_location``: the device the model is put on (cpu, cuda, cuda:N), refused where this machine has none.
    ``check_calibration``: refuse (``ConfigError``) a calibration fitted on other weights (``check_calibrated_weights``);
    False only to replace it (``mnad calibrate``).
    """
    if expect is not None and not isinstance(expect, Config):
        raise ConfigError(f"load_model: expect must be a mnad Config (mnad.load_config(...)) or None, got {expect!r}")
    # before reading: a device this machine lacks is one error, not torch's
    device = checked_device(map_location, f"load_model: map_location {printable(repr(map_location))[:80]} (the device "
                                          "to load the model on)")
    path = resolve_checkpoint(name_or_path)
    if is_onnx_export(path):
        raise CheckpointError(f"{path}: an ONNX export (mnad export), which only scores; this needs the .safetensors "
                              "model it was exported from")
    tensors, config, extra = read_checkpoint(path)
    if expect is not None and expect.model != config.model:
        raise CheckpointError(f"{path}: checkpoint is of another model: {', '.join(model_differences(config.model, expect.model, 'expected'))}")
    model = MNAD(config.model)
    state = model_state(tensors)
    check_state_dtypes(path, model, state)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of the wrong shape
        raise CheckpointError(f"{path}: weights do not fit the stored config ({str(exc).splitlines()[-1].strip()})") from exc
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the stored config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if check_calibration:
        check_calibrated_weights(model, config, f"{path}")
    model.trained_footage = recorded_footage(extra)  # what calibrate and the stream protocol compare calibration footage with
    return model.to(device), config


def check_state_dtypes(path: Path, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Refuse (``CheckpointError`` naming ``path``) a stored tensor whose type is not of the kind the model's tensor of
    that name holds: floating point for a weight or memory item (any of SAVE_DTYPES, loaded as the model's), the same
    integer type for a count. ``load_state_dict`` would cast it silently (was: memory items stored as uint8 loaded as
    whole numbers, an integer weight as its rounding). Names the model lacks are ``load_state_dict``'s to report."""
    own = model.state_dict()
    for name, tensor in sorted(state.items()):
        mine = own.get(name)
        if mine is not None and (tensor.is_floating_point() != mine.is_floating_point()
                                 or not mine.is_floating_point() and tensor.dtype != mine.dtype):
            want = "floating point" if mine.is_floating_point() else str(mine.dtype).removeprefix("torch.")
            raise CheckpointError(f"{path}: tensor {name!r} is {str(tensor.dtype).removeprefix('torch.')}, where the model "
                                  f"holds {want}: not a checkpoint of this model, or damaged")


def recorded_footage(extra: dict[str, Any]) -> list[tuple[str, int, int]] | None:
    """The footage a model file's metadata ``extra`` records its training on, [(absolute path, first frame, end
    frame)] (``train.training_record``); None where it records none (a model trained before it was recorded, the
    shipped one, a training checkpoint) or not as such spans."""
    footage = extra.get("footage")
    if not isinstance(footage, list) or not footage:
        return None

    def whole(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    # exactly as training_record writes them (was: int() of each, so Infinity in the JSON raised OverflowError, and a
    # span ending before it starts, or a number for a path, was taken)
    if not all(isinstance(span, list) and len(span) == 3 and isinstance(span[0], str) and whole(span[1])
               and whole(span[2]) and span[1] <= span[2] for span in footage):
        return None
    return [(p, a, b) for p, a, b in footage]
