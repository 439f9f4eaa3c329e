"""A review of the data layer: the synthetic scene's names past 99 test videos (labels went to other videos), the
label-order warning that showed the same names twice, a sub-folder named like an image in a frame folder, a test
video too short for a clip found only after the others were scored, and a report drawn from another data root (a
bare IndexError; a frame folder's negative index wrapped to its end)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FakeVideo, frames_folder, tiny_config

from mnad.data import FrameFolder, load_labels, split_videos
from mnad.data import synthetic as synthetic_module
from mnad.data import videos as videos_module
from mnad.data.footage import footage_in
from mnad.data.synthetic import make_synthetic_dataset, video_name
from mnad.errors import DataError
from mnad.evaluate import evaluate, score_videos
from mnad.model import MNAD
from mnad.report import create_report


def untrained() -> tuple[MNAD, object]:
    config = tiny_config()
    torch.manual_seed(0)
    return MNAD(config.model), config


def copied_root(synthetic_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    return root


def keep_frames(folder: Path, n: int) -> None:
    for path in sorted(folder.iterdir())[n:]:
        path.unlink()


# ------------------------------------------------------------------------- 1. synthetic names past 99 test videos


def test_video_names_are_padded_to_the_width_of_the_count() -> None:
    assert [video_name(i, 5) for i in (0, 4)] == ["01", "05"]  # at least 2 digits, as before
    assert [video_name(i, 101) for i in (0, 9, 99, 100)] == ["001", "010", "100", "101"]
    names = [video_name(i, 1000) for i in range(1000)]
    assert sorted(names) == names  # sorted order (the labels' order) is creation order


def test_labels_of_101_synthetic_test_videos_go_to_their_own_videos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    # was: 01 .. 99, 100, 101 sorted as 10, 100, 101, 11: 50 of the 101 videos read another's labels, with a warning
    rendered = synthetic_module._render_video
    made: list[int] = []

    def numbered(*args: object) -> np.ndarray:  # each test video's labels spell its creation index in binary
        rendered(*args)
        if args[-1] is None:  # a training video
            return np.zeros(0)
        made.append(len(made))
        return np.array([(made[-1] >> bit) & 1 for bit in range(12)], dtype=np.int64)

    monkeypatch.setattr(synthetic_module, "_render_video", numbered)
    out = make_synthetic_dataset(tmp_path, n_train=1, n_test=101, n_frames=12, size=16)
    videos = split_videos(tmp_path, "synthetic", "testing")
    with caplog.at_level("WARNING"):
        labels = load_labels(out / "frame_labels_synthetic.npy", videos)
    assert "numeric order" not in caplog.text
    assert [v.name for v in videos] == [f"{i:03d}" for i in range(1, 102)]
    assert [int(sum(int(b) << k for k, b in enumerate(lab))) for lab in labels] == list(range(101))


# ------------------------------------------------------------------------------- 2. the label-order warning


def test_the_order_warning_shows_where_the_two_orders_first_differ(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    # was: "(01, 02, 03, 04, ...), which is not their numeric order (01, 02, 03, 04, ...)"
    path = tmp_path / "labels.npy"
    np.save(path, np.zeros(101 * 2, dtype=np.int64))
    videos = [FakeVideo(name, 2) for name in sorted(f"{i:02d}" for i in range(1, 102))]
    with caplog.at_level("WARNING"):
        load_labels(path, videos)
    assert "sorted name order (..., 10, 100, 101, 11, ...)" in caplog.text
    assert "numeric order (..., 10, 11, 12, 13, ...)" in caplog.text


# ------------------------------------------------------------------- 3. a sub-folder named like an image is ignored


@pytest.mark.parametrize("content", [None, "notes.txt"], ids=["empty", "no-footage"])
def test_a_folder_named_like_an_image_in_a_frame_folder_is_ignored(tmp_path: Path, content: str | None) -> None:
    # docs/data.md: sub-folders holding neither images nor videos are ignored (was: refused as "not a regular file
    # (a FIFO, device or socket named like an image)")
    folder = frames_folder(tmp_path / "v", 3)
    (folder / "00003.jpg").mkdir()
    if content:
        (folder / "00003.jpg" / content).write_text("x")
    video = FrameFolder(folder)
    assert [p.name for p in video.files] == ["00000.png", "00001.png", "00002.png"]
    found = footage_in(folder)
    assert len(found.images) == 3 and found.footage_folders() == []


# ------------------------------------------------------------- 4. a test video too short is refused before any scoring


def test_score_videos_refuses_a_short_video_before_scoring_any() -> None:
    model, config = untrained()
    # FakeVideo.frame raises: was, the first video scored whole and the second refused only when reached
    with pytest.raises(DataError, match=r"b: 3 frame\(s\), fewer than the 5 of one clip"):
        score_videos(model, config, [FakeVideo("a", 24), FakeVideo("b", 3)], progress=False)


def test_evaluate_refuses_a_short_test_video_before_scoring_any(synthetic_root: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    root = copied_root(synthetic_root, tmp_path)
    keep_frames(root / "synthetic" / "testing" / "frames" / "02", 3)
    label_file = root / "synthetic" / "frame_labels_synthetic.npy"
    np.save(label_file, np.load(label_file)[:, :24 + 3])
    read: list[int] = []
    frame = videos_module.FrameFolder.frame
    monkeypatch.setattr(videos_module.FrameFolder, "frame", lambda self, i, *a, **k: read.append(i) or frame(self, i, *a, **k))
    model, config = untrained()
    with pytest.raises(DataError, match=r"3 frame\(s\), fewer than the 5 of one clip.*every test video needs"):
        evaluate(model, config, root, out_dir=tmp_path / "eval", progress=False)
    assert read == []  # was: video 01's 24 frames scored first
    assert not (tmp_path / "eval").exists() or list((tmp_path / "eval").iterdir()) == []


# ----------------------------------------------------------------- 5. a report drawn from another data root


def test_a_frame_folder_refuses_an_index_out_of_range(tmp_path: Path) -> None:
    video = FrameFolder(frames_folder(tmp_path / "v", 3))
    assert video.frame(2, 32, 3).shape == (32, 32, 3)
    for index in (-1, 3):  # was: -1 read the last frame
        with pytest.raises(IndexError, match=f"frame {index} out of range \\(the folder has 3 frames\\)"):
            video.frame(index, 32, 3)


@pytest.mark.parametrize("change", ["shorter", "longer", "missing"])
def test_a_report_from_another_data_root_is_one_data_error(synthetic_root: Path, tmp_path: Path, change: str) -> None:
    model, config = untrained()
    evaluate(model, config, synthetic_root, out_dir=tmp_path / "eval", progress=False)
    other = copied_root(synthetic_root, tmp_path)
    frames = other / "synthetic" / "testing" / "frames"
    if change == "shorter":  # was: a bare IndexError from FrameFolder's file list
        keep_frames(frames / "01", 12)
        what = "test video '01' has 12 frames, the evaluated one 24"
    elif change == "longer":  # was: thumbnails drawn from other frames than the scores'
        for i in range(24, 30):
            shutil.copy(frames / "01" / "023.jpg", frames / "01" / f"{i:03d}.jpg")
        what = "test video '01' has 30 frames, the evaluated one 24"
    else:
        shutil.rmtree(frames / "02")
        what = "test video '02' scored by the evaluation is not there"
    report = tmp_path / "report"
    with pytest.raises(DataError, match="this data root differs from the one") as info:
        create_report(model, config, other, tmp_path / "eval", report, top_k=8)
    assert what in str(info.value) and str(other) in str(info.value)
    assert not (report / "thumbs").exists()  # refused before any thumbnail is drawn
