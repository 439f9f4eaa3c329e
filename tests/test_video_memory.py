"""A video file's decoded frames have one owner and a bound: they were all kept in memory by the VideoFile (an hour of
footage at 256x256 is 17.7 GB), outside the FrameStore's cap, until the system killed the run with no message. They
now go, decoded once per size, to a nameless temporary file on disk (checked to fit), read back at random."""

from __future__ import annotations

import errno
import os
import pickle
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

from mnad.data import ClipDataset, FrameFolder, FrameStore, VideoFile, capture, decoded
from mnad.data.pixels import prepare_frame
from mnad.data.videos import FrameRange
from mnad.errors import DataError

N_FRAMES = 300


@pytest.fixture(scope="module")
def video_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MJPG .avi of 300 different 48x40 frames."""
    path = tmp_path_factory.mktemp("video") / "camera.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (48, 40))
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
    for i in range(N_FRAMES):
        writer.write(np.roll(base, i, axis=1))
    writer.release()
    return path


@pytest.fixture(autouse=True)
def decode_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "decoded"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    return folder


def reference(path: Path, size: int, channels: int) -> np.ndarray:
    """Every frame as the whole-video decode in memory gave it (the values training has always seen)."""
    capture, frames = cv2.VideoCapture(str(path)), []
    while (read := capture.read())[0]:
        frames.append(prepare_frame(read[1], size, channels, path))
    capture.release()
    return np.stack(frames)


def count_opens(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    opened: list[Path] = []
    real = capture.open_capture

    def counting(path: str | Path) -> cv2.VideoCapture:
        opened.append(Path(path))
        return real(path)

    monkeypatch.setattr(capture, "open_capture", counting)
    return opened


def test_a_decoded_video_is_not_held_in_memory(video_path: Path) -> None:
    video = VideoFile(video_path)
    tracemalloc.start()
    try:
        video.frame(0, 32, 3)  # decodes all 300 frames: 0.9 MB at 32x32x3
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    whole = N_FRAMES * 32 * 32 * 3
    assert held < whole / 10 and peak < whole / 4  # was: every frame kept (held > whole)


def test_frames_are_the_same_values_at_random_and_each_size_is_decoded_once(video_path: Path, decode_here: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    opened = count_opens(monkeypatch)
    video = VideoFile(video_path)
    assert len(video) == N_FRAMES and len(opened) == 1  # counted
    expected = {(s, c): reference(video_path, s, c) for s, c in ((32, 3), (16, 1))}
    for i in np.random.default_rng(1).permutation(N_FRAMES)[:60]:
        for (size, channels), frames in expected.items():
            got = video.frame(int(i), size, channels)
            assert got.dtype == np.uint8 and got.shape == (size, size, channels)
            np.testing.assert_array_equal(got, frames[i])
    assert len(opened) == 3  # one decode per size, however the sizes alternate (was: a whole decode at each switch)
    video.frame(5, 32, 3)[:] = 0  # a caller's change stays its own
    np.testing.assert_array_equal(video.frame(5, 32, 3), expected[(32, 3)][5])
    assert os.listdir(decode_here) == []  # the decoded frames' file has no name: a killed run leaves nothing there
    for beyond in (N_FRAMES, -1):  # -1 was the last frame (a list's index)
        with pytest.raises(IndexError):
            video.frame(beyond, 32, 3)


def test_the_frame_store_does_not_copy_a_video_files_frames(video_path: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(6):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((20, 20, 3), 40 * i, np.uint8))
    opened = count_decodes(monkeypatch)  # the store's room check opens containers, decoding nothing
    video = VideoFile(video_path)
    videos = [video, FrameRange(VideoFile(video_path), 100, 200), FrameFolder(folder)]
    store = FrameStore(videos, 32, 3, max_bytes=1 << 30)
    dataset = ClipDataset(store, 5)
    dataset.preload()
    assert len(opened) == 3  # the video counted and decoded; the range's video (not counted: a range has its length) decoded
    assert store.cached_bytes == 6 * 32 * 32 * 3  # the frame folder's frames only (was: the video's too, a second owner)
    frames = reference(video_path, 32, 3)
    for i in np.random.default_rng(2).permutation(len(dataset))[:40]:
        v, start = dataset.index[i]
        first = start + (100 if v == 1 else 0)
        if v < 2:
            np.testing.assert_array_equal(store.clip(v, start, 5), frames[first:first + 5])
    assert len(opened) == 3
    with pytest.raises(IndexError):  # a clip past the range's end is not read from the frames after it
        store.clip(1, 97, 5)


def test_a_video_whose_frames_do_not_fit_on_disk_is_refused_before_decoding(video_path: Path, decode_here: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    opened = count_opens(monkeypatch)
    video = VideoFile(video_path)
    len(video)
    free = N_FRAMES * 64 * 64 * 3 - 1
    monkeypatch.setattr(decoded.shutil, "disk_usage", lambda _: type("Usage", (), {"free": free})())
    with pytest.raises(DataError, match=rf"camera\.avi: its {N_FRAMES} frames decoded at 64x64 need 0\.0 GB, and "
                                        rf".*decoded has 0\.0 GB free; set TMPDIR to a folder on a disk with room"):
        video.frame(0, 64, 3)
    assert len(opened) == 2  # opened, not read
    monkeypatch.setattr(decoded, "in_memory_filesystem", lambda _: True)  # a tmpfs: what it may use is memory
    monkeypatch.setattr(decoded, "available_memory", lambda: 2 * (N_FRAMES * 16 * 16 * 3 - 1))
    with pytest.raises(DataError, match=r"decoded is held in memory \(tmpfs\), 0\.0 GB of which can be used"):
        video.frame(0, 16, 3)
    video.frame(0, 8, 3)  # what fits is decoded


@pytest.mark.parametrize("when", ["writing", "flushing"])
def test_a_disk_that_fills_up_while_decoding_is_a_clear_error(video_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              when: str) -> None:
    def full(self: decoded.DecodedFrames, *args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    real = decoded.DecodedFrames.append
    if when == "writing":
        monkeypatch.setattr(decoded.DecodedFrames, "append", lambda self, f: full(self) if self.count == 50 else real(self, f))
    else:  # small frames wait in the file's buffer: the last of them are written when it is flushed
        monkeypatch.setattr(decoded.DecodedFrames, "finish", full)
    count = 50 if when == "writing" else N_FRAMES
    with pytest.raises(DataError, match=rf"camera\.avi: cannot write its decoded frames to .*decoded \(No space left on "
                                        rf"device, after {count} frames .*set TMPDIR"):
        VideoFile(video_path).frame(0, 16, 3)


def test_a_video_file_pickles_without_its_open_file(video_path: Path) -> None:
    video = VideoFile(video_path)
    first = video.frame(7, 16, 3)
    copy = pickle.loads(pickle.dumps(video))  # a spawned worker's copy decodes again
    np.testing.assert_array_equal(copy.frame(7, 16, 3), first)


FILE_LIMIT_SCRIPT = """
import resource, sys
from pathlib import Path
import cv2, numpy as np
folder = Path(sys.argv[1])
for k in range(120):
    writer = cv2.VideoWriter(str(folder / f"v{k:03d}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (16, 16))
    for i in range(2):
        writer.write(np.full((16, 16, 3), i * 40, np.uint8))
    writer.release()
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (100, 100 if sys.argv[2] == "hard" else hard))
from mnad.data.layouts import list_videos
from mnad.errors import DataError
videos = list_videos(folder)
try:
    for video in videos:
        video.frame(0, 16, 3)
    print("all", resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 100)
except DataError as exc:
    print("error", exc)
"""


@pytest.mark.parametrize("limit", ["soft", "hard"])
def test_many_video_files_open_at_once(tmp_path: Path, limit: str) -> None:
    """Each decoded video file holds one open file: the soft limit on open files is raised to the hard one, and a hard
    limit reached is said as such (was: 'cannot write its decoded frames ... set TMPDIR', from the 95th of 120 clips)."""
    import subprocess
    import sys

    (tmp_path / "clips").mkdir()
    done = subprocess.run([sys.executable, "-c", FILE_LIMIT_SCRIPT, str(tmp_path / "clips"), limit], capture_output=True,
                          text=True, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout.strip()
    if limit == "soft":
        assert out == "all True"
    else:
        assert out.startswith("error ") and "too many video files open at once" in out and "ulimit -n" in out


# ------------------------------------------------------------------ one decode, the dataset's room, train.cache_frames


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The videos of each pass that decoded frames (a capture read or grabbed), not of captures only opened."""
    passes: list[Path] = []
    real = capture.open_capture

    class Counting:
        def __init__(self, path: str | Path) -> None:
            self.capture, self.path, self.decoding = real(path), Path(path), False

        def _decodes(self) -> None:
            if not self.decoding:
                self.decoding = True
                passes.append(self.path)

        def read(self) -> tuple[bool, np.ndarray]:
            self._decodes()
            return self.capture.read()

        def grab(self) -> bool:
            self._decodes()
            return self.capture.grab()

        def __getattr__(self, name: str) -> object:
            return getattr(self.capture, name)

    monkeypatch.setattr(capture, "open_capture", Counting)
    return passes


def write_clips(folder: Path, count: int, frames: int = 20) -> list[Path]:
    folder.mkdir()
    paths = []
    for k in range(count):
        paths.append(folder / f"clip{k}.avi")
        writer = cv2.VideoWriter(str(paths[-1]), cv2.VideoWriter_fourcc(*"MJPG"), 10, (16, 16))
        for i in range(frames):
            writer.write(np.full((16, 16, 3), (40 * k + 7 * i) % 250, np.uint8))
        writer.release()
    return paths


def test_a_training_dataset_decodes_each_video_once(video_path: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Training asks every video's length (clips, held-out frames, a resume's check) before the frame store knows the
    size, and then decodes every frame: with ``decode_as`` the count is the decode to disk, one pass (was: a whole
    decode to count the frames, then another to decode them)."""
    from mnad.data import list_videos

    (tmp_path / "train").mkdir()
    os.symlink(video_path, tmp_path / "train" / "camera.avi")
    passes = count_decodes(monkeypatch)
    [video] = list_videos(tmp_path / "train", decode_as=(32, 3))
    assert passes == []  # listed and checked to fit: containers opened, nothing decoded
    head = FrameRange(video, 0, len(video) - 20)  # as train.split_holdout asks
    assert len(video) == N_FRAMES and len(passes) == 1
    dataset = ClipDataset(FrameStore([head], 32, 3), 5)
    dataset.preload()
    np.testing.assert_array_equal(dataset[7].numpy(), ClipDataset(FrameStore([head], 32, 3), 5)[7].numpy())
    np.testing.assert_array_equal(video.frames(3, 5, 32, 3), reference(video_path, 32, 3)[3:8])
    assert len(passes) == 1


def fits(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    monkeypatch.setattr(decoded.shutil, "disk_usage", lambda _: type("Usage", (), {"free": free})())


ONE_CLIP = 20 * 32 * 32 * 3  # bytes of a clip of write_clips decoded at 32x32


def test_a_dataset_whose_videos_do_not_fit_together_is_refused_before_any_is_decoded(
        tmp_path: Path, decode_here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each video would fit alone: the check was per video, at its decode, so the third of three failed after the
    first two were decoded (hours in, for a real folder). The frame store checks all of them at once, before any is
    decoded, with the counts training has by then."""
    from mnad.data import list_videos

    write_clips(tmp_path / "clips", 3)
    fits(monkeypatch, 2 * ONE_CLIP + 1)
    passes = count_decodes(monkeypatch)
    videos = list_videos(tmp_path / "clips")
    assert [len(v) for v in videos] == [20, 20, 20] and len(passes) == 3  # counted, as training does first
    with pytest.raises(DataError, match=rf"clips: its 3 video files decoded at 32x32 \(60 frames\) need 0\.0 GB on disk, "
                                        rf"and .*decoded has 0\.0 GB free \(TMPDIR is {decode_here}\); set TMPDIR to a "
                                        "folder on a disk with room"):
        FrameStore(videos, 32, 3)
    assert len(passes) == 3  # nothing decoded
    videos[0].frame(0, 32, 3)  # one decoded, taking its room: the others need what is left
    fits(monkeypatch, ONE_CLIP + 1)
    FrameStore(videos[:2], 32, 3)
    with pytest.raises(DataError, match=r"clips: its 2 video files decoded at 32x32 \(40 frames\)"):
        FrameStore(videos, 32, 3)
    monkeypatch.setattr(decoded, "in_memory_filesystem", lambda _: True)  # a tmpfs: half the memory available at most
    monkeypatch.setattr(decoded, "available_memory", lambda: ONE_CLIP)
    with pytest.raises(DataError, match=r"clips: its 1 video files .*decoded is held in memory \(tmpfs\)"):
        FrameStore(videos[:2], 32, 3)


def test_a_dataset_listed_for_training_is_checked_to_fit_when_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Listed with the size it will be read at, a folder's video files are counted by their decode: their room is
    checked before, from their containers' counts, without decoding."""
    from mnad.data import list_videos

    write_clips(tmp_path / "clips", 3)
    passes = count_decodes(monkeypatch)
    fits(monkeypatch, 3 * ONE_CLIP - 1)
    with pytest.raises(DataError, match=r"clips: its 3 video files decoded at 32x32 \(60 frames\) need"):
        list_videos(tmp_path / "clips", decode_as=(32, 3))
    fits(monkeypatch, 3 * ONE_CLIP)
    assert [len(v) for v in list_videos(tmp_path / "clips", decode_as=(32, 3))] == [20, 20, 20]
    assert len(passes) == 3  # one pass each: the decode that counted them


def test_cache_frames_off_says_video_files_are_decoded_to_disk_all_the_same(video_path: Path, tmp_path: Path,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    """``train.cache_frames = false`` applies to frame folders: video files cannot be read at random without their
    decode on disk. The setting did nothing for them, unsaid."""
    import logging

    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "000.png"), np.zeros((8, 8, 3), np.uint8))
    with caplog.at_level(logging.WARNING, logger="mnad.data.clips"):
        FrameStore([VideoFile(video_path), FrameFolder(folder)], 32, 3)
        FrameStore([FrameFolder(folder)], 32, 3, cache=False)
        assert caplog.records == []
        FrameStore([VideoFile(video_path), FrameFolder(folder)], 32, 3, cache=False)
    [said] = [r.getMessage() for r in caplog.records]
    assert "train.cache_frames = false" in said and "the 1 video files among the 2 training videos are decoded to disk" in said
