"""Own footage folders as `train --data`, `calibrate --data` and `detect` read them: one rule (data.footage.footage_in)
for what a folder is, messages that say what a folder holds, a container's invalid frame rate, FFmpeg's own log lines,
and calibration messages about the footage as a whole."""

from __future__ import annotations

import logging
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, frames_folder, noise_video, tiny_config

from mnad.calibrate import calibrate, open_footage
from mnad.data import list_videos
from mnad.data.spans import footage_span
from mnad.data.streams import FrameSource, SourceOptions
from mnad.data.videos import FrameFolder, FrameRange
from mnad.errors import DataError
from mnad.model import MNAD
from mnad.train import training_videos


def own_config():
    config = tiny_config()
    config.dataset = ""  # own footage: the folder itself is read (train --data)
    return config


def loose_folder(tmp_path: Path) -> Path:
    """Frame images at the top of a folder, beside a video file."""
    folder = frames_folder(tmp_path / "loose", 8)
    noise_video(folder / "cam.avi", 8, 25)
    return folder


def check_mixing(error: pytest.ExceptionInfo, folder: str | Path) -> None:
    text = str(error.value)
    assert text.startswith(f"{folder}: mixes frame images (00000.png, 00001.png, 00002.png and 5 more)"), text
    assert "move the images into a sub-folder of their own" in text


# ------------------------------------------------------------------------- 1. loose images beside videos: one rule

def test_train_refuses_images_beside_a_video(tmp_path: Path) -> None:
    """Was: the video trained on, the 8 images dropped without a word."""
    folder = loose_folder(tmp_path)
    with pytest.raises(DataError) as error:
        training_videos(own_config(), folder, decode=False)
    check_mixing(error, folder)
    assert "video files (cam.avi)" in str(error.value)


def test_calibrate_refuses_images_beside_a_video(tmp_path: Path) -> None:
    """Was: the whole folder one frame folder, the video dropped."""
    folder = loose_folder(tmp_path)
    with pytest.raises(DataError) as error:
        open_footage(folder)
    check_mixing(error, folder)


def test_detect_refuses_images_beside_videos_or_frame_folders(tmp_path: Path) -> None:
    """Was: the images scored, the video and the sub-folder of frames dropped; a quoted pattern the same."""
    folder = loose_folder(tmp_path)
    with pytest.raises(DataError) as error:
        FrameSource(str(folder))
    check_mixing(error, folder)
    with pytest.raises(DataError) as error:
        FrameSource(str(folder / "*"))
    check_mixing(error, folder / "*")
    (folder / "cam.avi").unlink()
    frames_folder(folder / "sub", 6)
    with pytest.raises(DataError) as error:
        FrameSource(str(folder))
    check_mixing(error, folder)
    assert "sub-folders of footage (sub)" in str(error.value)


def test_a_frame_folder_with_other_things_in_it_is_still_one(tmp_path: Path) -> None:
    """Not footage, so no mixing: notes, hidden files and a sub-folder with neither images nor videos."""
    folder = frames_folder(tmp_path / "frames", 6)
    (folder / "notes.txt").write_text("camera 1")
    (folder / ".hidden.mp4").write_bytes(b"")
    (folder / "old").mkdir()
    (folder / "old" / "readme.txt").write_text("nothing")
    assert [len(v) for v in list_videos(folder)] == [6]
    assert [len(v) for v in open_footage(folder)] == [6]
    assert len(FrameSource(str(folder)).frames) == 6


def test_a_sub_folder_mixing_images_and_videos_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "footage"
    noise_video(frames_folder(folder / "a", 8) / "a.avi", 8, 25)
    with pytest.raises(DataError) as error:
        list_videos(folder)
    check_mixing(error, folder / "a")


# ------------------------------------------------------------------------- 2. detect on a folder of videos

