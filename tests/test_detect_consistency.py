"""mnad detect's outputs agree with each other: alert rows and events, per-source durations, the latency a
motion-cues model has, and the options and arguments it refuses."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import frames_folder, tiny_config

from mnad.calibrate import with_calibration
from mnad.calibration import Calibration
from mnad.checkpoint import load_model, save_model
from mnad.cli import main
from mnad.detect import DetectOptions, detect
from mnad.errors import ConfigError, DataError
from mnad.events import Event, EventTracker, anomalies, event_measures
from mnad.model import MNAD


def calibrated(model_file: Path, threshold: float) -> tuple[MNAD, object]:
    """The untrained tiny model with a hand-made calibration (1-frame mean) at ``threshold``."""
    model, config = load_model(model_file)
    cal = Calibration(psnr_low=0.0, psnr_high=40.0, distance_low=0.0, distance_high=1.0, threshold=threshold,
                      false_alarm_rate=0.05, smoothing=1, frames=100)
    return model, with_calibration(config, cal)


def rows(folder: Path) -> list[dict]:
    with (folder / "scores.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def runs_above(smoothed: list[float], threshold: float) -> list[tuple[int, int]]:
    """(first, last) position of each run of consecutive values above ``threshold``."""
    out, start = [], None
    for i, s in enumerate([*smoothed, -math.inf]):
        if s > threshold and start is None:
            start = i
        elif s <= threshold and start is not None:
            out.append((start, i - 1))
            start = None
    return out


def test_tracker_alerts_only_once_an_event_is_confirmed() -> None:
    tracker = EventTracker(0.5, hysteresis=0.0, min_frames=5)
    scores = [0.1] * 4 + [0.9] * 3 + [0.1] * 3 + [0.9] * 6 + [0.1] + [0.9] * 2  # runs 4-6 (too short), 10-15, 17-18 (open)
    alerts, events = [], []
    for i, s in enumerate(scores):
        if (e := tracker.push(i, i / 10, s)) is not None:
            events.append(e)
        alerts.append(int(tracker.alerting))
    assert tracker.finish() is None  # the run still open at the end is too short: dropped
    assert [(e.start_frame, e.end_frame) for e in events] == [(10, 15)]  # the event starts at its first frame above
    assert [i for i, a in enumerate(alerts) if a] == [14, 15]  # its 5th frame on; the dropped runs never alert


def test_frames_a_stream_did_not_score_do_not_confirm_an_event() -> None:
    """After a reconnection the next t_length - 1 frames are read but not scored (and a frame whose model output was
    not finite is skipped): an event spanning such a gap was confirmed on fewer scored frames than min_frames (was:
    frames 10 and 14, two scores, confirmed a 3-frame event)."""
    tracker = EventTracker(0.5, min_frames=3)
    tracker.push(10, 1.0, 0.9)
    tracker.push(14, 1.4, 0.9)
    assert not tracker.alerting
    tracker.push(15, 1.5, 0.9)
    assert tracker.alerting
    short = EventTracker(0.5, min_frames=3)
    short.push(10, 1.0, 0.9)
    short.push(20, 2.0, 0.9)
    assert short.finish() is None  # two scored frames, however far apart: dropped


def test_alert_column_agrees_with_events_and_summary(model_file: Path, tmp_path: Path) -> None:
    src = frames_folder(tmp_path / "noise", 60)
    model, config = calibrated(model_file, 1e9)
    detect(model, config, str(src), tmp_path / "probe", progress=False)
    smoothed = [float(r["smoothed"]) for r in rows(tmp_path / "probe")]
    threshold = float(np.median(smoothed))
    runs = runs_above(smoothed, threshold)
    lengths = [b - a + 1 for a, b in runs]
    min_frames = 3
    assert min(lengths) < min_frames <= max(lengths)  # the footage has runs dropped as too short and events
    model, config = calibrated(model_file, threshold)
    options = DetectOptions(hysteresis=0.0, min_event_frames=min_frames)
    summary = detect(model, config, str(src), tmp_path / "out", options, progress=False)
    scored = rows(tmp_path / "out")
    alerted = {int(r["frame"]) for r in scored if r["alert"] == "1"}
    events = [json.loads(line) for line in (tmp_path / "out" / "events.jsonl").read_text().splitlines()]
    base = int(scored[0]["frame"])
    expected = [(a + base, b + base) for a, b in runs if b - a + 1 >= min_frames]
    assert [(e["start_frame"], e["end_frame"]) for e in events] == expected  # events start at their first frame above
    confirmed = {f for e in events for f in range(e["start_frame"] + min_frames - 1, e["end_frame"] + 1)}
    assert alerted == confirmed  # no alert outside an event, none before its confirmation
    assert summary["events"] == len(events) and summary["alert_frames"] == len(alerted)
    assert summary["above_threshold_rate"] == pytest.approx(sum(lengths) / len(scored), abs=1e-5)


def test_a_source_that_ends_early_reports_its_own_duration(model_file: Path, tmp_path: Path) -> None:
    short, long = frames_folder(tmp_path / "short", 8), frames_folder(tmp_path / "long", 80)
    model, config = load_model(model_file)
    detect(model, config, [str(short), str(long)], tmp_path / "out", progress=False)
    a = json.loads((tmp_path / "out" / "0_short" / "summary.json").read_text())
    b = json.loads((tmp_path / "out" / "1_long" / "summary.json").read_text())
    run = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert a["frames_scored"] == 4 and b["frames_scored"] == 76
    assert a["seconds"] < b["seconds"] / 2 and b["seconds"] <= run["seconds"]


def test_a_motion_cues_model_says_its_latency(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    config = tiny_config(task="recon", t_length=16)
    path = tmp_path / "recon.safetensors"
    save_model(path, MNAD(config.model), config)
    model, config = load_model(path)
    with caplog.at_level(logging.WARNING, logger="mnad.detect"):
        summary = detect(model, config, str(frames_folder(tmp_path / "f", 20)), tmp_path / "out", progress=False)
    assert summary["latency_frames"] == 7 and summary["latency_seconds"] == pytest.approx(7 / 25)
    assert any("7 frames after it arrives" in r.getMessage() for r in caplog.records)


def test_a_prediction_model_has_no_latency(model_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model, config = load_model(model_file)
    with caplog.at_level(logging.WARNING, logger="mnad.detect"):
        summary = detect(model, config, str(frames_folder(tmp_path / "f", 8)), tmp_path / "out", progress=False)
    assert summary["latency_frames"] == 0 and not any("after it arrives" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("kwargs, option", [
    ({"hysteresis": math.nan}, "--hysteresis"), ({"hysteresis": math.inf}, "--hysteresis"),
    ({"hysteresis": -0.1}, "--hysteresis"), ({"hysteresis": 5.0}, "--hysteresis"),
    ({"min_event_frames": 1.5}, "--min-event-frames"), ({"min_event_frames": 0}, "--min-event-frames"),
    ({"max_frames": 2.5}, "--max-frames"), ({"max_frames": True}, "--max-frames"),
])
def test_bad_event_options_are_refused(kwargs: dict, option: str) -> None:
    with pytest.raises(ConfigError, match=option):
        DetectOptions(**kwargs)


def test_the_tracker_refuses_a_non_finite_hysteresis() -> None:
    with pytest.raises(ConfigError, match="--hysteresis"):
        EventTracker(0.5, hysteresis=math.nan)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_cli_refuses_a_non_finite_hysteresis(model_file: Path, tmp_path: Path, value: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    src = frames_folder(tmp_path / "f", 8)
    code = main(["detect", str(src), "--checkpoint", str(model_file), "--out", str(tmp_path / "out"), "--hysteresis", value])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("mnad: error:")]
    assert code == 2 and len(errors) == 1 and "--hysteresis" in errors[0] and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("source, out, options, what", [
    (b"short.avi", "out", None, "source"), (None, "out", None, "source"), (["a", b"b"], "out", None, "source"),
    ("a", None, None, "out_dir"), ("a", "out", {"hysteresis": 0.1}, "options"),
])
def test_detect_checks_its_arguments(model_file: Path, tmp_path: Path, source: object, out: object, options: object,
                                     what: str) -> None:
    model, config = load_model(model_file)
    out = tmp_path / out if isinstance(out, str) else out
    with pytest.raises(ConfigError, match=what):
        detect(model, config, source, out, options, progress=False)


def test_an_int_source_is_a_camera_index(model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mnad.detect

    seen = []

    def opened(source: str, options: object) -> None:
        seen.append(source)
        raise ConfigError("stop here")

    monkeypatch.setattr(mnad.detect, "FrameSource", opened)
    model, config = load_model(model_file)
    with pytest.raises(ConfigError, match="stop here"):
        detect(model, config, 0, tmp_path / "out", progress=False)
    assert seen == ["0"]  # as the CLI passes it


def test_with_hysteresis_frames_below_the_threshold_alert(model_file: Path, tmp_path: Path) -> None:
    """alert_frames is not bounded by the frames above the threshold: an open event's frames between threshold -
    hysteresis and the threshold keep it open and alert (summary.json's comment and docs/detect.md say so)."""
    src = frames_folder(tmp_path / "noise", 40)
    model, config = calibrated(model_file, 1e9)
    detect(model, config, str(src), tmp_path / "probe", progress=False)
    smoothed = [float(r["smoothed"]) for r in rows(tmp_path / "probe")]
    threshold = float(np.median(smoothed))
    model, config = calibrated(model_file, threshold)
    options = DetectOptions(hysteresis=1.0, min_event_frames=1)  # once open, an event stays open
    summary = detect(model, config, str(src), tmp_path / "out", options, progress=False)
    scored = rows(tmp_path / "out")
    above = sum(float(r["smoothed"]) > threshold for r in scored)
    below_alerting = [r for r in scored if r["alert"] == "1" and float(r["smoothed"]) <= threshold]
    assert below_alerting and summary["alert_frames"] > above
    assert summary["above_threshold_rate"] == pytest.approx(above / len(scored), abs=1e-5)


def test_a_source_named_in_bytes_that_are_not_utf8_gives_a_valid_summary(model_file: Path, tmp_path: Path) -> None:
    """Each field of summary.json that holds a source's path (its error, how it ended) is written printably: lone
    surrogates there made summary.json invalid for strict JSON readers."""
    import os

    good = frames_folder(tmp_path / "good", 8)
    bad = frames_folder(tmp_path / "bad", 8).rename(tmp_path / os.fsdecode(b"caf\xe9"))  # (cv2.imwrite crashes on such names)
    (bad / "00006.png").write_bytes(b"not a picture")  # lost after 2 frames scored: its error names the file
    short = frames_folder(tmp_path / "short", 2).rename(tmp_path / os.fsdecode(b"n\xe9e"))  # scores nothing
    model, config = load_model(model_file)
    with pytest.raises(DataError, match="2 of 3 sources failed"):
        detect(model, config, [str(good), str(bad), str(short)], tmp_path / "out", progress=False)
    for path in (tmp_path / "out" / "summary.json", tmp_path / "out" / "1_caf" / "summary.json"):
        text = path.read_bytes().decode("utf-8")
        assert "\\ud" not in text.lower(), text  # no escaped lone surrogate
    streams = json.loads((tmp_path / "out" / "summary.json").read_text())["streams"]
    assert "caf\\xe9" in streams[1]["error"] and streams[1]["ended_by"].startswith("error: ") and "caf\\xe9" in streams[1]["ended_by"]
    assert streams[2]["error"].endswith("n\\xe9e: no frame was scored (5 frames make the first clip)")


def test_event_measures_take_each_anomaly_of_a_video_on_its_own() -> None:
    """A video with several anomalies (Avenue, ShanghaiTech): each is caught or missed by itself and its delay runs
    from its own first frame (was: from the video's first abnormal frame, so a missed first anomaly made a later,
    caught one look late by the frames between them)."""
    frames = np.arange(4, 104)  # the first 4 frames start the first clip: never scored
    labels = np.zeros(100, np.int8)
    labels[6:16] = 1  # frames 10..19: missed
    labels[56:76] = 1  # frames 60..79: caught 3 frames in
    plain = np.zeros(100, np.int8)
    events = [Event(63, 70, 65, 2.0, 6.3, 7.0, "a"), Event(30, 33, 31, 1.5, 3.0, 3.3, "a"),
              Event(40, 45, 41, 1.2, 4.0, 4.5, "b")]
    measures = event_measures(events, [("a", frames, labels), ("b", frames, plain)], fps=10.0)
    assert anomalies(frames, labels) == [(10, 19), (60, 79)]
    assert measures["anomalies"] == 2 and measures["anomalies_caught"] == 1
    assert measures["mean_delay_frames"] == 3.0  # was 53: from frame 10
    assert measures["videos_with_anomaly"] == 1 and measures["videos_caught"] == 1 and measures["false_events"] == 2
    # an event open before an anomaly starts catches it with no delay; one spanning two anomalies catches both
    both = event_measures([Event(8, 70, 9, 3.0, 0.8, 7.0, "a")], [("a", frames, labels)], fps=10.0)
    assert both["anomalies_caught"] == 2 and both["mean_delay_frames"] == 0.0 and both["false_events"] == 0
