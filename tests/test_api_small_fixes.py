"""Small defects of the public API, each fixed at its cause: what a calibration records of its scoring, messages that
name what the caller passed, events' and scoring's argument checks, and evaluate checking its config once. Each test
fails without its fix."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

import mnad.evaluate
from mnad.calibrate import choose_scoring, fit_calibration, held_out_false_alarms, with_calibration
from mnad.checkpoint import load_model
from mnad.config import Config
from mnad.data.streams import SourceOptions, check_fps
from mnad.errors import ConfigError, DataError
from mnad.evaluate import evaluate
from mnad.events import Event, anomalies, event_measures
from mnad.model import MNAD
from mnad.scoring import frames_needed

RNG = np.random.default_rng(0)
PSNR = [RNG.normal(30, 1, 200) for _ in range(3)]
DISTANCE = [np.abs(RNG.normal(0.01, 0.001, 200)) for _ in range(3)]


def patch_config() -> Config:
    """A model scoring PSNR and D over the worst patch, without test-time update: none of the defaults."""
    config = tiny_config()
    config.eval.psnr_region, config.eval.distance_region, config.eval.test_update = "patch", "patch", False
    return config


# ---------------------------------------------------------------------------------------------- 1. scored_with


def test_a_fit_needs_the_config_its_series_were_scored_with() -> None:
    """Was: without scored_with the calibration recorded the defaults (frame D, the memory update on), so a fit on patch
    D was scored as frame D by with_calibration without a word."""
    with pytest.raises(TypeError, match="scored_with"):
        fit_calibration(PSNR, DISTANCE, alpha=0.6, false_alarm_rate=0.01, smoothing=5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="scored_with"):
        held_out_false_alarms(PSNR, DISTANCE, false_alarm_rate=0.01, smoothing=5)  # type: ignore[call-arg]
    for wrong in (None, patch_config().to_dict()):
        with pytest.raises(ConfigError, match="scored_with must be the mnad Config"):
            fit_calibration(PSNR, DISTANCE, alpha=0.6, false_alarm_rate=0.01, smoothing=5, scored_with=wrong)  # type: ignore[arg-type]
    config = patch_config()
    fitted = fit_calibration(PSNR, DISTANCE, alpha=0.6, false_alarm_rate=0.01, smoothing=5, scored_with=config)
    assert (fitted.psnr_region, fitted.distance_region, fitted.test_update) == ("patch", "patch", False)
    assert with_calibration(config, fitted).eval.distance_region == "patch"
    with pytest.raises(ConfigError, match="test-time memory update"):  # a model scoring otherwise is refused, not scored
        with_calibration(tiny_config(), fitted)


def test_the_choice_calibrates_each_candidate_as_the_config_scored_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each candidate's fit records the footage's own scoring (memory update off here) with its terms and weight (was:
    fitted without scored_with, recording the defaults)."""
    recorded = []
    real = fit_calibration

    def spy(*args, **kwargs):
        fitted = real(*args, **kwargs)
        recorded.append((fitted.psnr_region, fitted.distance_region, fitted.alpha, fitted.test_update))
        return fitted

    monkeypatch.setattr(mnad.calibrate, "fit_calibration", spy)
    labels = [np.arange(36) > 16 for _ in range(3)]
    normal = {"psnr": PSNR, "patch_psnr": PSNR, "distance": DISTANCE, "patch_distance": DISTANCE}
    pseudo = {key: [v[:36] for v in values] for key, values in normal.items()}
    choose_scoring(normal, pseudo, labels, scored_with=patch_config(), windows=(1,))
    assert set(recorded) == {(p, d, a, False) for p, d, a in [("frame", "frame", 1.0), ("patch", "frame", 1.0),
                                                             ("frame", "frame", 0.6), ("patch", "frame", 0.6),
                                                             ("frame", "patch", 0.6), ("patch", "patch", 0.6)]}


def test_the_choice_refuses_labels_that_are_not_the_pseudo_videos_frame_for_frame() -> None:
    """Was: a ValueError from zip (fewer label series than videos), or numpy's IndexError (a series too short)."""
    normal = {"psnr": PSNR, "patch_psnr": PSNR, "distance": DISTANCE, "patch_distance": DISTANCE}
    pseudo = {key: [v[:36] for v in values] for key, values in normal.items()}
    for labels in ([np.arange(36) > 16] * 2, [np.arange(30) > 16] * 3):
        with pytest.raises(ConfigError, match="the labels must be one per pseudo-anomalous video"):
            choose_scoring(normal, pseudo, labels, scored_with=tiny_config(), windows=(1,))


# ---------------------------------------------------------------------------- 2. messages name what was passed


def test_check_fps_names_what_the_caller_passed() -> None:
    """Was: '--fps must be > 0' for an API argument or field too (and a TypeError for a string)."""
    with pytest.raises(DataError, match=r"^fps must be > 0"):
        check_fps(0)
    with pytest.raises(DataError, match=r"^the rate \(x\) must be > 0"):
        check_fps(math.nan, "the rate (x)")
    with pytest.raises(DataError, match=r"^fps must be > 0.*'25'"):
        check_fps("25")  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"^fps \(SourceOptions.fps, --fps\) must be > 0"):
        SourceOptions(fps=-1.0)
    with pytest.raises(DataError, match=r"^reconnects \(SourceOptions.reconnects, --reconnects\)"):
        SourceOptions(reconnects=-1)
    with pytest.raises(DataError, match=r"^fps must be > 0"):
        event_measures([], [("a", np.arange(3), np.zeros(3))], fps=0)


