"""What a ``mnad detect`` run's summary.json files hold: a source's (``SourceSummary``) and, with several sources, the
run's (``RunSummary``, one ``StreamOutcome`` per source). The fields are the JSON's keys, in the order written
(``as_json``); detect fills them in, ``detect_writer.write_detect_summary`` writes them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class SourceSummary:
    """A source's summary.json: the final one (``complete``) or one written while the run goes on."""

    source: str
    frames_scored: int
    seconds: float  # from the run's start to this source's end (or to now, while it runs)
    fps: float | None
    source_fps: float
    # frames (and seconds at the source's rate) from a frame's arrival to its score, so to its alert
    latency_frames: int
    latency_seconds: float | None
    # a camera or stream: seconds its reader waited for the scorer in all, its frames waiting outside (or dropped
    # there): the lag built up, which a scorer faster than the camera works off again
    behind_seconds: float | None
    reconnections: int
    # a camera or stream: the wall-clock time of its time 0, to tell when its events happened
    clock_start: str | None
    calibrated: bool
    threshold: float | None
    false_alarm_rate: float | None
    # on normal footage, the realised false-alarm rate: compare it with the asked one and with the calibration's
    # own label-free check on footage its thresholds were not fitted on
    above_threshold_rate: float | None
    # frames of scores.csv with alert=1: the frames of confirmed events. Not a subset of those above the
    # threshold: runs dropped as too short and each event's first --min-event-frames - 1 frames never alert,
    # but an open event's frames between threshold - hysteresis and the threshold do
    alert_frames: int | None
    # frames whose model output was not finite, scored NaN (the run ends with an error when there are any)
    not_finite_frames: int
    calibration_held_out_false_alarm_rate: float | None
    # what the scores were computed in ('fp32', 'bf16', 'int8': ``stream.step_precision``; null: cannot be told) and
    # what the calibration's were (``Calibration.precision``; null: uncalibrated, or not recorded): where they differ,
    # the thresholds were fitted on other scores and the run warned
    scoring_precision: str | None
    calibration_precision: str | None
    # the calibration footage the model's file records training on (``calibration.training_overlap``: 'path[first:end]'
    # each, [] none); null: uncalibrated, or cannot be told (an ONNX export, a model file that records no training)
    calibration_overlaps_training: list[str] | None
    smoothing: int
    events: int
    # how it ended; null in a summary that is not complete (the run goes on, or was killed): a killed run never
    # reads as one that ended (with several sources, the run's summary.json says which had ended)
    ended_by: str | None
    annotated_video: bool
    # its closed files still kept, in time order, relative to this folder: annotated.mkv, or
    # annotated/<first frame>.mkv each
    annotated_video_files: list[str]
    # the oldest closed files deleted for --video-keep
    annotated_video_deleted: int
    # the file being written (null once the run ended): what a killed run left, playable up to its last write
    annotated_video_open: str | None
    # the row files' segments (--rows-segment) closed and kept, in time order, relative to this folder: '.' (its
    # own scores.csv, events.jsonl and events.csv), or rows/<first frame> each; the one being written (null once
    # the run ended); the oldest deleted for --rows-keep
    row_segments: list[str]
    row_segments_open: str | None
    row_segments_deleted: int
    # the oldest closed map shards (maps/<8 digits>/, --save-maps) deleted for --maps-keep
    map_shards_deleted: int
    note: str | None
    # false while the run goes on (and in what a killed run left): rewritten at least every update_seconds till then
    complete: bool
    updated_at: str
    update_seconds: float
    # times this run was resumed (``mnad detect --resume``): 0 for a run started afresh; its counts are of the whole
    # run, every part
    resumed: int

    def as_json(self) -> dict[str, Any]:
        """The summary as written to summary.json (and returned by ``detect.detect``): the fields in their order."""
        return asdict(self)


@dataclass(frozen=True)
class StreamOutcome:
    """One source's line in the run's summary.json."""

    source: str
    folder: str | None  # null for a source that gave nothing (in a complete summary)
    frames_scored: int
    events: int
    ended_by: str | None
    failed: bool
    error: str | None


@dataclass(frozen=True)
class RunSummary:
    """The summary.json of a run over several sources, beside their folders: written first with ``complete`` false,
    naming every folder the run may make, and so again while the run goes on."""

    sources: int
    complete: bool
    failed: int  # sources that failed
    frames_scored: int  # in all
    seconds: float
    fps: float | None
    latency_frames: int
    calibrated: bool
    threshold: float | None
    # as each source's summary.json says them (``SourceSummary``): one model and calibration score every source
    scoring_precision: str | None
    calibration_precision: str | None
    calibration_overlaps_training: list[str] | None
    note: str | None
    updated_at: str
    update_seconds: float
    resumed: int  # times the run was resumed (--resume): its counts are of the whole run
    streams: list[StreamOutcome]

    def as_json(self) -> dict[str, Any]:
        """The summary as written to summary.json (and returned by ``detect.detect``): the fields in their order, each
        source's a JSON object."""
        return asdict(self)
