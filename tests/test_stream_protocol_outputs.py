"""The stream protocol of ``mnad evaluate``: its results on the command line, the delay to an event's alert (not only
to its start), and own footage timed at the rate its video files record."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import FakeVideo, noise_video, tiny_config

from mnad.calibrate import calibrate, with_calibration
from mnad.calibration import Calibration
from mnad.cli import print_metrics
from mnad.data import VideoFile, split_videos
from mnad.evaluate import evaluate
from mnad.events import EventTracker, event_measures
from mnad.model import MNAD


def tracked(scores: list[float], min_frames: int) -> tuple[list, int | None]:
    """The events of one video's scores (frame i scored ``scores[i]``) and the first frame that alerts."""
    tracker, events, first_alert = EventTracker(0.5, min_frames=min_frames), [], None
    for frame, score in enumerate(scores):
        ended = tracker.push(frame, frame / 25, score, "v")
        if tracker.alerting and first_alert is None:
            first_alert = frame
        events += [ended] if ended is not None else []
    last = tracker.finish()
    return events + ([last] if last is not None else []), first_alert


def test_the_alert_delay_runs_to_the_frame_the_event_alerts_at() -> None:
    """An anomaly from frame 10, scored 0.9 (else 0.1), min_frames 3: the first alert is at frame 12, 2 frames late
    (was: only the delay to the event's start, 0, which the alert never had)."""
    scores = [0.9 if 10 <= f < 20 else 0.1 for f in range(30)]
    events, first_alert = tracked(scores, min_frames=3)
    [event] = events
    assert first_alert == 12 and event.alert_frame == 12 and event.alert_time == pytest.approx(12 / 25)
    assert event.start_frame == 10
    frames = np.arange(30)
    measures = event_measures(events, [("v", frames, (frames >= 10) & (frames < 20))], fps=25)
    assert measures["mean_alert_delay_frames"] == 2.0
    assert measures["mean_delay_frames"] == 0.0  # to the event's start, as the committed results have it


def test_the_alert_frame_counts_scored_frames_and_is_where_a_single_frame_event_opens() -> None:
    [event], first = tracked([0.1, 0.9, 0.1], min_frames=1)
    assert event.alert_frame == first == 1
    tracker = EventTracker(0.5, min_frames=3)
    for frame in (4, 9, 15):  # frames between were not scored (a stride, a reconnection): the 3rd scored frame alerts
        tracker.push(frame, frame / 25, 0.9, "v")
    assert tracker.alerting and tracker.current.alert_frame == 15


def test_events_made_by_hand_have_no_alert_delay() -> None:
    from mnad.events import Event

    frames = np.arange(10)
    measures = event_measures([Event(2, 5, 3, 0.9, 0.08, 0.2, "v")], [("v", frames, frames >= 3)], fps=25)
    assert measures["mean_delay_frames"] == 0.0 and measures["mean_alert_delay_frames"] is None


