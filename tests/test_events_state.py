"""``EventTracker.state`` / ``restore``: what ``mnad detect --resume`` saves of the event tracker with a source's stream
state, so that an event open at a kill goes on in the resumed run as it would have."""

from __future__ import annotations

import json

import pytest

from mnad.errors import DataError
from mnad.events import EventTracker

SCORES = [0.1, 0.9, 0.95, 0.6, 0.9, 0.2, 0.1, 0.9, 0.8, 0.9, 0.99, 0.7, 0.1, 0.9, 0.9]


def _ended(tracker: EventTracker, scores: list[float], first: int = 0) -> list:
    out = []
    for i, s in enumerate(scores, first):
        if (e := tracker.push(i, i / 10, s, where=lambda i=i: (i, i, 2, 2))) is not None:
            out.append(e)
    return out


@pytest.mark.parametrize("cut", range(len(SCORES) + 1))
def test_a_restored_tracker_ends_the_events_an_uninterrupted_one_does(cut: int) -> None:
    whole = EventTracker(0.5, hysteresis=0.2, min_frames=3)
    expected = [*_ended(whole, SCORES), whole.finish()]
    first = EventTracker(0.5, hysteresis=0.2, min_frames=3)
    before = _ended(first, SCORES[:cut])
    saved = json.loads(json.dumps(first.state(), allow_nan=False))  # as the stream state holds it
    second = EventTracker(0.5, hysteresis=0.2, min_frames=3)
    assert second.restore(saved) is True
    assert second.alerting == first.alerting
    assert [*before, *_ended(second, SCORES[cut:], cut), second.finish()] == expected


def test_other_settings_restore_nothing_and_a_damaged_state_is_refused() -> None:
    tracker = EventTracker(0.5, hysteresis=0.2, min_frames=3)
    _ended(tracker, SCORES[:5])
    saved = tracker.state()
    assert tracker.alerting and saved["event"]["alert_frame"] == 3
    for other in (EventTracker(0.5, hysteresis=0.1, min_frames=3), EventTracker(0.5, hysteresis=0.2, min_frames=2)):
        assert other.restore(saved) is False and other.current is None
    fresh = EventTracker(0.5, hysteresis=0.2, min_frames=3)
    bad = [None, {}, {**saved, "scored": -1}, {**saved, "scored": 0}, {**saved, "event": {"start_frame": 1}},
           {**saved, "event": {**saved["event"], "peak_score": "high"}},
           {**saved, "event": {**saved["event"], "peak_frame": 99}},
           {**saved, "event": {**saved["event"], "alert_frame": None}}]
    for state in bad:
        with pytest.raises(DataError, match="not an event tracker's state"):
            fresh.restore(state)
        assert fresh.current is None


def test_a_peak_without_a_region_has_none() -> None:
    """A new peak pushed without its region (``mnad detect --resume`` replays a camera's rows from the disk) leaves the
    peak box empty, never the region of the earlier peak."""
    tracker = EventTracker(0.5, hysteresis=0.2, min_frames=1)
    tracker.push(0, 0.0, 0.8, where=lambda: (1, 2, 3, 4))
    tracker.push(1, 0.1, 0.9)
    event = tracker.finish()
    assert event is not None and event.peak_frame == 1 and (event.peak_x, event.peak_width) == (None, None)
