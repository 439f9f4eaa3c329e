"""An audit of the benchmark data path and the offline evaluation: frame folders, layouts, label files and AUCs on the
edge cases a researcher meets (duplicate or missing frame numbers, non-finite scores, large datasets, ...)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import FakeVideo, tiny_config

from mnad.data import ClipDataset, FrameStore, dataset_dir, list_videos, load_labels
from mnad.data.videos import FrameFolder, Video
from mnad.errors import CheckpointError, DataError
from mnad.evaluate import VideoScores, add_scores, auc_metrics, evaluate
from mnad.model import MNAD


def write_frames(folder: Path, names: list[str]) -> None:
    """Constant 16x16 frames whose value is their position (x 10), under the given names."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        assert cv2.imwrite(str(folder / name), np.full((16, 16, 3), 10 * i, dtype=np.uint8))


# ----------------------------------------------------------------------------------------------------- frame names


@pytest.mark.parametrize("names", [
    ["1.jpg", "01.jpg", "2.jpg"],  # the same frame under two paddings
    ["000.jpg", "000.png", "001.jpg"],  # the same frame under two extensions
    ["f_0001.JPG", "f_1.jpg", "f_0002.jpg"],
])
def test_two_files_of_one_frame_number_are_refused(tmp_path: Path, names: list[str]) -> None:
    # each would count as a frame, shifting every later frame off its label (was: read as 3 frames, silently)
    write_frames(tmp_path / "v", names)
    with pytest.raises(DataError, match="two frame files with one frame number") as info:
        FrameFolder(tmp_path / "v")
    assert str(tmp_path / "v") in str(info.value)


def test_a_gap_in_the_frame_numbers_is_read_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_frames(tmp_path / "v", ["000.jpg", "001.jpg", "003.jpg", "004.jpg"])
    with caplog.at_level("WARNING"):
        assert len(FrameFolder(tmp_path / "v")) == 4
    assert "skip from 001.jpg to 003.jpg" in caplog.text
    caplog.clear()
    write_frames(tmp_path / "every5", ["000.jpg", "005.jpg", "010.jpg", "015.jpg"])  # every 5th frame kept: regular
    write_frames(tmp_path / "whole", [f"{i:03d}.jpg" for i in range(1, 6)])
    with caplog.at_level("WARNING"):
        FrameFolder(tmp_path / "every5")
        FrameFolder(tmp_path / "whole")
    assert "skip" not in caplog.text


# ----------------------------------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("link", ["03", "03.avi"])
def test_a_link_to_a_missing_video_is_an_error(tmp_path: Path, link: str) -> None:
    # a test video linked from another disk that is not mounted was left out of the split (was: silent, for a
    # link to a folder; a link to a video file failed later as "video file not found")
    write_frames(tmp_path / "frames" / "01", ["000.jpg", "001.jpg"])
    (tmp_path / "frames" / link).symlink_to(tmp_path / "elsewhere" / link)
    (tmp_path / "frames" / "notes.txt").symlink_to(tmp_path / "elsewhere" / "notes.txt")  # not a video: ignored
    with pytest.raises(DataError, match="which does not exist") as info:
        list_videos(tmp_path / "frames")
    assert str(tmp_path / "frames" / link) in str(info.value)
    write_frames(tmp_path / "elsewhere" / "03", ["000.jpg"])  # the disk is back: a link to a frame folder is a video
    (tmp_path / "frames" / link).unlink()
    (tmp_path / "frames" / "03").symlink_to(tmp_path / "elsewhere" / "03")
    assert [v.name for v in list_videos(tmp_path / "frames")] == ["01", "03"]


def test_the_layout_documentation_an_error_points_to_exists(tmp_path: Path) -> None:
    # the message named docs/data.md, which did not exist (was: a dead reference)
    with pytest.raises(DataError, match=r"docs/data\.md") as info:
        dataset_dir(tmp_path, "ped2")
    assert str(tmp_path) in str(info.value)
    text = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text()
    assert "testing/frames/<video>" in text and "1-based and inclusive" in text


# ----------------------------------------------------------------------------------------------------- scores


def scored(name: str, psnr: list[float], labels: list[int], distance: list[float] | None = None) -> VideoScores:
    frames = np.arange(4, 4 + len(psnr))  # a prediction model scores frames 4.. of each video
    d = np.array(distance if distance is not None else [0.1] * len(psnr), dtype=np.float64)
    video = VideoScores(name, frames, np.array(psnr, dtype=np.float64), np.array(psnr, dtype=np.float64), d, d,
                        np.zeros(len(psnr)), np.zeros(len(psnr), dtype=bool))
    video.labels = np.array(labels)
    return video


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_score_term_is_an_error_naming_the_video_and_frame(bad: float) -> None:
    # NaN: min-max normalisation turned the video's whole PSNR term into zeros and an AUC came out (was: silent);
    # inf: roc_auc_score's ValueError (was: a traceback)
    videos = [scored("01", [30.0, 31.0, 29.0, 20.0], [0, 0, 0, 1]), scored("02", [30.0, bad, 29.0, 20.0], [0, 0, 1, 1])]
    with pytest.raises(CheckpointError, match=r"video 02, frame 5: PSNR is (nan|-?inf) \(1 of its 4"):
        add_scores(videos, tiny_config())
    videos = [scored("01", [30.0, 31.0, 29.0, 20.0], [0, 0, 0, 1], distance=[0.1, bad, 0.1, 0.2])]
    with pytest.raises(CheckpointError, match="video 01, frame 5: D is"):
        add_scores(videos, tiny_config())
    videos[0].score = np.array([0.1, bad, 0.2, 0.9])
    with pytest.raises(CheckpointError, match="video 01, frame 5: score is"):
        auc_metrics(videos)


