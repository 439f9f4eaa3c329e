"""Sources an operator can hand the detector by mistake or meet in the field: video files whose names are not UTF-8,
video files served over HTTP (which end, and must not be replayed), servers that stall or keep dropping, absurd --fps."""

from __future__ import annotations

import csv
import http.server
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import frames_folder, noise_video

from mnad.cli import main
from mnad.data.streams import SourceOptions
from mnad.errors import DataError

N_FRAMES = 24


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24-frame MJPG .avi at 10 fps: its header gives the frame count, and half of it still decodes."""
    return noise_video(tmp_path_factory.mktemp("video") / "v.avi", N_FRAMES, 10.0)


class _Server(http.server.BaseHTTPRequestHandler):
    """Serves one video ``limit`` times (then 404, so a source that replays it for ever still ends here):
    'file' sends it whole, 'stall' half of it then holds the connection silent, 'mjpeg' three frames of a
    camera-like multipart stream (no frame count) then closes."""

    data, mode, limit = b"", "file", 6
    paths: list[str]
    release: threading.Event

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        cls = type(self)
        cls.paths.append(self.path)
        if len(cls.paths) > cls.limit:
            self.send_error(404)
            return
        self.send_response(200)
        if cls.mode == "mjpeg":
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            for i in range(3):
                jpg = cv2.imencode(".jpg", np.full((32, 32, 3), 40 * i, np.uint8))[1].tobytes()
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%b\r\n" % (len(jpg), jpg))
            return
        self.send_header("Content-Type", "video/x-msvideo")
        self.send_header("Content-Length", str(len(cls.data)))
        self.end_headers()
        if cls.mode == "stall":
            self.wfile.write(cls.data[: len(cls.data) // 2])
            self.wfile.flush()
            cls.release.wait(20)
            return
        self.wfile.write(cls.data)


@contextmanager
def serve(mode: str, data: bytes = b"") -> Iterator[tuple[str, type[_Server]]]:
    handler = type("Handler", (_Server,), {"data": data, "mode": mode, "paths": [], "release": threading.Event()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v.avi", handler
    finally:
        handler.release.set()
        server.shutdown()
        server.server_close()


def detect(model_file: Path, source: str, out: Path, *extra: str) -> int:
    return main(["detect", source, "--checkpoint", str(model_file), "--out", str(out), "--quiet", "--reconnects", "2",
                 "--open-timeout", "2", "--read-timeout", "1", *extra])


def scored_times(out: Path) -> list[float]:
    with open(out / "scores.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    return [float(r[1]) for r in rows[1:]]


# --------------------------------------------------------------------------------------- names that are not UTF-8

NON_UTF8_SCRIPT = r"""
import json, os, sys
from unittest import mock
from mnad.cli import main
from mnad.data.streams import FrameSource
from mnad.data.videos import VideoFile, open_video
from mnad.errors import DataError
path, model, out = (os.fsdecode(a) for a in map(bytes.fromhex, sys.argv[1:4]))
result = {"len": len(VideoFile(path)), "open_video": len(open_video(path)), "frame": list(VideoFile(path).frame(5, 16, 1).shape),
          "raw": len(list(FrameSource(path))), "detect": main(["detect", path, "--checkpoint", model, "--out", out, "--quiet"])}
with mock.patch("os.symlink", side_effect=PermissionError(13, "Permission denied")):
    try:
        len(VideoFile(path))
    except DataError as exc:
        result["refused"] = str(exc)
