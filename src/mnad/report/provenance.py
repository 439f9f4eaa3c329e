"""How an evaluation was run: command, config, checkpoint hashes, library versions (``provenance.json``)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mnad.outputs import METRICS_FILE, SCORES_FILE, TRAIN_LOG, read_json_if_present
from mnad.report.inputs import provenance_problem
from mnad.safetensors_header import read_header

PROVENANCE_FILE = "provenance.json"

log = logging.getLogger(__name__)


def is_run_dir(folder: Path) -> bool:
    """Whether ``folder`` is a training run's folder (it holds train_log.jsonl or config.json)."""
    return (folder / TRAIN_LOG).is_file() or (folder / "config.json").is_file()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_metadata(path: str | Path) -> dict:
    """The JSON metadata of a safetensors checkpoint (its stored tensor SHA-256 and extras), without loading tensors."""
    try:
        metadata = read_header(path).get("__metadata__")
    except (OSError, ValueError):  # not safetensors (an exported .onnx): no header to read
        return {}
    return metadata if isinstance(metadata, dict) else {}  # safetensors metadata is an object (was: a list's traceback)


def _metadata_of(data: bytes) -> dict:
    """``checkpoint_metadata`` of a safetensors file's bytes ``data``: {} where they hold none."""
    try:
        length = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8:8 + length]).get("__metadata__") if 2 <= length <= len(data) - 8 else None
    except (ValueError, RecursionError, AttributeError):
        return {}
    return metadata if isinstance(metadata, dict) else {}


def _evaluated_weights(eval_dir: Path) -> str | None:
    """The SHA-256 of the weights the evaluation in ``eval_dir`` scored (its metrics.json's model.weights_sha256, taken
    of the loaded model before scoring); None where it records none (an ONNX export, an older evaluation)."""
    from mnad.errors import DataError
    from mnad.outputs.evaluation import read_metrics

    try:
        metrics, _ = read_metrics(eval_dir / METRICS_FILE)
    except DataError:
        return None
    model = metrics.get("model")
    weights = model.get("weights_sha256") if isinstance(model, dict) else None
    return weights if isinstance(weights, str) else None


def evaluated_weights_in(data: bytes, weights: str | None) -> bool:
    """Whether the checkpoint bytes ``data`` hold the weights whose SHA-256 (``checkpoint.weights_digest`` of the model
    as ``load_model`` reads it) is ``weights``; True where ``weights`` is None (not known: not compared) or ``data`` is
    no safetensors file (an ONNX export, whose evaluation records no weights)."""
    if weights is None:
        return True
    from safetensors import SafetensorError
    from safetensors.torch import load

    from mnad.checkpoint import loaded_digest, model_state

    try:
        tensors = load(data)
    except (SafetensorError, ValueError):
        return False
    return loaded_digest(model_state(tensors)) == weights


def _installed_version(distribution: str) -> str:
    """The version an installed distribution declares, read from its metadata: importing torch or scikit-learn only to
    read ``__version__`` costs seconds; "unknown" when there is no metadata (a source tree run in place)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


def library_versions() -> dict[str, str]:
    """The versions a provenance records. torch, scikit-learn and matplotlib declare the same string as their
    ``__version__``; OpenCV's wheels do not (opencv-python-headless 5.0.0.93 is cv2 5.0.0), so cv2 says its own."""
    import cv2

    return {
        "mnad": _installed_version("mnad"),
        "python": platform.python_version(),
        "torch": _installed_version("torch"),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "scikit-learn": _installed_version("scikit-learn"),
        "matplotlib": _installed_version("matplotlib"),
        "platform": platform.platform(),
    }


def relative_path(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` (absolute when they are on different drives)."""
    try:
        return os.path.relpath(path.resolve(), start.resolve())
    except ValueError:  # another drive
        return str(path.resolve())


def collect_provenance(
    config: Any,
    report_dir: str | Path,
    eval_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    data_root: str | Path | None = None,
    labels: str | Path | None = None,
    command: str | None = None,
) -> dict:
    """What a report needs to say how its numbers were made. Paths to other folders are stored relative to the
    report folder, so the report, the evaluation and the run can move together."""
    report_dir, eval_dir = Path(report_dir), Path(eval_dir)
    config_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    record: dict[str, Any] = {
        "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": command or "python " + shlex.join(sys.argv),
        "working_dir": os.getcwd(),
        "seed": config_dict.get("train", {}).get("seed"),
        "data_root": str(Path(data_root).resolve()) if data_root else None,
        "labels": str(Path(labels).resolve()) if labels else None,
        "eval_dir": relative_path(eval_dir, report_dir),
        # what this record is of: a rebuild over scores.csv evaluated again since (without --report) does not show it
        "scores_sha256": file_sha256(eval_dir / SCORES_FILE) if (eval_dir / SCORES_FILE).is_file() else None,
        "run_dir": None,
        "checkpoint": None,
        "versions": library_versions(),
        "config": config_dict,
    }
    if checkpoint is not None:
        from mnad.checkpoint import resolve_checkpoint

        path = resolve_checkpoint(checkpoint)
        data = path.read_bytes()  # one reading: the digests recorded and the weights compared are of the same bytes
        if not evaluated_weights_in(data, _evaluated_weights(eval_dir)):
            log.warning("%s: its weights are not those the evaluation in %s scored (the file changed since, e.g. written "
                        "by a training run still going, or another model was named): the report does not name it as the "
                        "evaluated checkpoint", path, eval_dir)
            return record
        meta = _metadata_of(data)
        try:
            extra = json.loads(meta.get("extra", "{}"))
        except (TypeError, ValueError, RecursionError):  # not text, not JSON, or nested too deeply (was: a traceback)
            extra = {}
        if not isinstance(extra, dict):  # not as mnad writes it (was: an AttributeError traceback)
            extra = {}
        record["checkpoint"] = {
            "path": str(path.resolve()),
            "file_sha256": hashlib.sha256(data).hexdigest(),
            "tensor_sha256": meta.get("sha256"),
            "epochs": extra.get("epochs", extra.get("epoch")),
        }
        if "step" in extra:  # a training checkpoint written part way through the next epoch (train.checkpoint_minutes)
            record["checkpoint"]["steps"] = extra["step"]
        run_dir = path.resolve().parent
        if is_run_dir(run_dir):
            record["run_dir"] = relative_path(run_dir, report_dir)
    return record


def epochs_trained(checkpoint: dict) -> Any:
    """What the report says of a provenance record's ``checkpoint``'s training: its epochs, or, for a training
    checkpoint written part way through an epoch (an unfinished run's ``last.safetensors``, ``steps``: the batches
    done of the next), "N epochs and S batches of the next": its weights are past the epochs done."""
    epochs, steps = checkpoint.get("epochs"), checkpoint.get("steps")
    whole = all(isinstance(v, int) and not isinstance(v, bool) for v in (epochs, steps))
    if not whole or steps < 1:
        return epochs
    return f"{epochs} epoch{'s' * (epochs != 1)} and {steps} batch{'es' * (steps != 1)} of the next"


def provenance_bytes(record: dict) -> bytes:
    """provenance.json's contents for ``record``."""
    return json.dumps(record, indent=2).encode()


def write_provenance(report_dir: Path, record: dict) -> None:
    from mnad.atomic import atomic_write

    atomic_write(report_dir / PROVENANCE_FILE, provenance_bytes(record))


def read_provenance(report_dir: Path) -> dict:
    """The report folder's provenance.json, checked to be what the page reads; {} when there is none."""
    path = report_dir / PROVENANCE_FILE
    return read_json_if_present(path, "provenance", provenance_problem, {})