def test_evaluate_refuses_a_model_whose_outputs_are_not_finite(synthetic_root: Path, tmp_path: Path) -> None:
    config = tiny_config()
    torch.manual_seed(0)
    model = MNAD(config.model)
    with torch.no_grad():
        model.encoder.stage1[0].weight.fill_(3e38)  # finite weights whose activations overflow to inf, then NaN
    with pytest.raises(CheckpointError, match="video 01, frame 4: PSNR is nan"):
        evaluate(model, config, synthetic_root, out_dir=tmp_path / "eval", progress=False)
    assert not (tmp_path / "eval" / "metrics.json").exists()


# ----------------------------------------------------------------------------------------------------- frame cache


class CountingVideo(Video):
    """A stand-in video that counts how often each frame is decoded."""

    def __init__(self, name: str, n: int) -> None:
        self.name, self.path, self.n, self.decoded = name, Path(name), n, 0

    def __len__(self) -> int:
        return self.n

    def frame(self, index: int, size: int, channels: int) -> np.ndarray:
        self.decoded += 1
        return np.full((size, size, channels), index, dtype=np.uint8)


def test_the_frame_cache_is_bounded_by_the_memory_available(monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    # every frame was kept whatever its size: ShanghaiTech's training frames (54 GB at 256x256) filled the memory
    # until the system killed the run, with no message (was: unbounded)
    monkeypatch.setattr("mnad.data.clips.available_memory", lambda: 2 * 10 * 8 * 8 * 3)  # room for 10 frames of 8x8x3
    video = CountingVideo("a", 20)
    dataset = ClipDataset(FrameStore([video], 8, 3), 5)
    with caplog.at_level("WARNING"):
        dataset.preload()
    assert dataset.store.cached_bytes == 10 * 8 * 8 * 3 and video.decoded == 20
    assert "frame cache is full: 10 frames" in caplog.text and caplog.text.count("cache is full") == 1
    assert int(dataset[0][0, 0, 0, 0].add(1).mul(127.5).round()) == 0  # a kept frame, not decoded again
    assert video.decoded == 20
    assert int(dataset[15][-1, 0, 0, 0].add(1).mul(127.5).round()) == 19  # one beyond the cache: decoded again
    assert video.decoded == 25


# ----------------------------------------------------------------------------------------------------- label files


def test_a_commented_out_ucsd_entry_is_no_entry(tmp_path: Path) -> None:
    # a MATLAB comment holding an old entry was read as one: the entries after it went to the wrong videos
    # (was: labels shifted by one video, or a count error when the file was otherwise right)
    path = tmp_path / "UCSDped2.m"
    path.write_text("TestVideoFile = {};\n"
                    "TestVideoFile{end+1}.gt_frame = [2:3];  % TestVideoFile{end+1}.gt_frame = [1:4];\n"
                    "% TestVideoFile{end+1}.gt_frame = [1:2];\n"
                    "TestVideoFile{end+1}.gt_frame = [4];\n")
    labels = load_labels(path, [FakeVideo("Test001", 4), FakeVideo("Test002", 4)])
    np.testing.assert_array_equal(labels[0], [0, 1, 1, 0])
    np.testing.assert_array_equal(labels[1], [0, 0, 0, 1])


def test_a_label_folder_is_named_as_a_folder(tmp_path: Path) -> None:
    # was: "label file not found" for a folder that is there (ShanghaiTech's per-video test_frame_mask/, say)
    with pytest.raises(DataError, match="is a folder, expected a label file"):
        load_labels(tmp_path, [FakeVideo("01", 3)])


def test_labels_matched_by_order_warn_when_names_sort_out_of_numeric_order(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    # test videos 1, 2, ..., 10 sort as 1, 10, 2, ...: a .npy put together in numeric order went to the wrong videos,
    # with no word (was: silent)
    path = tmp_path / "labels.npy"
    np.save(path, np.zeros(30, dtype=np.int64))
    videos = [FakeVideo(name, 3) for name in sorted(str(i) for i in range(1, 11))]
    with caplog.at_level("WARNING"):
        load_labels(path, videos)
    assert "not their numeric order (1, 2, 3, 4, ...)" in caplog.text and str(path) in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        load_labels(path, [FakeVideo(f"{i:02d}", 3) for i in range(1, 11)])
    assert "numeric order" not in caplog.text


def test_the_macro_auc_says_how_many_videos_it_averages(capsys: pytest.CaptureFixture) -> None:
    # a video of one class has no AUC and is left out of the macro mean; the printed macro AUC did not say so, and
    # read as a mean over every video (was: "macro 100.00%" for 1 of 3 videos)
    from mnad.cli import print_metrics

    videos = [scored("01", [30.0, 20.0], [0, 1]), scored("02", [30.0, 20.0], [0, 0]), scored("03", [30.0, 20.0], [1, 1])]
    for v in videos:
        v.score = 1 - v.psnr / 30
    metrics = auc_metrics(videos)
    assert metrics["per_video_auc"] == {"01": 1.0} and metrics["videos_in_macro"] == 1 and metrics["macro_auc"] == 1.0
    print_metrics({**metrics, "note": ""})
    out = capsys.readouterr().out
    assert "macro 100.00% over 1 of 3 videos" in out and "2 videos are all normal or all abnormal" in out
