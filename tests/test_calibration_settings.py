"""A calibration records every eval setting that changes the score it was fitted on (PSNR's peak and E_t's kind among
them), and refuses another; it never writes a model that would not load (footage with a video too short for a clip);
and calibrating a calibrated model again starts from the model's own settings, not the old calibration's choice."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import frames_folder, tiny_config

from mnad.calibrate import calibrate, held_out_false_alarms, uncalibrated, with_calibration
from mnad.calibration import Calibration, scoring_calibration
from mnad.checkpoint import load_model, save_model
from mnad.cli import main
from mnad.data import split_videos
from mnad.data.synthetic import make_synthetic_dataset
from mnad.errors import ConfigError, DataError
from mnad.evaluate import evaluate
from mnad.model import MNAD
from mnad.pseudo import SOURCE_FRAMES
from mnad.stream import StreamScorer


def model_and_config() -> tuple[MNAD, object]:
    torch.manual_seed(0)
    config = tiny_config()
    return MNAD(config.model).eval(), config


def fitted(model: MNAD, config: object, videos: list, **options: object) -> Calibration:
    return calibrate(model, config, videos, **{"false_alarm_rate": 0.05, "scoring": "config", "progress": False, **options})


# a calibration as one written by hand or by an older mnad (PSNR only: alpha 1)
PSNR_ONLY = Calibration(psnr_low=5.0, psnr_high=40.0, distance_low=0.0, distance_high=1.0, threshold=0.5,
                        false_alarm_rate=0.05, smoothing=9, frames=100, psnr_region="patch", distance_region="patch", alpha=1.0)


# -- 1. the settings that change the score's scale are recorded, and another is refused --------------------------------

@pytest.mark.parametrize(("setting", "other"), [("eval.psnr_peak", "max"), ("eval.regular_score", "paper")])
def test_scoring_with_another_psnr_peak_or_regular_score_is_refused(synthetic_root: Path, setting: str, other: str) -> None:
    model, config = model_and_config()
    cal = fitted(model, config, split_videos(synthetic_root, "synthetic", "training"))
    assert (cal.psnr_peak, cal.regular_score) == ("one", "code")
    assert Calibration.from_dict(cal.to_dict()) == cal
    scored = with_calibration(config, cal)
    scoring_calibration(scored)  # as fitted: accepted
    changed = scored.override([f"{setting}={other}"])
    with pytest.raises(ConfigError, match=rf"\({setting}\): run `mnad calibrate` again"):
        scoring_calibration(changed)
    with pytest.raises(ConfigError, match=rf"\({setting}\)"):
        StreamScorer.for_model(model, changed, normalization="calibrated")
    with pytest.raises(ConfigError, match=rf"\({setting}\)"):
        evaluate(model, changed, synthetic_root, protocol="stream", progress=False)


def test_a_calibration_fitted_with_the_papers_settings_is_refused_with_the_defaults(synthetic_root: Path) -> None:
    model, config = model_and_config()
    paper = config.override(["eval.psnr_peak=max", "eval.regular_score=paper"])
    cal = fitted(model, paper, split_videos(synthetic_root, "synthetic", "training"))
    assert (cal.psnr_peak, cal.regular_score) == ("max", "paper")
    scoring_calibration(with_calibration(paper, cal))
    with pytest.raises(ConfigError, match=r"\(eval.regular_score\)"):  # a model scored with the defaults: refused
        with_calibration(config, cal)  # (nor is such a model written)
    with pytest.raises(ConfigError, match=r"\(eval.psnr_peak\)"):
        with_calibration(config.override(["eval.regular_score=paper"]), cal)


def test_e_t_is_compared_only_where_it_gates_an_update(synthetic_root: Path) -> None:
    model, config = model_and_config()
    no_update = config.override(["eval.test_update=false"])
    cal = fitted(model, no_update, split_videos(synthetic_root, "synthetic", "training"))
    scoring_calibration(with_calibration(no_update, cal).override(["eval.regular_score=paper"]))


def test_a_calibration_written_before_the_record_was_fitted_with_its_models_settings() -> None:
    """Calibrations written before psnr_peak and regular_score were recorded lack them: an older calibrate scored the
    footage with the model's own eval.psnr_peak and eval.regular_score (both as old as mnad), which its config keeps, so
    none is assumed or compared (was: read as 'one' and 'code', and a model fitted with 'max' or 'paper' refused)."""
    _, config = model_and_config()
    old = {k: v for k, v in PSNR_ONLY.to_dict().items() if k not in ("psnr_peak", "regular_score", "uncalibrated")}
    cal = Calibration.from_dict(old)
    assert (cal.psnr_peak, cal.regular_score) == (None, None)
    for settings in ([], ["eval.psnr_peak=max"], ["eval.regular_score=paper"], ["eval.psnr_peak=max", "eval.regular_score=paper"]):
        scored = with_calibration(config.override(settings), cal)
        scoring_calibration(scored)  # as detect and evaluate check it
        assert Calibration.from_dict(scored.eval.calibration).psnr_peak is None  # written back as not recorded
    for bad in ({"psnr_peak": "two"}, {"regular_score": 1}, {"uncalibrated": {"alpha": 2}}, {"uncalibrated": {"gamma": 1}}):
        with pytest.raises(ConfigError, match="calibration's"):
            Calibration.from_dict({**old, **bad})


# -- 2. a video with no scored frame is refused up front; no calibration that would not load is written -------------------

def test_a_video_shorter_than_a_clip_is_refused_before_anything_is_written(tmp_path: Path, model_file: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    short = frames_folder(tmp_path / "short3", 3)
    a, b = frames_folder(tmp_path / "a", 30), frames_folder(tmp_path / "b", 30)
    out = tmp_path / "k.safetensors"
    code = main(["calibrate", "--checkpoint", str(model_file), "--data", str(short), str(a), str(b), "--out", str(out),
                 "--false-alarm-rate", "0.05", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert f"{short}: 3 frame(s), fewer than the 5 of one clip" in err and "at least 5 frames" in err
    assert "Traceback" not in err
    model, config = load_model(model_file)
    with pytest.raises(DataError, match=r"short3: 3 frame\(s\).*\(and 1 more\)"):
        fitted(model, config, [str(short), str(a), str(frames_folder(tmp_path / "short4", 4))])


def test_the_held_out_check_leaves_out_a_video_with_no_scored_frame() -> None:
    rng = np.random.default_rng(0)
    psnr_values = [np.array([]), 20 + rng.random(40), 20 + rng.random(40)]
    distances = [np.array([]), rng.random(40), rng.random(40)]
    held_out = held_out_false_alarms(psnr_values, distances, scored_with=tiny_config(), false_alarm_rate=0.05, smoothing=1)
    assert held_out and all(math.isfinite(v) for v in held_out.values())
    assert held_out == held_out_false_alarms(psnr_values[1:], distances[1:], scored_with=tiny_config(), false_alarm_rate=0.05, smoothing=1)


def test_a_rate_too_low_for_one_fold_leaves_the_other_rates_checked() -> None:
    """Videos of 300 and 60 scored frames: leaving the long one out leaves 60 frames, too few for a 1 % rate (100). The
    rates every fold can estimate are still checked, each fold fitted at one it supports (was: the whole check
    dropped, {}, at 1 % while 5 % gave 2, 5 and 10 %)."""
    rng = np.random.default_rng(1)
    psnr_values = [20 + rng.random(300), 20 + rng.random(60)]
    distances = [rng.random(300), rng.random(60)]
    check = {rate: held_out_false_alarms(psnr_values, distances, scored_with=tiny_config(), false_alarm_rate=rate,
                                         smoothing=1) for rate in (0.01, 0.05)}
    assert set(check[0.01]) == {"0.02", "0.05", "0.1"}
    assert check[0.01] == check[0.05]  # the same ranges and table thresholds, whichever rate each fold was fitted at
    assert held_out_false_alarms(psnr_values, distances, scored_with=tiny_config(), false_alarm_rate=0.001,
                                 smoothing=1) == check[0.01]


def test_calibrate_says_when_the_chosen_rate_could_not_be_checked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Two videos of 56 and 10 scored frames at a 5 % rate (20 frames): the fold fitted without the long video has 10,
    so the chosen rate is not checked; calibrate says so, with the frames and what the rate needs (was: nothing, the
    calibration's check silently empty). The 10 % rate is still checked."""
    model, config = model_and_config()
    videos = [str(frames_folder(tmp_path / "long", 60)), str(frames_folder(tmp_path / "short", 14))]
    with caplog.at_level(logging.WARNING, logger="mnad.calibrate"):
        calibration = fitted(model, config, videos)
    assert set(calibration.held_out_false_alarms) == {"0.1"}
    said = [r.getMessage() for r in caplog.records if "could not be checked" in r.getMessage()]
    assert len(said) == 1 and "leaves 10 scored frames, fewer than the 20 a 0.05 rate needs (checked: 0.1)" in said[0]


