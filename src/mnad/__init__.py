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

from mnad.calibrate import calibrate
from mnad.checkpoint import load_model, save_model
from mnad.config import Config, load_config, recipe_names
from mnad.errors import CheckpointError, ConfigError, DataError, MNADError
from mnad.evaluate import score_videos
from mnad.model import MNAD
from mnad.scoring import Calibration
from mnad.stream import FrameResult, StreamScorer

__version__ = "0.1.0"

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
