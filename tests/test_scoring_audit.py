"""Defects of the causal and calibrated scoring an audit found: a calibration of the test set accepted by the published
protocol, a calibration silently used by a causal scorer, an empty D range accepted, a window calibrate picks itself
longer than the footage."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, frames_folder, tiny_config

import mnad.calibrate
from mnad.calibrate import calibrate, choose_scoring, fit_calibration, with_calibration
from mnad.calibration import Calibration
from mnad.config import Config
from mnad.data import split_videos
from mnad.data.videos import FrameRange, open_video
from mnad.errors import ConfigError, DataError
from mnad.evaluate import evaluate
from mnad.model import MNAD
from mnad.pseudo import SOURCE_FRAMES
from mnad.stream import StreamScorer


def model_and_config(*overrides: str) -> tuple[MNAD, object]:
    torch.manual_seed(0)
    config = tiny_config().override(["eval.gamma=0.01", *overrides])
    return MNAD(config.model).eval(), config


CALIBRATION = Calibration(psnr_low=5.0, psnr_high=40.0, distance_low=0.0, distance_high=2.0, threshold=0.5,
                          false_alarm_rate=0.05, smoothing=3, frames=100, alpha=0.6)


def test_published_protocol_refuses_a_calibration_fitted_on_the_test_videos(synthetic_root: Path) -> None:
    """(was: accepted, its ranges, fitted on the test videos, in every score; only --protocol stream refused it)"""
    model, config = model_and_config()
    test_videos = split_videos(synthetic_root, "synthetic", "testing")
    cal = calibrate(model, config, test_videos[:1], false_alarm_rate=0.05, scoring="config", progress=False)
    with pytest.raises(ConfigError, match=r"test videos .*testing.*01\[0:24\].*published protocol's calibrated scores "
                                          r"would then use the test set"):
        evaluate(model, with_calibration(config, cal), synthetic_root, protocol="published", progress=False)


def test_published_protocol_takes_a_held_out_calibration(synthetic_root: Path) -> None:
    model, config = model_and_config()
    train = split_videos(synthetic_root, "synthetic", "training")
    cal = calibrate(model, config, train, false_alarm_rate=0.05, scoring="config", progress=False)
    metrics = evaluate(model, with_calibration(config, cal), synthetic_root, protocol="published", progress=False)
    assert metrics["normalization"] == "calibrated" and "stream" not in metrics


@pytest.mark.parametrize("normalization", ["causal", "video"])
def test_scorer_refuses_a_calibration_its_normalisation_does_not_use(normalization: str) -> None:
    """(was: kept, and 'causal' scored with its fixed ranges and window instead of a running min-max)"""
    model, config = model_and_config()
    with pytest.raises(ConfigError, match=rf"^a calibration was given, but normalization is '{normalization}'"):
        StreamScorer.for_model(model, config, normalization=normalization, calibration=CALIBRATION)
    with pytest.raises(ConfigError, match="normalization is 'causal'"):  # its dict too, and the config's normalisation
        StreamScorer.for_model(model, config.override(["eval.normalization=causal"]), calibration=CALIBRATION.to_dict())


def test_scorer_takes_a_calibration_with_calibrated_normalisation() -> None:
    model, config = model_and_config()
    scorer = StreamScorer.for_model(model, config, normalization="calibrated", calibration=CALIBRATION)
    assert scorer.calibration == CALIBRATION and scorer.smoothing == 3


def test_an_empty_distance_range_is_refused_where_the_score_weighs_d() -> None:
    """(was: accepted; D then divided by 1e-12, one float32 ulp of D put S_t at about 1e4)"""
    _, config = model_and_config()
    rng = np.random.default_rng(0)
    psnr, constant_d = [rng.normal(30, 1, 400)], [np.full(400, 0.25)]
    with pytest.raises(DataError, match=r"footage's D does not vary, but S_t weighs it \(alpha 0\.6\); .*"
                                        r"or score with PSNR only \(--alpha 1\)"):  # the footage's fault, named
        fit_calibration(psnr, constant_d, alpha=0.6, false_alarm_rate=0.01, smoothing=1, scored_with=config)
    stored = {**CALIBRATION.to_dict(), "distance_low": 0.25, "distance_high": 0.25 + 1e-9}  # a damaged sidecar
    with pytest.raises(ConfigError, match=r"^model\.json: the calibration's D range is empty"):
        Calibration.from_dict(stored, source="model.json")


def test_an_empty_distance_range_stands_where_the_score_is_psnr_only() -> None:
    _, config = model_and_config("model.memory=false")  # without memory D is constant and alpha 1
    rng = np.random.default_rng(0)
    fitted = fit_calibration([rng.normal(30, 1, 400)], [np.zeros(400)], alpha=1.0, false_alarm_rate=0.01, smoothing=1,
                             scored_with=config)
    assert fitted.distance_low == fitted.distance_high == 0
    assert dataclasses.replace(CALIBRATION, distance_high=0.0, alpha=1.0).distance_high == 0
    assert dataclasses.replace(CALIBRATION, distance_high=0.0, alpha=None).alpha is None  # older: its model's alpha


def tail_footage(root: Path) -> list:
    """Two normal videos: 24 frames, and a 7-frame tail of another (3 scored frames with 5-frame clips)."""
    train = split_videos(root, "synthetic", "training")
    return [train[0], FrameRange(train[1], 17, 24)]


def test_the_default_window_longer_than_the_footage_is_refused(synthetic_root: Path) -> None:
    """(was: the 5-frame alert window fitted on means of 1 to 3 frames; only an explicit --smoothing was checked)"""
    model, config = model_and_config()
    with pytest.raises(ConfigError, match=r"alert window, a 5-frame trailing mean \(the default where the recipe sets "
                                          r"none\), is longer than the shortest calibration video's 3 scored frames"):
        calibrate(model, config, tail_footage(synthetic_root), false_alarm_rate=0.05, scoring="config", progress=False)
    with pytest.raises(ConfigError, match=r"a 4-frame trailing mean \(the recipe's eval.smoothing\)"):
        calibrate(model, config.override(["eval.smoothing=4"]), tail_footage(synthetic_root), false_alarm_rate=0.05,
                  scoring="config", progress=False)
    cal = calibrate(model, config, tail_footage(synthetic_root), false_alarm_rate=0.05, scoring="config", smoothing=3,
                    progress=False)
    assert cal.smoothing == 3


def test_windows_longer_than_the_footage_are_not_chosen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(was: 1, 5 and 9 frames tried whatever the footage, a window of 5 or 9 fitted on 3 scored frames)"""
    model, config = model_and_config()
    long = open_video(frames_folder(tmp_path / "long", SOURCE_FRAMES))  # long enough for a pseudo-anomaly
    tried = []

    def choose(*args: object, windows: tuple[int, ...], **kwargs: object) -> object:
        tried.append(windows)
        return choose_scoring(*args, windows=windows, **kwargs)

    monkeypatch.setattr(mnad.calibrate, "choose_scoring", choose)
    short = open_video(frames_folder(tmp_path / "short", 7))  # 3 scored frames
    cal = calibrate(model, config, [long, short], false_alarm_rate=0.05, scoring="choose", progress=False)
    assert tried == [(1,)] and cal.smoothing == 1 and cal.pseudo_anomaly_auc
    assert all(name.endswith(", 1-frame mean") for name in cal.pseudo_anomaly_auc)