def test_a_calibration_that_would_not_load_is_never_made_into_a_model() -> None:
    _, config = model_and_config()
    with pytest.raises(ConfigError, match="finite"):  # refused as it is made (Calibration checks itself)
        with_calibration(config, Calibration(**{**PSNR_ONLY.to_dict(), "held_out_false_alarms": {"0.05": float("nan")}}))


# -- 3. calibrating a calibrated model starts from the model's own settings ---------------------------------------------

def test_recalibrating_a_calibrated_model_is_calibrating_the_model(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "data", n_train=1, n_test=1, n_frames=SOURCE_FRAMES + 10, size=32, seed=1).parent
    videos = split_videos(root, "synthetic", "training")
    model, config = model_and_config()
    plain = calibrate(model, config, videos, false_alarm_rate=0.05, progress=False)
    assert len(plain.pseudo_anomaly_auc) == 18
    psnr_only = with_calibration(config, PSNR_ONLY)  # alpha 1: D mixed in with weight 0 if it were kept
    assert psnr_only.eval.alpha == 1.0
    again = calibrate(model, psnr_only, videos, false_alarm_rate=0.05, progress=False)
    assert again.pseudo_anomaly_auc == plain.pseudo_anomaly_auc  # every "PSNR + D" candidate mixes D in again
    assert again == plain
    assert calibrate(model, with_calibration(config, plain), videos, false_alarm_rate=0.05, progress=False) == plain