print(json.dumps(result))
"""


def test_a_video_file_whose_name_is_not_utf8_is_read_not_a_crash(model_file: Path, video: Path, tmp_path: Path) -> None:
    """OpenCV crashed (SIGSEGV) on such names in detect, train, calibrate and export; run apart so a crash is a failure."""
    folder = tmp_path / os.fsdecode(b"caf\xe9")  # a Latin-1 name, in a folder named the same way
    folder.mkdir()
    bad = folder / os.fsdecode(b"v\xfe.avi")
    bad.write_bytes(video.read_bytes())
    args = [os.fsencode(p).hex() for p in (bad, model_file, tmp_path / "out")]
    done = subprocess.run([sys.executable, "-c", NON_UTF8_SCRIPT, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["len"], result["open_video"], result["frame"], result["raw"], result["detect"]) == (N_FRAMES, N_FRAMES, [16, 16, 1],
                                                                                                        N_FRAMES, 0)
    summary = json.loads((tmp_path / "out" / "summary.json").read_bytes().decode("utf-8"))  # strict UTF-8 readers too
    assert summary["frames_scored"] > 0 and summary["source"].endswith("caf\\xe9/v\\xfe.avi")  # escaped, not surrogates
    # where it cannot be opened another way: one error naming the file printably, saying what to do
    assert "caf\\xe9/v\\xfe.avi: cannot open a video whose name is not valid UTF-8" in result["refused"]
    assert "rename it" in result["refused"]
    assert not [p for p in os.listdir(tempfile.gettempdir()) if p.startswith("mnad-video-")]  # no alias left behind


def test_a_url_that_is_not_utf8_is_percent_encoded() -> None:
    from mnad.data.streams import stream_url

    assert stream_url(os.fsdecode(b"http://cam/v\xfe.avi?t=\xe9")) == "http://cam/v%FE.avi?t=%E9"
    assert stream_url("rtsp://cam/strom-ß") == "rtsp://cam/strom-ß"  # valid UTF-8 is left to OpenCV as given


# --------------------------------------------------------------------------------------------- network sources

def test_a_video_file_served_over_http_is_read_once_and_ends(model_file: Path, video: Path, tmp_path: Path) -> None:
    """It was reopened at its end and replayed from frame 0 for ever (a reconnect after every pass)."""
    local = tmp_path / "local"
    assert detect(model_file, str(video), local) == 0
    started = time.monotonic()
    with serve("file", video.read_bytes()) as (url, server):
        assert detect(model_file, url, tmp_path / "http") == 0
        assert server.paths == ["/v.avi"]  # fetched once, never replayed
    assert time.monotonic() - started < 30
    summary = json.loads((tmp_path / "http" / "summary.json").read_text())
    assert summary["frames_scored"] == json.loads((local / "summary.json").read_text())["frames_scored"]
    assert scored_times(tmp_path / "http") == scored_times(local)  # times are places in the file, as for a local file
    assert summary["source_fps"] == 10.0


def test_a_video_file_cut_short_by_a_stalling_server_is_an_error(model_file: Path, video: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    with serve("stall", video.read_bytes()) as (url, server):
        assert detect(model_file, url, tmp_path / "o") == 2
        assert server.paths == ["/v.avi"]
    assert time.monotonic() - started < 30
    err = capsys.readouterr().err
    assert "the video was cut short after" in err and f"of its {N_FRAMES} frames" in err and "Traceback" not in err
    assert 0 < json.loads((tmp_path / "o" / "summary.json").read_text())["frames_scored"] < N_FRAMES


def test_a_stream_that_keeps_dropping_uses_up_its_reconnections(model_file: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Each connection gave a few frames; one frame used to reset the failure count, so it reconnected for ever."""
    with serve("mjpeg") as (url, server):
        assert detect(model_file, url, tmp_path / "o") == 2
        assert len(server.paths) == 3  # the first connection and --reconnects 2
    err = capsys.readouterr().err
    assert "the source was lost after 9 frames" in err and "2 reconnection attempts" in err


def test_a_video_file_served_over_http_resumes_like_a_local_file(model_file: Path, video: Path, tmp_path: Path) -> None:
    """--resume took it for a camera: its window dropped, a reconnection counted, the file replayed from frame 0 and
    numbered after the earlier run's frames (frames_scored above the file's frames, memory updated twice by them)."""
    from mnad.outputs import read_detect_scores

    with serve("file", video.read_bytes()) as (url, server):
        server.limit = 10
        assert detect(model_file, url, tmp_path / "full") == 0
        assert detect(model_file, url, tmp_path / "o", "--max-frames", "10") == 0
        assert detect(model_file, url, tmp_path / "o", "--resume") == 0
    full, resumed = read_detect_scores(tmp_path / "full"), read_detect_scores(tmp_path / "o")
    assert [r["frame"] for r in resumed] == [r["frame"] for r in full] and len(full) > 10
    for a, b in zip(full, resumed, strict=True):  # those of an uninterrupted run, the restored window's included
        assert a["time"] == b["time"]
        for key in ("psnr", "distance", "score", "smoothed_score"):
            if key in a:
                assert float(b[key]) == pytest.approx(float(a[key]), abs=1e-5), (key, a, b)
    summary = json.loads((tmp_path / "o" / "summary.json").read_text(encoding="utf-8"))
    assert summary["frames_scored"] == len(full) and summary["reconnections"] == 0 and summary["resumed"] == 1


