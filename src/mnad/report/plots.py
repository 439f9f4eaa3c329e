"""The report's plots, drawn with matplotlib's object API (no pyplot: no global backend or state) and returned as
PNG bytes; ``figure`` and ``png_bytes`` are shared with ``mnad.figures``."""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np

from mnad.events import anomalies
from mnad.outputs import VideoRows, shown_score

# A long video (a day of one camera at ~12 frames/s is 1 M frames) is drawn as what its picture can show: matplotlib
# draws a million-point line in seconds, and a timeline has about 800 pixel columns. Shorter inputs (Ped2's videos,
# 120-180 frames; a whole test set's pooled ROC) are drawn point for point, as before.
TIMELINE_COLUMNS = 2000  # columns a long timeline is thinned to: 2.5 per pixel column of its ~800-pixel axes
ROC_STEPS = 4000  # steps of fpr + tpr (0 to 2) a long ROC is thinned to: no point of it moves by more than 2/4000
THIN_ABOVE = 8000  # a line of more points than this is thinned (a thinned one has at most about this many)


def envelope(x: np.ndarray, y: np.ndarray, columns: int = TIMELINE_COLUMNS) -> np.ndarray:
    """The indices, in order, of the points of a line (``x`` nondecreasing) that draw what the whole line draws at
    ``columns`` columns of equal width: in each column its first, last, lowest and highest point (the M4 reduction of
    Jugel et al., 2014). Every peak and dip stays, each at its own x: a single-frame spike in a million frames is drawn."""
    span = float(x[-1] - x[0])
    column = np.minimum(((x - x[0]) * (columns / span)).astype(np.int64), columns - 1) if span > 0 else np.zeros(x.size, np.int64)
    starts = np.flatnonzero(np.r_[True, column[1:] != column[:-1]])
    counts = np.diff(np.r_[starts, x.size])
    segment = np.repeat(np.arange(starts.size), counts)
    keep = [starts, starts + counts - 1]
    for extreme in (np.minimum, np.maximum):
        at = np.flatnonzero(y == np.repeat(extreme.reduceat(y, starts), counts))
        keep.append(at[np.unique(segment[at], return_index=True)[1]])  # the first such point of each column
    return np.unique(np.concatenate(keep))


def thin_roc(fpr: np.ndarray, tpr: np.ndarray, steps: int = ROC_STEPS) -> tuple[np.ndarray, np.ndarray]:
    """A long ROC curve (more than ``THIN_ABOVE`` points) as at most 2 * ``steps`` of its points, its first (0, 0)
    and last (1, 1) among them; shorter curves are returned as they are. Along the curve fpr + tpr grows from 0 to 2:
    the first and last point of each of ``steps`` equal steps of it are kept, so between two kept points the curve
    stays in a box of at most 2 / ``steps`` (fpr + tpr): the drawn curve is the curve to a fraction of a pixel. The
    AUC the plot writes is computed from the scores, not from the drawn points."""
    if fpr.size <= THIN_ABOVE:
        return fpr, tpr
    step = np.minimum((fpr + tpr) * (steps / 2), steps - 1).astype(np.int64)
    changes = np.flatnonzero(step[1:] != step[:-1])
    keep = np.unique(np.r_[0, changes, changes + 1, fpr.size - 1])
    return fpr[keep], tpr[keep]


