"""Inputs of the public scoring, event and annotation functions: a map of the wrong shape, an unknown mode, an alpha,
window, threshold or fps out of range, labels that do not match, each refused with one ConfigError/DataError
naming what is wrong; a NaN score in the annotated video's timeline is a gap, not a crash."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest
import torch

from mnad.annotate import annotated_frame, timeline, video_size
from mnad.errors import ConfigError, DataError
from mnad.events import Event, EventTracker, event_measures
from mnad.scoring import abnormal_regions, anomaly_score, error_map, psnr, regular_score, smooth

# ----------------------------------------------------------------------------------------- error maps and regions


def _maps() -> np.ndarray:
    """``error_map``'s output for one frame: (1, H, W), with an object in one corner."""
    torch.manual_seed(0)
    target = torch.rand(1, 3, 24, 32) * 2 - 1
    predicted = target.clone()
    predicted[:, :, 2:8, 20:30] += 0.8
    return error_map(predicted, target).numpy()


def test_abnormal_regions_reads_error_maps_batch_of_one_as_its_frame() -> None:
    e = _maps()
    assert e.shape == (1, 24, 32)
    mask = abnormal_regions(e)
    assert mask.shape == (24, 32)
    assert np.array_equal(mask, abnormal_regions(e[0]))
    assert mask[4, 25] and not mask[20, 5]


@pytest.mark.parametrize("bad", [np.zeros((0, 0)), np.zeros((2, 24, 32)), np.zeros(32), np.zeros((1, 1, 24, 32)),
                                 np.zeros((24, 0)), np.array([["a", "b"]])])
def test_abnormal_regions_refuses_other_shapes(bad: np.ndarray) -> None:
    with pytest.raises(DataError, match="error"):
        abnormal_regions(bad)


def _picture(error: np.ndarray | None, *, alert: bool = True, threshold: float | None = 0.5,
             history: deque[float] | None = None, fps: float = 25.0, size: tuple[int, int] = (320, 240)) -> np.ndarray:
    image = np.full((24, 32, 3), 128, np.uint8)
    return annotated_frame(image, error, frame=7, seconds=0.28, smoothed=0.7, threshold=threshold, alert=alert,
                           history=history if history is not None else deque([0.1, 0.7], maxlen=200), fps=fps,
                           size=size)


def test_annotated_frame_outlines_the_regions_of_a_batch_of_one() -> None:
    e = _maps()
    assert np.array_equal(_picture(e), _picture(e[0]))
    with pytest.raises(DataError, match="error"):
        _picture(np.zeros((2, 24, 32)))


# ------------------------------------------------------------------------------------------------- scoring modes


def test_psnr_refuses_an_unknown_peak() -> None:
    a, b = torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), -0.5)
    with pytest.raises(ConfigError, match="psnr_peak.*'bogus'"):
        psnr(a, b, peak="bogus")


def test_regular_score_refuses_an_unknown_kind() -> None:
    a, b = torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), -0.5)
    with pytest.raises(ConfigError, match="regular_score.*'bogus'"):
        regular_score(a, b, kind="bogus")


@pytest.mark.parametrize("alpha", [5, -0.1, math.nan, math.inf, "0.5", None, True])
def test_anomaly_score_refuses_an_alpha_outside_0_1(alpha: object) -> None:
    with pytest.raises(ConfigError, match="alpha"):
        anomaly_score(np.array([30.0, 31.0, 29.0]), np.array([0.1, 0.2, 0.3]), alpha=alpha)  # type: ignore[arg-type]


def test_anomaly_score_takes_alpha_at_its_ends_and_numpy_floats() -> None:
    p, d = np.array([30.0, 31.0, 29.0]), np.array([0.1, 0.2, 0.3])
    for alpha in (0, 1, 0.6, np.float32(0.6)):
        assert np.all((anomaly_score(p, d, alpha=alpha) >= 0) & (anomaly_score(p, d, alpha=alpha) <= 1))


@pytest.mark.parametrize("window", [2.5, math.nan, 0, -3, "5", None])
def test_smooth_refuses_a_window_that_is_not_a_count(window: object) -> None:
    with pytest.raises(ConfigError, match="smoothing window"):
        smooth(np.array([0.1, 0.2, 0.3]), window)  # type: ignore[arg-type]


