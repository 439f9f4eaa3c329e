"""mnad: memory-guided normality for video anomaly detection (Park, Noh, Ham, CVPR 2020).

The Python API behind the ``mnad`` command::

    import mnad
    from mnad.evaluate import evaluate
    from mnad.train import train

    config = mnad.load_config("ped2_pred_fast")
    model_path = train(config, data_root, "runs/ped2")
    model, config = mnad.load_model(model_path)          # or a shipped name, or a run folder
    metrics = evaluate(model, config, data_root)         # micro / macro / per-video frame-level AUC

The modules ``mnad.train``, ``mnad.evaluate``, ``mnad.calibrate``, ``mnad.detect`` and ``mnad.demo`` keep their names: their
functions are imported from them (``from mnad.calibrate import calibrate``), never bound on the package.
"""

import importlib
from typing import Any

__version__ = "0.1.0"

# Imported on first use (PEP 562), so that `import mnad.cli` does not load torch: the command sets OpenMP's wait
# policy before torch loads its OpenMP runtime, which reads it once (mnad.cli).
_API = {
    "MNAD": "mnad.model", "Calibration": "mnad.calibration", "FrameResult": "mnad.stream", "StreamScorer": "mnad.stream",
    "CheckpointError": "mnad.errors", "Config": "mnad.config", "ConfigError": "mnad.errors", "DataError": "mnad.errors",
    "MNADError": "mnad.errors", "load_config": "mnad.config", "load_model": "mnad.checkpoint",
    "recipe_names": "mnad.config", "save_model": "mnad.checkpoint", "score_videos": "mnad.evaluate",
}


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
    else:  # a submodule, e.g. mnad.evaluate after a bare `import mnad`
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


__all__ = [
    "MNAD",
    "Calibration",
    "FrameResult",
    "StreamScorer",
    "CheckpointError",
    "Config",
    "ConfigError",
    "DataError",
    "MNADError",
    "load_config",
    "load_model",
    "recipe_names",
    "save_model",
    "score_videos",
]
