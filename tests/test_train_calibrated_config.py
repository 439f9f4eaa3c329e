"""Training with a calibrated model's config (the Python API: load_model of a calibrated model, then train) makes a
new model without that calibration: its threshold and ranges were fitted to the scores of other weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from mnad.calibrate import calibrate, with_calibration
from mnad.checkpoint import load_model
from mnad.model import MNAD
from mnad.train import train, training_videos


def test_a_calibrated_config_trains_a_model_without_its_calibration(synthetic_root: Path, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    config = tiny_config().override(["train.epochs=1", "train.threads=1", "train.bf16=false", "eval.smoothing=3"])
    torch.manual_seed(0)
    model = MNAD(config.model).eval()
    cal = calibrate(model, config, training_videos(config, synthetic_root)[:2], false_alarm_rate=0.05, scoring="config",
                    progress=False)
    calibrated = with_calibration(config, cal)
    assert calibrated.eval.normalization == "calibrated" and calibrated.eval.calibration
    with caplog.at_level("WARNING", logger="mnad.train"):
        path = train(calibrated.override(["train.seed=5"]), synthetic_root, tmp_path / "run", progress=False)
    new = load_model(path)[1]
    assert new.eval == config.eval  # the model's own scoring settings, as before the calibration
    assert new.train.seed == 5
    warned = [r.getMessage() for r in caplog.records if "carries a calibration" in r.getMessage()]
    assert len(warned) == 1 and "dropped" in warned[0] and "mnad calibrate" in warned[0]
