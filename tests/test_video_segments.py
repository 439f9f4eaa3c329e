"""The annotated video of a long run, in closed segments: what a stopped or killed run leaves, and names that sort."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import frames_folder

from mnad.checkpoint import load_model
from mnad.detect import ANNOTATED_DIR, DetectOptions, detect, frame_name
from mnad.errors import ConfigError, DataError

SEGMENT = 0.2  # seconds: 5 frames at a frame folder's 25 frames/s


def frames_in(path: Path) -> int:
    """The frames an MP4 holds by its index; -1 when it cannot be opened (no index: its writer was killed)."""
    capture = cv2.VideoCapture(str(path))
    try:
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else -1
    finally:
        capture.release()


def test_frame_names_sort_in_frame_order_past_a_million() -> None:
    frames = [0, 4, 999_999, 1_000_000, 86_400 * 25 * 365, 10**12 - 1]
    assert sorted(frame_name(i) for i in frames) == [frame_name(i) for i in frames]  # 6 digits: '1000000' < '999999'


def test_the_segment_length_is_checked() -> None:
    for bad in (0, -1.0, float("nan"), float("inf"), True, "600"):
        with pytest.raises(ConfigError, match="--video-segment must be a number of seconds > 0"):
            DetectOptions(video_segment=bad)  # type: ignore[arg-type]


def test_a_long_run_writes_closed_segments_named_by_their_first_frame(model_file: Path, tmp_path: Path) -> None:
    """Each source's video is cut into files of 5 frames, each closed and readable, named so that they sort in time
    order; summary.json lists them. 18 frames scored (the first 4 make the first clip): 5 + 5 + 5 + 3."""
    model, config = load_model(model_file)
    sources = [str(frames_folder(tmp_path / name, 22)) for name in ("a", "b")]
    out = tmp_path / "o"
    detect(model, config, sources, out, DetectOptions(save_video=True, video_segment=SEGMENT), progress=False)
    for folder in ("0_a", "1_b"):
        summary = json.loads((out / folder / "summary.json").read_text())
        names = [f"{ANNOTATED_DIR}/{frame_name(i)}.mp4" for i in (4, 9, 14, 19)]
        assert summary["annotated_video"] and summary["annotated_video_files"] == names == sorted(names)
        assert sorted(p.name for p in (out / folder / ANNOTATED_DIR).iterdir()) == [Path(n).name for n in names]
        assert not (out / folder / "annotated.mp4").exists()
        assert [frames_in(out / folder / n) for n in names] == [5, 5, 5, 3]


def test_a_run_within_one_segment_keeps_annotated_mp4(model_file: Path, tmp_path: Path) -> None:
    """6 frames scored, a segment of 6: one file, annotated.mp4, and no folder (the segment full is not a second one)."""
    model, config = load_model(model_file)
    out = tmp_path / "o"
    summary = detect(model, config, str(frames_folder(tmp_path / "f", 10)), out,
                     DetectOptions(save_video=True, video_segment=6 / 25), progress=False)
    assert summary["annotated_video_files"] == ["annotated.mp4"] and frames_in(out / "annotated.mp4") == 6
    assert not (out / ANNOTATED_DIR).exists()


def test_a_segment_that_lost_frames_fails_the_run_when_it_closes(model_file: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk found at a segment's close, not hours later at the run's end; the segments before it are kept."""
    real, given = cv2.VideoWriter, [0]

    class Dropping:  # drops pictures from the 8th on (OpenCV's writer does so without a word on a full disk)
        def __init__(self, *args: object) -> None:
            self.writer = real(*args)

        def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
            return self.writer.isOpened()

        def write(self, picture: np.ndarray) -> None:
            given[0] += 1
            if given[0] < 8:
                self.writer.write(picture)

        def release(self) -> None:
            self.writer.release()

    monkeypatch.setattr(cv2, "VideoWriter", Dropping)
    model, config = load_model(model_file)
    out = tmp_path / "o"
    second = out / ANNOTATED_DIR / f"{frame_name(9)}.mp4"
    with pytest.raises(DataError, match=f"{second}: the annotated video holds 2 of its 5 frames"):
        detect(model, config, str(frames_folder(tmp_path / "f", 40)), out,
               DetectOptions(save_video=True, video_segment=SEGMENT), progress=False)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_scored"] == 10 and summary["annotated_video_files"] == [f"{ANNOTATED_DIR}/{frame_name(4)}.mp4"]
    assert frames_in(out / ANNOTATED_DIR / f"{frame_name(4)}.mp4") == 5


