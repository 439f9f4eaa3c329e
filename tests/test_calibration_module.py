"""The calibration's one owner and its rules in one place each: ``Config.calibration`` (the model's calibration, parsed
once), ``calibration.scoring_calibration`` (which normalisation scores with which calibration) and
``scoring.normalised_terms`` (fixed ranges or a min-max, for a whole video and one frame alike)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mnad.calibration import Calibration, scoring_calibration
from mnad.config import Config
from mnad.errors import ConfigError
from mnad.scoring import CausalScore, RunningMinMax, anomaly_score, causal_minmax, minmax, normalised_terms

CAL = Calibration(psnr_low=10.0, psnr_high=30.0, distance_low=0.0, distance_high=2.0, threshold=0.5,
                  false_alarm_rate=0.05, smoothing=3, frames=100, alpha=0.6)


def calibrated() -> Config:
    data = Config().to_dict()
    data["eval"].update(normalization="calibrated", smoothing=3, calibration=CAL.to_dict())
    return Config.from_dict(data)


# -- Config.calibration: the one reader of eval.calibration ------------------------------------------------------------

def test_the_configs_calibration_is_read_as_it_is_stored_now() -> None:
    assert Config().calibration() is None
    config = calibrated()
    assert config.calibration() == CAL
    config.eval.calibration = {**CAL.to_dict(), "threshold": 0.7}  # changed by hand: read as it is
    assert config.calibration().threshold == 0.7
    config.eval.calibration["frames"] = 1
    assert config.calibration().frames == 1
    config.eval.calibration["frames"] = True  # equal to 1 as a value, not as a count: refused
    with pytest.raises(ConfigError, match="^eval.calibration: every calibration value must be a finite number: frames"):
        config.calibration()


def test_the_stored_config_is_written_as_before() -> None:
    config = calibrated()
    before = json.dumps(config.to_dict())
    config.calibration()
    assert json.dumps(config.to_dict()) == before and "_calibration" not in before
    assert config.to_dict()["eval"]["calibration"] == CAL.to_dict()


def test_a_calibration_that_would_not_load_is_refused_where_it_is_read_not_with_its_config() -> None:
    """A model whose stored calibration breaks a rule (a D range edited to empty at alpha 0.6) loads, to be scored
    without its calibration; reading the calibration refuses it, once."""
    data = Config().to_dict()
    data["eval"]["calibration"] = {**CAL.to_dict(), "distance_high": 0.0}
    config = Config.from_dict(data, source="model.json")  # not read: loads
    with pytest.raises(ConfigError, match=r"^model\.json: eval\.calibration: the calibration's D range is empty"):
        config.calibration("model.json: eval.calibration")
    assert scoring_calibration(config, "video", raw_terms=True) is None  # the raw terms: the calibration is not read
    with pytest.raises(ConfigError, match="D range is empty"):
        scoring_calibration(config, "calibrated")
    data["eval"].update(normalization="calibrated", calibration={})
    with pytest.raises(ConfigError, match="'calibrated' needs a calibration"):
        Config.from_dict(data)


def test_a_legacy_calibration_with_an_empty_d_range_is_refused_where_the_scoring_weighs_d() -> None:
    """A calibration written before alpha was recorded loads with an empty D range (its model's alpha is unknown
    there); scoring it with an S_t that mixes D in (alpha 0.6) is refused with the same message (was: float noise in D
    divided by ~1e-12, S_t of hundreds for a 1e-9 change), while PSNR only (alpha 1) scores."""
    legacy = {**CAL.to_dict(), "distance_low": 0.5, "distance_high": 0.5}
    del legacy["alpha"]
    data = Config().to_dict()
    data["eval"].update(normalization="calibrated", smoothing=3, calibration=legacy)
    config = Config.from_dict(data, source="model.json")
    assert config.calibration().alpha is None  # it loads
    with pytest.raises(ConfigError, match=r"D range is empty .*alpha 0\.6 < 1\), so float noise in D would swamp"):
        scoring_calibration(config)
    data["eval"]["alpha"] = 1.0
    assert scoring_calibration(Config.from_dict(data)).distance_high == 0.5


# -- scoring_calibration: which normalisation scores with which calibration --------------------------------------------

def test_an_uncalibrated_model_scores_without_a_calibration() -> None:
    config = Config()
    for normalization in ("video", "causal"):
        assert scoring_calibration(config, normalization) is None
        assert scoring_calibration(config, normalization, raw_terms=True) is None
    with pytest.raises(ConfigError, match="needs a calibration"):
        scoring_calibration(config, "calibrated")
    assert scoring_calibration(config, "calibrated", CAL, smoothing=3) is CAL  # one given by the caller
    with pytest.raises(ConfigError, match="unknown normalisation 'running'"):
        scoring_calibration(config, "running")


def test_a_calibrated_model_scores_with_its_own_calibration_only() -> None:
    config = calibrated()
    assert scoring_calibration(config) == config.calibration() == CAL
    with pytest.raises(ConfigError, match="not on --normalization causal.*drop --normalization"):
        scoring_calibration(config, "causal")  # a command's option
    with pytest.raises(ConfigError, match="not on --normalization video"):
        scoring_calibration(config, "video")
    with pytest.raises(ConfigError, match=r"normalization 'causal' \(a running min-max\); drop normalization"):
        scoring_calibration(config, "causal", raw_terms=True)  # the API's argument
    assert scoring_calibration(config, "video", raw_terms=True) is None  # the raw terms, normalised by the caller
    with pytest.raises(ConfigError, match="^a calibration was given, but normalization is 'causal'"):
        scoring_calibration(config, "causal", CAL, raw_terms=True)


def test_a_calibration_scores_only_at_the_window_it_was_fitted_on() -> None:
    config = calibrated()
    with pytest.raises(ConfigError, match="fitted on a 3-frame mean of the score, not 5"):
        scoring_calibration(config.override(["eval.smoothing=5"]))  # the model's own: its config's window
    with pytest.raises(ConfigError, match="not 4"):
        scoring_calibration(Config(), "calibrated", CAL, smoothing=4)  # a given one: the caller's window
    assert scoring_calibration(Config(), "calibrated", CAL) is CAL  # no window asked: any


# -- normalised_terms: the one choice between fixed ranges and a min-max -----------------------------------------------

def test_the_terms_are_scaled_by_the_calibration_where_there_is_one() -> None:
    psnr, distance = np.array([10.0, 20.0, 40.0]), np.array([0.0, 1.0, 3.0])
    g_p, g_d = normalised_terms(psnr, distance, 0.6, CAL)
    np.testing.assert_allclose(g_p, [0.0, 0.5, 1.5])
    np.testing.assert_allclose(g_d, [0.0, 0.5, 1.5])
    assert normalised_terms(20.0, 1.0, 1.0, CAL) == (0.5, 0.5)  # one frame; D scaled whatever alpha
    assert normalised_terms(psnr, distance, 0.6, CAL, minmax, minmax)[0].tolist() == g_p.tolist()  # g unused


def test_without_a_calibration_d_is_normalised_only_where_it_is_weighed() -> None:
    psnr, distance = np.array([10.0, 20.0, 40.0]), np.array([0.0, 1.0, 3.0])
    g_p, g_d = normalised_terms(psnr, distance, 0.6, None, minmax, causal_minmax)
    np.testing.assert_allclose(g_p, minmax(psnr))
    np.testing.assert_allclose(g_d, causal_minmax(distance))
    g_p, g_d = normalised_terms(psnr, distance, 1.0, None, minmax, minmax)
    assert isinstance(g_d, np.ndarray) and g_d.tolist() == [0.0, 0.0, 0.0]
    running = RunningMinMax()
    assert normalised_terms(5.0, math.nan, 1.0, None, running, running) == (0.0, 0.0)  # D not read at all
    with pytest.raises(ConfigError, match="normalisers"):
        normalised_terms(psnr, distance, 0.6, None)


def test_a_video_and_its_frames_one_at_a_time_score_alike() -> None:
    """anomaly_score (a whole video) and CausalScore (frame by frame) go through the one choice."""
    rng = np.random.default_rng(0)
    psnr, distance = rng.uniform(10, 30, 20), rng.uniform(0, 2, 20)
    for alpha in (0.6, 1.0):
        for calibration, normalization in ((CAL, "calibrated"), (None, "causal")):
            whole = anomaly_score(psnr, distance, alpha=alpha, normalization=normalization, calibration=calibration)
            scorer = CausalScore(alpha, 1, calibration)
            frames = [scorer(float(p), float(d))[0] for p, d in zip(psnr, distance, strict=True)]
            np.testing.assert_allclose(frames, whole, rtol=0, atol=1e-12)


def test_a_calibration_given_to_the_api_is_an_object_or_its_dict() -> None:
    assert Calibration.given(None) is None and Calibration.given(CAL) is CAL
    assert Calibration.given(CAL.to_dict()) == CAL
    with pytest.raises(ConfigError, match="^calibration: the calibration lacks"):
        Calibration.given({"threshold": 0.5})
    with pytest.raises(ConfigError, match="must be a Calibration or its dict.*got a list"):
        Calibration.given([CAL])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="^calibration: the calibration lacks"):  # anomaly_score reads it alike
        anomaly_score(np.ones(3), np.ones(3), alpha=0.6, normalization="calibrated", calibration={"threshold": 0.5})
