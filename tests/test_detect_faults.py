"""mnad detect as an operator meets it: wrong sources, silent streams, signals, reruns, exported models."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import frames_folder

from mnad.annotate import TIMELINE_HEIGHT, annotated_frame, video_size
from mnad.cli import main
from mnad.data.streams import FrameSource, SourceOptions
from mnad.errors import CheckpointError, DataError
from mnad.export import export_onnx, load_onnx


def test_a_url_is_never_a_glob() -> None:
    # '?' and '[' are common in camera URLs (tokens); the URL is opened as a stream, and refused when it gives nothing
    source = FrameSource("http://127.0.0.1:9/cam?token=a[1]", SourceOptions(reconnects=0, open_timeout=2))
    with pytest.raises(DataError, match="gave no frames"):
        list(source)


def test_a_mistyped_scheme_is_refused_at_once() -> None:
    with pytest.raises(DataError, match="unknown stream scheme 'rstp'"):
        FrameSource("rstp://camera/stream")


def test_a_missing_camera_is_an_error_not_an_empty_run() -> None:
    with pytest.raises(DataError, match="gave no frames"):
        list(FrameSource("57", SourceOptions(reconnects=1, retry_delay=0.0, open_timeout=1, read_timeout=1)))


def test_a_silent_stream_server_times_out() -> None:
    """A server that accepts the connection and never answers must not hang the detector."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    held: list[socket.socket] = []

    def accept() -> None:
        server.settimeout(30)
        try:
            while True:
                held.append(server.accept()[0])  # accept, say nothing
        except OSError:
            pass

    threading.Thread(target=accept, daemon=True).start()
    port = server.getsockname()[1]
    started = time.monotonic()
    try:
        with pytest.raises(DataError, match="gave no frames"):
            list(FrameSource(f"rtsp://127.0.0.1:{port}/stream", SourceOptions(reconnects=1, retry_delay=0.0, open_timeout=2,
                                                                              read_timeout=2)))
    finally:
        server.close()
        for s in held:
            s.close()
    assert time.monotonic() - started < 30


def test_fps_must_be_positive() -> None:
    with pytest.raises(DataError, match="--fps"):
        SourceOptions(fps=0)