def test_a_folder_in_the_way_of_the_segments_is_never_written_into(model_file: Path, tmp_path: Path) -> None:
    model, config = load_model(model_file)
    out = tmp_path / "o"
    (out / ANNOTATED_DIR).mkdir(parents=True)
    (out / ANNOTATED_DIR / "mine.mp4").write_bytes(b"a user's")
    with pytest.raises(DataError, match=ANNOTATED_DIR):
        detect(model, config, str(frames_folder(tmp_path / "f", 20)), out,
               DetectOptions(save_video=True, video_segment=SEGMENT), progress=False)
    assert [p.name for p in (out / ANNOTATED_DIR).iterdir()] == ["mine.mp4"]


def test_an_overwrite_replaces_the_earlier_runs_segments(model_file: Path, tmp_path: Path) -> None:
    model, config = load_model(model_file)
    out = tmp_path / "o"
    detect(model, config, str(frames_folder(tmp_path / "long", 20)), out,
           DetectOptions(save_video=True, video_segment=SEGMENT), progress=False)
    detect(model, config, str(frames_folder(tmp_path / "short", 8)), out,
           DetectOptions(save_video=True, video_segment=SEGMENT, overwrite=True), progress=False)
    assert frames_in(out / "annotated.mp4") == 4 and not (out / ANNOTATED_DIR).exists()  # no segment of the earlier run


def test_map_files_sort_in_frame_order(model_file: Path, tmp_path: Path) -> None:
    model, config = load_model(model_file)
    out = tmp_path / "o"
    detect(model, config, str(frames_folder(tmp_path / "f", 8)), out, DetectOptions(save_maps="npy"), progress=False)
    assert sorted(p.name for p in (out / "maps").iterdir()) == [f"{frame_name(i)}.npy" for i in range(4, 8)]


def test_ctrl_c_leaves_every_segment_closed_and_readable(model_file: Path, tmp_path: Path, ctrl_c_raises: None) -> None:
    """Ctrl-C (as SIGTERM, the same path) completes the outputs: the open segment is closed early and readable, and
    the segments hold every frame scored."""
    model, config = load_model(model_file)
    out = tmp_path / "o"
    folder = frames_folder(tmp_path / "f", 2000, size=16)

    def interrupt() -> None:
        while not ((out / ANNOTATED_DIR).is_dir() and len(list((out / ANNOTATED_DIR).iterdir())) >= 3):
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        detect(model, config, str(folder), out, DetectOptions(save_video=True, video_segment=SEGMENT), progress=False)
    summary = json.loads((out / "summary.json").read_text())
    files = summary["annotated_video_files"]
    assert summary["ended_by"] == "interrupted (SIGINT)" and len(files) >= 3 and files == sorted(files)
    assert sorted(f"{ANNOTATED_DIR}/{p.name}" for p in (out / ANNOTATED_DIR).iterdir()) == files
    counts = [frames_in(out / f) for f in files]
    assert counts[:-1] == [5] * (len(files) - 1) and 1 <= counts[-1] <= 5 and sum(counts) == summary["frames_scored"]


# A run of detect in a process of its own (to be killed), with 5-frame segments
RUN = """
import sys
from mnad.checkpoint import load_model
from mnad.detect import DetectOptions, detect
model, config = load_model(sys.argv[1])
detect(model, config, sys.argv[2], sys.argv[3], DetectOptions(save_video=True, video_segment=float(sys.argv[4])),
       progress=False)
"""


