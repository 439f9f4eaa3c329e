"""mnad detect's sources, options and output folder, as an audit found them: a digit-named frame folder is a path,
the uncalibrated scoring options are honoured or refused, another command's folder is never replaced, ended events are
not held in memory, every numeric option is checked, and a source that could not open names the open timeout."""

from __future__ import annotations

import csv
import gc
import json
import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import frames_folder

import mnad.detect
from mnad.calibrate import with_calibration
from mnad.calibration import Calibration
from mnad.checkpoint import load_model
from mnad.cli import main
from mnad.data.streams import CAMERA_INDEXES, FrameSource, SourceOptions, camera_index, is_live
from mnad.detect import DetectOptions, _SourceRun, detect, stream_folder
from mnad.errors import ConfigError, DataError
from mnad.events import Event
from mnad.outputs import (
    METRICS_FILE,
    SCORES_FILE,
    SCORES_HEADER,
    check_evaluation_output,
    read_detect_scores,
)

# ------------------------------------------------------------------------------------ 1. digit-named sources


def test_an_existing_path_named_by_digits_is_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    frames_folder(tmp_path / "20241130", 3)
    frames_folder(tmp_path / "1732999999000", 3)  # beyond a C int: was a cv2.error traceback
    frames_folder(tmp_path / "0", 3)
    for name in ("20241130", "1732999999000", "0"):
        source = FrameSource(name)
        assert not source.live and source.frames is not None and len(list(source)) == 3
        assert camera_index(name) is None and not is_live(name)
    assert stream_folder(0, "20241130", 2) == "0_20241130"


def test_digits_that_name_no_path_are_a_camera_index_or_one_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert camera_index("0") == 0 and camera_index("007") == 7 and camera_index(str(CAMERA_INDEXES - 1)) == CAMERA_INDEXES - 1
    assert FrameSource("3").live and stream_folder(1, "3", 2) == "1_camera3"
    assert camera_index("١") is None and camera_index("cam0") is None  # not ASCII digits: a path (and none here)
    for name in (str(CAMERA_INDEXES), "1732999999000"):
        with pytest.raises(DataError, match=rf"^{name}: no such file or folder, and not a camera index \(0 to 99\)"):
            FrameSource(name)
        with pytest.raises(DataError, match="not a camera index"):
            stream_folder(0, name, 2)


