"""A second audit of the live detection path, as a camera run for days meets it: --max-frames against a camera that
stalls after the frames asked for, stream states restored with other scoring settings, and what a live source's
timestamps and frame rate say."""

from __future__ import annotations

import csv
import dataclasses
import http.server
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import tiny_config

from mnad import detect as detect_module
from mnad.calibrate import with_calibration
from mnad.calibration import Calibration
from mnad.checkpoint import load_model
from mnad.cli import main
from mnad.data.streams import SourceOptions, shown_source
from mnad.detect import DetectOptions, detect
from mnad.errors import CheckpointError
from mnad.events import EventTracker
from mnad.model import MNAD
from mnad.outputs import read_detect_scores
from mnad.stream import StreamScorer


class _Camera(http.server.BaseHTTPRequestHandler):
    """A camera-like MJPEG stream (no frame count): ``frames`` frames, then silent until released; ``connections``
    times (later connections get 404, as a camera that went away); ``interval`` seconds between frames."""

    frames, served, connections, interval, stall = 8, 0, 1, 0.0, True
    release: threading.Event

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        cls = type(self)
        cls.served += 1
        if cls.served > cls.connections:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        rng = np.random.default_rng(cls.served)  # another scene after each reconnection
        for _ in range(cls.frames):
            jpg = cv2.imencode(".jpg", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))[1].tobytes()
            self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%b\r\n" % (len(jpg), jpg))
            if cls.interval:
                self.wfile.flush()
                time.sleep(cls.interval)
        self.wfile.flush()
        if cls.stall:
            cls.release.wait(20)


