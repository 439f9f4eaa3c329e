"""The annotated video of a long run, in closed segments: what a stopped or killed run leaves, and names that sort."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import frames_folder, kill_when

from mnad.checkpoint import load_model
from mnad.detect import DetectOptions, detect
from mnad.errors import ConfigError, DataError
from mnad.outputs import ANNOTATED_DIR, ANNOTATED_VIDEO, frame_name, map_name

SEGMENT = 0.2  # seconds: 5 frames at a frame folder's 25 frames/s


def frames_in(path: Path) -> int:
    """The frames a video file holds by its header; -1 when it cannot be opened."""
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
        names = [f"{ANNOTATED_DIR}/{frame_name(i)}.mkv" for i in (4, 9, 14, 19)]
        assert summary["annotated_video"] and summary["annotated_video_files"] == names == sorted(names)
        assert sorted(p.name for p in (out / folder / ANNOTATED_DIR).iterdir()) == [Path(n).name for n in names]
        assert not (out / folder / ANNOTATED_VIDEO).exists()
        assert [frames_in(out / folder / n) for n in names] == [5, 5, 5, 3]


def test_a_run_within_one_segment_keeps_annotated_mkv(model_file: Path, tmp_path: Path) -> None:
    """6 frames scored, a segment of 6: one file, annotated.mkv, and no folder (the segment full is not a second one)."""
    model, config = load_model(model_file)
    out = tmp_path / "o"
    summary = detect(model, config, str(frames_folder(tmp_path / "f", 10)), out,
                     DetectOptions(save_video=True, video_segment=6 / 25), progress=False)
    assert summary["annotated_video_files"] == [ANNOTATED_VIDEO] and frames_in(out / ANNOTATED_VIDEO) == 6
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
    second = out / ANNOTATED_DIR / f"{frame_name(9)}.mkv"
    with pytest.raises(DataError, match=f"{second}: the annotated video holds 2 of its 5 frames"):
        detect(model, config, str(frames_folder(tmp_path / "f", 40)), out,
               DetectOptions(save_video=True, video_segment=SEGMENT), progress=False)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_scored"] == 10 and summary["annotated_video_files"] == [f"{ANNOTATED_DIR}/{frame_name(4)}.mkv"]
    assert frames_in(out / ANNOTATED_DIR / f"{frame_name(4)}.mkv") == 5


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
    assert frames_in(out / ANNOTATED_VIDEO) == 4 and not (out / ANNOTATED_DIR).exists()  # no segment of the earlier run


def test_map_files_sort_in_frame_order(model_file: Path, tmp_path: Path) -> None:
    model, config = load_model(model_file)
    out = tmp_path / "o"
    detect(model, config, str(frames_folder(tmp_path / "f", 8)), out, DetectOptions(save_maps="npy"), progress=False)
    written = sorted(p.relative_to(out).as_posix() for p in (out / "maps").rglob("*.npy"))
    assert written == [f"maps/00000000/{frame_name(i)}.npy" for i in range(4, 8)]


@pytest.mark.parametrize("kind", ["npy", "png"])
def test_maps_are_sharded_ten_thousand_to_a_folder(tmp_path: Path, kind: str) -> None:
    """A day at 25 frames/s is 2 million maps: one folder of them all stalls `ls`, backups and some filesystems. They go
    into maps/<frame // 10000, 8 digits>/, whose names sort in frame order as the files' do."""
    from mnad.outputs import DetectWriter

    writer = DetectWriter(tmp_path / "o", maps=kind)
    frames = [4, 9_999, 10_000, 10_001, 123_456_789]
    for i in frames:
        writer.error_map(i, np.full((8, 8), 0.5, np.float32))
    written = sorted(p.relative_to(tmp_path / "o").as_posix() for p in (tmp_path / "o" / "maps").rglob(f"*.{kind}"))
    assert written == [f"maps/{i // 10_000:08d}/{frame_name(i)}.{kind}" for i in frames] == [map_name(i, kind) for i in frames]
    assert sorted(p.name for p in (tmp_path / "o" / "maps").iterdir()) == ["00000000", "00000001", "00012345"]


