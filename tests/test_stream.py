"""The streaming scorer owns its state: the caller's model is never changed, the state restores exactly, every
score is causal, and evaluate, calibrate and detect score the same frames the same way."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

from mnad.calibrate import calibrate, held_out_false_alarms, uncalibrated, with_calibration
from mnad.calibration import Calibration
from mnad.data import split_videos
from mnad.detect import DetectOptions, detect
from mnad.errors import CheckpointError, ConfigError, DataError
from mnad.evaluate import evaluate, score_videos
from mnad.model import MNAD
from mnad.stream import StepResult, StreamScorer


def model_and_config(gamma: float = 1.0) -> tuple[MNAD, object]:
    torch.manual_seed(0)
    config = tiny_config().override([f"eval.gamma={gamma}"])  # gamma 1: the memory updates after every frame
    return MNAD(config.model).eval(), config


def frames_of(root: Path, split: str = "testing") -> list[np.ndarray]:
    video = split_videos(root, "synthetic", split)[0]
    return [video.frame(i, 32, 3) for i in range(len(video))]


def test_scoring_never_changes_the_callers_model(synthetic_root: Path) -> None:
    model, config = model_and_config()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scorer = StreamScorer.for_model(model, config, normalization="causal")
    rows = [r for f in frames_of(synthetic_root) if (r := scorer.push(f)) is not None]
    assert all(r.updated for r in rows)  # the scorer's memory moved ...
    assert not torch.equal(scorer.items, before["memory.items"])
    for key, value in model.state_dict().items():  # ... the model's did not
        assert torch.equal(value, before[key]), key
    score_videos(model, config, split_videos(synthetic_root, "synthetic", "testing"), progress=False)
    assert torch.equal(model.memory.items, before["memory.items"])


def test_step_returns_a_named_result(synthetic_root: Path) -> None:
    model, config = model_and_config()
    scorer = StreamScorer.for_model(model, config)
    clip = torch.zeros(1, 12, 32, 32), torch.zeros(1, 3, 32, 32)
    result = scorer.step(*clip, model.memory.items)
    assert isinstance(result, StepResult) and result.psnr.shape == (1,) and result.items.shape == model.memory.items.shape


def test_saved_state_continues_exactly(synthetic_root: Path, tmp_path: Path) -> None:
    """A camera restart: scoring frames 0..k, saving, restoring into a new scorer and scoring the rest gives the
    rows of one uninterrupted run (memory, window, normaliser and trailing mean all restored)."""
    model, config = model_and_config()
    frames = frames_of(synthetic_root)
    whole = StreamScorer.for_model(model, config, normalization="causal", smoothing=3)
    expected = [r for f in frames if (r := whole.push(f)) is not None]
    first = StreamScorer.for_model(model, config, normalization="causal", smoothing=3)
    head = [r for f in frames[:11] if (r := first.push(f)) is not None]
    first.save_state(tmp_path / "state.safetensors")
    second = StreamScorer.for_model(model, config, normalization="causal", smoothing=3)
    second.load_state(tmp_path / "state.safetensors")
    tail = [r for f in frames[11:] if (r := second.push(f)) is not None]
    got = head + tail
    assert [r.index for r in got] == [r.index for r in expected]
    np.testing.assert_allclose([r.psnr for r in got], [r.psnr for r in expected], rtol=1e-6)
    np.testing.assert_allclose([r.smoothed for r in got], [r.smoothed for r in expected], rtol=1e-6)
    # a damaged state is refused by its hash
    data = bytearray((tmp_path / "state.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (tmp_path / "bad.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        second.load_state(tmp_path / "bad.safetensors")


def calibrated(model: MNAD, config, root: Path):
    cal = calibrate(model, config, split_videos(root, "synthetic", "training"), false_alarm_rate=0.05, smoothing=3, progress=False)
    return cal, with_calibration(config, cal)


def test_causal_scores_ignore_later_frames(synthetic_root: Path) -> None:
    """Changing frame t+k leaves every score up to t unchanged (calibrated and running normalisers)."""
    model, config = model_and_config()
    cal, cal_config = calibrated(model, config, synthetic_root)
    frames = frames_of(synthetic_root)
    changed = [f.copy() for f in frames]
    t = 12
    for f in changed[t + 1:]:
        f[:] = 255 - f  # every later frame replaced
    for normalization in ("calibrated", "causal"):
        scored = cal_config if normalization == "calibrated" else uncalibrated(cal_config)  # causal: as trained
        a = StreamScorer.for_model(model, scored, normalization=normalization)
        b = StreamScorer.for_model(model, scored, normalization=normalization)
        rows_a = [r for f in frames if (r := a.push(f)) is not None]
        rows_b = [r for f in changed if (r := b.push(f)) is not None]
        upto = [i for i, r in enumerate(rows_a) if r.index <= t]
        assert upto and all(rows_a[i].smoothed == rows_b[i].smoothed and rows_a[i].score == rows_b[i].score for i in upto)
        assert any(rows_a[i].smoothed != rows_b[i].smoothed for i in range(len(rows_a)) if rows_a[i].index > t)


def test_evaluate_and_detect_score_the_same_frames_alike(synthetic_root: Path, tmp_path: Path) -> None:
    """The same frames (a frame folder, not a re-encoded video) through evaluate and detect: the same PSNR, D and
    memory updates frame by frame."""
    model, config = model_and_config(gamma=0.01)
    cal, cal_config = calibrated(model, config, synthetic_root)
    video = split_videos(synthetic_root, "synthetic", "testing")[0]
    offline = score_videos(model, cal_config, [video], progress=False)[0]
    detect(model, cal_config, str(video.path), tmp_path / "d", progress=False)
    rows = list(csv.DictReader((tmp_path / "d" / "scores.csv").open()))
    assert [int(r["frame"]) for r in rows] == offline.frames.tolist()
    np.testing.assert_allclose([float(r["psnr"]) for r in rows], offline.psnr, atol=1e-4)
    np.testing.assert_allclose([float(r["distance"]) for r in rows], offline.distance, rtol=1e-5, atol=1e-8)
    assert [bool(int(r["memory_updated"])) for r in rows] == offline.updated.tolist()


def test_stream_protocol_reports_causal_auc_false_alarms_and_events(synthetic_root: Path, tmp_path: Path) -> None:
    model, config = model_and_config(gamma=0.01)
    with pytest.raises(ConfigError, match="calibrat"):
        evaluate(model, config, synthetic_root, protocol="stream", progress=False)
    cal, cal_config = calibrated(model, config, synthetic_root)
    metrics = evaluate(model, cal_config, synthetic_root, protocol="stream", progress=False, out_dir=tmp_path / "s")
    assert metrics["protocol"] == "stream" and metrics["normalization"] == "calibrated"
    stream = metrics["stream"]
    assert set(stream["at_false_alarm_rate"]) == {"0.01", "0.05"}
    for entry in stream["at_false_alarm_rate"].values():  # a rate the calibration footage is too short for is not estimated
        if "not_estimable" in entry:
            assert entry["false_alarm_rate"] is None and entry["detection_rate"] is None
            continue
        assert 0 <= entry["false_alarm_rate"] <= 1 and 0 <= entry["detection_rate"] <= 1
    assert "not_estimable" not in stream["at_false_alarm_rate"]["0.05"]
    events = stream["event_measures"]
    assert events["videos_with_anomaly"] == 2 and 0 <= events["videos_caught"] <= 2 and events["fps"] == 25.0
    # the published protocol of the same model is unchanged by the calibration's existence
    published = evaluate(model, config, synthetic_root, progress=False)
    assert published["protocol"] == "published" and "stream" not in published


def test_calibration_refuses_degenerate_footage_and_settings(synthetic_root: Path, tmp_path: Path) -> None:
    model, config = model_and_config()
    videos = split_videos(synthetic_root, "synthetic", "training")
    for rate in (0.0, 1.0, -0.1):
        with pytest.raises(ConfigError, match="false-alarm-rate"):
            calibrate(model, config, videos, false_alarm_rate=rate, progress=False)
    constant = tmp_path / "constant"
    constant.mkdir()
    import cv2

    for i in range(40):
        cv2.imwrite(str(constant / f"{i:03d}.png"), np.full((32, 32, 3), 128, np.uint8))
    from mnad.data import FrameFolder

    with pytest.raises(DataError, match="does not change"):
        calibrate(model, config, [FrameFolder(constant)], false_alarm_rate=0.05, progress=False)


def test_calibration_record_is_checked() -> None:
    good = dict(psnr_low=20.0, psnr_high=30.0, distance_low=0.0, distance_high=0.1, threshold=0.5, false_alarm_rate=0.01,
                smoothing=5, frames=100)
    assert Calibration.from_dict(good).threshold_for(0.01) == 0.5
    for bad in ({"psnr_high": 20.0}, {"threshold": float("nan")}, {"false_alarm_rate": 0.0}):
        with pytest.raises(ConfigError):
            Calibration.from_dict({**good, **bad})
    with pytest.raises(ConfigError, match="lacks"):
        Calibration.from_dict({k: v for k, v in good.items() if k != "threshold"})
    with pytest.raises(ConfigError, match="no threshold"):
        Calibration.from_dict(good).threshold_for(0.05)


def test_a_calibration_is_used_only_with_the_test_time_update_it_was_fitted_with(synthetic_root: Path) -> None:
    """The update changes the memory, hence D and the ranges: scoring a calibrated model with another gamma, or
    without the update, is refused by every scorer (StreamScorer, detect's and evaluate's check); an older calibration
    that did not record them is taken as before."""
    from mnad.calibration import scoring_calibration

    model, config = model_and_config(gamma=0.01)
    cal, cal_config = calibrated(model, config, synthetic_root)
    assert (cal.test_update, cal.gamma) == (True, 0.01)
    assert Calibration.from_dict(cal.to_dict()) == cal  # recorded and read back
    for change in (["eval.gamma=0.5"], ["eval.test_update=false"]):
        other = cal_config.override(change)
        with pytest.raises(ConfigError, match="test-time memory update"):
            StreamScorer.for_model(model, other, normalization="calibrated")
        with pytest.raises(ConfigError, match="test-time memory update"):
            scoring_calibration(other)
    StreamScorer.for_model(model, cal_config, normalization="calibrated")  # as fitted: taken
    old = Calibration.from_dict({k: v for k, v in cal.to_dict().items() if k not in ("test_update", "gamma")})
    old.check_scoring(cal_config.override(["eval.gamma=0.5"]))
    with pytest.raises(ConfigError, match="gamma"):
        Calibration.from_dict({**cal.to_dict(), "gamma": -1})
    for window in (1, cal.smoothing + 1):  # the window in the config is checked too: 1 (none) was asked for as well
        with pytest.raises(ConfigError, match=f"fitted on a {cal.smoothing}-frame mean of the score, not {window}"):
            scoring_calibration(cal_config.override([f"eval.smoothing={window}"]))
        with pytest.raises(ConfigError, match=f"not {window}"):
            StreamScorer.for_model(model, cal_config.override([f"eval.smoothing={window}"]), normalization="calibrated")


def test_localised_scoring_mixes_the_chosen_terms_and_its_calibration_matches(synthetic_root: Path) -> None:
    """eval.psnr_region / eval.distance_region pick the terms S_t mixes, in calibration and scoring alike; a calibration
    fitted on other terms is refused rather than used with the wrong ranges."""
    model, config = model_and_config(gamma=0.01)
    local = config.override(["eval.psnr_region=patch", "eval.distance_region=patch"])
    cal, cal_config = calibrated(model, local, synthetic_root)
    assert (cal.psnr_region, cal.distance_region) == ("patch", "patch")
    scorer = StreamScorer.for_model(model, cal_config, normalization="calibrated")
    rows = [r for f in frames_of(synthetic_root) if (r := scorer.push(f)) is not None]
    assert all(r.patch_distance >= r.distance * 0.999 for r in rows)  # the worst block is at least the mean
    alpha = cal_config.eval.alpha
    for r in rows:  # S_t by hand from the localised terms and the calibration's ranges
        expected = alpha * (1 - cal.scale_psnr(r.patch_psnr)) + (1 - alpha) * cal.scale_distance(r.patch_distance)
        assert r.score == pytest.approx(expected)
    assert (cal_config.eval.psnr_region, cal_config.eval.distance_region) == ("patch", "patch")  # the calibration's own
    frame_terms = cal_config.override(["eval.psnr_region=frame", "eval.distance_region=frame"])  # the published terms
    with pytest.raises(ConfigError, match="run `mnad calibrate` again"):
        StreamScorer.for_model(model, frame_terms, normalization="calibrated")
    # written before the terms were recorded: fitted on its config's PSNR term and the whole-frame D
    old = Calibration.from_dict({k: v for k, v in cal.to_dict().items() if k not in ("psnr_region", "distance_region")})
    old.check_scoring(config.override(["eval.psnr_region=patch"]))
    with pytest.raises(ConfigError, match="run `mnad calibrate` again"):
        old.check_scoring(local)
    with pytest.raises(ConfigError, match="distance_region"):
        Calibration.from_dict({**cal.to_dict(), "distance_region": "corner"})


def test_held_out_false_alarms_show_thresholds_that_do_not_carry_over(synthetic_root: Path) -> None:
    """Each calibration video left out in turn: alike videos realise about the asked rate, a video unlike the others
    (its PSNR 6 dB lower) alerts on nearly all of its frames; one video gives no check."""
    rng = np.random.default_rng(0)
    psnr_values = [rng.normal(30, 1, 400) for _ in range(4)]
    distances = [np.abs(rng.normal(0.01, 0.001, 400)) for _ in range(4)]
    alike = held_out_false_alarms(psnr_values, distances, scored_with=tiny_config(), false_alarm_rate=0.05, smoothing=1)
    assert {"0.01", "0.05"} <= set(alike) and alike["0.05"] < 0.1
    unlike = held_out_false_alarms([*psnr_values[:3], psnr_values[3] - 6], distances, scored_with=tiny_config(), false_alarm_rate=0.05, smoothing=1)
    assert unlike["0.05"] > 0.2
    assert held_out_false_alarms(psnr_values[:1], distances[:1], scored_with=tiny_config(), false_alarm_rate=0.05, smoothing=1) == {}
    model, config = model_and_config()
    cal, _ = calibrated(model, config, synthetic_root)  # several training videos: the check is recorded
    assert cal.held_out_false_alarms and all(0 <= v <= 1 for v in cal.held_out_false_alarms.values())
    assert Calibration.from_dict(cal.to_dict()) == cal


def test_detect_never_destroys_an_earlier_run(synthetic_root: Path, tmp_path: Path) -> None:
    model, config = model_and_config(gamma=0.01)
    source = str(split_videos(synthetic_root, "synthetic", "testing")[0].path)
    out = tmp_path / "out"
    detect(model, config, source, out, progress=False)
    before = (out / "scores.csv").read_bytes()
    with pytest.raises(DataError, match="no such"):  # a mistyped source: the earlier outputs stay
        detect(model, config, source + "x", out, DetectOptions(overwrite=True), progress=False)
    assert (out / "scores.csv").read_bytes() == before
    with pytest.raises(DataError, match="--overwrite"):
        detect(model, config, source, out, progress=False)
    detect(model, config, source, out, DetectOptions(overwrite=True), progress=False)
    assert (out / "scores.csv").read_bytes() == before  # the same frames score the same