def test_a_file_served_over_http_that_is_now_a_live_stream_is_not_resumed(model_file: Path, video: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    with serve("file", video.read_bytes()) as (url, server):
        assert detect(model_file, url, tmp_path / "o", "--max-frames", "10") == 0
        server.mode = "mjpeg"  # the same URL, now a camera-like stream: no frame count
        assert detect(model_file, url, tmp_path / "o", "--resume", "--reconnects", "0") == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("mnad: error:")]
    assert len(errors) == 1 and "Traceback" not in err
    assert "reports no frame count" in errors[0] and "--resume" in errors[0]


def test_a_file_served_over_http_shorter_than_its_start_is_an_error(video: Path) -> None:
    from mnad.data.streams import FrameSource

    with serve("file", video.read_bytes()) as (url, _):
        source = FrameSource(url, SourceOptions(reconnects=0, open_timeout=2, read_timeout=2))
        source.start = N_FRAMES + 5
        with pytest.raises(DataError, match=rf"ended after {N_FRAMES} frames, before frame {N_FRAMES + 5}"):
            list(source)
        source.start = N_FRAMES - 4
        assert [round(f.time * 10) for f in source] == list(range(N_FRAMES - 4, N_FRAMES))


# ------------------------------------------------------------------------------------------------------- --fps

@pytest.mark.parametrize("fps", [math.inf, math.nan, 1e-300, 1e9, -1.0])
def test_an_absurd_fps_is_refused(fps: float) -> None:
    with pytest.raises(DataError, match=r"^fps \(SourceOptions.fps, --fps\) must be > 0"):
        SourceOptions(fps=fps)


def test_fps_in_range_is_accepted() -> None:
    assert SourceOptions(fps=0.5).fps == 0.5 and SourceOptions(fps=1000).fps == 1000


@pytest.mark.parametrize("option", ["--open-timeout", "--read-timeout"])
def test_an_infinite_timeout_is_refused(option: str, model_file: Path, video: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["detect", str(video), "--checkpoint", str(model_file), "--out", str(tmp_path / "o"), option, "inf"]) == 2
    assert option in capsys.readouterr().err


@pytest.mark.parametrize("field", ["open_timeout", "read_timeout"])
@pytest.mark.parametrize("seconds", [0.0004, 0.0009999, 1e-300])
def test_a_timeout_below_a_millisecond_is_refused(field: str, seconds: float) -> None:
    """OpenCV takes whole milliseconds, 0 of them being no timeout: int(0.0004 * 1000) made a live source that went
    silent wait for ever."""
    option = "--" + field.replace("_", "-")
    with pytest.raises(DataError, match=rf"^{field} \(SourceOptions.{field}, {option}\) must be from 0.001 to 86400 seconds"):
        SourceOptions(**{field: seconds})
    assert getattr(SourceOptions(**{field: 0.001}), field) == 0.001


def test_a_timeout_is_never_zero_milliseconds_to_opencv() -> None:
    from mnad.data.streams import MAX_WAIT, MIN_WAIT, milliseconds

    assert [milliseconds(s) for s in (MIN_WAIT, 0.0014, 0.0016, 0.25, 5.0, MAX_WAIT)] == [1, 1, 2, 250, 5000, 86_400_000]


@pytest.mark.parametrize("option", ["--open-timeout", "--read-timeout"])
def test_detect_refuses_a_timeout_below_a_millisecond_in_one_line(option: str, model_file: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A live source the CLI would have waited on for ever (a listener that accepts and never answers is not needed:
    the value is refused before any source is opened)."""
    assert main(["detect", "tcp://127.0.0.1:9/x", "--checkpoint", str(model_file), "--out", str(tmp_path / "o"), "--quiet",
                 "--reconnects", "0", option, "0.0004"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len([line for line in lines if line.startswith("mnad: error:")]) == 1
    assert lines[-1].startswith("mnad: error: ") and option in lines[-1] and "0.0004" in lines[-1]
    assert not (tmp_path / "o" / "summary.json").exists()


def test_detect_refuses_fps_inf_in_one_line(model_file: Path, video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frames = frames_folder(tmp_path / "frames", 8)
    assert main(["detect", str(frames), "--checkpoint", str(model_file), "--out", str(tmp_path / "o"), "--quiet", "--fps", "inf"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mnad: error: fps (SourceOptions.fps, --fps) must be > 0") and "inf" in err[-1]
    assert not (tmp_path / "o" / "summary.json").exists()