def _timeline_points(video: VideoRows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The frames and scores a timeline draws and the frames its memory-update ticks mark: all of them for a video of
    at most ``THIN_ABOVE`` frames; for a longer one, the ``envelope`` of its scores (in frame order) and one update
    tick per column (ticks closer than that are drawn over each other)."""
    frame, score, updated = video.frames, video.score, video.frames[video.updated]
    if frame.size <= THIN_ABOVE:
        return frame, score, updated
    if np.any(frame[1:] < frame[:-1]):  # a file in another order: its timeline is in frame order
        order = np.argsort(frame, kind="stable")
        frame, score = frame[order], score[order]
    kept = envelope(frame, score)
    if updated.size:
        span = max(float(frame[-1] - frame[0]), 1.0)
        column = np.minimum(((updated - frame[0]) * (TIMELINE_COLUMNS / span)).astype(np.int64), TIMELINE_COLUMNS - 1)
        updated = updated[np.unique(column, return_index=True)[1]]
    return frame[kept], score[kept], updated


def _shaded(video: VideoRows) -> list[tuple[int, int]]:
    """The labelled anomalies a timeline shades; in a video longer than ``THIN_ABOVE`` frames, anomalies less than a
    column apart are shaded as one (a gap narrower than a pixel cannot be seen; a quarter of a million flickering
    labels drawn one by one would take minutes)."""
    runs = anomalies(video.frames, video.labels)
    if video.frames.size <= THIN_ABOVE or len(runs) <= TIMELINE_COLUMNS:
        return runs
    gap = (float(video.frames.max() - video.frames.min()) or 1.0) / TIMELINE_COLUMNS
    merged = [runs[0]]
    for first, last in runs[1:]:
        if first - merged[-1][1] <= gap:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def figure(width: float, height: float, **kwargs: Any) -> Any:
    """A matplotlib Figure (constrained layout) of the given size in inches."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or state, Agg is used for PNG

    return Figure(figsize=(width, height), layout="constrained", **kwargs)


def plain_text(fig: Any) -> None:
    """Every text of ``fig`` drawn as written, not as mathtext: titles and labels hold user strings (video names,
    recipe names, log keys), and one with two '$' in it would be parsed as TeX, drawn garbled or (an unknown command,
    '$\\frac$') failing the whole report with a traceback. Tick labels and an axis' offset text are left alone: their
    formatters write mathtext on purpose (a log axis' 10^-2)."""
    from matplotlib.axis import Axis, Tick
    from matplotlib.text import Text

    formatted = {id(axis.offsetText) for axis in fig.findobj(Axis)}
    formatted |= {id(label) for tick in fig.findobj(Tick) for label in (tick.label1, tick.label2)}
    for text in fig.findobj(Text):
        if id(text) not in formatted:
            text.set_parse_math(False)


def png_bytes(fig: Any, dpi: int = 100) -> bytes:
    """The figure as PNG bytes, without the Software metadata entry (the same figure gives the same bytes); its
    texts are drawn as written (``plain_text``)."""
    plain_text(fig)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # a name in a script the font lacks (CJK) is drawn as boxes, and the page writes it in HTML beside the plot:
        # matplotlib's warning per glyph would only put Python warning lines on the terminal
        warnings.filterwarnings("ignore", r"Glyph \d+ .*missing from", UserWarning)
        fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def roc_png(videos: list[VideoRows]) -> bytes | None:
    from sklearn.metrics import roc_auc_score, roc_curve  # scikit-learn's ROC, as the evaluation's AUC is

    labelled = [v for v in videos if v.labels is not None]
    if not labelled:
        return None
    labels = np.concatenate([v.labels for v in labelled])
    scores = np.concatenate([v.score for v in labelled])
    if len(np.unique(labels)) < 2:
        return None
    fig = figure(5.2, 4.6)
    ax = fig.subplots()
    drawn = 0
    for v in labelled:
        if 0 < v.labels.sum() < v.labels.size:
            fpr, tpr = thin_roc(*roc_curve(v.labels, v.score)[:2])
            ax.plot(fpr, tpr, color="0.75", lw=0.8, label=None if drawn else "per video")
            drawn += 1
    auc = roc_auc_score(labels, scores)
    fpr, tpr = thin_roc(*roc_curve(labels, scores)[:2])
    ax.plot(fpr, tpr, color="C0", lw=2, label=f"all frames pooled (AUC {100 * auc:.2f}%)")
    ax.plot([0, 1], [0, 1], ls="--", color="0.5", lw=0.8, label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01), title="ROC, frame level")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return png_bytes(fig)


