"""The report's plots of long inputs (a day of one camera at ~12 frames/s is 1 M frames): drawn as what the picture
can show, every peak kept, the ROC's AUC and ends exact; short inputs (Ped2's) drawn point for point. The plotted data
is checked, not pixels (png_bytes is replaced by one that keeps the figure): seconds."""

from __future__ import annotations

import numpy as np
import pytest

from mnad import outputs
from mnad.report import plots


def video(score: np.ndarray, label: np.ndarray | None = None, updated: np.ndarray | None = None, first: int = 4) -> outputs.VideoRows:
    n = score.size
    return outputs.VideoRows(name="camera", frames=np.arange(first, first + n), score=score, labels=label, psnr=np.full(n, 30.0),
                             updated=np.zeros(n, bool) if updated is None else updated)


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list:
    """The figures the plots make, instead of their PNG bytes."""
    figures: list = []
    monkeypatch.setattr(plots, "png_bytes", lambda fig, dpi=100: figures.append(fig) or b"")
    return figures


def lines(fig: object) -> list:
    return fig.axes[0].get_lines()


def test_a_single_frame_spike_in_a_million_frames_is_drawn(drawn: list) -> None:
    """(was: all 1 M points handed to matplotlib, seconds per timeline; a spike survives only as long as every point
    does) The line is thinned to at most 4 points per column, and each column keeps its lowest and highest score."""
    rng = np.random.default_rng(0)
    n = 1_000_000
    score = rng.uniform(0.2, 0.4, n)
    spike = 654_321
    score[spike] = 0.97
    updated = rng.random(n) < 0.3
    plots.timeline_png(video(score, updated=updated), None)
    score_line, ticks = lines(drawn[0])
    x, y = score_line.get_data()
    assert x.size <= 4 * plots.TIMELINE_COLUMNS
    assert (spike + 4, 0.97) in set(zip(x.tolist(), y.tolist(), strict=True))  # the spike, at its own frame
    assert np.all(np.diff(x) > 0) and set(x.tolist()) <= set(range(4, n + 4))
    # every column's envelope is the whole line's
    frame = np.arange(4, n + 4)
    column = np.minimum(((frame - 4) * (plots.TIMELINE_COLUMNS / (n - 1))).astype(int), plots.TIMELINE_COLUMNS - 1)
    kept = np.minimum(((x - 4) * (plots.TIMELINE_COLUMNS / (n - 1))).astype(int), plots.TIMELINE_COLUMNS - 1)
    for extreme in (np.minimum, np.maximum):
        starts = np.flatnonzero(np.r_[True, np.diff(column) > 0])
        kept_starts = np.flatnonzero(np.r_[True, np.diff(kept) > 0])
        assert np.array_equal(extreme.reduceat(score, starts), extreme.reduceat(y, kept_starts))
    # one memory-update tick per column at most, none where no frame updated
    tick_x = ticks.get_xdata()
    assert tick_x.size <= plots.TIMELINE_COLUMNS and set(tick_x.tolist()) <= set(frame[updated].tolist())


def test_the_envelope_keeps_first_last_and_extremes_of_each_column() -> None:
    x = np.arange(20)
    y = np.array([5, 1, 9, 2, 3, 3, 0, 7, 7, 4, 1, 2, 8, 2, 6, 6, 5, 9, 1, 3], float)
    kept = plots.envelope(x, y, columns=2)  # columns 0-9 and 10-19
    assert kept.tolist() == [0, 2, 6, 9, 10, 17, 19]  # first, highest, lowest, last of each (the first of tied extremes)
    assert plots.envelope(np.full(3, 7), np.array([1.0, 0.0, 2.0]), columns=5).tolist() == [0, 1, 2]  # one frame number


def test_flickering_labels_are_shaded_as_the_picture_shows_them(drawn: list, monkeypatch: pytest.MonkeyPatch) -> None:
    """(was: one patch per labelled anomaly: 250 000 of them for labels that flicker frame by frame) Anomalies less than
    a column apart are shaded as one span; each abnormal frame stays inside a span."""
    from matplotlib.axes import Axes

    spans: list[tuple[float, float]] = []
    monkeypatch.setattr(Axes, "axvspan", lambda self, low, high, **kwargs: spans.append((low, high)))
    n = 500_000
    label = (np.arange(n) % 2).astype(int)
    label[200_000:300_000] = 0  # a gap of 100 000 frames (400 columns) stays unshaded
    plots.timeline_png(video(np.linspace(0, 1, n), label), None)
    assert spans == [(4.5, 200_003.5), (300_004.5, n + 3.5)]


