"""Alerts as events: the smoothed score against the threshold, with hysteresis, and how events are measured
against labels (the stream protocol of ``mnad evaluate``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from numbers import Real

import numpy as np

from mnad.config import check_count
from mnad.errors import ConfigError, DataError, printable

HYSTERESIS = 0.05  # an event ends when the smoothed score falls this far below the threshold
MIN_EVENT_FRAMES = 3  # shorter events are dropped
MAX_HYSTERESIS = 1.0  # the calibrated score's normal range is 0..1: a larger margin would hold an event open for good


def check_event_options(hysteresis: object, min_frames: object, *, threshold: object = 0.0) -> None:
    """Refuse a hysteresis that is not a finite number in [0, MAX_HYSTERESIS], a minimum length that is not an
    integer >= 1 and an alert threshold that is not a finite number (NaN never alerts; one ``ConfigError`` naming the
    option)."""
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not math.isfinite(threshold):
        raise ConfigError(f"the alert threshold must be a finite number, got {threshold!r}")
    if isinstance(hysteresis, bool) or not isinstance(hysteresis, Real) or not math.isfinite(hysteresis) \
            or not 0 <= hysteresis <= MAX_HYSTERESIS:
        raise ConfigError(f"--hysteresis must be a number from 0 to {MAX_HYSTERESIS:g}, got {hysteresis!r}")
    check_count("--min-event-frames", min_frames)


@dataclass
class Event:
    start_frame: int
    end_frame: int  # inclusive
    peak_frame: int
    peak_score: float
    start_time: float
    end_time: float
    video: str = ""  # the video the frames belong to, when a stream covers several
    # still open when its footage ended (the end of the source, --max-frames, Ctrl-C): its end is where scoring stopped,
    # not where the score fell back; a run that goes on later would have continued it
    open: bool = False
    # where in the frame (mnad detect): the peak frame's worst-predicted patch (``scoring.worst_patch_box``, the region
    # patch PSNR scores) in the source frame's pixels, left, top, width, height; None where no error map was given
    peak_x: int | None = None
    peak_y: int | None = None
    peak_width: int | None = None
    peak_height: int | None = None
    # when it was confirmed (``EventTracker.alerting``): its ``min_frames``-th scored frame and that frame's time, the
    # first frame ``mnad detect`` raises its alert at (alert=1 in scores.csv); start_frame is where it began, that
    # frame's score being the first above the threshold. None: an event made by hand, not by an EventTracker
    alert_frame: int | None = None
    alert_time: float | None = None


class EventTracker:
    """Opens an event when the smoothed score rises above ``threshold`` and closes it when it falls below
    ``threshold - hysteresis`` (so a score hovering at the threshold does not flicker); events shorter than
    ``min_frames`` are dropped. Causal: an event's state at frame t depends on scores up to t.

    An event starts at its first frame above the threshold, but it is only *confirmed* (``alerting``) once it holds
    ``min_frames`` scored frames (pushed scores: frames a stream did not score, after a reconnection or with a model
    output that was not finite, count for nothing): from that frame on, and for every later frame of the event until
    it ends. A run that ends shorter is dropped and was never alerting, so the frames that alert are exactly the
    confirmed frames of the events returned (each event from its ``min_frames``-th scored frame, its ``alert_frame``,
    to its end)."""

    def __init__(self, threshold: float, *, hysteresis: float = HYSTERESIS, min_frames: int = MIN_EVENT_FRAMES) -> None:
        check_event_options(hysteresis, min_frames, threshold=threshold)
        self.threshold, self.low, self.min_frames = threshold, threshold - hysteresis, min_frames
        self.current: Event | None = None
        self.scored = 0  # the open event's scored frames (its frame span counts the unscored ones too)

    @property
    def alerting(self) -> bool:
        """An event is open and confirmed: it has reached ``min_frames`` scored frames (it will not be dropped)."""
        return self.current is not None and self.scored >= self.min_frames

    def push(self, frame: int, stamp: float, score: float, video: str = "",
             where: Callable[[], tuple[int, int, int, int]] | None = None) -> Event | None:
        """Feed one smoothed score; returns an event when one ends. ``where``: the frame's region to report should it be
        its event's peak (left, top, width, height: ``Event.peak_x`` ...), asked for only then."""
        if self.current is not None and self.current.video != video:  # a new video: the open event ends with its own
            ended = self.finish()
            self.push(frame, stamp, score, video, where)
            return ended
        if self.current is None:
            if score > self.threshold:
                self.current, self.scored = Event(frame, frame, frame, score, stamp, stamp, video), 1
                self._confirm(frame, stamp)
                self._peak_at(where)
            return None
        if score >= self.low:
            self.current.end_frame, self.current.end_time = frame, stamp
            self.scored += 1
            self._confirm(frame, stamp)
            if score > self.current.peak_score:
                self.current.peak_frame, self.current.peak_score = frame, score
                self._peak_at(where)
            return None
        return self._close(cut=False)

    def _confirm(self, frame: int, stamp: float) -> None:
        """The open event's frame just scored is its ``min_frames``-th: it is confirmed there (its alert)."""
        assert self.current is not None
        if self.scored == self.min_frames:
            self.current.alert_frame, self.current.alert_time = frame, stamp

    def _peak_at(self, where: Callable[[], tuple[int, int, int, int]] | None) -> None:
        """The open event's new peak frame's region; none (None) where it was not given: never the region of an
        earlier peak (``mnad detect --resume`` replays a camera's rows from the disk, whose error maps are gone)."""
        assert self.current is not None
        box = where() if where is not None else (None, None, None, None)
        self.current.peak_x, self.current.peak_y, self.current.peak_width, self.current.peak_height = box

    def finish(self) -> Event | None:
        """Close the open event (end of the footage); returns it, marked ``open``, unless it is too short."""
        return self._close(cut=True)

    def _close(self, *, cut: bool) -> Event | None:
        event, self.current = self.current, None
        scored, self.scored = self.scored, 0
        if event is not None and scored >= self.min_frames:
            event.open = cut
            return event
        return None

    def drop(self) -> None:
        """Forget the open event, if any (``mnad detect --resume``: one the events files already hold)."""
        self.current, self.scored = None, 0

    def state(self) -> dict:
        """What ``restore`` continues from, as JSON: the open event (None: none), the scored frames it holds, and the
        settings it was tracked under (``mnad detect`` saves it with a source's stream state, for --resume)."""
        return {"event": asdict(self.current) if self.current is not None else None, "scored": self.scored,
                "threshold": self.threshold, "low": self.low, "min_frames": self.min_frames}

    def restore(self, state: object) -> bool:
        """Continue from ``state()``: the open event as it was, with its scored frames, so that the frames pushed next
        grow, confirm or end it as they would have. Under other settings (``threshold``, ``hysteresis``, ``min_frames``)
        nothing is restored and False is returned: the event was opened and confirmed by other rules. ``DataError`` (one
        line) when ``state`` is not what ``state()`` gives: nothing is restored then either."""
        if not isinstance(state, dict) or set(state) != {"event", "scored", "threshold", "low", "min_frames"}:
            raise DataError(f"not an event tracker's state (keys {sorted(state) if isinstance(state, dict) else type(state).__name__})")
        if (state["threshold"], state["low"], state["min_frames"]) != (self.threshold, self.low, self.min_frames):
            return False
        scored, event = state["scored"], state["event"]
        if isinstance(scored, bool) or not isinstance(scored, int) or scored < 0 or (event is None) != (scored == 0):
            raise DataError(f"not an event tracker's state (scored {scored!r} beside event {'none' if event is None else 'open'})")
        current = _event_from(event) if event is not None else None
        if current is not None and (current.alert_frame is None) != (scored < self.min_frames):
            raise DataError(f"not an event tracker's state: an event of {scored} scored frames with alert frame "
                            f"{current.alert_frame!r} (confirmed at its {self.min_frames}th)")
        self.current, self.scored = current, scored
        return True


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _event_from(record: object) -> Event:
    """An open event saved as ``asdict`` gives it (``EventTracker.state``), each field checked: ``DataError`` else."""
    names = [f.name for f in fields(Event)]
    if not isinstance(record, dict) or set(record) != set(names):
        raise DataError(f"not an event tracker's state: its event is not an event's fields ({printable(repr(record))[:120]})")
    ints = ("start_frame", "end_frame", "peak_frame")
    numbers = ("peak_score", "start_time", "end_time")
    optional = {"peak_x": _is_int, "peak_y": _is_int, "peak_width": _is_int, "peak_height": _is_int,
                "alert_frame": _is_int, "alert_time": _is_number}
    bad = [n for n in ints if not _is_int(record[n]) or record[n] < 0] + [n for n in numbers if not _is_number(record[n])]
    bad += [n for n, check in optional.items() if record[n] is not None and not check(record[n])]
    bad += [n for n, kind in (("video", str), ("open", bool)) if not isinstance(record[n], kind)]
    if not bad and not record["start_frame"] <= record["peak_frame"] <= record["end_frame"]:
        bad.append("peak_frame")
    if bad:
        raise DataError(f"not an event tracker's state: its event's {', '.join(bad)} "
                        f"({', '.join(printable(repr(record[n]))[:40] for n in bad)})")
    return Event(**record)