def test_uncalibrated_restores_the_settings_the_calibration_replaced(caplog: pytest.LogCaptureFixture) -> None:
    _, config = model_and_config()
    own = config.override(["eval.alpha=0.7", "eval.smoothing=3", "eval.normalization=causal"])
    calibrated = with_calibration(own, PSNR_ONLY)
    assert (calibrated.eval.alpha, calibrated.eval.smoothing, calibrated.eval.psnr_region) == (1.0, 9, "patch")
    assert uncalibrated(calibrated) == own
    assert uncalibrated(with_calibration(calibrated, PSNR_ONLY)) == own  # the record is never an earlier calibration's
    # a setting changed since the calibration (an API caller's override) is the caller's, and kept
    assert uncalibrated(calibrated.override(["eval.alpha=0.8"])).eval.alpha == 0.8
    # a calibration written before the record: the defaults stand for the settings it replaced, said in a warning
    data = calibrated.to_dict()
    del data["eval"]["calibration"]["uncalibrated"]
    with caplog.at_level(logging.WARNING, logger="mnad.calibrate"):
        old = uncalibrated(type(config).from_dict(data))
    assert "older mnad" in caplog.text
    assert (old.eval.alpha, old.eval.smoothing, old.eval.psnr_region, old.eval.normalization) == (0.6, 1, "frame", "video")
    assert old.eval.calibration == {}