def test_sigkill_loses_only_the_open_segment(model_file: Path, tmp_path: Path) -> None:
    """A run killed outright (SIGKILL, a power cut, the OOM killer) cannot close its open MP4, which has no index and
    cannot be read; the segments before it were closed and stay readable (one file, before, lost the whole video)."""
    folder = frames_folder(tmp_path / "f", 2000, size=16)
    out = tmp_path / "o"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-c", RUN, str(model_file), str(folder), str(out), str(SEGMENT)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not ((out / ANNOTATED_DIR).is_dir() and len(list((out / ANNOTATED_DIR).iterdir())) >= 3):  # 2 closed
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read().decode()  # type: ignore[union-attr]
        time.sleep(0.01)
    process.kill()
    process.communicate(timeout=60)
    files = sorted((out / ANNOTATED_DIR).iterdir())
    assert len(files) >= 3 and [frames_in(f) for f in files[:-1]] == [5] * (len(files) - 1)
    assert files[0].name == f"{frame_name(4)}.mp4" and not (out / "annotated.mp4").exists()
    # killed: nothing completed; the summary written when the last segment closed says so, and lists the closed files
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["ended_by"] is None
    listed = summary["annotated_video_files"]
    assert len(listed) >= 2 and listed == [f"{ANNOTATED_DIR}/{f.name}" for f in files[:len(listed)]]
    assert all(frames_in(out / f) == 5 for f in listed) and summary["frames_scored"] >= 5 * len(listed)


def test_the_command_line_checks_the_segment_length(model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mnad.cli import main

    source = str(frames_folder(tmp_path / "a", 6))
    assert main(["detect", source, "--checkpoint", str(model_file), "--out", str(tmp_path / "o"), "--save-video",
                 "--video-segment", "0", "--quiet"]) == 2
    assert "mnad: error: --video-segment must be a number of seconds > 0" in capsys.readouterr().err


def test_summary_json_never_lists_a_file_that_moved(model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When a second file begins, annotated.mp4 moves into annotated/: summary.json is rewritten at once (was: it named
    annotated.mp4, gone, until the next rewrite; a run killed then left a summary pointing at a missing file)."""
    import mnad.detect as detect_module

    model, config = load_model(model_file)
    out, missing = tmp_path / "o", []
    tick = detect_module._Progress.tick

    def checked(self: detect_module._Progress) -> None:  # after each batch's summaries
        tick(self)
        if (out / "summary.json").exists():
            listed = json.loads((out / "summary.json").read_text())["annotated_video_files"]
            missing.extend(name for name in listed if not (out / name).exists())

    monkeypatch.setattr(detect_module._Progress, "tick", checked)
    detect(model, config, [str(frames_folder(tmp_path / "a", 22))], out, DetectOptions(save_video=True, video_segment=SEGMENT),
           progress=False)
    assert missing == [] and len(json.loads((out / "summary.json").read_text())["annotated_video_files"]) == 4


def test_odd_frame_rates_and_cameras_that_misstate_theirs(tmp_path: Path) -> None:
    """66.667 frames/s (a time base of 1000/66667, which the MPEG-4 encoder refuses) is written at 66.67; a camera
    claiming 1000 frames/s but sending 2.5 still closes a file every --video-segment seconds of its frames' times."""
    from mnad.detect import SegmentedVideo

    picture = np.zeros((32, 32, 3), np.uint8)
    odd = SegmentedVideo(tmp_path / "odd", 66.667, 600.0)
    (tmp_path / "odd").mkdir()
    for i in range(3):
        odd.write(picture, i, i / 66.667)
    odd.close()
    assert odd.files == ["annotated.mp4"] and frames_in(tmp_path / "odd" / "annotated.mp4") == 3
    camera = SegmentedVideo(tmp_path / "camera", 1000.0, 1.0, clocked=True)
    (tmp_path / "camera").mkdir()
    for i in range(6):
        camera.write(picture, i, i * 0.4)  # 2.5 frames/s: the first file closes at its frame of 1.2 s
    camera.close()
    assert camera.files == [f"{ANNOTATED_DIR}/{frame_name(0)}.mp4", f"{ANNOTATED_DIR}/{frame_name(4)}.mp4"]
    assert [frames_in(tmp_path / "camera" / name) for name in camera.files] == [4, 2]
