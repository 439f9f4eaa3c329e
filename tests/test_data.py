"""Data layouts, frame decoding and clips (method doc, section 4), on tiny datasets written here and on real Ped2."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mnad.data import (
    ClipDataset,
    FrameFolder,
    FrameStore,
    Video,
    VideoFile,
    dataset_dir,
    list_videos,
    open_video,
    split_videos,
    to_tensor,
)
from mnad.errors import DataError

# ----------------------------------------------------------------------------------------------------- helpers


def flat(value: int, shape: tuple[int, ...] = (30, 40, 3)) -> np.ndarray:
    """A constant image: survives JPEG and MJPG almost exactly, and its value identifies it."""
    return np.full(shape, value, dtype=np.uint8)


def write_frames(folder: Path, values: list[int], *, names: list[str] | None = None, ext: str = ".jpg",
                 shape: tuple[int, ...] = (30, 40, 3)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    names = names or [f"{i:03d}{ext}" for i in range(len(values))]
    for name, value in zip(names, values, strict=True):
        assert cv2.imwrite(str(folder / name), flat(value, shape))


def write_video(path: Path, values: list[int], size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    assert writer.isOpened()
    for value in values:
        writer.write(flat(value, (size[1], size[0], 3)))
    writer.release()


def frame_value(video: Video, index: int, channels: int = 3) -> float:
    return float(video.frame(index, 16, channels).mean())


def values_of(video: Video) -> list[float]:
    return [frame_value(video, i) for i in range(len(video))]


class CountingVideo(Video):
    """A stand-in video that counts how often each frame is decoded."""

    def __init__(self, name: str, n: int) -> None:
        self.name, self.path, self.n = name, Path(name), n
        self.calls: dict[int, int] = {}

    def __len__(self) -> int:
        return self.n

    def frame(self, index: int, size: int, channels: int) -> np.ndarray:
        if not 0 <= index < self.n:
            raise IndexError(index)
        self.calls[index] = self.calls.get(index, 0) + 1
        return np.full((size, size, channels), 10 * index + (1 if self.name == "b" else 0), dtype=np.uint8)


# ----------------------------------------------------------------------------------------------------- layouts


def test_standard_layout(tmp_path: Path) -> None:
    base = tmp_path / "toy"
    write_frames(base / "training" / "frames" / "02", [50] * 6)
    write_frames(base / "training" / "frames" / "01", [10, 20, 30, 40, 50, 60, 70])
    write_frames(base / "testing" / "frames" / "01", [100] * 5)
    assert dataset_dir(tmp_path, "toy") == base
    train = split_videos(tmp_path, "toy", "training")
    assert [v.name for v in train] == ["01", "02"]  # sorted
    assert [len(v) for v in train] == [7, 6]
    assert all(isinstance(v, FrameFolder) for v in train)
    np.testing.assert_allclose(values_of(train[0]), [10, 20, 30, 40, 50, 60, 70], atol=2)
    test = split_videos(tmp_path, "toy", "testing")
    assert [(v.name, len(v)) for v in test] == [("01", 5)]
    # the dataset folder itself works as the root too
    assert [v.name for v in split_videos(base, "", "training")] == ["01", "02"]


def test_ucsd_archive_layout(tmp_path: Path) -> None:
    base = tmp_path / "UCSDped2"
    write_frames(base / "Train" / "Train001", [20, 40, 60], ext=".tif", shape=(30, 40))
    write_frames(base / "Train" / "Train002", [20] * 4, ext=".tif", shape=(30, 40))
    write_frames(base / "Test" / "Test001", [80, 90, 100, 110], ext=".tif", shape=(30, 40))
    write_frames(base / "Test" / "Test001_gt", [0, 255, 255, 0], ext=".bmp", shape=(30, 40))  # masks: skipped
    write_frames(base / "Test" / "Test002", [80] * 5, ext=".tif", shape=(30, 40))
    (base / "Test" / "UCSDped2.m").write_text("TestVideoFile = {};\n")  # not a video: ignored
    assert dataset_dir(tmp_path, "ped2") == base
    train = split_videos(tmp_path, "ped2", "training")
    assert [(v.name, len(v)) for v in train] == [("Train001", 3), ("Train002", 4)]
    test = split_videos(tmp_path, "ped2", "testing")
    assert [(v.name, len(v)) for v in test] == [("Test001", 4), ("Test002", 5)]
    # grayscale .tif read as 3 equal channels
    frame = test[0].frame(2, 16, 3)
    assert frame.shape == (16, 16, 3)
    np.testing.assert_array_equal(frame, np.full((16, 16, 3), 100, np.uint8))


def test_video_files_layout(tmp_path: Path) -> None:
    base = tmp_path / "toy"
    write_frames(base / "training" / "frames" / "01", [10] * 5)
    write_video(base / "testing" / "videos" / "02.avi", [30] * 4)
    write_video(base / "testing" / "videos" / "01.avi", [0, 40, 80, 120, 160, 200])
    (base / "testing" / "videos" / "notes.txt").write_text("not a video")
    test = split_videos(tmp_path, "toy", "testing")
    assert [v.name for v in test] == ["01", "02"]
    assert all(isinstance(v, VideoFile) for v in test)
    assert [len(v) for v in test] == [6, 4]
    np.testing.assert_allclose(values_of(test[0]), [0, 40, 80, 120, 160, 200], atol=4)


def test_avenue_style_video_folders(tmp_path: Path) -> None:
    base = tmp_path / "avenue"
    write_video(base / "training_videos" / "01.avi", [10, 20, 30, 40, 50])
    write_video(base / "testing_videos" / "01.avi", [60] * 3)
    write_video(base / "testing_videos" / "02.avi", [90] * 7)
    train = split_videos(tmp_path, "avenue", "training")
    test = split_videos(tmp_path, "avenue", "testing")
    assert [(v.name, len(v)) for v in train] == [("01", 5)]
    assert [(v.name, len(v)) for v in test] == [("01", 3), ("02", 7)]
    np.testing.assert_allclose(values_of(test[1]), [90] * 7, atol=4)


def test_list_videos_mixes_frame_folders_and_files(tmp_path: Path) -> None:
    write_frames(tmp_path / "own" / "b_cam", [10] * 3)
    write_video(tmp_path / "own" / "a_cam.avi", [20] * 4)
    write_video(tmp_path / "own" / "c_cam.avi", [30] * 2)
    videos = list_videos(tmp_path / "own")
    assert [(type(v).__name__, v.name, len(v)) for v in videos] == [
        ("VideoFile", "a_cam", 4), ("FrameFolder", "b_cam", 3), ("VideoFile", "c_cam", 2)]
    single = list_videos(tmp_path / "own" / "b_cam")  # one frame folder given directly
    assert [(v.name, len(v)) for v in single] == [("b_cam", 3)]


def test_open_video_chooses_by_path(tmp_path: Path) -> None:
    write_frames(tmp_path / "frames", [1, 2])
    write_video(tmp_path / "clip.avi", [5, 5, 5])
    assert isinstance(open_video(tmp_path / "frames"), FrameFolder)
    assert isinstance(open_video(tmp_path / "clip.avi"), VideoFile)
    with pytest.raises(DataError, match="missing"):
        open_video(tmp_path / "missing.txt")


def test_missing_root_and_empty_folders_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=str(tmp_path / "nowhere")):
        split_videos(tmp_path / "nowhere", "toy", "training")
    (tmp_path / "toy" / "training" / "frames" / "01").mkdir(parents=True)
    with pytest.raises(DataError, match="no frames"):
        split_videos(tmp_path, "toy", "training")
    with pytest.raises(ValueError):
        split_videos(tmp_path, "toy", "validation")


# ----------------------------------------------------------------------------------------------------- frames


def test_unpadded_frame_numbers_are_read_in_numeric_order_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # img_1, img_2, img_10: a sorted listing would read img_10 second; natural order reads 1, 2, 10 and says so
    names = ["img_1.jpg", "img_2.jpg", "img_10.jpg"]
    write_frames(tmp_path / "v", [10, 20, 100], names=names)
    with caplog.at_level("WARNING"):
        video = FrameFolder(tmp_path / "v")
    assert [p.name for p in video.files] == names
    np.testing.assert_allclose(values_of(video), [10, 20, 100], atol=2)
    assert "without zero padding" in caplog.text


def test_special_files_among_frames_are_refused(tmp_path: Path) -> None:
    import os

    write_frames(tmp_path / "v", [10, 20])
    os.mkfifo(tmp_path / "v" / "zz.jpg")  # reading it would block for ever
    with pytest.raises(DataError, match="not a regular file"):
        FrameFolder(tmp_path / "v")


def test_one_based_frame_names_work(tmp_path: Path) -> None:
    # The published loader indexes by the number in the name, so 1-based names crash it (issue #31); here they don't.
    names = [f"{i:03d}.jpg" for i in range(1, 6)]
    write_frames(tmp_path / "v", [11, 22, 33, 44, 55], names=names)
    video = FrameFolder(tmp_path / "v")
    assert len(video) == 5
    np.testing.assert_allclose(values_of(video), [11, 22, 33, 44, 55], atol=2)
    with pytest.raises(IndexError):
        video.frame(5, 16, 3)


def test_non_image_files_and_hidden_files_are_ignored(tmp_path: Path) -> None:
    write_frames(tmp_path / "v", [10, 20])
    (tmp_path / "v" / "Thumbs.db").write_bytes(b"x")
    (tmp_path / "v" / "notes.txt").write_text("x")
    assert cv2.imwrite(str(tmp_path / "v" / ".hidden.jpg"), flat(99))
    assert len(FrameFolder(tmp_path / "v")) == 2


def test_channels_gray_to_three_and_color_to_one(tmp_path: Path) -> None:
    gray = np.arange(30 * 40, dtype=np.uint8).reshape(30, 40)
    color = np.stack([gray, 255 - gray, gray // 2], axis=2)
    (tmp_path / "g").mkdir()
    (tmp_path / "c").mkdir()
    assert cv2.imwrite(str(tmp_path / "g" / "000.png"), gray)
    assert cv2.imwrite(str(tmp_path / "c" / "000.png"), color)
    g3 = FrameFolder(tmp_path / "g").frame(0, 32, 3)
    assert g3.shape == (32, 32, 3) and g3.dtype == np.uint8
    np.testing.assert_array_equal(g3[..., 0], g3[..., 1])
    np.testing.assert_array_equal(g3[..., 0], g3[..., 2])
    g1 = FrameFolder(tmp_path / "g").frame(0, 32, 1)
    assert g1.shape == (32, 32, 1)
    np.testing.assert_array_equal(g1[..., 0], g3[..., 0])
    c1 = FrameFolder(tmp_path / "c").frame(0, 32, 1)
    expected = cv2.resize(cv2.cvtColor(color, cv2.COLOR_BGR2GRAY), (32, 32), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(c1[..., 0], expected)
    c3 = FrameFolder(tmp_path / "c").frame(0, 32, 3)
    np.testing.assert_array_equal(c3, cv2.resize(color, (32, 32), interpolation=cv2.INTER_LINEAR))  # BGR kept


def test_resize_is_bilinear_to_a_square(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    (tmp_path / "v").mkdir()
    assert cv2.imwrite(str(tmp_path / "v" / "000.png"), image)
    for size in (16, 64):
        frame = FrameFolder(tmp_path / "v").frame(0, size, 3)
        assert frame.shape == (size, size, 3)
        np.testing.assert_array_equal(frame, cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR))


def test_to_tensor_scales_to_minus_one_one() -> None:
    frames = np.zeros((2, 4, 5, 3), dtype=np.uint8)
    frames[0, 0, 0] = (0, 255, 127)
    t = to_tensor(frames)
    assert t.shape == (2, 3, 4, 5) and t.dtype == torch.float32
    assert t[0, 0, 0, 0].item() == -1.0
    assert t[0, 1, 0, 0].item() == 1.0
    assert t[0, 2, 0, 0].item() == pytest.approx(127 / 127.5 - 1)
    assert to_tensor(frames[0]).shape == (3, 4, 5)


# ----------------------------------------------------------------------------------------------------- clips


def test_frame_store_caches_each_frame_once() -> None:
    videos = [CountingVideo("a", 8), CountingVideo("b", 6)]
    store = FrameStore(videos, 8, 3, cache=True)
    dataset = ClipDataset(store, 5)
    for _ in range(2):  # two epochs
        for i in range(len(dataset)):
            dataset[i]
    assert videos[0].calls == {i: 1 for i in range(8)}
    assert videos[1].calls == {i: 1 for i in range(6)}


def test_frame_store_without_cache_decodes_again() -> None:
    video = CountingVideo("a", 8)
    dataset = ClipDataset(FrameStore([video], 8, 3, cache=False), 5)
    for i in range(len(dataset)):
        dataset[i]
    assert sum(video.calls.values()) == len(dataset) * 5 == 20
    assert video.calls[4] == 4  # frame 4 is in all four clips


def test_clip_dataset_length_and_content() -> None:
    videos = [CountingVideo("a", 8), CountingVideo("b", 6), CountingVideo("c", 4)]
    store = FrameStore(videos, 8, 3)
    dataset = ClipDataset(store, 5)
    assert len(dataset) == (8 - 5 + 1) + (6 - 5 + 1) + 0  # a video shorter than a clip gives none
    assert dataset.index == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]
    clip = dataset[5]  # video "b", frames 1..5
    assert clip.shape == (5, 3, 8, 8)
    expected = torch.stack([to_tensor(videos[1].frame(i, 8, 3)) for i in range(1, 6)])
    torch.testing.assert_close(clip, expected)
    assert ClipDataset(store, 1).__len__() == 18  # recon: every frame is a clip
    assert len(ClipDataset(store, 5, stride=2)) == 2 + 1


def test_clip_dataset_from_real_files(tmp_path: Path) -> None:
    write_frames(tmp_path / "v", [0, 50, 100, 150, 200, 250])
    store = FrameStore([FrameFolder(tmp_path / "v")], 16, 3)
    dataset = ClipDataset(store, 5)
    assert len(dataset) == 2
    means = dataset[1].mean(dim=(1, 2, 3))  # frames 1..5
    np.testing.assert_allclose(means.numpy(), np.array([50, 100, 150, 200, 250]) / 127.5 - 1, atol=0.02)


# ----------------------------------------------------------------------------------------------------- real Ped2

PED2_TRAIN = [120, 150, 150, 180, 180, 150, 150, 120, 180, 180, 180, 180, 180, 150, 150, 150]
PED2_TEST = [180, 180, 150, 180, 150, 180, 180, 180, 120, 150, 180, 180]


def test_real_ped2_splits(ped2_root: Path) -> None:
    train = split_videos(ped2_root, "ped2", "training")
    test = split_videos(ped2_root, "ped2", "testing")
    assert [v.name for v in train] == [f"{i:02d}" for i in range(1, 17)]
    assert [v.name for v in test] == [f"{i:02d}" for i in range(1, 13)]
    assert [len(v) for v in train] == PED2_TRAIN and sum(PED2_TRAIN) == 2550
    assert [len(v) for v in test] == PED2_TEST and sum(PED2_TEST) == 2010
    # the folder above works too, with the dataset name
    assert [len(v) for v in split_videos(ped2_root.parent, "ped2", "testing")] == PED2_TEST


def test_real_ped2_frame(ped2_root: Path) -> None:
    video = split_videos(ped2_root, "ped2", "testing")[0]
    raw = cv2.imread(str(video.files[0]))
    assert raw.shape == (240, 360, 3)
    frame = video.frame(0, 256, 3)
    assert frame.shape == (256, 256, 3) and frame.dtype == np.uint8
    tensor = to_tensor(frame)
    assert tensor.shape == (3, 256, 256)
    assert tensor.min() >= -1 and tensor.max() <= 1 and tensor.std() > 0.05
    np.testing.assert_array_equal(frame, cv2.resize(raw, (256, 256), interpolation=cv2.INTER_LINEAR))
    last = video.frame(len(video) - 1, 32, 1)
    assert last.shape == (32, 32, 1)