def histogram_png(videos: list[VideoRows]) -> bytes | None:
    labelled = [v for v in videos if v.labels is not None]
    if not labelled:
        return None
    labels = np.concatenate([v.labels for v in labelled])
    scores = np.concatenate([v.score for v in labelled])
    fig = figure(5.2, 4.6)
    ax = fig.subplots()
    bins = np.linspace(min(0.0, scores.min()), max(1.0, scores.max()), 41)
    for value, name, color in ((0, "normal", "C0"), (1, "abnormal", "C3")):
        chosen = scores[labels == value]
        if chosen.size:
            ax.hist(chosen, bins=bins, density=True, alpha=0.55, color=color, label=f"{name} ({chosen.size} frames)")
    ax.set(xlabel="anomaly score S_t", ylabel="density", title="Score distribution by label")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return png_bytes(fig)


def timeline_png(video: VideoRows, auc: float | None, threshold: float | None = None) -> bytes:
    """One video's score over its frames, labelled anomalies shaded, memory updates ticked; with ``threshold`` (a
    stream-protocol evaluation: causal, calibrated scores) the alert threshold as a red line."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    fig = figure(10, 2.1)
    ax = fig.subplots()
    if video.labels is not None:
        for first, last in _shaded(video):  # the anomalies the stream protocol counts
            ax.axvspan(first - 0.5, last + 0.5, color="C3", alpha=0.18, lw=0)
    frame, score, updated = _timeline_points(video)
    ax.plot(frame, score, color="C0", lw=1.1)
    low = min(0.0, float(video.score.min()), threshold if threshold is not None else 0.0)
    high = max(1.0, float(video.score.max()), threshold if threshold is not None else 1.0)
    if threshold is not None:
        ax.axhline(threshold, color="C3", lw=1, ls="--")
    if updated.size:
        ax.plot(updated, np.full(updated.size, low - 0.03 * (high - low)), "|", color="0.55", ms=4)
    ax.set_xlim(video.frames.min() - 0.5, video.frames.max() + 0.5)
    ax.set_ylim(low - 0.06 * (high - low), high + 0.05 * (high - low))
    title = f"video {video.name}" + (f": AUC {100 * auc:.2f}%" if auc is not None else "")
    ax.set_title(title, fontsize=10, loc="left")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("frame", fontsize=8)
    ax.set_ylabel("score", fontsize=8)
    ax.tick_params(labelsize=8)
    handles = [Patch(color="C3", alpha=0.3, label="labelled abnormal")] if video.labels is not None else []
    if threshold is not None:
        handles.append(Line2D([], [], color="C3", ls="--", label=f"alert threshold {shown_score(threshold)}"))
    if updated.size:
        handles.append(Line2D([], [], marker="|", ls="", color="0.55", label="memory updated"))
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0), frameon=False)  # beside, not over
    ax.grid(alpha=0.25)
    return png_bytes(fig)


def training_png(records: list[dict]) -> bytes | None:
    from matplotlib.ticker import MaxNLocator

    keys = [k for k in records[0] if k not in ("epoch", "seconds") and isinstance(records[0][k], int | float)] if records else []
    keys = [k for k in keys if all(isinstance(r.get(k), int | float) for r in records)][:8]
    if not keys:
        return None
    epochs = [r["epoch"] for r in records]
    fig = figure(min(3.0 * len(keys), 15), 2.8)
    axes = np.atleast_1d(fig.subplots(1, len(keys)))
    for ax, key in zip(axes, keys, strict=True):
        values = np.array([r[key] for r in records], dtype=np.float64)
        ax.plot(epochs, values, marker="o" if len(records) < 30 else None, ms=3, lw=1.2, color="C2" if key == "lr" else "C0")
        if (values > 0).all() and values.max() / values.min() > 20:
            ax.set_yscale("log")
        ax.set_title(key.removeprefix("loss_") + (" loss" if key.startswith("loss_") else ""), fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    return png_bytes(fig)