def test_ctrl_c_leaves_every_segment_closed_and_readable(model_file: Path, tmp_path: Path) -> None:
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
    """A run killed outright (SIGKILL, a power cut, the OOM killer) cannot close its open file, which keeps what the
    muxer wrote (test_a_killed_segment_plays_up_to_its_last_write); the segments before it were closed and stay
    readable (one file, before, lost the whole video). Its last summary lists the closed files and names the open one."""
    folder = frames_folder(tmp_path / "f", 2000, size=16)
    out = tmp_path / "o"
    kill_when(RUN, [str(model_file), str(folder), str(out), str(SEGMENT)],
              lambda: (out / ANNOTATED_DIR).is_dir() and len(list((out / ANNOTATED_DIR).iterdir())) >= 3)  # 2 closed
    files = sorted((out / ANNOTATED_DIR).iterdir())
    assert len(files) >= 3 and [frames_in(f) for f in files[:-1]] == [5] * (len(files) - 1)
    assert files[0].name == f"{frame_name(4)}.mkv" and not (out / ANNOTATED_VIDEO).exists()
    # killed: nothing completed; the summary written when the last segment closed says so, and lists the closed files
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["ended_by"] is None
    listed = summary["annotated_video_files"]
    assert len(listed) >= 2 and listed == [f"{ANNOTATED_DIR}/{f.name}" for f in files[:len(listed)]]
    assert all(frames_in(out / f) == 5 for f in listed) and summary["frames_scored"] >= 5 * len(listed)
    # the file opened after them (None if the kill came between a close and the next open's summary)
    assert summary["annotated_video_open"] in (None, f"{ANNOTATED_DIR}/{files[len(listed)].name}")
    assert summary["annotated_video_deleted"] == 0