def test_detect_writes_each_events_alert_frame_where_its_alert_column_turns_on(model_file: Path, tmp_path: Path) -> None:
    from mnad.checkpoint import load_model
    from mnad.detect import DetectOptions, detect

    folder = tmp_path / "f"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        cv2.imwrite(str(folder / f"{i:03d}.png"), rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    model, config = load_model(model_file)
    cal = Calibration(psnr_low=0.0, psnr_high=40.0, distance_low=0.0, distance_high=1.0, threshold=-1.0,
                      false_alarm_rate=0.05, smoothing=1, frames=100)  # every frame above it: one event
    detect(model, with_calibration(config, cal), str(folder), tmp_path / "o", DetectOptions(min_event_frames=3), progress=False)
    [event] = [json.loads(line) for line in (tmp_path / "o" / "events.jsonl").read_text().splitlines()]
    rows = list(csv.DictReader((tmp_path / "o" / "scores.csv").open()))
    first_alert = next(int(r["frame"]) for r in rows if r["alert"] == "1")
    assert event["alert_frame"] == first_alert == event["start_frame"] + 2
    [listed] = list(csv.DictReader((tmp_path / "o" / "events.csv").open()))
    assert int(listed["alert_frame"]) == first_alert and float(listed["alert_time"]) == pytest.approx(event["alert_time"])


def model_and_config() -> tuple[MNAD, object]:
    torch.manual_seed(0)
    config = tiny_config()
    return MNAD(config.model).eval(), config


def calibrated(model: MNAD, config, root: Path):
    cal = calibrate(model, config, split_videos(root, "synthetic", "training"), false_alarm_rate=0.05, smoothing=3, progress=False)
    return with_calibration(config, cal)


def as_video_files(synthetic_root: Path, root: Path, rates: dict[str, float]) -> Path:
    """``synthetic_root``'s test videos (and labels) as MJPG video files at ``rates`` (by video), under ``root``."""
    target = root / "synthetic"
    (target / "testing" / "videos").mkdir(parents=True)
    shutil.copy(synthetic_root / "synthetic" / "frame_labels_synthetic.npy", target)
    for video in split_videos(synthetic_root, "synthetic", "testing"):
        writer = cv2.VideoWriter(str(target / "testing" / "videos" / f"{video.name}.avi"), cv2.VideoWriter_fourcc(*"MJPG"),
                                 rates[video.name], (32, 32))
        for i in range(len(video)):
            writer.write(video.frame(i, 32, 3))
        writer.release()
    return root


def test_the_stream_protocol_times_video_files_at_their_own_rate(synthetic_root: Path, tmp_path: Path) -> None:
    """Own footage's video files record their rate: the stream protocol times them at it (was: 25 whatever the
    container said; false events per minute at that rate: the test below), each at its own where they differ, and
    the metrics say which rate was used; --fps still wins."""
    model, config = model_and_config()
    cal_config = calibrated(model, config, synthetic_root)
    root = as_video_files(synthetic_root, tmp_path / "r", {"01": 7.5, "02": 7.5})
    stream = evaluate(model, cal_config, root, protocol="stream", progress=False)["stream"]
    events = stream["event_measures"]
    assert events["fps"] == pytest.approx(7.5) and "video_fps" not in events and "container" in stream["fps_source"]
    given = evaluate(model, cal_config, root, protocol="stream", progress=False, fps=10.0)["stream"]
    assert given["event_measures"]["fps"] == 10.0 and given["fps_source"] == "--fps"

    mixed = evaluate(model, cal_config, as_video_files(synthetic_root, tmp_path / "m", {"01": 7.5, "02": 12.5}),
                     protocol="stream", progress=False)["stream"]
    assert mixed["event_measures"]["video_fps"] == {"01": pytest.approx(7.5), "02": pytest.approx(12.5)}


def test_the_command_line_prints_the_stream_protocols_results(synthetic_root: Path, capsys: pytest.CaptureFixture) -> None:
    """``mnad evaluate --protocol stream`` prints the realised false-alarm rates, the events and the delays (was: only
    the AUCs: without --out they were computed and thrown away)."""
    model, config = model_and_config()
    metrics = evaluate(model, calibrated(model, config, synthetic_root), synthetic_root, protocol="stream", progress=False)
    print_metrics(metrics)
    out = capsys.readouterr().out
    events = metrics["stream"]["event_measures"]
    assert "frame-level AUC" in out and "stream protocol" in out
    assert "false-alarm rate 0.05: threshold" in out and "realised false-alarm rate" in out and "detection rate" in out
    assert f"events (threshold {metrics['stream']['event_threshold']:.4g}, at least 3 frames): {events['events']}" in out
    assert f"anomalies caught {events['anomalies_caught']} of {events['anomalies']}, videos" in out
    assert "per minute of normal footage" in out and "frames to the alert" in out and "at 25 fps" in out
    print_metrics({k: v for k, v in metrics.items() if k != "stream"})
    assert "stream protocol" not in capsys.readouterr().out  # the published protocol has none


def test_stream_rates_take_each_video_files_own_rate_else_the_dataset_or_the_default(tmp_path: Path) -> None:
    from mnad.evaluate import stream_rates  # the rates chosen: new with the fix

    slow, fast = VideoFile(noise_video(tmp_path / "a.avi", 4, 5.0)), VideoFile(noise_video(tmp_path / "b.avi", 4, 30.0))
    folder = FakeVideo("c", 4)  # a frame folder records no rate
    assert stream_rates([slow], "", None)[:2] == (pytest.approx(5.0), {})
    fps, own, said = stream_rates([slow, fast], "", None)
    assert fps == 25.0 and own == {"a": pytest.approx(5.0), "b": pytest.approx(30.0)} and "own" in said
    fps, own, said = stream_rates([slow, folder], "ped2", None)
    assert fps == 10.0 and own == {"a": pytest.approx(5.0)} and "ped2" in said
    assert stream_rates([folder], "", None) == (25.0, {}, "the default 25 (the footage records no rate: set --fps)")
    assert stream_rates([slow, folder], "", 12.0) == (12.0, {}, "--fps")


def test_false_events_per_minute_count_each_videos_normal_frames_at_its_own_rate() -> None:
    from mnad.events import Event

    frames = np.arange(600)
    normal = np.zeros(600)
    false_event = Event(5, 9, 6, 0.9, 0.0, 0.0, "a", alert_frame=7)
    one_rate = event_measures([false_event], [("a", frames, normal), ("b", frames, normal)], fps=10)
    assert one_rate["false_events_per_minute"] == pytest.approx(1 / 2)  # 1200 frames at 10 fps: 2 minutes
    own = event_measures([false_event], [("a", frames, normal), ("b", frames, normal)], fps=10, video_fps={"b": 5.0})
    assert own["false_events_per_minute"] == pytest.approx(1 / 3) and own["video_fps"] == {"b": 5.0}  # 1 + 2 minutes


def test_the_report_shows_both_delays_and_where_the_frame_rate_came_from() -> None:
    from mnad.report.page import _stream_html

    stream = {"at_false_alarm_rate": {}, "event_threshold": 0.5, "fps_source": "the video files' own (their containers')",
              "event_measures": {"events": 2, "mean_delay_frames": 1.0, "mean_alert_delay_frames": 3.0, "fps": 7.5}}
    page = _stream_html(stream).replace("&#x27;", "'")
    assert "mean delay to the alert</th><td><code>3 frames (at 7.5 fps, the video files' own" in page
    assert "mean delay to the event's start</th><td><code>1 frames (its first frame above the threshold" in page
    older = _stream_html({**stream, "fps_source": None, "event_measures": {"mean_delay_frames": 1.0, "fps": 10.0}})
    assert "3 frames" not in older and "n/a frames (at 10 fps)" in older  # an older evaluation has no alert delay