def test_detect_scores_a_digit_named_frame_folder(model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    frames_folder(tmp_path / "1732999999000", 8)
    assert main(["detect", "1732999999000", "--checkpoint", str(model_file), "--out", "o", "--quiet", "--reconnects", "0",
                 "--open-timeout", "1"]) == 0
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["frames_scored"] == 4
    assert main(["detect", "123456", "--checkpoint", str(model_file), "--out", "p", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "mnad: error: 123456: no such file or folder, and not a camera index" in err and "Traceback" not in err


def test_an_int_camera_is_never_taken_for_a_path(model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    frames_folder(tmp_path / "0", 8)
    model, config = load_model(model_file)
    with pytest.raises(ConfigError, match="camera index 0: the current folder holds a file or folder named '0'"):
        detect(model, config, 0, tmp_path / "o", progress=False)
    assert detect(model, config, "0", tmp_path / "o", progress=False)["frames_scored"] == 4  # the string: the folder


# -------------------------------------------------------------------- 2. uncalibrated smoothing and normalisation


def test_uncalibrated_detect_honours_the_smoothing_asked(model_file: Path, tmp_path: Path) -> None:
    folder = frames_folder(tmp_path / "f", 12)
    for window in (1, 3):
        out = tmp_path / f"o{window}"
        assert main(["detect", str(folder), "--checkpoint", str(model_file), "--out", str(out), "--quiet",
                     "--smoothing", str(window)]) == 0
        assert json.loads((out / "summary.json").read_text())["smoothing"] == window
        rows = read_detect_scores(out / "scores.csv")
        score, smoothed = [float(r["score"]) for r in rows], [float(r["smoothed"]) for r in rows]
        expected = [np.mean(score[max(i - window + 1, 0):i + 1]) for i in range(len(score))]
        np.testing.assert_allclose(smoothed, expected, atol=2e-6)
    model, config = load_model(model_file)  # the API: the same field, the same window
    summary = detect(model, config.override(["eval.smoothing=1"]), str(folder), tmp_path / "api", progress=False)
    assert summary["smoothing"] == 1


def test_detect_refuses_video_normalization_it_cannot_apply(model_file: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    folder = frames_folder(tmp_path / "f", 8)
    base = ["detect", str(folder), "--checkpoint", str(model_file), "--quiet"]
    for asked in (["--normalization", "video"], ["--set", "eval.normalization=video"]):
        assert main([*base, "--out", str(tmp_path / "v"), *asked]) == 2
        err = capsys.readouterr().err
        assert err.count("mnad: error:") == 1 and "--normalization video" in err and "drop --normalization" in err
        assert not (tmp_path / "v").exists()
    assert main([*base, "--out", str(tmp_path / "c"), "--normalization", "causal"]) == 0  # what it does


# ---------------------------------------------------------------------- 3. another command's folder


def evaluation_folder(folder: Path) -> dict[str, bytes]:
    folder.mkdir()
    (folder / SCORES_FILE).write_text(",".join(SCORES_HEADER) + "\n01,0,30.0,0.1,0.2,1,0.5,0,30.0,0.1\n")
    (folder / METRICS_FILE).write_text('{"metrics": {}, "config": {}}')
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.parametrize("keep", [[SCORES_FILE, METRICS_FILE], [SCORES_FILE], [METRICS_FILE]])
def test_detect_never_replaces_an_evaluation(model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             keep: list[str]) -> None:
    out = tmp_path / "eval"
    before = {name: data for name, data in evaluation_folder(out).items() if name in keep}
    for name in {SCORES_FILE, METRICS_FILE} - set(keep):
        (out / name).unlink()
    folder = frames_folder(tmp_path / "f", 8)
    for extra in ([], ["--overwrite"]):
        assert main(["detect", str(folder), "--checkpoint", str(model_file), "--out", str(out), "--quiet", *extra]) == 2
        err = capsys.readouterr().err
        assert f"{out}: holds another command's outputs ({', '.join(sorted(keep))}" in err
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".lock"} == before


def test_evaluate_never_replaces_a_detect_run(model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    assert main(["detect", str(frames_folder(tmp_path / "f", 8)), "--checkpoint", str(model_file), "--out", str(out),
                 "--quiet"]) == 0
    for overwrite in (False, True):
        with pytest.raises(DataError, match=r"holds an `mnad detect` output \(scores.csv"):
            check_evaluation_output(out, overwrite=overwrite)
    evaluation = tmp_path / "e"
    evaluation_folder(evaluation)
    assert check_evaluation_output(evaluation, overwrite=True) == evaluation  # an evaluation is still replaced


# --------------------------------------------------------------------------- 4. events are not held in memory


def test_ended_events_are_written_not_held(model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, config = load_model(model_file)
    folder = frames_folder(tmp_path / "f", 60)

    def run(threshold: float, out: Path) -> tuple[dict, list[int]]:
        cal = Calibration(psnr_low=0.0, psnr_high=40.0, distance_low=0.0, distance_high=1.0, threshold=threshold,
                          false_alarm_rate=0.05, smoothing=1, frames=100)
        held: list[int] = []
        close = _SourceRun.close

        def counting(self: _SourceRun, *args: object, **kwargs: object) -> dict | None:
            gc.collect()
            held.append(sum(type(o) is Event for o in gc.get_objects()))  # at most the tracker's open event
            return close(self, *args, **kwargs)

        monkeypatch.setattr(_SourceRun, "close", counting)
        summary = detect(model, with_calibration(config, cal), str(folder), out,
                         DetectOptions(hysteresis=0.0, min_event_frames=1), progress=False)
        monkeypatch.setattr(_SourceRun, "close", close)
        return summary, held

    first, _ = run(0.5, tmp_path / "probe")
    median = float(np.median([float(r["smoothed"]) for r in read_detect_scores(tmp_path / "probe" / "scores.csv")]))
    summary, held = run(median, tmp_path / "o")  # a score flickering around the threshold: many events
    assert summary["events"] >= 8 and held == [held[0]] and held[0] <= 1
    with (tmp_path / "o" / "events.csv").open(newline="") as handle:
        table = list(csv.DictReader(handle))
    lines = (tmp_path / "o" / "events.jsonl").read_text().splitlines()
    assert len(table) == len(lines) == summary["events"]
    assert [int(r["start_frame"]) for r in table] == [json.loads(line)["start_frame"] for line in lines]


def test_events_csv_is_written_as_each_event_ends(model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run killed after an event has it in events.csv too (the table was built from memory at the run's end)."""
    model, config = load_model(model_file)
    cal = Calibration(psnr_low=0.0, psnr_high=40.0, distance_low=0.0, distance_high=1.0, threshold=-1.0,
                      false_alarm_rate=0.05, smoothing=1, frames=100)
    seen: list[int] = []
    event = mnad.outputs.DetectWriter.event

    def watching(self: mnad.outputs.DetectWriter, *args: object, **kwargs: object) -> None:
        event(self, *args, **kwargs)
        with (self.out_dir / "events.csv").open(newline="") as handle:
            seen.append(len(list(csv.DictReader(handle))))

    monkeypatch.setattr(mnad.outputs.DetectWriter, "event", watching)
    detect(model, with_calibration(config, cal), str(frames_folder(tmp_path / "f", 8)), tmp_path / "o",
           DetectOptions(min_event_frames=1), progress=False)
    assert seen == [1]  # the one event (every frame above a threshold of -1), on disk once it ended


# ----------------------------------------------------------------------------------- 5. numeric options


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -0.5, True, "1", None])
def test_region_sigma_must_be_a_finite_number_at_least_0(value: object) -> None:
    with pytest.raises(ConfigError, match="--region-sigma must be a finite number >= 0"):
        DetectOptions(region_sigma=value)  # type: ignore[arg-type]
    assert DetectOptions(save_video=True, region_sigma=np.float32(1.5)).region_sigma == 1.5


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_cli_refuses_a_region_sigma_that_marks_nothing(model_file: Path, tmp_path: Path, value: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["detect", str(frames_folder(tmp_path / "f", 8)), "--checkpoint", str(model_file), "--out",
                 str(tmp_path / "o"), "--quiet", f"--region-sigma={value}"]) == 2
    err = capsys.readouterr().err
    assert "mnad: error: --region-sigma must be a finite number >= 0" in err and "Traceback" not in err


@pytest.mark.parametrize("options, named", [({"reconnects": math.nan}, "--reconnects"), ({"reconnects": 1.5}, "--reconnects"),
                                            ({"reconnects": True}, "--reconnects"), ({"retry_delay": math.nan}, "retry delay"),
                                            ({"retry_delay": "1"}, "retry delay"), ({"open_timeout": None}, "--open-timeout"),
                                            ({"read_timeout": math.inf}, "--read-timeout"), ({"fps": "25"}, "--fps"),
                                            ({"read_timeout": 0}, "--read-timeout"), ({"open_timeout": -1}, "--open-timeout")])
def test_source_options_must_be_numbers_in_range(options: dict, named: str) -> None:
    with pytest.raises(DataError) as caught:
        SourceOptions(**options)
    message = str(caught.value)
    # the one wrong option, first: the field an API caller set, and the CLI option that sets it
    field = named.removeprefix("--").replace("-", "_")
    assert message.startswith(f"{field} (SourceOptions.{field}, {named})" if named.startswith("-") else "the " + named)
    assert [o for o in ("--fps", "--reconnects", "--open-timeout", "--read-timeout", "retry delay") if o in message] == [named]


def test_detect_options_source_must_be_source_options() -> None:
    with pytest.raises(ConfigError, match="SourceOptions"):
        DetectOptions(source={"fps": 10})  # type: ignore[arg-type]


# ------------------------------------------------------------------------ 6. which timeout ran out


class _Capture:
    def __init__(self, opened: bool) -> None:
        self.opened = opened

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return self.opened

    def get(self, prop: int) -> float:
        return 0.0

    def read(self) -> tuple[bool, None]:
        return False, None

    def release(self) -> None:
        pass


@pytest.mark.parametrize("opened", [False, True])
def test_a_lost_source_names_the_timeout_that_ran_out(monkeypatch: pytest.MonkeyPatch, opened: bool) -> None:
    source = FrameSource("rtsp://127.0.0.1:9/cam", SourceOptions(reconnects=0, open_timeout=2, read_timeout=7))
    monkeypatch.setattr(source, "_open_live", lambda: _Capture(opened))
    with pytest.raises(DataError) as caught:
        list(source)
    message = str(caught.value)
    assert "gave no frames" in message
    if opened:
        assert "stayed silent for --read-timeout 7 s" in message and "open-timeout" not in message
    else:
        assert "could not open it" in message and "--open-timeout 2 s" in message and "read-timeout" not in message


class _V4L2Camera:
    """A camera whose backend takes no timeouts, as OpenCV's V4L2 and DirectShow: it refuses to open when given them."""

    calls: list = []

    def __init__(self, index: int, api: int, params: list[int] | None = None) -> None:
        self.calls.append((index, params is not None))
        self.opened, self.left = params is None, 3

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.opened

    def getBackendName(self) -> str:  # noqa: N802
        return "V4L2"

    def get(self, prop: int) -> float:
        return 0.0

    def read(self) -> tuple[bool, np.ndarray | None]:
        self.left -= 1
        return (True, np.zeros((24, 32, 3), np.uint8)) if self.left >= 0 else (False, None)

    def release(self) -> None:
        pass


def test_a_camera_whose_backend_takes_no_timeouts_opens_without_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenCV refuses to open a camera with CAP_PROP_OPEN/READ_TIMEOUT_MSEC where its backend does not take them (V4L2,
    the usual Linux backend): `mnad detect 0` could never open a USB camera. It opens without them, under mnad's own."""
    import cv2

    monkeypatch.setattr(_V4L2Camera, "calls", [])
    monkeypatch.setattr(cv2, "VideoCapture", _V4L2Camera)
    source = FrameSource("0", SourceOptions(reconnects=1))
    with pytest.raises(DataError, match="was lost after 6 frames"):
        frames = []
        for frame in source:
            frames.append(frame)
    assert len(frames) == 6 and _V4L2Camera.calls == [(0, True), (0, False)] * 2  # each (re)connection tries both


class _SilentCamera(_V4L2Camera):
    """A V4L2-like camera that blocks in its driver: in opening (``block_open``) or after two frames, until let go."""

    block_open = False
    let_go = threading.Event()
    released: list = []

    def __init__(self, index: int, api: int, params: list[int] | None = None) -> None:
        super().__init__(index, api, params)
        if params is None and self.block_open:
            self.let_go.wait(10)  # bounded: without a watchdog the test fails, not hangs

    def read(self) -> tuple[bool, np.ndarray | None]:
        self.left -= 1
        if self.left < 1 and not self.let_go.wait(10):  # bounded: without mnad's timeout the test fails, not hangs
            return False, None
        return True, np.zeros((24, 32, 3), np.uint8)

    def release(self) -> None:
        self.released.append(self)


@pytest.mark.parametrize("block_open", [False, True])
def test_a_silent_camera_without_backend_timeouts_never_hangs(monkeypatch: pytest.MonkeyPatch, block_open: bool,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """A camera opened without the backend's timeouts (row 331) was read with no timeout of mnad's: one that went
    silent in its driver blocked `mnad detect` for as long as the backend liked. It now counts as stalled after
    --read-timeout (or unopened after --open-timeout), reconnects, and ends in an error naming that timeout; each
    capture given up on is released once its blocked call returns."""
    import cv2

    let_go = threading.Event()
    monkeypatch.setattr(_SilentCamera, "calls", [])
    monkeypatch.setattr(_SilentCamera, "released", [])
    monkeypatch.setattr(_SilentCamera, "let_go", let_go)
    monkeypatch.setattr(_SilentCamera, "block_open", block_open)
    monkeypatch.setattr(cv2, "VideoCapture", _SilentCamera)
    source = FrameSource("0", SourceOptions(reconnects=1, retry_delay=0, open_timeout=0.2, read_timeout=0.3))
    frames, started = [], time.monotonic()
    with caplog.at_level("WARNING"), pytest.raises(DataError) as caught:
        for frame in source:
            frames.append(frame)
    assert time.monotonic() - started < 5  # two timeouts of < 1 s, not the driver's 10 s wait
    message = str(caught.value)
    given_up = [r.getMessage() for r in caplog.records if "the call is given up on" in r.getMessage()]
    assert len(given_up) == 2  # each stalled call said: one thread and handle each, left to the driver
    if block_open:
        assert not frames and "gave no frames" in message and "--open-timeout 0.2 s" in message
    else:
        assert len(frames) == 4 and "was lost after 4 frames" in message and "--read-timeout 0.3 s" in message
    let_go.set()  # the driver answers at last: the workers release the captures given up on
    deadline = time.monotonic() + 5
    while len(_SilentCamera.released) < 4 and time.monotonic() < deadline:  # two refused with params, two watched
        time.sleep(0.01)
    assert len(_SilentCamera.released) == 4


class _DeafCamera(_SilentCamera):
    """A camera whose backend takes the timeout parameters (it opens with them) but does not keep them: silent in its
    driver after two frames, until let go."""

    def __init__(self, index: int, api: int, params: list[int] | None = None) -> None:
        super().__init__(index, api, params)
        self.opened = True


def test_a_camera_that_takes_the_timeouts_but_does_not_keep_them_never_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A camera opened with CAP_PROP_OPEN/READ_TIMEOUT_MSEC was read with no watch of mnad's: one whose backend takes
    the parameters and ignores them blocked `mnad detect` for as long as its driver liked. Every camera is now read
    under mnad's own --read-timeout."""
    import cv2

    let_go = threading.Event()
    monkeypatch.setattr(_DeafCamera, "calls", [])
    monkeypatch.setattr(_DeafCamera, "released", [])
    monkeypatch.setattr(_DeafCamera, "let_go", let_go)
    monkeypatch.setattr(cv2, "VideoCapture", _DeafCamera)
    source = FrameSource("0", SourceOptions(reconnects=1, retry_delay=0, open_timeout=0.2, read_timeout=0.3))
    frames, started = [], time.monotonic()
    try:
        with pytest.raises(DataError, match=r"was lost after 4 frames.*--read-timeout 0\.3 s"):
            for frame in source:
                frames.append(frame)
        assert time.monotonic() - started < 5  # two read timeouts, not the driver's 10 s wait each
        assert len(frames) == 4 and _DeafCamera.calls == [(0, True)] * 2  # opened with the parameters each time
    finally:
        let_go.set()
