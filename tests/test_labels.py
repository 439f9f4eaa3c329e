"""Frame labels in every format (method doc 4.3): real Ped2/Avenue/ShanghaiTech arrays, CSV intervals, UCSD .m files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED, FakeVideo

from mnad.data import find_label_file, load_labels, split_videos
from mnad.data.videos import Video
from mnad.errors import DataError
from mnad.evaluate import VideoScores, attach_labels

LABELS = SHARED / "data" / "labels"


def fake_videos(lengths: list[int]) -> list[Video]:
    return [FakeVideo(f"{i + 1:02d}", n) for i, n in enumerate(lengths)]


def split_lengths(total: int, videos: int) -> list[int]:
    base = total // videos
    return [base] * (videos - 1) + [total - base * (videos - 1)]


# ----------------------------------------------------------------------------------------------------- real files


def test_real_ped2_npy_and_csv_agree(ped2_root: Path) -> None:
    videos = split_videos(ped2_root, "ped2", "testing")
    raw = np.load(ped2_root / "frame_labels_ped2.npy")
    assert raw.shape == (1, 2010)  # the published 2-D shape
    from_npy = load_labels(ped2_root / "frame_labels_ped2.npy", videos)
    from_csv = load_labels(ped2_root / "test_anomalies.csv", videos)
    assert len(from_npy) == len(from_csv) == 12
    for a, b, video in zip(from_npy, from_csv, videos, strict=True):
        assert a.shape == (len(video),)
        np.testing.assert_array_equal(a, b)
    assert sum(int(a.sum()) for a in from_npy) == 1648
    first = from_npy[0]  # video 01: abnormal on 0-based frames 60..179
    assert first[:60].sum() == 0 and first[60:].all()
    for i in (7, 8, 9, 10):  # videos 08-11 are abnormal throughout
        assert from_npy[i].all()
    np.testing.assert_array_equal(np.concatenate(from_npy), raw[0])


def test_find_label_file_beside_ped2(ped2_root: Path) -> None:
    found = find_label_file(ped2_root, "ped2")
    assert found is not None and found.name in ("frame_labels_ped2.npy", "test_anomalies.csv")


def test_real_avenue_labels_two_dimensional_int8() -> None:
    path = LABELS / "frame_labels_avenue.npy"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    raw = np.load(path)
    assert raw.shape == (1, 15324) and raw.dtype == np.int8
    videos = fake_videos(split_lengths(15324, 21))
    labels = load_labels(path, videos)
    assert [a.size for a in labels] == [len(v) for v in videos]
    assert sum(int(a.sum()) for a in labels) == 3867
    assert all(a.dtype == np.int64 for a in labels)


def test_real_shanghaitech_labels_one_dimensional_uint8() -> None:
    path = LABELS / "frame_labels_shanghai.npy"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    raw = np.load(path)
    assert raw.shape == (40791,) and raw.dtype == np.uint8  # 1-D: the published code crashes on it (issue #47)
    videos = fake_videos(split_lengths(40791, 107))
    labels = load_labels(path, videos)
    assert len(labels) == 107
    assert sum(int(a.sum()) for a in labels) == 17326
    np.testing.assert_array_equal(np.concatenate(labels), raw)


# ----------------------------------------------------------------------------------------------------- formats


def test_npy_split_in_video_order(tmp_path: Path) -> None:
    path = tmp_path / "labels.npy"
    np.save(path, np.array([0, 1, 1, 0, 0, 0, 1], dtype=np.int64))
    labels = load_labels(path, fake_videos([3, 4]))
    np.testing.assert_array_equal(labels[0], [0, 1, 1])
    np.testing.assert_array_equal(labels[1], [0, 0, 0, 1])
    np.save(path, np.array([[0, 1, 1, 0, 0, 0, 1]], dtype=np.float32))  # (1, N) floats of 0/1 are fine too
    np.testing.assert_array_equal(np.concatenate(load_labels(path, fake_videos([3, 4]))), [0, 1, 1, 0, 0, 0, 1])


def test_csv_intervals(tmp_path: Path) -> None:
    path = tmp_path / "test_anomalies.csv"
    path.write_text(
        "video,frames,first_abnormal_frame,last_abnormal_frame\n"
        "01,10,3,5\n"
        "01,10,9,10\n"  # several intervals per video
        "02,6,,\n"  # no anomaly
        "03,4,1,1\n"
    )
    labels = load_labels(path, fake_videos([10, 6, 4]))
    np.testing.assert_array_equal(labels[0], [0, 0, 1, 1, 1, 0, 0, 0, 1, 1])  # 1-based, inclusive
    np.testing.assert_array_equal(labels[1], [0] * 6)
    np.testing.assert_array_equal(labels[2], [1, 0, 0, 0])


def test_csv_with_start_end_columns(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("video,start,end\n02,2,3\n")
    labels = load_labels(path, fake_videos([3, 4]))
    np.testing.assert_array_equal(labels[0], [0, 0, 0])
    np.testing.assert_array_equal(labels[1], [0, 1, 1, 0])


def test_ucsd_m_file(tmp_path: Path) -> None:
    path = tmp_path / "UCSDped2.m"
    path.write_text(
        "TestVideoFile = {};\n"
        "% ground truth of the test videos\n"
        "TestVideoFile{end+1}.gt_frame = [61:180];\n"
        "TestVideoFile{end+1}.gt_frame = [1:3, 7:8];\n"
        "TestVideoFile{end+1}.gt_frame = [5];\n"
    )
    labels = load_labels(path, fake_videos([180, 10, 6]))
    assert labels[0][:60].sum() == 0 and labels[0][60:].all() and labels[0].sum() == 120
    np.testing.assert_array_equal(labels[1], [1, 1, 1, 0, 0, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(labels[2], [0, 0, 0, 0, 1, 0])


def test_prediction_offset_drops_first_four_frames_of_every_video(tmp_path: Path) -> None:
    path = tmp_path / "labels.npy"
    first = [1, 1, 0, 0, 0, 1, 0, 1]
    second = [0, 0, 0, 0, 1, 1, 0]
    np.save(path, np.array([first + second]))
    labels = load_labels(path, fake_videos([8, 7]))
    scored = []
    for name, n in (("01", 8), ("02", 7)):
        frames = np.arange(4, n)  # a prediction model (t_length 5) scores frames 4.. of each video
        zeros = np.zeros(frames.size)
        scored.append(VideoScores(name, frames, zeros, zeros, zeros, zeros, zeros, zeros.astype(bool)))
    attach_labels(scored, labels)
    np.testing.assert_array_equal(scored[0].labels, first[4:])
    np.testing.assert_array_equal(scored[1].labels, second[4:])


# ----------------------------------------------------------------------------------------------------- errors


def test_wrong_total_length_names_file_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "frame_labels_x.npy"
    np.save(path, np.zeros((1, 25), dtype=np.int64))
    with pytest.raises(DataError) as info:
        load_labels(path, fake_videos([10, 12]))
    message = str(info.value)
    assert str(path) in message
    assert re.search(r"\b25\b", message) and re.search(r"\b22\b", message)


def test_values_outside_zero_one(tmp_path: Path) -> None:
    path = tmp_path / "l.npy"
    np.save(path, np.array([0, 1, 2, 0]))
    with pytest.raises(DataError, match="0 .*1"):
        load_labels(path, fake_videos([4]))
    np.save(path, np.array([0.0, 0.5, 1.0, 0.0]))
    with pytest.raises(DataError, match=re.escape(str(path))):
        load_labels(path, fake_videos([4]))


def test_three_dimensional_array_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "l.npy"
    np.save(path, np.zeros((1, 1, 4), dtype=np.int64))
    with pytest.raises(DataError, match=r"\(1, 1, 4\)"):
        load_labels(path, fake_videos([4]))
    np.save(path, np.zeros((2, 2), dtype=np.int64))  # 2-D but not (1, N)
    with pytest.raises(DataError, match="shape"):
        load_labels(path, fake_videos([4]))


def test_csv_unknown_video(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("video,first_abnormal_frame,last_abnormal_frame\n01,1,2\n07,1,2\n")
    with pytest.raises(DataError, match=r"'07'") as info:
        load_labels(path, fake_videos([4, 4]))
    assert "line 3" in str(info.value)


def test_csv_interval_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("video,first_abnormal_frame,last_abnormal_frame\n02,3,9\n")
    with pytest.raises(DataError, match="3-9"):
        load_labels(path, fake_videos([4, 8]))
    path.write_text("video,first_abnormal_frame,last_abnormal_frame\n01,0,2\n")  # 1-based: 0 is out of range
    with pytest.raises(DataError, match="outside"):
        load_labels(path, fake_videos([4, 8]))
    path.write_text("video,first_abnormal_frame,last_abnormal_frame\n01,3,2\n")  # reversed
    with pytest.raises(DataError):
        load_labels(path, fake_videos([4, 8]))


def test_csv_frame_count_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("video,frames,first_abnormal_frame,last_abnormal_frame\n01,5,1,2\n")
    with pytest.raises(DataError, match="5"):
        load_labels(path, fake_videos([4]))


def test_csv_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("name,from,to\n01,1,2\n")
    with pytest.raises(DataError, match="columns"):
        load_labels(path, fake_videos([4]))


def test_ucsd_m_errors(tmp_path: Path) -> None:
    path = tmp_path / "x.m"
    path.write_text("TestVideoFile{end+1}.gt_frame = [61:200];\n")
    with pytest.raises(DataError, match="61:200"):
        load_labels(path, fake_videos([180]))
    path.write_text("TestVideoFile{end+1}.gt_frame = [1:2];\n")
    with pytest.raises(DataError, match="1 videos.*2 test videos"):
        load_labels(path, fake_videos([4, 4]))


def test_missing_and_unknown_label_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_labels(tmp_path / "none.npy", fake_videos([4]))
    other = tmp_path / "labels.txt"
    other.write_text("0 1 0 1")
    with pytest.raises(DataError, match="format"):
        load_labels(other, fake_videos([4]))
    broken = tmp_path / "broken.npy"
    broken.write_bytes(b"not numpy")
    with pytest.raises(DataError, match=re.escape(str(broken))):
        load_labels(broken, fake_videos([4]))


def test_ucsd_m_ranges_with_a_step_or_spaces_and_what_is_not_a_range(tmp_path: Path) -> None:
    """MATLAB's a:step:b was read as a:step plus frame b (frames 1-2 and 10 for [1:2:10]); anything that is not a frame
    number or range is refused rather than skipped."""
    path = tmp_path / "x.m"
    path.write_text("TestVideoFile{end+1}.gt_frame = [1:2:9];\nTestVideoFile{end+1}.gt_frame = [2 : 4; 6];\n")
    labels = load_labels(path, fake_videos([10, 7]))
    np.testing.assert_array_equal(labels[0], [1, 0, 1, 0, 1, 0, 1, 0, 1, 0])
    np.testing.assert_array_equal(labels[1], [0, 1, 1, 1, 0, 1, 0])
    for entry, match in (("[1:x]", "cannot read '1:x'"), ("[3:0:9]", "interval 3:0:9 outside"), ("[1:2:3:4]", "cannot read")):
        path.write_text(f"TestVideoFile{{end+1}}.gt_frame = {entry};\n")
        with pytest.raises(DataError, match=match):
            load_labels(path, fake_videos([10]))
