"""Calibrated results use no statistic of the test set and report only what the calibration footage can estimate;
calibrate's arguments are checked as the CLI checks them."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from mnad.calibrate import calibrate, with_calibration
from mnad.checkpoint import load_model, save_model
from mnad.data import split_videos
from mnad.data.spans import footage_span, span_text
from mnad.errors import ConfigError, DataError
from mnad.evaluate import evaluate
from mnad.model import MNAD


def model_and_config() -> tuple[MNAD, object]:
    torch.manual_seed(0)
    config = tiny_config().override(["eval.gamma=0.01"])
    return MNAD(config.model).eval(), config


def fitted(model: MNAD, config: object, videos: list, **options: object) -> tuple[object, object]:
    cal = calibrate(model, config, videos, **{"false_alarm_rate": 0.05, "scoring": "config", "progress": False, **options})
    return cal, with_calibration(config, cal)


def test_stream_refuses_a_calibration_fitted_on_the_test_videos(synthetic_root: Path) -> None:
    model, config = model_and_config()
    test_videos = split_videos(synthetic_root, "synthetic", "testing")
    _, cal_config = fitted(model, config, test_videos[:1])
    with pytest.raises(ConfigError, match=r"test videos .*testing.*01\[0:24\].*use the test set"):
        evaluate(model, cal_config, synthetic_root, protocol="stream", progress=False)


def test_calibration_on_the_training_footage_is_warned_about_and_recorded_by_the_stream_protocol(
        synthetic_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The stream protocol is of a model calibrated on normal footage it was not trained on. A model file records its
    training footage: the Python calibrate finds it there (was: warned only where the caller passed trained_on), and
    the stream protocol warns about a calibration fitted on it and records it in metrics.json (was: compared with
    the test videos only). A model that records no training footage cannot be checked: None."""
    model, config = model_and_config()
    training = split_videos(synthetic_root, "synthetic", "training")
    save_model(tmp_path / "m.safetensors", model, config, extra={"footage": [footage_span(v) for v in training]})
    loaded, _ = load_model(tmp_path / "m.safetensors")
    assert loaded.trained_footage == [footage_span(v) for v in training]
    with caplog.at_level(logging.WARNING):
        _, cal_config = fitted(loaded, config, training)
    assert "the calibration was fitted on footage the model was trained on" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mnad.evaluate"):
        stream = evaluate(loaded, cal_config, synthetic_root, protocol="stream", progress=False)["stream"]
    assert stream["calibration_overlaps_training"] == sorted(span_text(footage_span(v)) for v in training)
    said = [r.getMessage() for r in caplog.records if "trained on" in r.getMessage()]
    assert len(said) == 1 and "fitted on footage the model was trained on" in said[0]
    assert evaluate(model, cal_config, synthetic_root, protocol="stream", progress=False)["stream"][
        "calibration_overlaps_training"] is None  # built in Python: no record
    loaded.trained_footage = [(str(tmp_path / "elsewhere.mp4"), 0, 100)]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mnad.evaluate"):
        assert evaluate(loaded, cal_config, synthetic_root, protocol="stream", progress=False)["stream"][
            "calibration_overlaps_training"] == []
    assert "trained on" not in caplog.text