def test_detect_cli_errors_are_one_line(model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    short = frames_folder(tmp_path / "short", 3)  # fewer frames than one clip of 5
    assert main(["detect", str(short), "--checkpoint", str(model_file), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no frame was scored" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "summary.json").exists()  # nothing scored: no outputs, so a retry is no "earlier run"
    assert main(["detect", str(short), "--checkpoint", str(model_file), "--out", str(tmp_path / "p"), "--quiet", "--fps", "0"]) == 2
    assert "--fps) must be > 0" in capsys.readouterr().err


def test_uncalibrated_detection_says_so_loudly(model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = frames_folder(tmp_path / "f", 8)
    assert main(["detect", str(folder), "--checkpoint", str(model_file), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "NO ALERTS" in captured.err and "mnad calibrate" in captured.err
    assert "NO ALERTS" in json.loads((tmp_path / "o" / "summary.json").read_text())["note"]


def test_annotated_video_keeps_the_source_frame_rate(model_file: Path, tmp_path: Path) -> None:
    folder = frames_folder(tmp_path / "f", 12, size=64)
    path = tmp_path / "v.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 64))
    for f in sorted(folder.iterdir()):
        writer.write(cv2.imread(str(f)))
    writer.release()
    assert main(["detect", str(path), "--checkpoint", str(model_file), "--out", str(tmp_path / "o"), "--quiet", "--save-video"]) == 0
    capture = cv2.VideoCapture(str(tmp_path / "o" / "annotated.mkv"))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
    ok, picture = capture.read()
    # a 64 px frame is scaled up 5 times to MIN_WIDTH (320), its text readable; the timeline under it
    assert ok and picture.shape[1] == 320 and picture.shape[0] == 320 + TIMELINE_HEIGHT


def test_annotated_video_of_tiny_frames_is_scaled_up_and_holds_every_frame(model_file: Path, tmp_path: Path) -> None:
    """Frames too small to write on (5x3; 1x1 opened no writer) are scaled up by a whole factor to even sides (the
    encoder's need); a picture of another size than the first (a camera reconnecting at another resolution), which a
    writer drops without a word, is brought to the video's size."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        cv2.imwrite(str(folder / f"{i:03d}.png"), rng.integers(0, 255, (3, 5, 3), np.uint8))
    out = tmp_path / "o"
    assert main(["detect", str(folder), "--checkpoint", str(model_file), "--out", str(out), "--quiet", "--save-video"]) == 0
    scored = json.loads((out / "summary.json").read_text())["frames_scored"]
    capture = cv2.VideoCapture(str(out / "annotated.mkv"))
    shapes = []
    while (got := capture.read())[0]:
        shapes.append(got[1].shape)
    assert scored > 0 and len(shapes) == scored and set(shapes) == {(192 + TIMELINE_HEIGHT, 320, 3)}
    assert video_size(3, 5) == (320, 192) and video_size(1, 1) == (320, 320) and video_size(400, 641) == (642, 400)
    other = annotated_frame(np.zeros((48, 80, 3), np.uint8), None, frame=0, seconds=0.0, smoothed=0.0, threshold=None,
                            alert=False, history=deque([0.0], maxlen=10), fps=10.0, size=(320, 192))
    assert other.shape == (192 + TIMELINE_HEIGHT, 320, 3)


def test_a_video_writer_that_drops_frames_fails_the_run(model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """OpenCV's writer returns nothing when a picture is not written (a full disk): the closed file is read back."""
    real = cv2.VideoWriter

    class Dropping:
        def __init__(self, *args: object) -> None:
            self.writer, self.count = real(*args), 0

        def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
            return self.writer.isOpened()

        def write(self, picture: np.ndarray) -> None:
            self.count += 1
            if self.count <= 3:
                self.writer.write(picture)

        def release(self) -> None:
            self.writer.release()

    monkeypatch.setattr(cv2, "VideoWriter", Dropping)
    folder = frames_folder(tmp_path / "f", 12)
    out = tmp_path / "o"
    assert main(["detect", str(folder), "--checkpoint", str(model_file), "--out", str(out), "--quiet", "--save-video"]) == 2
    err = capsys.readouterr().err
    assert "annotated.mkv: the annotated video holds 3 of its 8 frames" in err and "Traceback" not in err
    assert (out / "scores.csv").read_text().count("\n") == 9  # the scores are kept


def test_sigterm_completes_the_outputs_and_exits_143(model_file: Path, tmp_path: Path) -> None:
    folder = frames_folder(tmp_path / "long", 3000)
    out = tmp_path / "o"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    process = subprocess.Popen([sys.executable, "-m", "mnad", "detect", str(folder), "--checkpoint", str(model_file), "--out", str(out),
                                "--quiet", "--threads", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    scores = out / "scores.csv"
    deadline = time.monotonic() + 120
    while (not scores.exists() or scores.read_text().count("\n") < 21) and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err.decode()
    summary = json.loads((out / "summary.json").read_text())
    rows = scores.read_text().strip().splitlines()
    assert summary["ended_by"] == "stopped (SIGTERM)" and 20 <= summary["frames_scored"] == len(rows) - 1 < 2996
    assert (out / "events.csv").exists()


def test_exported_model_files_are_checked(model_file: Path, tmp_path: Path) -> None:
    from mnad.checkpoint import load_model

    model, config = load_model(model_file)
    with pytest.raises(DataError, match="does not exist"):
        export_onnx(model, config, tmp_path / "missing" / "m.onnx")
    export_onnx(model, config, tmp_path / "m.onnx")
    assert load_onnx(tmp_path / "m.onnx").config.model == config.model
    side = tmp_path / "m.onnx.json"
    data = json.loads(side.read_text())
    data["config"]["eval"]["gamma"] = 0.5  # an edited sidecar
    side.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_onnx(tmp_path / "m.onnx")
    side.write_text(side.read_text()[:100])  # a truncated one
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        load_onnx(tmp_path / "m.onnx")
