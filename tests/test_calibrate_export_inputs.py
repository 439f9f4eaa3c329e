"""API audit of calibrate's fit and with_calibration, and export_onnx/load_onnx's arguments: a calibration records what
it was fitted with, and each wrong argument is one ConfigError/DataError (was: a traceback, or accepted). Each test
fails without its fix."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

from mnad.calibrate import fit_calibration, held_out_false_alarms, uncalibrated, with_calibration
from mnad.config import Config
from mnad.errors import ConfigError, DataError
from mnad.export import OnnxModel, export_onnx, load_onnx
from mnad.model import MNAD

RNG = np.random.default_rng(0)
PSNR = [RNG.normal(30, 1, 200) for _ in range(3)]
DISTANCE = [RNG.normal(0.01, 0.001, 200) for _ in range(3)]


def fit(**options: object):
    return fit_calibration(PSNR, DISTANCE, **{"alpha": 0.6, "false_alarm_rate": 0.01, "smoothing": 5,
                                              "scored_with": tiny_config(), **options})


def test_a_fit_records_its_alpha_so_the_calibrated_config_scores_with_it() -> None:
    """Thresholds fitted with alpha 0.1 on a model scoring with 0.6 (was: not recorded, so the 0.6 scores were compared
    with 0.1 thresholds): the calibrated config scores with 0.1; a model without memory (PSNR only) is refused."""
    config, scored = tiny_config(), tiny_config()
    config.eval.alpha, scored.eval.alpha = 0.6, 0.1
    fitted = fit(alpha=0.1, scored_with=scored)
    assert fitted.alpha == 0.1
    assert with_calibration(config, fitted).eval.alpha == 0.1
    with pytest.raises(ConfigError, match="PSNR weight 0.1"):
        with_calibration(tiny_config(memory=False), fitted)


@pytest.mark.parametrize("alpha", [2, -1, float("nan"), "0.6", True])
def test_a_fit_refuses_an_alpha_outside_0_to_1(alpha: object) -> None:
    with pytest.raises(ConfigError, match="alpha"):
        fit(alpha=alpha)


def test_a_fit_records_the_scoring_it_was_fitted_with() -> None:
    """Given the config the footage was scored with, the fit records its terms, memory update, PSNR peak and E_t (was:
    calibrate added them afterwards; a direct fit recorded none): a model scoring otherwise is refused; a scored_with
    whose weight is not ``alpha`` is refused."""
    config = tiny_config()
    config.eval.test_update, config.eval.psnr_peak = False, "max"
    fitted = fit(alpha=config.eval.alpha, scored_with=config)
    assert (fitted.test_update, fitted.psnr_peak, fitted.regular_score, fitted.psnr_region, fitted.alpha) == (
        False, "max", config.eval.regular_score, config.eval.psnr_region, config.eval.alpha)
    assert with_calibration(config, fitted).eval.calibration["test_update"] is False
    with pytest.raises(ConfigError, match="test-time memory update"):
        with_calibration(tiny_config(), dataclasses.replace(fitted, psnr_peak="one"))
    with pytest.raises(ConfigError, match="peak"):
        with_calibration(tiny_config(), dataclasses.replace(fitted, test_update=True))
    with pytest.raises(ConfigError, match="PSNR weight"):
        fit(alpha=0.1, scored_with=config)


@pytest.mark.parametrize("rate", [0, float("nan"), -0.1, 1, 1.5, "0.01"])
def test_a_false_alarm_rate_is_checked_before_frames_are_counted(rate: object) -> None:
    """Was: ZeroDivisionError (0), ValueError (NaN), or a fit for a negative rate."""
    with pytest.raises(ConfigError, match="false-alarm-rate"):
        fit(false_alarm_rate=rate)
    with pytest.raises(ConfigError, match="false-alarm-rate"):
        held_out_false_alarms(PSNR, DISTANCE, scored_with=tiny_config(), false_alarm_rate=rate, smoothing=5)


def test_series_that_are_missing_or_do_not_pair_are_one_error() -> None:
    """Was: numpy's ValueError (no series), a raw ValueError/IndexError (PSNR and D of different lengths)."""
    with pytest.raises(DataError, match="no calibration footage"):
        fit_calibration([], [], alpha=0.6, false_alarm_rate=0.01, smoothing=5, scored_with=tiny_config())
    with pytest.raises(ConfigError, match="PSNR and D series differ"):
        fit_calibration(PSNR, DISTANCE[:2], alpha=0.6, false_alarm_rate=0.01, smoothing=5, scored_with=tiny_config())
    with pytest.raises(ConfigError, match="PSNR and D series differ"):
        fit_calibration(PSNR, [d[:100] for d in DISTANCE], alpha=0.6, false_alarm_rate=0.01, smoothing=5, scored_with=tiny_config())
    with pytest.raises(ConfigError, match="PSNR and D series differ"):
        held_out_false_alarms(PSNR, DISTANCE[:2], scored_with=tiny_config(), false_alarm_rate=0.01, smoothing=5)
    with pytest.raises(ConfigError, match="lists of one series per video"):
        fit_calibration(PSNR[0], DISTANCE[0], alpha=0.6, false_alarm_rate=0.01, smoothing=5, scored_with=tiny_config())


def test_with_calibration_and_uncalibrated_refuse_what_is_not_a_calibration_or_config() -> None:
    """Was: TypeError (a dict or None for the calibration), AttributeError (uncalibrated(None))."""
    config, fitted = tiny_config(), fit()
    for wrong in (fitted.to_dict(), None):
        with pytest.raises(ConfigError, match="must be a mnad.calibration.Calibration"):
            with_calibration(config, wrong)  # type: ignore[arg-type]
    for wrong in (None, config.to_dict()):
        with pytest.raises(ConfigError, match="must be a mnad Config"):
            uncalibrated(wrong)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="must be a mnad Config"):
        with_calibration(None, fitted)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tiny() -> tuple[MNAD, Config]:
    torch.manual_seed(0)
    config = tiny_config()
    return MNAD(config.model), config


def test_export_refuses_a_model_that_is_not_an_mnad(tiny, tmp_path: Path) -> None:
    """An ONNX export (was: TypeError, an InferenceSession cannot be pickled) or None (was: AttributeError) is one
    error; nothing is written."""
    model, config = tiny
    exported = OnnxModel(step=None, config=config, items=model.memory.items.detach())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="ONNX export already.*safetensors"):
        export_onnx(exported, config, tmp_path / "a.onnx")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="must be an MNAD.*NoneType"):
        export_onnx(None, config, tmp_path / "a.onnx")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_an_int8_that_is_not_a_bool(tiny, tmp_path: Path) -> None:
    """int8="yes" (was: taken as true; "no" would be too) is refused before any work."""
    model, config = tiny
    with pytest.raises(ConfigError, match="int8 must be True or False"):
        export_onnx(model, config, tmp_path / "a.onnx", int8="yes")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_load_onnx_refuses_what_is_not_a_path() -> None:
    """Was: TypeError from Path(None)."""
    with pytest.raises(ConfigError, match="must be a path"):
        load_onnx(None)  # type: ignore[arg-type]