def test_smooth_takes_numpy_counts() -> None:
    assert smooth(np.array([0.0, 1.0]), np.int64(2)).tolist() == [0.0, 0.5]


# ------------------------------------------------------------------------------------------------------ events


@pytest.mark.parametrize("threshold", [math.nan, math.inf, "0.5", None, True])
def test_event_tracker_refuses_a_threshold_that_is_not_a_finite_number(threshold: object) -> None:
    with pytest.raises(ConfigError, match="threshold"):
        EventTracker(threshold)  # type: ignore[arg-type]


def test_event_tracker_takes_numpy_thresholds() -> None:
    tracker = EventTracker(np.float32(0.5), min_frames=1)  # type: ignore[arg-type]
    tracker.push(0, 0.0, 0.9)
    assert tracker.alerting


def _videos() -> list[tuple[str, np.ndarray, np.ndarray]]:
    return [("a", np.arange(10), np.r_[np.zeros(5, int), np.ones(5, int)])]


def _event(video: str = "a") -> Event:
    return Event(6, 8, 7, 0.9, 0.24, 0.32, video)


@pytest.mark.parametrize("fps", [0, -25, math.nan, math.inf])
def test_event_measures_refuses_a_frame_rate_out_of_range(fps: float) -> None:
    with pytest.raises(DataError, match="^fps must be > 0"):  # its argument, not the CLI's --fps
        event_measures([_event()], _videos(), fps=fps)


def test_event_measures_refuses_an_event_of_an_unknown_video() -> None:
    with pytest.raises(DataError, match="'b'"):
        event_measures([_event("b")], _videos(), fps=25)


def test_event_measures_refuses_frames_and_labels_of_different_lengths() -> None:
    with pytest.raises(DataError, match="'a': 10 scored frames but 9 labels"):
        event_measures([_event()], [("a", np.arange(10), np.zeros(9, int))], fps=25)


def test_event_measures_still_measures() -> None:
    measures = event_measures([_event()], _videos(), fps=25)
    assert (measures["events"], measures["false_events"], measures["anomalies_caught"]) == (1, 0, 1)


# ---------------------------------------------------------------------------------------------------- annotate


@pytest.mark.parametrize("fps", [0, -1, math.nan])
def test_annotated_frame_refuses_a_frame_rate_out_of_range(fps: float) -> None:
    with pytest.raises(DataError, match="^fps must be > 0"):
        _picture(None, fps=fps)


def test_annotated_frame_refuses_a_nan_threshold() -> None:
    with pytest.raises(ConfigError, match="threshold"):
        _picture(None, threshold=math.nan)


def test_a_score_that_is_not_finite_is_a_gap_in_the_timeline() -> None:
    history = deque([0.1, 0.2, math.nan, 0.3, math.inf, -math.inf, 0.4, 0.5], maxlen=200)
    picture = _picture(None, alert=False, history=history)
    assert picture.shape == (240 + 90, 320, 3)
    # the axis is the finite scores': the same strip as without the gaps' values drawn, save for the gaps themselves
    finite = timeline(deque([0.1, 0.2, 0.3, 0.4, 0.5], maxlen=200), 320, 0.5, fps=25)
    assert timeline(history, 320, 0.5, fps=25)[:14].tolist() == finite[:14].tolist()  # same labels above the plot
    # all of it NaN (a model that went NaN from its first frame): the strip, no line
    assert timeline(deque([math.nan] * 5, maxlen=200), 320, 0.5, fps=25).shape == (90, 320, 3)
    _picture(None, alert=False, history=deque([1e300, -1e300, 0.5], maxlen=200))  # huge but finite: clipped


@pytest.mark.parametrize("size", [(0, 0), (0, 32), (24, 0), (-1, 32)])
def test_video_size_refuses_an_empty_frame(size: tuple[int, int]) -> None:
    with pytest.raises(DataError, match="pixels"):
        video_size(*size)


def test_video_size_of_a_small_frame() -> None:
    assert video_size(24, 32) == (320, 240)