def test_detect_folder_of_videos_says_how_to_pass_them(tmp_path: Path) -> None:
    """Was: 'no frames (no .bmp/.jpeg/... files)'."""
    folder = tmp_path / "cams"
    folder.mkdir()
    noise_video(folder / "a.avi", 6, 25)
    noise_video(folder / "b.avi", 6, 25)
    with pytest.raises(DataError) as error:
        FrameSource(str(folder))
    text = str(error.value)
    assert text.startswith(f"{folder}: holds video files (a.avi, b.avi)"), text
    assert f"{folder}/*.avi, unquoted" in text and "no frames" not in text
    frames_folder(folder / "c", 6)
    with pytest.raises(DataError, match=r"holds video files \(a.avi, b.avi\) and frame folders \(c\)") as error:
        FrameSource(str(folder))
    assert f"{folder}/*.avi {folder}/*/, unquoted" in str(error.value)


def test_detect_quoted_pattern_of_videos_names_the_pattern(tmp_path: Path) -> None:
    folder = tmp_path / "cams"
    folder.mkdir()
    noise_video(folder / "a.avi", 6, 25)
    pattern = str(folder / "*.avi")
    with pytest.raises(DataError) as error:
        FrameSource(pattern)
    text = str(error.value)
    assert text.startswith(f"{pattern}: matches video files (a.avi)"), text
    assert "leave the pattern unquoted" in text and "no frames" not in text


# ------------------------------------------------------------------------- 3. nested footage

def test_videos_one_level_down_are_said_to_be_so(tmp_path: Path) -> None:
    """Was: 'day1: folder has no frames'. Videos in sub-folders are not read (docs/data.md): the message says why."""
    folder = tmp_path / "nested"
    (folder / "day1").mkdir(parents=True)
    noise_video(folder / "day1" / "a.avi", 6, 25)
    for read in (lambda: training_videos(own_config(), folder, decode=False), lambda: open_footage(folder)):
        with pytest.raises(DataError) as error:
            read()
        text = str(error.value)
        assert text.startswith(f"{folder / 'day1'}: holds video files (a.avi), not frames"), text
        assert f"directly in {folder} are read" in text


def test_a_sub_folder_without_footage_is_still_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "footage"
    noise_video(frames_folder(folder / "a", 6).parent / "b.avi", 6, 25)
    (folder / "empty").mkdir()
    with pytest.raises(DataError, match="empty: folder has no frames"):
        list_videos(folder)


# ------------------------------------------------------------------------- 4. a container's invalid frame rate

def claimed_rate(path: Path, rate: int) -> Path:
    """An MJPG .avi whose stream header claims ``rate`` frames per second (and whose main header claims none)."""
    noise_video(path, 6, 25)
    data = bytearray(path.read_bytes())
    struct.pack_into("<II", data, data.find(b"strh") + 28, 1, rate)  # dwScale, dwRate
    struct.pack_into("<I", data, data.find(b"avih") + 8, 0)  # dwMicroSecPerFrame
    path.write_bytes(bytes(data))
    return path


def test_invalid_container_rate_is_warned_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Was: timed at --fps without a word."""
    path = claimed_rate(tmp_path / "fast.avi", 100000)
    source = FrameSource(str(path), SourceOptions(fps=12.5))
    with caplog.at_level(logging.WARNING, logger="mnad"):
        frames = list(source)
    assert len(frames) == 6 and source.fps == 12.5 and frames[1].time == pytest.approx(1 / 12.5)
    said = [r.getMessage() for r in caplog.records if "frame rate" in r.getMessage()]
    assert len(said) == 1 and str(path) in said[0] and "100000" in said[0] and "--fps 12.5" in said[0], said


def test_valid_container_rate_is_not_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = FrameSource(str(noise_video(tmp_path / "ok.avi", 6, 10)), SourceOptions(fps=12.5))
    with caplog.at_level(logging.WARNING, logger="mnad"):
        assert len(list(source)) == 6
    assert source.fps == 10 and not caplog.records


# ------------------------------------------------------------------------- 5. FFmpeg's and OpenCV's own lines

OPEN_EMPTY = """
import sys
import cv2
from mnad.data.streams import FrameSource
try:
    list(FrameSource(sys.argv[1]))
except Exception as exc:
    print(type(exc).__name__, exc)