def test_a_d_that_does_not_vary_on_the_footage_is_no_candidate() -> None:
    """A frame D constant on the normal footage has no range to scale by (Calibration refuses it): its candidates are
    left out of the choice, the others still compared (was: the whole choice, and calibrate, failed on it)."""
    from test_scoring_choice import terms

    from mnad.calibrate import candidate_name

    rng = np.random.default_rng(0)
    labels = [np.arange(36) > 16 for _ in range(3)]
    normal = terms(rng, 4, 150)
    normal["distance"] = [np.full(150, 0.01) for _ in range(4)]
    choice = choose_scoring(normal, terms(rng, 3, 36, patch_d_rise=0.05, labels=labels), labels,
                            scored_with=tiny_config(), windows=(1,))
    assert candidate_name("frame", "frame", 1) not in choice.auc and candidate_name("frame", "patch", 1) in choice.auc
    assert choice.distance_region == "patch"


def test_a_model_whose_output_is_not_finite_is_not_calibrated(synthetic_root: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """(was: NaN terms went into the fits: a D candidate dropped unsaid, or an error deep in a fit)"""
    from test_nonfinite_scores import spoiling_step

    from mnad.errors import CheckpointError

    model, config = model_and_config()
    spoiling_step(monkeypatch, bad=3)
    with pytest.raises(CheckpointError, match=r"frame \d+: the model's output is not finite on this footage"):
        calibrate(model, config, split_videos(synthetic_root, "synthetic", "training")[:2], false_alarm_rate=0.05,
                  scoring="config", smoothing=1, progress=False)


def test_the_choice_refuses_terms_that_are_not_finite() -> None:
    from test_scoring_choice import terms

    rng = np.random.default_rng(0)
    labels = [np.arange(36) > 16 for _ in range(3)]
    normal = terms(rng, 4, 150)
    normal["patch_distance"][1][7] = np.nan
    with pytest.raises(ConfigError, match="the normal footage's patch_distance holds values that are not finite"):
        choose_scoring(normal, terms(rng, 3, 36, labels=labels), labels, scored_with=tiny_config(), windows=(1,))


def test_a_fold_whose_d_does_not_vary_leaves_the_calibration_standing() -> None:
    """A leave-one-out fold fitted on a video whose D is constant is a footage problem the check skips (was: a
    ConfigError from the fold failed the whole calibration, though the fit on all the footage was valid)."""
    from mnad.calibrate import held_out_false_alarms

    rng = np.random.default_rng(0)
    psnr = [rng.normal(30, 1, 200) for _ in range(2)]
    distances = [np.abs(rng.normal(0.01, 0.002, 200)), np.full(200, 0.01)]
    config = tiny_config()
    fit_calibration(psnr, distances, alpha=0.6, false_alarm_rate=0.05, smoothing=1, scored_with=config)
    assert held_out_false_alarms(psnr, distances, scored_with=config, false_alarm_rate=0.05, smoothing=1) == {}
    with pytest.raises(DataError, match="the calibration footage's D does not vary, but S_t weighs it"):
        fit_calibration(psnr[1:], distances[1:], alpha=0.6, false_alarm_rate=0.05, smoothing=1, scored_with=config)


def test_the_default_window_is_refused_before_scoring_where_nothing_can_be_chosen(
        synthetic_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Footage too short for a pseudo-anomaly: the default window is the one taken, refused before any frame is scored
    (was: after scoring all the footage)."""
    model, config = model_and_config()

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("footage scored before the window was checked")

    monkeypatch.setattr(mnad.calibrate, "footage_terms", never)
    with pytest.raises(ConfigError, match="alert window, a 5-frame trailing mean"):
        calibrate(model, config, tail_footage(synthetic_root), false_alarm_rate=0.05, scoring="choose", progress=False)


def test_a_range_is_empty_relative_to_its_values_not_below_an_absolute_floor() -> None:
    """(was: any range under 1e-6 empty, so a trained model's D, near 3e-6, never had a range: the committed
    results/ped2_stream calibration was refused, and `calibrate` dropped every candidate weighing D)"""
    from mnad.calibration import has_range

    assert has_range(2.98e-6, 3.62e-6)  # results/ped2_stream's D range
    assert not has_range(0.25, 0.25 + 1e-9) and not has_range(0.0, 0.0) and not has_range(30.0, 30.0 + 1e-5)
    assert has_range(22.3, 27.8)
    d = [np.linspace(2.98e-6, 3.62e-6, 400)]
    rng = np.random.default_rng(0)
    _, config = model_and_config()
    fitted = fit_calibration([rng.normal(30, 1, 400)], d, alpha=0.6, false_alarm_rate=0.01, smoothing=1,
                             scored_with=config)
    assert fitted.distance_high - fitted.distance_low == pytest.approx(0.98 * 0.64e-6, rel=1e-3)


def test_every_committed_calibration_is_read() -> None:
    """Each calibration in a committed result's config reads (Config.calibration), as a user's would."""
    read = 0
    for metrics in sorted((ROOT / "results").glob("*/metrics.json")):
        config = Config.from_dict(json.loads(metrics.read_text())["config"], source=str(metrics))
        if config.eval.calibration:
            assert config.calibration(f"{metrics}: eval.calibration") is not None
            read += 1
    assert read >= 1