def test_a_long_roc_is_thinned_to_its_shape_with_its_auc_and_ends_exact(drawn: list) -> None:
    """(was: every corner of the curve drawn, ~10^5 of them for 200 000 noisy frames)"""
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(1)
    n = 200_000
    label = (rng.random(n) < 0.2).astype(int)
    score = rng.normal(0, 1, n) + 0.8 * label
    plots.roc_png([video(score[: n // 2], label[: n // 2]), video(score[n // 2:], label[n // 2:])])
    ax = drawn[0].axes[0]
    pooled = next(line for line in ax.get_lines() if str(line.get_label()).startswith("all frames pooled"))
    auc = roc_auc_score(label, score)
    assert pooled.get_label() == f"all frames pooled (AUC {100 * auc:.2f}%)"
    fpr, tpr, _ = roc_curve(label, score)
    assert fpr.size > 2 * plots.THIN_ABOVE  # long enough to be thinned
    x, y = pooled.get_data()
    assert x.size <= 2 * plots.ROC_STEPS + 2
    assert (x[0], y[0], x[-1], y[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(x) >= 0) and np.all(np.diff(y) >= 0)
    assert abs(np.trapezoid(y, x) - auc) < 1e-3
    # every point of the curve is within 2 / ROC_STEPS of the drawn one, along fpr + tpr
    along, drawn_along = fpr + tpr, x + y
    bound = 2 / plots.ROC_STEPS + 1e-12
    assert np.abs(np.interp(along, drawn_along, x) - fpr).max() <= bound
    assert np.abs(np.interp(along, drawn_along, y) - tpr).max() <= bound
    per_video = [line for line in ax.get_lines() if line.get_color() == "0.75"]
    assert len(per_video) == 2 and all(line.get_xdata().size <= 2 * plots.ROC_STEPS + 2 for line in per_video)


def test_short_inputs_are_drawn_point_for_point(drawn: list) -> None:
    """Ped2's videos (120-180 frames) and anything up to THIN_ABOVE points are drawn as before the thinning: the same
    points, so the same pictures (checked byte for byte against the plots before it when this was written)."""
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(3)
    n = plots.THIN_ABOVE
    label = (np.arange(n) % 400 < 100).astype(int)
    updated = rng.random(n) < 0.3
    v = video(rng.uniform(0, 1, n) * 0.6 + 0.3 * label, label, updated)
    plots.timeline_png(v, 0.9)
    score_line, ticks = lines(drawn[0])
    assert np.array_equal(score_line.get_xdata(), v.frames) and np.array_equal(score_line.get_ydata(), v.score)
    assert np.array_equal(ticks.get_xdata(), v.frames[updated])
    ped2 = [video(rng.uniform(0, 1, 180), (np.arange(180) > 90).astype(int)) for _ in range(12)]
    plots.roc_png(ped2)
    labels, scores = np.concatenate([p.labels for p in ped2]), np.concatenate([p.score for p in ped2])
    pooled = drawn[1].axes[0].get_lines()[12]
    expected_fpr, expected_tpr, _ = roc_curve(labels, scores)
    assert np.array_equal(pooled.get_xdata(), expected_fpr) and np.array_equal(pooled.get_ydata(), expected_tpr)


def test_a_long_timeline_in_another_order_is_drawn_in_frame_order(drawn: list) -> None:
    n = 50_000
    score = np.random.default_rng(4).uniform(0, 0.5, n)
    score[123] = 1.0
    reverse = outputs.VideoRows(name="r", frames=np.arange(n)[::-1].copy(), score=score[::-1].copy(), labels=None,
                                psnr=np.full(n, 30.0), updated=np.zeros(n, bool))
    plots.timeline_png(reverse, None)
    x, y = lines(drawn[0])[0].get_data()
    assert np.all(np.diff(x) > 0) and (123, 1.0) in set(zip(x.tolist(), y.tolist(), strict=True))


def test_the_report_and_detects_writers_import_no_torch() -> None:
    """Writing a page or a detect output is file work: importing torch for it cost about 5 s of each `mnad report`."""
    import subprocess
    import sys

    code = "import sys, mnad.report.build, mnad.outputs, mnad.atomic; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