def test_the_command_line_checks_the_segment_length(model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mnad.cli import main

    source = str(frames_folder(tmp_path / "a", 6))
    assert main(["detect", source, "--checkpoint", str(model_file), "--out", str(tmp_path / "o"), "--save-video",
                 "--video-segment", "0", "--quiet"]) == 2
    assert "mnad: error: --video-segment must be a number of seconds > 0" in capsys.readouterr().err


def after_each_batch(monkeypatch: pytest.MonkeyPatch, out: Path, look: Callable[[dict], None]) -> None:
    """Call ``look`` with ``out``'s summary.json (where there is one) after each batch's summaries are written."""
    import mnad.detect as detect_module

    tick = detect_module._Progress.tick

    def checked(self: detect_module._Progress) -> None:
        tick(self)
        if (out / "summary.json").exists():
            look(json.loads((out / "summary.json").read_text()))

    monkeypatch.setattr(detect_module._Progress, "tick", checked)


def test_summary_json_never_lists_a_file_that_moved(model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When a second file begins, annotated.mkv moves into annotated/: summary.json is rewritten at once (was: it named
    annotated.mkv, gone, until the next rewrite; a run killed then left a summary pointing at a missing file)."""
    model, config = load_model(model_file)
    out, missing = tmp_path / "o", []

    def look(summary: dict) -> None:
        missing.extend(name for name in summary["annotated_video_files"] if not (out / name).exists())

    after_each_batch(monkeypatch, out, look)
    detect(model, config, [str(frames_folder(tmp_path / "a", 22))], out, DetectOptions(save_video=True, video_segment=SEGMENT),
           progress=False)
    assert missing == [] and len(json.loads((out / "summary.json").read_text())["annotated_video_files"]) == 4


def test_odd_frame_rates_and_cameras_that_misstate_theirs(tmp_path: Path) -> None:
    """66.667 frames/s (a time base of 1000/66667, which the MPEG-4 encoder refuses) is written at 66.67; a camera
    claiming 1000 frames/s but sending 2.5 still closes a file every --video-segment seconds of its frames' times."""
    from mnad.outputs import SegmentedVideo

    picture = np.zeros((32, 32, 3), np.uint8)
    odd = SegmentedVideo(tmp_path / "odd", 66.667, 600.0)
    (tmp_path / "odd").mkdir()
    for i in range(3):
        odd.write(picture, i, i / 66.667)
    odd.close()
    assert odd.files == [ANNOTATED_VIDEO] and frames_in(tmp_path / "odd" / ANNOTATED_VIDEO) == 3
    camera = SegmentedVideo(tmp_path / "camera", 1000.0, 1.0, clocked=True)
    (tmp_path / "camera").mkdir()
    for i in range(6):
        camera.write(picture, i, i * 0.4)  # 2.5 frames/s: the first file closes at its frame of 1.2 s
    camera.close()
    assert camera.files == [f"{ANNOTATED_DIR}/{frame_name(0)}.mkv", f"{ANNOTATED_DIR}/{frame_name(4)}.mkv"]
    assert [frames_in(tmp_path / "camera" / name) for name in camera.files] == [4, 2]


# A segment written in a process of its own, killed while it is open: 200 pictures of 320x240, then it waits
WRITE_AND_WAIT = """
import sys, time
import numpy as np
from pathlib import Path
from mnad.outputs import SegmentedVideo
video = SegmentedVideo(Path(sys.argv[1]), 25.0, 600.0)
rng = np.random.default_rng(0)
scene = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
for i in range(200):
    video.write(np.roll(scene, 3 * i, axis=1), i, i / 25)
print(video.name, flush=True)
time.sleep(120)
"""


def test_a_killed_segment_plays_up_to_its_last_write(tmp_path: Path) -> None:
    """SIGKILL mid-segment (a power cut, the OOM killer): the open file is Matroska and plays up to what the muxer had
    written (was MP4: no index until its close, so all 200 pictures were lost, 'moov atom not found')."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-c", WRITE_AND_WAIT, str(tmp_path)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        name = process.stdout.readline().strip()  # type: ignore[union-attr]
        assert name, process.stderr.read()  # type: ignore[union-attr]
    finally:
        process.kill()
        process.communicate(timeout=60)
    capture = cv2.VideoCapture(str(tmp_path / name))
    readable = 0
    while capture.grab():
        readable += 1
    capture.release()
    assert name == ANNOTATED_VIDEO and readable >= 150  # 182 here: the rest was in the muxer's buffers


def closed_files(video: object, count: int, per_file: int, size: tuple[int, int] = (64, 48)) -> None:
    """``count`` files of ``per_file`` pictures of noise (sizes that differ little), one picture a second."""
    rng = np.random.default_rng(0)
    for i in range(count * per_file):
        video.write(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), i, float(i))  # type: ignore[attr-defined]


def test_video_keep_deletes_the_oldest_files_first(tmp_path: Path) -> None:
    """--video-keep: as a file closes, the oldest closed files go until those kept fit; the newest is always kept."""
    from mnad.outputs import SegmentedVideo

    sizes = {}
    for keep in (None, 0):
        folder = tmp_path / str(keep)
        folder.mkdir()
        video = SegmentedVideo(folder, 1.0, 3.0, keep_bytes=keep)
        closed_files(video, 5, 3)
        video.close()
        sizes[keep] = video.sizes
        if keep is None:
            names = list(video.files)
            assert len(names) == 5 and video.deleted == 0
        else:  # nothing fits: the newest alone
            assert video.files == names[-1:] and video.deleted == 4
            assert sorted(p.name for p in (folder / ANNOTATED_DIR).iterdir()) == [Path(names[-1]).name]
    folder = tmp_path / "two"
    folder.mkdir()
    video = SegmentedVideo(folder, 1.0, 3.0, keep_bytes=sum(sizes[None][-2:]))  # room for the last two
    closed_files(video, 5, 3)
    video.close()
    assert video.files == names[-2:] and video.deleted == 3
    assert sorted(f"{ANNOTATED_DIR}/{p.name}" for p in (folder / ANNOTATED_DIR).iterdir()) == names[-2:]
    assert [frames_in(folder / n) for n in video.files] == [3, 3]


def test_summary_json_lists_the_files_kept_and_counts_those_deleted(model_file: Path, tmp_path: Path) -> None:
    model, config = load_model(model_file)
    out = tmp_path / "o"
    summary = detect(model, config, str(frames_folder(tmp_path / "f", 22)), out,
                     DetectOptions(save_video=True, video_segment=SEGMENT, video_keep=1e-9), progress=False)
    last = f"{ANNOTATED_DIR}/{frame_name(19)}.mkv"
    assert summary["annotated_video_files"] == [last] and summary["annotated_video_deleted"] == 3
    assert summary["annotated_video_open"] is None
    assert json.loads((out / "summary.json").read_text())["annotated_video_files"] == [last]
    assert [p.name for p in (out / ANNOTATED_DIR).iterdir()] == [Path(last).name] and frames_in(out / last) == 3


def test_video_keep_is_checked(model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for bad in (0, -1.0, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ConfigError, match="--video-keep must be a number of GiB > 0"):
            DetectOptions(video_keep=bad)  # type: ignore[arg-type]
    assert DetectOptions(save_video=True, video_keep=0.5).video_keep == 0.5 and DetectOptions().video_keep is None
    with pytest.raises(ConfigError, match="--video-keep bounds the annotated video that --save-video writes"):
        DetectOptions(video_keep=0.5)  # a bound on a video never written: the user meant to write it
    from mnad.cli import main

    source = str(frames_folder(tmp_path / "a", 6))
    for bad in ("0", "-2", "nan"):
        assert main(["detect", source, "--checkpoint", str(model_file), "--out", str(tmp_path / "o"), "--save-video",
                     "--video-keep", bad, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("mnad: error: --video-keep must be a number of GiB > 0") == 1 and "Traceback" not in err


def test_settings_of_the_annotated_video_without_it_are_refused(model_file: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    """--video-segment and --region-sigma set only the annotated video: without --save-video they changed nothing and
    the run exited 0 (as --video-keep's check says: the user meant to write it)."""
    from mnad.cli import main

    source = str(frames_folder(tmp_path / "a", 6))
    for option, value in (("--video-segment", "5"), ("--region-sigma", "3")):
        with pytest.raises(ConfigError, match=f"{option} sets .*which --save-video writes: add --save-video"):
            DetectOptions(**{option[2:].replace("-", "_"): float(value)})
        assert main(["detect", source, "--checkpoint", str(model_file), "--out", str(tmp_path / "o"), option, value,
                     "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count(f"mnad: error: {option} sets") == 1 and "Traceback" not in err
        assert not (tmp_path / "o").exists()
    assert DetectOptions(save_video=True, video_segment=5.0, region_sigma=3.0).region_sigma == 3.0


def video_property(path: Path, which: int) -> float:
    capture = cv2.VideoCapture(str(path))
    try:
        return capture.get(which)
    finally:
        capture.release()


def video_rate(path: Path) -> float:
    return video_property(path, cv2.CAP_PROP_FPS)


def video_frames(path: Path) -> int:
    return int(video_property(path, cv2.CAP_PROP_FRAME_COUNT))


def test_a_camera_that_misstates_its_rate_plays_at_the_rate_it_sends(tmp_path: Path) -> None:
    """A camera claiming 30 frames/s that sends 8: its first file plays at the claimed rate (nothing measured yet),
    each later one at the rate the previous file's frames came at (was: every file at 30, 3.75 times too fast). A
    file's frames, whose times are places in the file, keep its own rate."""
    from mnad.outputs import SegmentedVideo

    picture = np.zeros((32, 32, 3), np.uint8)
    rates = {}
    for clocked in (True, False):
        folder = tmp_path / str(clocked)
        folder.mkdir()
        video = SegmentedVideo(folder, 30.0, 1.0, clocked=clocked)
        for i in range(60):
            video.write(picture, i, i / 8)  # 8 frames/s by their times
        video.close()
        rates[clocked] = [video_rate(folder / name) for name in video.files]
    assert rates[True] == [30.0] + [8.0] * 7  # 9 frames in the first (1 s of times), then 8 a file
    assert rates[False] == [30.0, 30.0]


def test_a_cameras_first_file_at_its_claimed_rate_is_kept_short(tmp_path: Path) -> None:
    """A camera claiming 30 frames/s that sends 8, in files of 10 minutes: its first file (at the claimed rate, nothing
    measured yet) closes after FIRST_FILE_SECONDS of its frames' times, the next plays at 8 (was: the first 10 minutes
    played 3.75 times too fast). A file's frames keep the 10-minute files."""
    from mnad.outputs import FIRST_FILE_SECONDS, SegmentedVideo

    picture = np.zeros((32, 32, 3), np.uint8)
    frames = int(FIRST_FILE_SECONDS * 8) + 40
    for clocked in (True, False):
        folder = tmp_path / str(clocked)
        folder.mkdir()
        video = SegmentedVideo(folder, 30.0, 600.0, clocked=clocked)
        for i in range(frames):
            video.write(picture, i, i / 8)
        video.close()
        if clocked:
            assert [video_rate(folder / name) for name in video.files] == [30.0, 8.0]
            assert video_frames(folder / video.files[0]) == FIRST_FILE_SECONDS * 8 + 1  # up to FIRST_FILE_SECONDS of times
        else:
            assert video.files == ["annotated.mkv"]


def test_a_camera_measured_faster_than_the_encoder_takes_is_held(tmp_path: Path) -> None:
    """Frames a microsecond apart measure no rate the encoder takes (its time base must fit 16 bits), nor is a claim
    of 90,000 frames/s (an RTSP clock; was: StopIteration, a traceback): held to 1000."""
    from mnad.outputs import SegmentedVideo, encoder_rate

    assert encoder_rate(90_000.0) == 1000.0 and encoder_rate(0.001) == 1.0 and encoder_rate(66.667) == 66.67
    video = SegmentedVideo(tmp_path, 25.0, 600.0, clocked=True)
    picture = np.zeros((32, 32, 3), np.uint8)
    for i in range(40):  # the first file closes after 15,000 frames or 600 s of times: force it
        video.write(picture, i, i * 1e-6)
        if i == 19:
            video.close()
    video.close()
    assert [video_rate(tmp_path / name) for name in video.files] == [25.0, 1000.0]


def test_an_earlier_runs_annotated_mp4_is_still_its_output(model_file: Path, tmp_path: Path) -> None:
    """A run of a version that wrote annotated.mp4 is replaced whole by --overwrite (was: its source folders were
    refused as holding files detect did not write, and one source's annotated.mp4 was left behind as a user's)."""
    model, config = load_model(model_file)
    sources = [str(frames_folder(tmp_path / name, 8)) for name in ("a", "b")]
    out = tmp_path / "o"
    detect(model, config, sources, out, DetectOptions(save_video=True), progress=False)
    for folder in ("0_a", "1_b"):
        (out / folder / ANNOTATED_VIDEO).rename(out / folder / "annotated.mp4")
    detect(model, config, sources, out, DetectOptions(save_video=True, overwrite=True), progress=False)
    for folder in ("0_a", "1_b"):
        assert sorted(p.name for p in (out / folder).iterdir() if p.suffix in (".mp4", ".mkv")) == [ANNOTATED_VIDEO]
    single = tmp_path / "single"
    detect(model, config, sources[0], single, DetectOptions(save_video=True), progress=False)
    (single / ANNOTATED_VIDEO).rename(single / "annotated.mp4")
    detect(model, config, sources[0], single, DetectOptions(overwrite=True), progress=False)
    assert not (single / "annotated.mp4").exists() and not (single / ".mnad-detect-earlier").exists()


def test_summary_json_names_the_file_being_written(model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the run goes on, summary.json names the open file (``annotated_video_open``): a killed run's last summary
    says which file holds its last minutes, playable up to the kill. It is rewritten when a file opens, not only when
    one closes; the complete summary has none."""
    model, config = load_model(model_file)
    out, seen = tmp_path / "o", []

    def look(summary: dict) -> None:
        if not summary["complete"]:
            opened = summary["annotated_video_open"]
            seen.append(opened)
            assert opened is None or ((out / opened).is_file() and opened not in summary["annotated_video_files"])

    after_each_batch(monkeypatch, out, look)
    summary = detect(model, config, [str(frames_folder(tmp_path / "a", 22))], out,
                     DetectOptions(save_video=True, video_segment=SEGMENT), progress=False)
    assert [f"{ANNOTATED_DIR}/{frame_name(i)}.mkv" for i in (9, 14, 19)] == sorted({n for n in seen if n and "/" in n})
    assert ANNOTATED_VIDEO in seen and summary["annotated_video_open"] is None


def test_a_file_video_keep_cannot_delete_fails_the_source_and_stays_listed(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk would fill without a word: a file that cannot be deleted is a DataError naming it, and stays listed."""
    from mnad.outputs import SegmentedVideo

    real = Path.unlink

    def refuse(self: Path, missing_ok: bool = False) -> None:
        if self.suffix == ".mkv":
            raise PermissionError(13, "Permission denied")
        real(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse)
    video = SegmentedVideo(tmp_path, 1.0, 3.0, keep_bytes=1)
    with pytest.raises(DataError, match=f"{frame_name(0)}.mkv: cannot delete the oldest annotated video file for "
                                        "--video-keep \\(Permission denied"):
        closed_files(video, 2, 3)
    assert len(video.files) == 2 and video.deleted == 0 and all((tmp_path / n).is_file() for n in video.files)


@pytest.mark.parametrize(("option", "value", "words"), [
    ("video_keep", 1e300, "--video-keep must be a number of GiB > 0 and at most"),
    ("video_keep", 2.0**33, "--video-keep must be a number of GiB > 0 and at most"),
    ("video_segment", 1e308, "--video-segment must be a number of seconds > 0 and at most"),
    ("video_segment", 400 * 86400.0, "--video-segment must be a number of seconds > 0 and at most"),
])
def test_huge_video_options_are_refused_before_they_overflow(model_file: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture, option: str, value: float,
                                                            words: str) -> None:
    """A finite but huge --video-keep (GiB * 2**30 bytes) or --video-segment (rate * seconds frames) passed the check,
    then crashed the run at its first annotated frame (OverflowError: cannot convert float infinity to integer): each
    is bounded where it is checked, one error naming it."""
    from mnad.cli import main
    from mnad.detect import MAX_VIDEO_KEEP, MAX_VIDEO_SEGMENT

    with pytest.raises(ConfigError, match=words):
        DetectOptions(**{option: value})
    assert DetectOptions(save_video=True, video_keep=MAX_VIDEO_KEEP, video_segment=MAX_VIDEO_SEGMENT).video_keep == MAX_VIDEO_KEEP
    source = str(frames_folder(tmp_path / "a", 6))
    flag = "--" + option.replace("_", "-")
    assert main(["detect", source, "--checkpoint", str(model_file), "--out", str(tmp_path / "o"), "--save-video",
                 flag, repr(value), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count(f"mnad: error: {words}") == 1 and "Traceback" not in err


def test_the_largest_video_options_run(model_file: Path, tmp_path: Path) -> None:
    """At their bounds the options are numbers the annotated video can use: one file, nothing deleted."""
    from mnad.detect import MAX_VIDEO_KEEP, MAX_VIDEO_SEGMENT

    model, config = load_model(model_file)
    summary = detect(model, config, str(frames_folder(tmp_path / "f", 8)), tmp_path / "o",
                     DetectOptions(save_video=True, video_segment=MAX_VIDEO_SEGMENT, video_keep=MAX_VIDEO_KEEP),
                     progress=False)
    assert summary["ended_by"] == "end of source" and summary["annotated_video_files"] == [ANNOTATED_VIDEO]
    assert summary["annotated_video_deleted"] == 0