print("opencv log level", cv2.utils.logging.getLogLevel())
"""


def open_empty(path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("OPENCV_FFMPEG_LOGLEVEL", "OPENCV_LOG_LEVEL")}
    return subprocess.run([sys.executable, "-c", OPEN_EMPTY, str(path)], capture_output=True, text=True, timeout=120,
                          env={**clean, "PYTHONPATH": str(ROOT / "src"), **env})


def test_ffmpeg_says_nothing_of_a_damaged_file(tmp_path: Path) -> None:
    """Was: '[mov,mp4,m4a,3gp,3g2,mj2 @ 0x...] moov atom not found' on stderr before mnad's own error. A user's own
    setting wins (to debug): then FFmpeg's line is there, which shows this test sees it."""
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    done = open_empty(empty)
    assert "DataError" in done.stdout and "cannot open video" in done.stdout, done.stdout + done.stderr
    assert "moov" not in done.stderr and done.stderr.strip() == "", done.stderr
    assert "opencv log level 0" in done.stdout  # LOG_LEVEL_SILENT: OpenCV's own warnings (a camera's) too
    debugging = open_empty(empty, OPENCV_FFMPEG_LOGLEVEL="16")  # OpenCV then prints FFmpeg's lines on stdout
    assert "moov atom not found" in debugging.stdout + debugging.stderr


def test_detect_on_a_damaged_file_prints_only_mnad_lines(tmp_path: Path, model_file: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    clean = {k: v for k, v in os.environ.items() if k not in ("OPENCV_FFMPEG_LOGLEVEL", "OPENCV_LOG_LEVEL")}
    done = subprocess.run([sys.executable, "-m", "mnad", "detect", str(empty), "--checkpoint", str(model_file), "--out",
                           str(tmp_path / "out"), "--quiet", "--threads", "1"], capture_output=True, text=True, timeout=300,
                          env={**clean, "PYTHONPATH": str(ROOT / "src")})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and all(line.startswith("mnad: ") for line in lines), done.stderr
    assert [line for line in lines if line.startswith("mnad: error:")] == [
        f"mnad: error: {empty}: cannot open video (unknown format or damaged file)"], done.stderr


# ------------------------------------------------------------------------- 6. calibration messages

def tiny_model():
    torch.manual_seed(0)
    config = tiny_config()
    return MNAD(config.model), config


def test_too_short_names_the_footage_as_a_whole(tmp_path: Path) -> None:
    """Was: the first video's path, though the frames were counted over all of them."""
    model, config = tiny_model()
    videos = [FrameFolder(frames_folder(tmp_path / "cal" / name, 6)) for name in ("a", "b")]
    with pytest.raises(DataError) as error:
        # a 1-frame window: the default 5 is longer than these videos' 2 scored frames, refused before the count
        calibrate(model, config, videos, false_alarm_rate=0.1, scoring="config", smoothing=1, progress=False)
    text = str(error.value)
    assert text.startswith(f"{tmp_path / 'cal'} (2 videos: a, b): calibration footage too short: 4 frames scored"), text
    held = [FrameRange(FrameFolder(frames_folder(tmp_path / "run" / name, 12)), 6, 12) for name in ("a", "b")]
    with pytest.raises(DataError) as error:
        calibrate(model, config, held, false_alarm_rate=0.1, scoring="config", smoothing=1, progress=False)
    assert str(error.value).startswith(f"{tmp_path / 'run'} (the held-out frames of 2 videos: a[6:12], b[6:12]): "
                                       "calibration footage too short"), str(error.value)


def test_trained_on_warning_names_the_overlapping_part(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Was: 'cam[0:12]' (the calibration footage) where training used only [0:8]."""
    model, config = tiny_model()
    video = FrameFolder(frames_folder(tmp_path / "cam", 12))
    path = footage_span(video)[0]
    with caplog.at_level(logging.WARNING, logger="mnad"), pytest.raises(DataError, match="too short"):
        calibrate(model, config, [video], false_alarm_rate=0.1, scoring="config", trained_on=[(path, 0, 8)],
                  progress=False)
    said = [r.getMessage() for r in caplog.records if "fitted on footage the model was trained on" in r.getMessage()]
    assert len(said) == 1 and f"({path}[0:8])" in said[0], said
