"""Review of the scores files and of how a score is shown (2026-12-02): a detect row cut by a kill read as a number and
Nones, the stream protocol's S_t before the trailing mean not kept in an evaluation's scores.csv, and a threshold of
0.9951 shown as 1.00 on the annotated video and the timelines."""

from __future__ import annotations

import csv
from collections import deque
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_report_audit import scored_video

from mnad import outputs
from mnad.errors import DataError
from mnad.outputs import DetectWriter, read_detect_scores, read_scores, scores_csv_bytes, shown_score
from mnad.stream import FrameResult


def _detect_rows(folder: Path, n: int) -> Path:
    writer = DetectWriter(folder)
    for i in range(n):
        writer.score(FrameResult(index=i, psnr=30.0, patch_psnr=20.0, distance=1e-3, patch_distance=1e-3, regular=0.5, updated=False,
                                 score=0.25 + i, smoothed=0.5 + i), i / 25, False)
    writer.close({})
    return folder / "scores.csv"


def test_a_cut_last_detect_row_is_dropped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A run stopped while writing a row leaves it cut, without its line break: left out, said (was: read as a row
    with a wrong number and Nones)."""
    path = _detect_rows(tmp_path / "d", 3)
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex(b"2.250000") + 4])  # into the last row's score
    with caplog.at_level("WARNING"):
        rows = read_detect_scores(tmp_path / "d")
    assert [r["frame"] for r in rows] == ["0", "1"] and all(None not in r.values() for r in rows)
    assert "line 4" in caplog.text and "cut short" in caplog.text
    caplog.clear()
    whole = data.decode().splitlines(keepends=True)
    path.write_text("".join([*whole[:3], whole[3].rstrip("\r\n").rsplit(",", 1)[0] + ","]))  # cut just before `alert`
    with caplog.at_level("WARNING"):
        rows = read_detect_scores(tmp_path / "d")
    assert [r["frame"] for r in rows] == ["0", "1"]  # was: read as a whole row, its alert ''
    assert "line 4" in caplog.text and "cut short" in caplog.text


def test_a_short_detect_row_with_its_line_break_is_an_error(tmp_path: Path) -> None:
    """A row short of fields inside the file, or ended by a line break, is damage: a DataError naming file and line."""
    path = _detect_rows(tmp_path / "d", 3)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join([*lines[:2], "1,0.040,30.0\r\n", *lines[3:]]))
    with pytest.raises(DataError, match=r"scores\.csv: not a whole detect scores\.csv \(line 3 has 3 fields, its header 11\)"):
        read_detect_scores(path)
    path.write_text("".join([*lines[:3], "2,0.080\r\n"]))  # the last row, short, but ended
    with pytest.raises(DataError, match="line 4 has 2 fields"):
        read_detect_scores(path)
    path.write_text("".join([*lines[:3], lines[3].rstrip() + ",extra\r\n"]))
    with pytest.raises(DataError, match="line 4 has 12 fields"):
        read_detect_scores(path)


def _video(causal: bool) -> SimpleNamespace:
    video = scored_video("01", n=4)
    video.unsmoothed_score = np.array([0.1, 0.7, 0.2, 0.9]) if causal else None
    return video


def test_an_evaluations_unsmoothed_score_is_kept_where_it_was_made(tmp_path: Path) -> None:
    """Scores made causally (the stream protocol) keep S_t before the trailing mean, in unsmoothed_score, last: its
    micro_auc_unsmoothed can be computed again from the file (was: dropped). Files without it still read."""
    path = tmp_path / "scores.csv"
    path.write_bytes(scores_csv_bytes([_video(True)]))
    with path.open(newline="") as handle:
        header = next(csv.reader(handle))
    assert header == [*outputs.SCORES_HEADER, "unsmoothed_score"]
    (read,) = read_scores(path)
    assert np.array_equal(read.unsmoothed_score, [0.1, 0.7, 0.2, 0.9]) and scores_csv_bytes([read]) == path.read_bytes()
    path.write_bytes(scores_csv_bytes([_video(False)]))
    (plain,) = read_scores(path)
    assert plain.unsmoothed_score is None and scores_csv_bytes([plain]) == path.read_bytes()
    assert "unsmoothed_score" not in path.read_text().splitlines()[0]


# ------------------------------------------------------------------------------------- one way to show a score


def test_a_threshold_is_shown_to_four_significant_digits_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """0.9951 (was: '1.00' on the annotated video and the timelines, '0.9951' in the page's table)."""
    from mnad import annotate
    from mnad.report import plots

    assert shown_score(0.9951) == "0.9951" and shown_score(12.3456) == "12.35"
    texts: list[str] = []
    monkeypatch.setattr(annotate, "_text", lambda image, text, *a, **k: texts.append(text))
    annotate.annotated_frame(np.full((24, 32, 3), 128, np.uint8), None, frame=7, seconds=0.28, smoothed=0.99512, threshold=0.9951,
                             alert=False, history=deque([0.1, 0.99512], maxlen=200), fps=25.0, size=(320, 240))
    assert "score 0.9951 / 0.9951  normal" in texts and "threshold 0.9951" in texts
    labels: list[str] = []
    monkeypatch.setattr(plots, "png_bytes", lambda fig, dpi=100: labels.extend(
        t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()) or b"")
    plots.timeline_png(outputs.VideoRows(name="01", frames=np.arange(4), score=np.array([0.1, 0.99, 0.2, 0.3]), labels=None,
                                         psnr=np.zeros(4), updated=np.zeros(4, bool)), None, 0.9951)
    assert "alert threshold 0.9951" in labels


def test_a_published_evaluation_with_a_trailing_mean_keeps_its_unsmoothed_score() -> None:
    """Under the published protocol with eval.smoothing above 1, add_scores smoothed S_t and dropped the S_t before
    the mean; it is kept now (scores.csv's unsmoothed_score), and not where there is no mean to tell it from."""
    from conftest import tiny_config

    from mnad.evaluate import VideoScores, add_scores

    def video() -> VideoScores:
        rng = np.random.default_rng(0)
        n = 12
        return VideoScores(name="01", frames=np.arange(n), psnr=rng.uniform(20, 30, n), patch_psnr=rng.uniform(15, 25, n),
                           distance=rng.uniform(0.1, 0.3, n), patch_distance=rng.uniform(0.2, 0.4, n),
                           regular=np.zeros(n), updated=np.zeros(n, dtype=bool))

    config = tiny_config()
    config.eval.smoothing = 5
    smoothed = video()
    add_scores([smoothed], config)
    assert smoothed.unsmoothed_score is not None and not np.allclose(smoothed.unsmoothed_score, smoothed.score)
    assert np.allclose(smoothed.score[-1], smoothed.unsmoothed_score[-5:].mean())
    config.eval.smoothing = 1
    plain = video()
    add_scores([plain], config)
    assert plain.unsmoothed_score is None
