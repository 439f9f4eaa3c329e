"""mnad: memory-guided normality for video anomaly detection (Park, Noh, Ham, CVPR 2020).

The Python API behind the ``mnad`` command::

    import mnad
    from mnad.evaluate import evaluate
    from mnad.train import train

    config = mnad.load_config("ped2_pred_fast")
    model_path = train(config, data_root, "runs/ped2")
    model, config = mnad.load_model(model_path)          # or a shipped name, or a run folder
    metrics = evaluate(model, config, data_root)         # micro / macro / per-video frame-level AUC

The modules ``mnad.train``, ``mnad.evaluate`` and ``mnad.detect`` keep their names (no function shadows them).
"""

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

# Imported on first use (PEP 562), so that `import mnad.cli` does not load torch: the command sets OpenMP's wait
# policy before torch loads its OpenMP runtime, which reads it once (mnad.cli).
_API = {
    "MNAD": "mnad.model", "Calibration": "mnad.scoring", "FrameResult": "mnad.stream", "StreamScorer": "mnad.stream",
    "CheckpointError": "mnad.errors", "Config": "mnad.config", "ConfigError": "mnad.errors", "DataError": "mnad.errors",
    "MNADError": "mnad.errors", "calibrate": "mnad.calibrate", "load_config": "mnad.config", "load_model": "mnad.checkpoint",
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


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        # importing the submodule mnad.calibrate binds it on the package: mnad.calibrate stays the function, as it was
        if not (name == "calibrate" and isinstance(value, types.ModuleType)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

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
    "calibrate",
    "load_config",
    "load_model",
    "recipe_names",
    "save_model",
    "score_videos",
]