def test_evaluate_names_its_fps_argument_and_the_cli_option(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = tiny_config()
    fitted = fit_calibration(PSNR, DISTANCE, alpha=0.6, false_alarm_rate=0.01, smoothing=5, scored_with=config)
    with pytest.raises(DataError, match=r"^fps \(--fps\) must be > 0"):
        evaluate(MNAD(config.model), with_calibration(config, fitted), tmp_path, protocol="stream", fps=0.0, progress=False)


@pytest.mark.parametrize("device", ["gpu", "tpu", 3.5, "cuda:99"])
def test_load_model_names_map_location_not_the_cli_option(device: object) -> None:
    """Was: '--device gpu: not a device', an option load_model does not have."""
    if device == "cuda:99" and torch.cuda.device_count() > 99:
        pytest.skip("a machine with 100 GPUs")
    with pytest.raises(ConfigError) as caught:
        load_model("no-such-model.safetensors", map_location=device)  # type: ignore[arg-type]
    assert str(caught.value).startswith(f"load_model: map_location {device!r} (the device to load the model on): ")
    assert "--device" not in str(caught.value)


# ------------------------------------------------------------------------------------------ 3. events' inputs


@pytest.mark.parametrize("frames, labels, said", [
    (np.arange(3), np.ones(2), "anomalies: 3 scored frames but 2 labels"),
    (np.arange(4).reshape(2, 2), np.ones(4), "frames must be a 1-D array"),
    (np.arange(3), np.array(["a", "b", "c"]), "labels must be numbers"),
    (np.arange(3), np.array([0.0, math.nan, 1.0]), "labels must be finite"),
    (np.array([1.0, 2.5, 3.0]), np.ones(3), "frames must be whole frame positions"),
    (5, np.ones(1), "frames must be a 1-D array"),
    ([[1, 2], [3]], np.ones(2), "anomalies: frames and labels must be 1-D arrays"),
])
def test_anomalies_refuses_bad_frames_or_labels_naming_them(frames: object, labels: object, said: str) -> None:
    """Was: a bare ValueError (lengths), numpy's ValueError/TypeError, or accepted: a NaN label abnormal, frame 2.5 as 2."""
    with pytest.raises(DataError, match=said):
        anomalies(frames, labels)  # type: ignore[arg-type]


def test_anomalies_takes_whole_float_frames_and_bool_labels() -> None:
    assert anomalies(np.array([4.0, 5.0, 6.0]), np.array([False, True, True])) == [(5, 6)]


def test_event_measures_refuses_what_is_not_events_or_labelled_videos() -> None:
    """Was: a ValueError unpacking a video that is not a (name, frames, labels) triple, an AttributeError for an event
    that is not an Event, a NaN label counted as abnormal."""
    frames = np.arange(10)
    with pytest.raises(DataError, match="videos must be a list of"):
        event_measures([], [("a", frames)], fps=10)  # type: ignore[list-item]
    with pytest.raises(DataError, match="events must be a list of mnad.events.Event"):
        event_measures([(0, 3)], [("a", frames, np.zeros(10))], fps=10)  # type: ignore[list-item]
    with pytest.raises(DataError, match="video 'a': labels must be finite"):
        event_measures([Event(0, 3, 1, 1.0, 0.0, 0.3, "a")], [("a", frames, np.full(10, math.nan))], fps=10)


# --------------------------------------------------------------------------------------------- 4. frames_needed


@pytest.mark.parametrize("rate", [-0.1, 0, math.nan, math.inf, 1, 1.5, "0.1", True, None])
def test_frames_needed_refuses_what_is_not_a_rate(rate: object) -> None:
    """Was: -10 frames for -0.1, ZeroDivisionError for 0, ValueError for NaN, 0 for inf, a TypeError for a string."""
    with pytest.raises(ConfigError, match=r"false-alarm rate \(false_alarm_rate, --false-alarm-rate\)"):
        frames_needed(rate)  # type: ignore[arg-type]


def test_frames_needed_of_a_rate() -> None:
    assert frames_needed(0.01) == 100 and frames_needed(0.3) == 4 and frames_needed(1e-300) == 10**18


# ------------------------------------------------------------------------------------- 5. evaluate checks once


def test_evaluate_checks_its_config_once(synthetic_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: evaluate checked the config, then score_videos checked it again."""
    calls = []
    real = mnad.evaluate.checked_config
    monkeypatch.setattr(mnad.evaluate, "checked_config", lambda config: calls.append(config) or real(config))
    torch.manual_seed(0)
    config = tiny_config()
    metrics = evaluate(MNAD(config.model), config, synthetic_root, progress=False)
    assert metrics["videos"] == 2 and len(calls) == 1
    mnad.evaluate.score_videos(MNAD(config.model), config, [], progress=False)  # called directly, it checks
    assert len(calls) == 2
