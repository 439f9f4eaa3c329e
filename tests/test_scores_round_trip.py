"""scores.csv's reader and writer are a pair: ``scores_csv_bytes(read_scores(path))`` is the file mnad wrote, byte
for byte, under both protocols of ``evaluate`` (an audit found ``VideoRows`` without what the writer reads)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import tiny_config

from mnad import outputs
from mnad.calibrate import calibrate, with_calibration
from mnad.data import split_videos
from mnad.evaluate import evaluate
from mnad.model import MNAD
from mnad.outputs import evaluation


def by_rows(path: Path) -> list[outputs.VideoRows]:
    """The row-by-row reader's videos (the rule; the fast reader's are checked against it)."""
    text = path.read_bytes().decode("utf-8")
    return evaluation._scores_by_rows(text, next(csv.reader(io.StringIO(text, newline=""))))


def assert_round_trip(path: Path) -> None:
    assert outputs.scores_csv_bytes(outputs.read_scores(path)) == path.read_bytes()
    assert outputs.scores_csv_bytes(by_rows(path)) == path.read_bytes()


@pytest.mark.parametrize("protocol", ["published", "stream"])
def test_an_evaluations_scores_read_back_write_the_same_bytes(synthetic_root: Path, tmp_path: Path, protocol: str) -> None:
    torch.manual_seed(0)
    config = tiny_config().override(["eval.gamma=0.01"])
    model = MNAD(config.model).eval()
    if protocol == "stream":  # scores by a calibration's fixed ranges: not in [0, 1] as the published ones
        cal = calibrate(model, config, split_videos(synthetic_root, "synthetic", "training"), false_alarm_rate=0.05, smoothing=3,
                        progress=False)
        config = with_calibration(config, cal)
    evaluate(model, config, synthetic_root, protocol=protocol, out_dir=tmp_path / "e", progress=False)
    path = tmp_path / "e" / outputs.SCORES_FILE
    videos = outputs.read_scores(path)
    assert [v.name for v in videos] == ["01", "02"] and all(v.labels is not None for v in videos)
    assert all(np.isfinite(v.distance).all() and np.isfinite(v.patch_psnr).all() for v in videos)  # every column read
    assert_round_trip(path)


def test_unlabelled_odd_names_and_non_finite_values_round_trip(tmp_path: Path) -> None:
    n = 4
    videos = [SimpleNamespace(name=name, frames=np.arange(n) + 7, psnr=np.array([30.123456, np.inf, np.nan, 1e-7]),
                              patch_psnr=np.array([-np.inf, 2.5, 12.0, 99.999999]), distance=np.array([3.75123456e-06, 1e-9, 0.0, np.nan]),
                              patch_distance=np.array([1.23456789e-12, 4.0, 5.5e3, 6.0]), regular=np.array([0.0, 1.0, 0.12345678, np.nan]),
                              updated=np.array([True, False, True, False]), score=np.array([0.0, 1.0, -0.5, np.nan]), labels=labels)
              for name, labels in (('say "hi", a,b', None), ("two\nlines", np.array([0, 1, 1, 0])), ("café #1", None))]
    path = tmp_path / outputs.SCORES_FILE
    path.write_bytes(outputs.scores_csv_bytes(videos))
    assert_round_trip(path)
    got = outputs.read_scores(path)
    assert got[0].labels is None and got[1].labels.tolist() == [0, 1, 1, 0] and got[1].frames.tolist() == [7, 8, 9, 10]
    np.testing.assert_array_equal(got[2].patch_distance, [1.23456789e-12, 4.0, 5.5e3, 6.0])


def test_an_older_file_without_the_newer_columns_reads_them_as_nan(tmp_path: Path) -> None:
    path = tmp_path / outputs.SCORES_FILE
    path.write_text("video,frame,score,label\na,4,0.5,1\na,5,0.25,0\n")
    for video in (outputs.read_scores(path)[0], by_rows(path)[0]):
        assert np.isnan(video.distance).all() and np.isnan(video.regular).all() and video.patch_psnr.shape == (2,)
    # a VideoRows built without them (as the report's tests build one) writes NaN there
    rows = outputs.VideoRows(name="b", frames=np.array([1]), score=np.array([0.5]), labels=None, psnr=np.array([30.0]),
                             updated=np.array([False]))
    assert outputs.scores_csv_bytes([rows]).endswith(b"\r\nb,1,30.000000,nan,nan,0,0.500000,,nan,nan\r\n")


def test_video_rows_has_one_name_for_each_column(tmp_path: Path) -> None:
    # what read_scores gives is named as the writer reads it and as evaluate.VideoScores names it (frames, labels),
    # with no second name for the same array
    import dataclasses

    from mnad.evaluate import VideoScores

    fields = {f.name for f in dataclasses.fields(outputs.VideoRows)}
    assert set(outputs.ScoredVideo.__annotations__) <= fields <= {f.name for f in dataclasses.fields(VideoScores)}
    path = tmp_path / outputs.SCORES_FILE
    path.write_text("video,frame,score,label\na,4,0.5,1\na,5,0.25,0\n")
    for video in (outputs.read_scores(path)[0], by_rows(path)[0]):
        assert video.frames.tolist() == [4, 5] and video.labels.tolist() == [1, 0]
        assert not hasattr(video, "frame") and not hasattr(video, "label")