def test_the_command_recalibrates_from_the_models_own_settings(tmp_path: Path, model_file: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    model, config = load_model(model_file)
    calibrated = tmp_path / "psnr_only.safetensors"
    save_model(calibrated, model, with_calibration(config, PSNR_ONLY))
    a, b = frames_folder(tmp_path / "a", 30), frames_folder(tmp_path / "b", 30)
    printed = []
    for checkpoint, out in ((model_file, "plain.safetensors"), (calibrated, "again.safetensors")):
        assert main(["calibrate", "--checkpoint", str(checkpoint), "--data", str(a), str(b), "--out", str(tmp_path / out),
                     "--false-alarm-rate", "0.05", "--scoring", "config", "--quiet"]) == 0
        text = capsys.readouterr().out
        printed.append(json.loads(text[:text.rindex("}") + 1]))
    assert printed[1] == printed[0]
    assert (printed[1]["alpha"], printed[1]["smoothing"], printed[1]["psnr_region"]) == (config.eval.alpha, 5, "frame")
    assert printed[1]["uncalibrated"]["alpha"] == config.eval.alpha
    _, again = load_model(tmp_path / "again.safetensors")
    assert again.eval.calibration == printed[1]


def test_the_record_holds_the_models_settings_not_the_calibrating_runs_options(tmp_path: Path, model_file: Path,
                                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """`mnad calibrate --alpha 0.9 --smoothing 3` scores the footage so, but the model's own eval.alpha and
    eval.smoothing are what the calibration records it replaced: recalibrating the result is calibrating the plain model
    (was: the options recorded, and a recalibration scored with alpha 0.9)."""
    _, config = load_model(model_file)
    a, b = frames_folder(tmp_path / "a", 30), frames_folder(tmp_path / "b", 30)

    def calibrated(checkpoint: Path, out: str, *options: str) -> dict:
        assert main(["calibrate", "--checkpoint", str(checkpoint), "--data", str(a), str(b), "--out", str(tmp_path / out),
                     "--false-alarm-rate", "0.05", "--scoring", "config", "--quiet", *options]) == 0
        text = capsys.readouterr().out
        return json.loads(text[:text.rindex("}") + 1])

    with_options = calibrated(model_file, "options.safetensors", "--alpha", "0.9", "--smoothing", "3")
    assert (with_options["alpha"], with_options["smoothing"]) == (0.9, 3)
    assert with_options["uncalibrated"] == {"normalization": config.eval.normalization, "smoothing": config.eval.smoothing,
                                           "psnr_region": "frame", "distance_region": "frame", "alpha": config.eval.alpha}
    assert config.eval.alpha != 0.9 and config.eval.smoothing != 3
    again = calibrated(tmp_path / "options.safetensors", "again.safetensors")
    assert again == calibrated(model_file, "plain.safetensors")


def test_a_model_weighing_psnr_alone_is_offered_no_psnr_plus_d_candidates(tmp_path: Path) -> None:
    """A model whose own eval.alpha is 1 (S_t = PSNR alone): its "PSNR + D" candidates mixed D in with weight 0, each a
    copy of a PSNR-only candidate under a name that said D; they are not offered."""
    root = make_synthetic_dataset(tmp_path / "data", n_train=1, n_test=1, n_frames=SOURCE_FRAMES + 10, size=32, seed=1).parent
    videos = split_videos(root, "synthetic", "training")
    model, config = model_and_config()
    fitted = calibrate(model, config.override(["eval.alpha=1.0"]), videos, false_alarm_rate=0.05, progress=False)
    assert fitted.pseudo_anomaly_auc and all(" D" not in name for name in fitted.pseudo_anomaly_auc)
