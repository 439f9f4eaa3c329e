"""The annotated video of ``mnad detect``: readable at a glance.

Each picture is the source frame at the video's size (``video_size``: the first frame's, scaled up when it is too
small to write the state on), with the regions of the error map outlined and tinted only while the detector alerts,
the state written on it (time, frame, score against the threshold, ALERT), and under it a labelled timeline of the
recent smoothed scores with the threshold line.
"""

from __future__ import annotations

import math
from collections import deque

import cv2
import numpy as np

from mnad.data.pixels import to_8bit
from mnad.data.streams import check_fps
from mnad.errors import ConfigError, DataError
from mnad.outputs.columns import shown_score
from mnad.scoring import abnormal_regions

ALERT_RED = (40, 40, 230)  # BGR
NORMAL_GREEN = (80, 200, 80)
TIMELINE_FRAMES = 200
MIN_WIDTH = 320  # narrower frames are scaled up: the state's text and the timeline's labels need about this much
TIMELINE_HEIGHT = 90
PLOT_LIMIT = 1e9  # scores plotted beyond this are drawn at it: the axis's span must stay finite


def video_size(height: int, width: int) -> tuple[int, int]:
    """(width, height) of the annotated video's frame picture for a source whose first frame is height x width: the
    frame scaled up by a whole factor to at least MIN_WIDTH (pixels stay square and sharp), then to even sides, which
    the encoder needs. The timeline strip goes under it."""
    if height < 1 or width < 1:
        raise DataError(f"a frame of {height} x {width} pixels cannot be annotated: its sides must be at least 1")
    factor = -(-MIN_WIDTH // width) if width < MIN_WIDTH else 1
    w, h = width * factor, height * factor
    return w + w % 2, h + h % 2


def to_bgr(image: np.ndarray) -> np.ndarray:
    """A frame as BGR uint8 (``mnad detect`` maps a 16-bit one by the model's pixel range first; else its high byte)."""
    if image.dtype != np.uint8:
        image = to_8bit(image, "frame", warn=False)  # a picture: the reading for the model warned, if any
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    return image[:, :, :3].copy()


def mark_regions(image: np.ndarray, error: np.ndarray, *, sigma: float) -> np.ndarray:
    """The abnormal regions (``scoring.abnormal_regions``) tinted red and outlined; the rest of the frame untouched."""
    h, w = image.shape[:2]
    mask = cv2.resize(abnormal_regions(error, sigma).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    tinted = image.copy()
    tinted[mask] = (0.55 * image[mask] + 0.45 * np.array(ALERT_RED)).astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(tinted, contours, -1, ALERT_RED, 2)
    return tinted


def _text(image: np.ndarray, text: str, org: tuple[int, int], color: tuple[int, int, int], scale: float = 0.45) -> None:
    """Text on a dark box: legible on any background."""
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x, y = org
    cv2.rectangle(image, (x - 2, y - h - 2), (x + w + 2, y + base), (0, 0, 0), -1)
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def timeline(scores: deque[float], width: int, threshold: float | None, *, fps: float) -> np.ndarray:
    """A strip TIMELINE_HEIGHT high plotting the last scores (x: seconds before now, y: smoothed score) with the
    threshold in red; the y range always holds the threshold and every plotted score. A score that is not finite (a
    model whose output went NaN) is a gap in the line, not a crash of the video being written."""
    check_fps(fps)
    if threshold is not None and not math.isfinite(threshold):
        raise ConfigError(f"the alert threshold must be a finite number, got {threshold!r}")
    height = TIMELINE_HEIGHT
    strip = np.full((height, width, 3), 24, np.uint8)
    left, right, top, bottom = 44, width - 8, 14, height - 18
    # NaN marks a gap; finite scores are clipped so that the axis's span stays finite
    values = [min(max(v, -PLOT_LIMIT), PLOT_LIMIT) if math.isfinite(v) else math.nan for v in scores]
    finite = [v for v in values if not math.isnan(v)]
    low = min([*finite, threshold if threshold is not None else 0.0, 0.0])
    high = max([*finite, threshold if threshold is not None else 0.0, 1e-6])
    span = (high - low) * 1.1 or 1.0
    low, high = low - 0.05 * span, low + span

    def y(v: float) -> int:
        return int(round(bottom - (v - low) / (high - low) * (bottom - top)))

    cv2.rectangle(strip, (left, top), (right, bottom), (90, 90, 90), 1)
    for v in (low, high):
        _text(strip, shown_score(v), (2, y(v) + 4), (200, 200, 200), 0.35)
    capacity = scores.maxlen or max(len(values), 1)
    _text(strip, f"-{capacity / fps:.0f}s", (left - 4, height - 4), (200, 200, 200), 0.35)
    _text(strip, "now", (right - 24, height - 4), (200, 200, 200), 0.35)
    _text(strip, "score", (left + 4, top - 3), (230, 230, 230), 0.35)
    if threshold is not None:
        cv2.line(strip, (left, y(threshold)), (right, y(threshold)), ALERT_RED, 1)
        label = f"threshold {shown_score(threshold)}"  # right-aligned: as wide as its digits
        _text(strip, label, (right - cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.35, 1)[0][0] - 2, top - 3), ALERT_RED, 0.35)
    if len(values) > 1:
        xs = np.linspace(left, right, capacity)[-len(values):]
        runs: list[list[list[int]]] = [[]]  # the line's pieces between gaps
        for x, v in zip(xs, values, strict=True):
            if math.isnan(v):
                runs.append([])
            else:
                runs[-1].append([int(x), y(v)])
        pieces = [np.array(run, np.int32) for run in runs if len(run) > 1]
        if pieces:
            cv2.polylines(strip, pieces, False, (255, 255, 255), 1, cv2.LINE_AA)
    return strip


def annotated_frame(
    image: np.ndarray,
    error: np.ndarray | None,
    *,
    frame: int,
    seconds: float,
    smoothed: float,
    threshold: float | None,
    alert: bool,
    history: deque[float],
    fps: float,
    size: tuple[int, int],
    region_sigma: float = 0.0,
) -> np.ndarray:
    """One picture of the annotated video (BGR uint8, ``size`` = (width, height) of its frame part, from
    ``video_size``): frame with state, regions while alerting, timeline below. A frame of another size (a camera that
    reconnected at another resolution, images of several sizes) is resized to it: a writer drops a picture of the
    wrong size without a word."""
    picture = to_bgr(image)
    if picture.shape[1::-1] != size:
        grows = size[0] > picture.shape[1]
        picture = cv2.resize(picture, size, interpolation=cv2.INTER_NEAREST if grows else cv2.INTER_AREA)
    if alert and error is not None:
        picture = mark_regions(picture, error, sigma=region_sigma)
    if alert:
        cv2.rectangle(picture, (0, 0), (picture.shape[1] - 1, picture.shape[0] - 1), ALERT_RED, 4)
    state = "ALERT" if alert else ("normal" if threshold is not None else "no threshold (uncalibrated)")
    _text(picture, f"{seconds:7.2f} s  frame {frame}", (6, 16), (255, 255, 255))
    vs = f" / {shown_score(threshold)}" if threshold is not None else ""
    _text(picture, f"score {shown_score(smoothed)}{vs}  {state}", (6, 34), ALERT_RED if alert else NORMAL_GREEN)
    return np.vstack([picture, timeline(history, picture.shape[1], threshold, fps=fps)])