def labelled_frames(frames: object, labels: object, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One video's scored frame positions and their labels as arrays: ``frames`` whole numbers, ``labels`` finite
    numbers (0 normal, anything else abnormal), both 1-D and of the same length; anything else is one ``DataError``
    naming ``where`` and the argument (was: a bare ValueError or TypeError, or a NaN label taken as abnormal and a
    frame 4.7 as frame 4 without a word)."""
    try:
        frames_array, labels_array = np.asarray(frames), np.asarray(labels)
    except (TypeError, ValueError) as exc:  # ragged nested lists
        raise DataError(f"{where}: frames and labels must be 1-D arrays of numbers ({exc})") from exc
    for name, array in (("frames", frames_array), ("labels", labels_array)):
        if array.ndim != 1:
            raise DataError(f"{where}: {name} must be a 1-D array (one value per scored frame), got shape {array.shape}")
        if array.size and array.dtype.kind not in "biuf":
            raise DataError(f"{where}: {name} must be numbers, got {array.dtype} values")
    if frames_array.size != labels_array.size:
        raise DataError(f"{where}: {frames_array.size} scored frames but {labels_array.size} labels (one label per frame)")
    if frames_array.dtype.kind == "f":  # a float frame number is one only when whole (a CSV's column read as floats)
        bad = ~np.isfinite(frames_array) | (frames_array != np.round(frames_array))
        if bad.any():
            raise DataError(f"{where}: frames must be whole frame positions, got {frames_array[bad][:3]}")
    if labels_array.dtype.kind == "f" and not np.all(np.isfinite(labels_array)):
        raise DataError(f"{where}: labels must be finite numbers (0 normal, else abnormal), got "
                        f"{labels_array[~np.isfinite(labels_array)][:3]}")
    return frames_array, labels_array


def anomalies(frames: np.ndarray, labels: np.ndarray) -> list[tuple[int, int]]:
    """The anomalies of one video: (first, last) frame of each run of consecutive abnormal frames among those scored
    (``frames``, in order, with their ``labels``). The one rule for what an anomaly is: the stream protocol counts
    these (``event_measures``) and the report shades them (``mnad.report.plots.timeline_png``).

    Only a scored normal frame ends a run. A gap in the frame numbers (frames not scored: skipped by ``--fps``, the
    first frames of a video that make its first clip) does not split one: the frames of the gap have no label here,
    and at a stride the frames between two abnormal scored frames are of the same anomaly (split, an anomaly scored
    every other frame would count as one anomaly per frame)."""
    frames, labels = labelled_frames(frames, labels, "anomalies")
    abnormal = np.flatnonzero(labels.astype(bool))
    if abnormal.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(abnormal) > 1)
    firsts, lasts = np.r_[abnormal[0], abnormal[breaks + 1]], np.r_[abnormal[breaks], abnormal[-1]]
    return [(int(frames[a]), int(frames[b])) for a, b in zip(firsts, lasts, strict=True)]


def event_measures(events: list[Event], videos: list[tuple[str, np.ndarray, np.ndarray]], *, fps: float,
                   video_fps: Mapping[str, float] | None = None) -> dict:
    """Events against frame labels. ``videos``: (name, scored frame positions, their labels) per video.

    An event is true when it overlaps an abnormal frame of its video, else false. An anomaly (a run of consecutive
    abnormal frames: an Avenue or ShanghaiTech video may hold several) is caught when an event overlaps it, whenever
    that event is confirmed (an alert raised just after the anomaly's last frame, by an event that began within it,
    still catches it). Two delays, in frames from the anomaly's first frame, over the anomalies caught:

    - ``mean_delay_frames``: to the *start* of the first event overlapping it (its first frame above the threshold;
      0 when that event was already open). What the committed results under results/ report; it understates the
      latency of an alert, which waits for the event to be confirmed.
    - ``mean_alert_delay_frames``: to the first *alert* of the events overlapping it (``Event.alert_frame``, the
      event's --min-event-frames-th scored frame, where ``mnad detect`` raises it; 0 when one was raised before it
      began). None when an event lacks its alert frame (made by hand, not by an ``EventTracker``).

    A video is caught when one of its anomalies is. False events are counted per minute of the normal frames scored,
    at ``fps``, or at a video's own rate in ``video_fps`` (by name). An event of a video not in ``videos``, a video
    whose frames and labels differ in number, or a rate ``check_fps`` refuses is one ``DataError``."""
    from mnad.data.streams import check_fps  # here: mnad.data imports torch, which the report's writers do without

    check_fps(fps)
    rates = dict(video_fps or {})
    for name, rate in rates.items():
        check_fps(rate, f"the frame rate of video {name!r}")
    caught, delays, alert_delays, false_events, found = {}, [], [], 0, 0
    if not isinstance(videos, list | tuple) or not all(isinstance(v, tuple | list) and len(v) == 3 for v in videos):
        raise DataError("event_measures: videos must be a list of (name, scored frame positions, labels), one per video")
    if not isinstance(events, list | tuple) or not all(isinstance(e, Event) for e in events):
        raise DataError("event_measures: events must be a list of mnad.events.Event (EventTracker's)")
    checked = [(name, *labelled_frames(frames, labels, f"video {name!r}")) for name, frames, labels in videos]
    by_video = {name: (frames, labels) for name, frames, labels in checked}
    for event in events:
        if event.video not in by_video:
            raise DataError(f"an event names video {event.video!r}, which is not among the labelled videos "
                            f"({', '.join(map(repr, by_video)) or 'none'})")
        frames, labels = by_video[event.video]
        inside = (frames >= event.start_frame) & (frames <= event.end_frame)
        if not labels[inside].any():
            false_events += 1
    alerts_known = all(e.alert_frame is not None for e in events)
    spans = {name: anomalies(frames, labels) for name, (frames, labels) in by_video.items()}
    for name, runs in spans.items():
        if not runs:
            continue
        caught[name] = False
        for first, last in runs:
            overlapping = [e for e in events if e.video == name and e.start_frame <= last and e.end_frame >= first]
            if overlapping:
                caught[name] = True
                found += 1
                delays.append(max(min(e.start_frame for e in overlapping) - first, 0))
                if alerts_known:
                    alert_delays.append(max(min(e.alert_frame for e in overlapping) - first, 0))  # type: ignore[type-var]
    normal_minutes = sum(int((labels == 0).sum()) / rates.get(name, fps) for name, _, labels in checked) / 60
    measures = {
        "events": len(events),
        "false_events": false_events,
        "false_events_per_minute": false_events / normal_minutes if normal_minutes > 0 else None,
        "videos_with_anomaly": len(caught),
        "videos_caught": int(sum(caught.values())),
        "caught": caught,
        "anomalies": sum(len(runs) for runs in spans.values()),
        "anomalies_caught": found,
        # over the anomalies caught: to the overlapping event's start, and to its alert (see above)
        "mean_delay_frames": float(np.mean(delays)) if delays else None,
        "mean_alert_delay_frames": float(np.mean(alert_delays)) if alert_delays else None,
        "fps": fps,
    }
    if rates:
        measures["video_fps"] = rates
    return measures