@contextmanager
def camera(frames: int, connections: int = 1, interval: float = 0.0, stall: bool = True) -> Iterator[str]:
    handler = type("Camera", (_Camera,), {"frames": frames, "served": 0, "connections": connections, "interval": interval,
                                          "stall": stall, "release": threading.Event()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/cam.mjpg"
    finally:
        handler.release.set()
        server.shutdown()
        server.server_close()


def test_max_frames_ends_at_the_last_frame_asked_for_not_at_the_next(model_file: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A camera that stalls (or goes away) right after the --max-frames frames asked for: the run scored them all and
    ends at once, exit 0 (was: waited for a frame past the limit, through the read timeout and every reconnection, then
    failed as a lost source, exit 2)."""
    with camera(8) as url:
        started = time.monotonic()
        code = main(["detect", url, "--checkpoint", str(model_file), "--out", str(tmp_path / "o"), "--quiet",
                     "--max-frames", "8", "--reconnects", "2", "--read-timeout", "10", "--open-timeout", "2"])
        took = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 0, err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["ended_by"] == "--max-frames" and summary["frames_scored"] == 4  # frames 4..7 (clips of 5)
    assert took < 8, took  # not a read timeout of 10 s (the stalled reader is left after a 2 s join)


# ------------------------------------------------------------------------------- a stream state restored elsewhere

CALIBRATION = Calibration(psnr_low=5.0, psnr_high=40.0, distance_low=0.0, distance_high=2.0, threshold=0.5,
                          false_alarm_rate=0.05, smoothing=5, frames=100)


def scorer(*overrides: str, **options: object) -> StreamScorer:
    torch.manual_seed(0)
    config = tiny_config().override(list(overrides))
    return StreamScorer.for_model(MNAD(config.model).eval(), config, **options)


def saved(tmp_path: Path, *overrides: str, **options: object) -> Path:
    first = scorer(*overrides, **options)
    rng = np.random.default_rng(0)
    for _ in range(12):
        first.push(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    path = tmp_path / "state.safetensors"
    first.save_state(path)
    return path


@pytest.mark.parametrize(("saved_with", "restored_with", "field"), [
    (["eval.psnr_region=frame"], ["eval.psnr_region=patch"], "psnr_region"),  # the running PSNR range is of another term
    (["eval.distance_region=frame"], ["eval.distance_region=patch"], "distance_region"),
    (["eval.alpha=0.6"], ["eval.alpha=0.9"], "alpha"),  # the trailing mean's scores mix the terms otherwise
    (["eval.psnr_peak=one"], ["eval.psnr_peak=max"], "psnr_peak"),
    # the memory items evolved under the state's test-time update, which the restored stream would go on otherwise
    (["eval.gamma=1.0"], ["eval.gamma=0.0"], "gamma"),
    (["eval.gamma=1.0"], ["eval.gamma=1.0", "eval.test_update=false"], "test_update"),
    (["eval.test_update=false"], ["eval.gamma=1.0"], "test_update"),
    (["eval.regular_score=code"], ["eval.regular_score=paper"], "regular_score"),
])
def test_a_state_restored_with_other_scoring_settings_is_refused(tmp_path: Path, saved_with: list[str],
                                                                 restored_with: list[str], field: str) -> None:
    """A camera restarted with other scoring settings: the state's running ranges and trailing mean hold numbers of
    the other score, which the restored stream would mix with its own (was: taken without a word)."""
    path = saved(tmp_path, *saved_with, normalization="causal")
    with pytest.raises(CheckpointError, match=rf"state\.safetensors: the stream state belongs to another model or scorer: {field} [^,]*$"):
        scorer(*restored_with, normalization="causal").load_state(path)  # that setting alone is named
    scorer(*saved_with, normalization="causal").load_state(path)  # the same settings: taken


def test_a_state_restored_under_another_calibration_is_refused(tmp_path: Path) -> None:
    """Recalibrated between the save and the restart: the trailing mean's scores are on the old calibration's scale
    and the events would be judged against another threshold (was: taken)."""
    path = saved(tmp_path, normalization="calibrated", calibration=CALIBRATION)
    other = dataclasses.replace(CALIBRATION, psnr_low=10.0, threshold=0.7)
    with pytest.raises(CheckpointError, match=r"another model or scorer: calibration "):
        scorer(normalization="calibrated", calibration=other).load_state(path)
    scorer(normalization="calibrated", calibration=CALIBRATION).load_state(path)


# ------------------------------------------------------------------------------- a camera's password

def test_a_cameras_password_is_never_written_or_shown(model_file: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A camera URL carries its password (in the URL's user part, or a token in its query); summary.json, the run's
    summary, warnings and errors are shared and logged (was: the password in all of them; the folder name alone left
    it out)."""
    with camera(8, connections=2) as url:
        host = url.split("//", 1)[1]
        secret = f"http://admin:p@ss-S3CRET@{host}?channel=1&token=T0KEN-S3CRET"
        code = main(["detect", secret, url, "--checkpoint", str(model_file), "--out", str(tmp_path / "o"), "--quiet",
                     "--reconnects", "0", "--read-timeout", "1", "--open-timeout", "2"])
    err = capfd.readouterr().err  # OpenCV's and FFmpeg's own lines too
    assert code == 2 and "Traceback" not in err and "lost after 8 frames" in err  # each stalls after 8 frames
    shown = [err, *(p.read_text() for p in (tmp_path / "o").rglob("*.json"))]
    assert not any("S3CRET" in text for text in shown), err
    run = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert run["streams"][0]["source"] == f"http://admin:***@{host}?channel=1&token=***"
    assert run["streams"][0]["folder"] == "0_127.0.0.1_cam.mjpg"


def test_shown_source_hides_only_secrets() -> None:
    assert shown_source("rtsp://cam.local:554/live?channel=2") == "rtsp://cam.local:554/live?channel=2"
    assert shown_source("rtsp://user@cam/live") == "rtsp://user@cam/live"  # no password
    assert shown_source("rtsp://user:pw@cam/live") == "rtsp://user:***@cam/live"
    assert shown_source("rtsp://a:b@c@d/x?pwd=1&apikey=2&n=3") == "rtsp://a:***@d/x?pwd=***&apikey=***&n=3"
    assert shown_source("videos/a:b@c.avi") == "videos/a:b@c.avi"  # not a URL
    assert shown_source("0") == "0"


# ------------------------------------------------------------------------------- a camera's pace

def run_camera(model_file: Path, out: Path, frames: int, interval: float) -> tuple[dict, str]:
    with camera(frames, interval=interval) as url:
        code = main(["detect", url, "--checkpoint", str(model_file), "--out", str(out), "--quiet", "--max-frames", str(frames),
                     "--read-timeout", "5", "--open-timeout", "2"])
    assert code == 0
    return json.loads((out / "summary.json").read_text()), url


def test_a_cameras_frame_rate_is_the_rate_its_frames_came_at(model_file: Path, tmp_path: Path) -> None:
    """An MJPEG camera at 10 frames/s: FFmpeg reports 25 for any MJPEG stream, which summary.json gave as the source's
    rate (and latency_seconds was reckoned with); its frames' times are read off the clock, and so is its rate now."""
    summary, _ = run_camera(model_file, tmp_path / "o", 12, 0.1)
    assert 7 < summary["source_fps"] < 12, summary["source_fps"]
    assert summary["behind_seconds"] is not None and summary["behind_seconds"] < 1  # scoring kept up


def test_a_camera_faster_than_scoring_is_said_to_fall_behind(model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """Frames that come faster than they are scored wait in the camera's and the network's buffers (or are dropped
    there): the alerts fall ever further behind the camera, which the run now says, in a warning and in summary.json
    (was: not a word; nothing in the run could tell)."""
    monkeypatch.setattr(detect_module, "FALLING_BEHIND", 0.01)
    original = StreamScorer.consume

    def slow(self: StreamScorer, *args: object, **kwargs: object) -> object:
        time.sleep(0.02)  # a scorer slower than a camera that sends its frames at once
        return original(self, *args, **kwargs)

    monkeypatch.setattr(StreamScorer, "consume", slow)
    with caplog.at_level("WARNING"):
        summary, url = run_camera(model_file, tmp_path / "o", 40, 0.0)
    assert summary["behind_seconds"] > 0.1
    said = [r.getMessage() for r in caplog.records if "faster than they are scored" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(url)


def test_footage_that_waits_for_scoring_is_never_behind(model_file: Path, tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(8):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((32, 32, 3), 30 * i, np.uint8))
    assert main(["detect", str(folder), "--checkpoint", str(model_file), "--out", str(tmp_path / "o"), "--quiet", "--fps", "7"]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["behind_seconds"] is None and summary["source_fps"] == 7


# ------------------------------------------------------------------------------- a reconnection

def test_no_clip_spans_a_reconnection(model_file: Path, tmp_path: Path) -> None:
    """A camera that dropped and came back: the frames before the gap and after it are not consecutive (seconds or
    minutes apart, another scene), so no clip mixes them, as no clip spans two videos; the first frames after it wait
    for a clip of their own, as a source's first frames do (was: scored by clips mixing both sides of the gap, the
    prediction error of the jump taken for an anomaly after every reconnection)."""
    with camera(8, connections=2, stall=False) as url:
        code = main(["detect", url, "--checkpoint", str(model_file), "--out", str(tmp_path / "o"), "--quiet", "--max-frames", "16",
                     "--reconnects", "1", "--read-timeout", "5", "--open-timeout", "2"])
    assert code == 0
    rows = read_detect_scores(tmp_path / "o" / "scores.csv")
    assert [int(r["frame"]) for r in rows] == [4, 5, 6, 7, 12, 13, 14, 15]  # frame numbers stay the source's positions
    times = [float(r["time"]) for r in rows]
    assert times == sorted(times) and times[4] - times[3] > 0.5  # the gap (the retry delay) is in the times
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["frames_scored"] == 8 and summary["reconnections"] == 1


# ------------------------------------------------------------------------------- an event open at the end

def test_an_event_still_open_at_the_end_says_so(model_file: Path, tmp_path: Path) -> None:
    """The footage ended (or --max-frames, Ctrl-C) inside an event: its end is where scoring stopped, not where the
    score fell back, and events.csv and events.jsonl now say so (was: written as if it had ended there)."""
    model, config = load_model(model_file)
    calibration = Calibration(psnr_low=0.0, psnr_high=40.0, distance_low=0.0, distance_high=1.0, threshold=-1.0,
                              false_alarm_rate=0.05, smoothing=1, frames=100)  # every frame above: one event to the end
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(10):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((32, 32, 3), 20 * i, np.uint8))
    detect(model, with_calibration(config, calibration), str(folder), tmp_path / "o", progress=False)
    with open(tmp_path / "o" / "events.csv", encoding="utf-8", newline="") as handle:
        events = list(csv.DictReader(handle))
    assert [(e["start_frame"], e["end_frame"], e["open"]) for e in events] == [("4", "9", "True")]
    assert [json.loads(line)["open"] for line in (tmp_path / "o" / "events.jsonl").read_text().splitlines()] == [True]


def test_an_event_the_score_ended_is_not_open() -> None:
    tracker = EventTracker(0.5, hysteresis=0.0, min_frames=2)
    ended = [e for i, s in enumerate([0.9, 0.9, 0.1, 0.9, 0.9]) if (e := tracker.push(i, i / 10, s)) is not None]
    last = tracker.finish()
    assert [(e.start_frame, e.end_frame, e.open) for e in ended] == [(0, 1, False)]
    assert last is not None and (last.start_frame, last.end_frame, last.open) == (3, 4, True)


# ------------------------------------------------------------------------------- when, by the wall clock

def test_a_cameras_times_are_anchored_to_the_wall_clock(model_file: Path, tmp_path: Path) -> None:
    """A camera's frame times are seconds after its reader started, which no output recorded: after days, an event at
    183245.2 s could not be told when it happened (was: no wall-clock time anywhere). summary.json gives the wall-clock
    time of time 0, and each events.jsonl line its start and end by the wall clock, as it is written."""
    model, config = load_model(model_file)
    calibration = Calibration(psnr_low=0.0, psnr_high=40.0, distance_low=0.0, distance_high=1.0, threshold=-1.0,
                              false_alarm_rate=0.05, smoothing=1, frames=100)
    before = time.time()
    with camera(10) as url:
        detect(model, with_calibration(config, calibration), url, tmp_path / "o",
               DetectOptions(max_frames=10, source=SourceOptions(read_timeout=5, open_timeout=2)), progress=False)
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    start = datetime.fromisoformat(summary["clock_start"]).timestamp()
    assert before - 0.01 <= start <= time.time()
    [event] = [json.loads(line) for line in (tmp_path / "o" / "events.jsonl").read_text().splitlines()]
    assert datetime.fromisoformat(event["start_clock"]).timestamp() == pytest.approx(start + event["start_time"], abs=2e-3)
    assert datetime.fromisoformat(event["end_clock"]).timestamp() == pytest.approx(start + event["end_time"], abs=2e-3)


def test_footage_in_files_has_no_wall_clock(model_file: Path, tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(6):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((32, 32, 3), 30 * i, np.uint8))
    summary = detect(*load_model(model_file), str(folder), tmp_path / "o", progress=False)
    assert summary["clock_start"] is None


# ------------------------------------------------------------------------------- a time-lapse's annotated video

def test_a_time_lapse_gets_its_annotated_video(model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A time-lapse (one frame in 1000 s, within --fps's range): mp4v refuses such a rate, and the run failed at its
    first scored frame with 'cannot write the annotated video (no mp4v encoder?)'; it now plays at 1 frame/s."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(7):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((32, 32, 3), 30 * i, np.uint8))
    code = main(["detect", str(folder), "--checkpoint", str(model_file), "--out", str(tmp_path / "o"), "--quiet", "--fps", "0.001",
                 "--save-video"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["annotated_video"] and summary["source_fps"] == 0.001
    capture = cv2.VideoCapture(str(tmp_path / "o" / "annotated.mkv"))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 3 and capture.get(cv2.CAP_PROP_FPS) == 1.0
    capture.release()