def test_detect_warns_about_and_records_a_calibration_on_the_training_footage(
        synthetic_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """detect's summary.json records the calibration footage the model's file records training on, warned once
    (was: neither); [] where there is none, null where it cannot be told (a model built in Python) or uncalibrated."""
    from conftest import frames_folder

    from mnad.detect import detect

    model, config = model_and_config()
    training = split_videos(synthetic_root, "synthetic", "training")
    save_model(tmp_path / "m.safetensors", model, config, extra={"footage": [footage_span(v) for v in training]})
    loaded, _ = load_model(tmp_path / "m.safetensors")
    _, cal_config = fitted(loaded, config, training)
    frames = str(frames_folder(tmp_path / "f", 8))
    caplog.clear()  # calibrate's own warning of it (the same check, ``warn_trained_footage``)
    with caplog.at_level(logging.WARNING, logger="mnad"):
        summary = detect(loaded, cal_config, frames, tmp_path / "d", progress=False)
    assert summary["calibration_overlaps_training"] == sorted(span_text(footage_span(v)) for v in training)
    said = [r.getMessage() for r in caplog.records if "fitted on footage the model was trained on" in r.getMessage()]
    assert len(said) == 1
    several = detect(loaded, cal_config, [frames, str(frames_folder(tmp_path / "g", 8))], tmp_path / "s", progress=False)
    assert several["calibration_overlaps_training"] == summary["calibration_overlaps_training"]
    assert detect(model, cal_config, frames, tmp_path / "p", progress=False)["calibration_overlaps_training"] is None
    loaded.trained_footage = [(str(tmp_path / "elsewhere.mp4"), 0, 100)]
    assert detect(loaded, cal_config, frames, tmp_path / "e", progress=False)["calibration_overlaps_training"] == []
    assert detect(loaded, config, frames, tmp_path / "u", progress=False)["calibration_overlaps_training"] is None


def test_rates_the_footage_is_too_short_for_are_left_out(synthetic_root: Path) -> None:
    model, config = model_and_config()
    cal, cal_config = fitted(model, config, split_videos(synthetic_root, "synthetic", "training"))
    assert cal.frames == 40  # enough for 5 % (20 frames) and 10 %, not for 1 % (100 frames)
    assert set(cal.thresholds) == {"0.05", "0.1"}
    rates = evaluate(model, cal_config, synthetic_root, protocol="stream", progress=False)["stream"]["at_false_alarm_rate"]
    assert rates["0.01"]["false_alarm_rate"] is None and "100" in rates["0.01"]["not_estimable"]
    assert 0 <= rates["0.05"]["false_alarm_rate"] <= 1


def test_stream_refuses_smoothing_and_normalization_it_would_ignore(synthetic_root: Path) -> None:
    model, config = model_and_config()
    _, cal_config = fitted(model, config, split_videos(synthetic_root, "synthetic", "training"), smoothing=5)
    with pytest.raises(ConfigError, match="fitted on a 5-frame mean of the score, not 3"):
        evaluate(model, cal_config.override(["eval.smoothing=3"]), synthetic_root, protocol="stream", progress=False)
    with pytest.raises(ConfigError, match="--normalization video"):
        evaluate(model, cal_config.override(["eval.normalization=video"]), synthetic_root, protocol="stream", progress=False)


@pytest.mark.parametrize(("options", "error", "match"), [
    ({"smoothing": 2.5}, ConfigError, "--smoothing"),
    ({"smoothing": True}, ConfigError, "--smoothing"),
    ({"smoothing": 100_000}, ConfigError, "--smoothing 100000 is longer than the shortest calibration video"),
    ({"false_alarm_rate": "0.05"}, ConfigError, "--false-alarm-rate"),
    ({"videos": "single"}, ConfigError, "list of videos"),
    ({"videos": [object()]}, ConfigError, "list of videos"),
    ({"videos": ["no/such/video.avi"]}, DataError, "no/such/video.avi"),
])
def test_calibrate_checks_its_arguments(synthetic_root: Path, options: dict, error: type, match: str) -> None:
    model, config = model_and_config()
    videos = split_videos(synthetic_root, "synthetic", "training")
    if options.get("videos") == "single":
        options = {"videos": videos[0]}
    with pytest.raises(error, match=match):
        calibrate(model, config, **{"videos": videos, "false_alarm_rate": 0.05, "progress": False, **options})


def test_calibrate_takes_paths(synthetic_root: Path) -> None:
    model, config = model_and_config()
    videos = split_videos(synthetic_root, "synthetic", "training")
    by_path, _ = fitted(model, config, [str(v.path) for v in videos])
    by_video, _ = fitted(model, config, videos)
    assert by_path.footage == by_video.footage and by_path.threshold == by_video.threshold


def test_calibrate_refuses_the_same_footage_twice(synthetic_root: Path) -> None:
    model, config = model_and_config()
    videos = split_videos(synthetic_root, "synthetic", "training")
    with pytest.raises(DataError, match=rf"{re.escape(str(videos[0].path.resolve()))}.*given twice"):
        fitted(model, config, [*videos, videos[0]])


def test_too_short_message_is_compact(synthetic_root: Path) -> None:
    model, config = model_and_config()
    with pytest.raises(DataError, match="needs at least") as caught:
        fitted(model, config, split_videos(synthetic_root, "synthetic", "training"), false_alarm_rate=1e-300)
    assert not re.search(r"\d{20}", str(caught.value)), str(caught.value)


def test_stream_refuses_a_calibration_without_its_rates_thresholds_before_scoring(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A calibration without the thresholds table (an earlier mnad's, or one made by hand: the table is optional) but
    fitted on enough frames for the stream protocol's rates is refused before any test frame is scored (was: the whole
    test set scored, then a ConfigError)."""
    import dataclasses

    import mnad.evaluate as evaluation
    from mnad.data.synthetic import make_synthetic_dataset

    make_synthetic_dataset(tmp_path, n_train=3, n_test=1, n_frames=60, size=32, seed=0)
    model, config = model_and_config()
    calibration = calibrate(model, config, split_videos(tmp_path, "synthetic", "training"), false_alarm_rate=0.02,
                            scoring="config", progress=False)
    assert calibration.frames >= evaluation.frames_needed(0.05) and calibration.thresholds  # the rates are estimable
    scored = []
    monkeypatch.setattr(evaluation, "score_frames", lambda *a, **k: scored.append(1))
    without = with_calibration(config, dataclasses.replace(calibration, thresholds={}))
    with pytest.raises(ConfigError, match="no threshold for a false-alarm rate of 0.01"):
        evaluate(model, without, tmp_path, protocol="stream", progress=False)
    assert not scored
