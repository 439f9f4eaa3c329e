"""Anomaly detection on footage as it arrives: video files, frame folders, globs, cameras and network streams.

source (``data.streams.FrameSource``) -> prepared frame -> ``stream.StreamScorer`` (causal S_t, trailing mean) ->
``events.EventTracker`` (alerts) -> outputs (``outputs``: scores.csv, events, summary; the annotated video).

Scores are causal (no statistic of the footage being scored, no frame beyond the clip that scores a frame): a model
whose target frame is not its clip's last (``model.task=recon`` with ``t_length > 1``, the motion-cues variant) scores
frame t only once frame t + ``latency_frames`` has arrived (``latency_frames``; in summary.json, warned at the start),
so its alerts come that many frames late, stamped with frame t's time. A calibration fitted on normal
footage (``mnad calibrate``) fixes the normalisation and the alert threshold; without one, a running min-max is used
and no alerts are raised (said loudly). Frame numbers are 0-based positions in the source.

Several sources run in one process: each has its own reader thread, scorer (memory, window, normaliser), events and
output folder; the frames that are ready are scored as one batch (``stream.score_streams``). A reader thread per
source (``data.read_ahead.SourceReader``), rather than reading the sources in turn, so that a camera that is slower,
stalls (up to its read timeout) or reconnects holds up no other stream, and so that decoding (OpenCV, which releases
the GIL) overlaps scoring. The annotated video is ``outputs.SegmentedVideo``'s, summary.json's fields
``outputs.SourceSummary`` and ``outputs.RunSummary``, and --out is held by ``run_folder.locked_output``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import os
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from numbers import Integral, Real
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from tqdm import tqdm

from mnad.annotate import TIMELINE_FRAMES, annotated_frame, video_size
from mnad.calibration import Calibration, rate_key, scoring_calibration, training_overlap
from mnad.checkpoint import check_calibrated_weights, is_onnx_export, load_model
from mnad.config import Config, check_same_model, checked_config
from mnad.data.pixels import finish_narrow, prepare_frame, to_8bit
from mnad.data.read_ahead import SourceEnded, SourceReader
from mnad.data.streams import FrameSource, RawFrame, SourceOptions, camera_index, is_live
from mnad.errors import CheckpointError, ConfigError, DataError, Terminated, printable
from mnad.events import HYSTERESIS, MIN_EVENT_FRAMES, Event, EventTracker, check_event_options
from mnad.interrupts import held_interrupts
from mnad.launch import single_process
from mnad.model import MNAD
from mnad.outputs import (
    DETECT_FILES,
    EARLIER_DIR,
    MAPS_DIR,
    MOVING_MARK,
    ROWS_SEGMENT_SECONDS,
    SCORES_FILE,
    STAGING_DIR,
    STATE_FILE,
    STREAM_FOLDER,
    SUMMARY_FILE,
    VIDEO_SEGMENT_SECONDS,
    DetectFolder,
    DetectWriter,
    RunSummary,
    SegmentedVideo,
    SourceSummary,
    StreamOutcome,
    check_output_folder,
    detect_run_entries,
    event_line,
    events_after,
    last_row_frame,
    mend_row_segments,
    output_path,
    read_json_if_present,
    remove_detect_temps,
    row_segments_in,
    rows_after,
    video_files_in,
    wall_clock,
    write_detect_summary,
)
from mnad.run_folder import LOCK_FILE, locked_output
from mnad.scoring import worst_patch_box
from mnad.stream import FrameResult, StreamScorer, score_streams
from mnad.threads import apply_threads

log = logging.getLogger(__name__)

UNCALIBRATED = ("this model carries no calibration: scores use a running min-max and NO ALERTS are raised; "
                "calibrate it on normal footage first: mnad calibrate --checkpoint MODEL --data NORMAL_FOOTAGE --out calibrated.safetensors")
NOT_FINITE = ("the model's output is not finite (NaN or infinite: diverged weights, or a bf16/int8 path that overflows on "
              "this footage: try --fp32, or the checkpoint it was exported or quantised from)")
GIB = 2**30
# the largest values the annotated video's options are used with: beyond them a number is no setting but an overflow
# (a file's frame count, round(rate * seconds), and the bytes kept, round(GiB * 2**30), are ints that must stay finite)
MAX_VIDEO_SEGMENT = 366 * 86400.0  # seconds: a file a year, at MAX_VIDEO_FPS 3.2e10 frames
MAX_VIDEO_KEEP = float(2**32)  # GiB (4 EiB): 2**62 bytes, within a 64-bit count
SUMMARY_SECONDS = 60.0  # a run's summary.json files are rewritten at least this often (wall time) while it runs, marked
# "complete": false, "ended_by": null while the source runs, with "updated_at": a run killed outright (SIGKILL, the OOM
# killer, a power cut) leaves the last one, which says it never ended, how far it got (at most this long before) and its
# closed video segments; and a summary not complete whose updated_at is older than this is a dead run's. They are also
# rewritten at a source's first scored frame, when an annotated segment opens or closes (every closed file is listed,
# the open one named) and when a source ends. Not at each event's end: events.jsonl already has every ended event,
# flushed when it ends, and a noisy score could end one every few frames. One write (JSON and fsync, ~1 ms) a minute
# is nothing beside tens of frames/s
# what a source's saved state records for --resume besides the scorer's (``_SourceRun.resume_state``), each an int >= 0
RESUME_COUNTS = ("position", "taken", "base", "reconnections", "scored", "events", "above", "alerts", "not_finite",
                 "rows_deleted", "maps_deleted", "video_deleted", "video_first", "resumed")
FALLING_BEHIND = 10.0  # seconds a live source's reader may wait for the scorer before the run warns that it falls behind
NO_VIDEO_NORMALIZATION = ("--normalization video: per-video min-max needs each video's whole footage (it looks ahead), "
                          "which detect, scoring frames as they arrive, cannot apply; detect normalises with a running "
                          "min-max (causal) or a calibration's fixed ranges: drop --normalization")


@dataclass
class DetectOptions:
    save_video: bool = False  # annotated.mkv: state, regions while alerting, labelled score timeline
    video_segment: float = VIDEO_SEGMENT_SECONDS  # seconds of annotated video per file (``SegmentedVideo``)
    video_keep: float | None = None  # GiB: the oldest closed files are deleted past this (``SegmentedVideo``); None: all kept
    rows_segment: float = ROWS_SEGMENT_SECONDS  # seconds of footage per row segment (``outputs.DetectWriter``): a day
    rows_keep: float | None = None  # GiB: the oldest closed row segments are deleted past this; None: all kept
    save_maps: str | None = None  # 'npy' or 'png': each frame's error map
    maps_keep: float | None = None  # GiB: the oldest closed map shards (maps/<8 digits>/) are deleted past this; None: all
    # kept; only with save_maps
    region_sigma: float = 0.0  # regions above the error map's mean + sigma * std (>= 0, finite)
    hysteresis: float = HYSTERESIS
    min_event_frames: int = MIN_EVENT_FRAMES
    # each source ends once its first this many frames are scored (a model scoring latency_frames late reads that
    # many more; a resumed run: its own next ones, ``_SourceRun.at_limit``)
    max_frames: int | None = None
    overwrite: bool = False  # replace the outputs of an earlier run in the output folder
    # continue the earlier run in the output folder (of the same sources, model and settings): each source's scorer
    # state (``STATE_FILE``), frame numbers and counts carry on, its rows follow the earlier ones (docs/detect.md)
    resume: bool = False
    source: SourceOptions = field(default_factory=SourceOptions)
    # the normalisation asked for (--normalization): None, the model's own (a calibrated model's fixed ranges, else a
    # running min-max); 'causal' or 'calibrated', checked as the model's eval.normalization is; 'video' is refused. Not
    # taken from the config: an uncalibrated model's eval.normalization is the offline evaluation's ('video' by
    # default), which says nothing of what detect was asked
    normalization: str | None = None

    def __post_init__(self) -> None:
        # first: what was refused before any other option was checked (the CLI's order, kept)
        # str first: an array's == is elementwise (np.array(['causal']) would pass ``in``, a longer one raise ValueError)
        if isinstance(self.normalization, str) and self.normalization == "video":  # per-video min-max looks ahead
            raise ConfigError(NO_VIDEO_NORMALIZATION)
        if self.normalization is not None and (not isinstance(self.normalization, str)
                                               or self.normalization not in ("causal", "calibrated")):
            raise ConfigError(f"--normalization must be causal or calibrated (or left out: the model's own), got "
                              f"{printable(repr(self.normalization))[:80]}")
        for name in ("save_video", "overwrite", "resume"):  # strictly bool: 'no' or 0 as true or false would guess (was: 'no' replaced a run)
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ConfigError(f"--{name.replace('_', '-')} must be true or false, got {printable(repr(value))[:80]}")
        if self.save_maps is not None and (not isinstance(self.save_maps, str) or self.save_maps not in ("npy", "png")):
            raise ConfigError(f"--save-maps must be npy or png, got {printable(repr(self.save_maps))[:80]}")
        if self.resume and self.overwrite:
            raise ConfigError("--resume continues the run in --out and --overwrite replaces it: pass one of them")
        check_event_options(self.hysteresis, self.min_event_frames)
        # NaN or inf would mark no region at all (a comparison with NaN is false), without a word
        if (isinstance(self.region_sigma, bool) or not isinstance(self.region_sigma, Real)
                or not math.isfinite(self.region_sigma) or self.region_sigma < 0):
            raise ConfigError(f"--region-sigma must be a finite number >= 0 (regions above the error map's mean + SIGMA "
                              f"* std), got {self.region_sigma!r}")
        if self.max_frames is not None and (isinstance(self.max_frames, bool) or not isinstance(self.max_frames, Integral)
                                            or self.max_frames < 1):
            raise ConfigError(f"--max-frames must be an integer >= 1, got {self.max_frames!r}")
        for name in ("video", "rows"):  # the annotated video's files and the row files: segments
            segment = getattr(self, f"{name}_segment")
            if (isinstance(segment, bool) or not isinstance(segment, Real)
                    or not 0 < segment <= MAX_VIDEO_SEGMENT):  # NaN fails the comparison
                raise ConfigError(f"--{name}-segment must be a number of seconds > 0 and at most {MAX_VIDEO_SEGMENT:.0f} "
                                  f"(a year), got {segment!r}")
        for name in ("video", "rows", "maps"):  # and what is kept of them and of the error maps
            keep = getattr(self, f"{name}_keep")
            if keep is not None and (isinstance(keep, bool) or not isinstance(keep, Real) or not 0 < keep <= MAX_VIDEO_KEEP):
                raise ConfigError(f"--{name}-keep must be a number of GiB > 0 and at most {MAX_VIDEO_KEEP:.0f} (4 EiB), got "
                                  f"{keep!r}")
        # a bound on outputs never written would bound nothing: the user meant to write them
        if self.video_keep is not None and not self.save_video:
            raise ConfigError("--video-keep bounds the annotated video that --save-video writes: add --save-video, or "
                              "drop --video-keep")
        # and a setting of the annotated video alone, without it, would change nothing the run writes
        for name, default, what in (("video_segment", VIDEO_SEGMENT_SECONDS, "the annotated video's files"),
                                    ("region_sigma", 0.0, "the regions the annotated video marks")):
            if getattr(self, name) != default and not self.save_video:
                raise ConfigError(f"--{name.replace('_', '-')} sets {what}, which --save-video writes: add --save-video, "
                                  f"or drop --{name.replace('_', '-')}")
        if self.maps_keep is not None and self.save_maps is None:
            raise ConfigError("--maps-keep bounds the error maps that --save-maps writes: add --save-maps npy (or png), "
                              "or drop --maps-keep")
        if not isinstance(self.source, SourceOptions):
            raise ConfigError(f"source must be a mnad.data.streams.SourceOptions, got {type(self.source).__name__}")

    def keep_bytes(self, output: str) -> int | None:
        """``--<output>-keep`` ('video', 'rows' or 'maps') in bytes; None: every file of that output kept."""
        keep = getattr(self, f"{output}_keep")
        return round(keep * GIB) if keep is not None else None


def source_box(error: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The worst-predicted patch of a frame's error map (``scoring.worst_patch_box``, in the model's pixels) in the
    pixels of the source frame it was made from (``shape``: its (height, width, ...)); the model saw the whole frame
    resized to its square (``prepare_frame``), so each axis scales on its own. (left, top, width, height)"""
    x, y, w, h = worst_patch_box(error)
    rows, cols = error.shape[-2:]
    height, width = shape[:2]
    left, top = math.floor(x * width / cols), math.floor(y * height / rows)
    right, bottom = min(math.ceil((x + w) * width / cols), width), min(math.ceil((y + h) * height / rows), height)
    return left, top, right - left, bottom - top


def latency_frames(config: Config) -> int:
    """Frames between a frame's arrival and its score (``ModelConfig.lag``)."""
    return config.model.lag


def stream_folder(index: int, source: str, count: int) -> str:
    """The output folder of source ``index`` of ``count``: '<index>_<name>', the index zero-padded so the folders sort
    in the order given, the name from the source, safe as a file name (a URL's credentials and query are left out)."""
    if (camera := camera_index(source) if "://" not in source else None) is not None:
        name = f"camera{camera}"
    elif is_live(source):
        parts = urlsplit(source)
        name = f"{parts.hostname or ''}{parts.path}"
    elif any(c in source for c in "*?[") and not Path(source).exists():  # a glob: named after its folder
        name = Path(source).parent.name
    else:
        name = Path(source).stem
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")[:40] or "source"
    return f"{index:0{len(str(count - 1))}d}_{name}"


class _SourceRun:
    """One source's run: its reader, the source frames waiting for their score, its events and its outputs."""

    def __init__(self, frames: FrameSource, scorer: StreamScorer, out_dir: Path, options: DetectOptions, config: Config,
                 calibration: Calibration | None, wake: threading.Event, overlap: list[str] | None = None) -> None:
        self.frames, self.source, self.out_dir, self.options, self.config = frames, frames.source, out_dir, options, config
        self.scorer = scorer
        self.overlap = overlap  # the calibration footage the model was trained on (``calibration.training_overlap``)
        self.base = 0  # source position of the scorer's frame 0: the frame after the last reconnection
        self.reconnections = 0  # gaps in the footage: connections lost and reopened that gave frames again
        self.threshold = calibration.threshold if calibration is not None else None
        self.tracker = (EventTracker(self.threshold, hysteresis=options.hysteresis, min_frames=options.min_event_frames)
                        if calibration is not None else None)
        self.reader = SourceReader(frames, wake)
        self.raw: dict[int, RawFrame] = {}  # source frames waiting for their score (a clip scores a frame up to t_length-1 back)
        self.events = 0  # events ended so far: each is written as it ends (events.jsonl, events.csv), none is kept here
        # the last event line in the events files that ``events`` counts, as (start frame, end frame, marked ``open``;
        # None: none): saved, where a resumed run reads the lines after it (``events_after``); ``known`` holds it and the
        # lines a resumed run read back after it: an event whose line is one of them is not written again (``_record``).
        # ``known`` None: resumed from a state saved by an mnad before the tracker was, whose events are counted as that
        # mnad counted them, until this run writes one
        self.last_line: tuple[int, int, bool] | None = None
        self.known: set[tuple[int, int, bool]] | None = set()
        self.history: deque[float] = deque(maxlen=TIMELINE_FRAMES)
        self.writer: DetectWriter | None = None
        self.video: SegmentedVideo | None = None
        self.video_size: tuple[int, int] | None = None  # (width, height) of its frame part, from the first frame
        self.taken = self.scored = 0  # source frames taken, frames scored
        self.times: tuple[float, float] | None = None  # times of the first and the last frame taken
        self.warned_behind = False
        self.above = 0  # frames scored whose smoothed score is above the threshold (what a false-alarm rate counts)
        self.alerts = 0  # frames written with alert=1: those of a confirmed event (``EventTracker.alerting``)
        self.not_finite = 0  # frames whose model output was not finite (``FrameResult.finite``): NaN in scores.csv,
        # not given to the event tracker; the source ends with an error
        self.ended_by: str | None = None  # None while the source runs
        self.ended_at: float | None = None  # time.perf_counter() when it ended: its own duration in summary.json
        self.failure: DataError | None = None
        self.broken: BaseException | None = None  # what crashed the run while this source ran, or failed its close
        self.due = False  # its summary.json is to be rewritten now (first frame scored, a segment closed, it ended)
        # the frames this run reads of the source where known (a frame folder's, --max-frames): its 16-bit warning
        # decides on all of them when fewer than NARROW_FRAMES; a source that ends sooner is decided at its end
        # (--max-frames N reads latency_frames more: ``at_limit``)
        limit = options.max_frames + latency_frames(config) if options.max_frames is not None else None
        known = [n for n in (len(frames.frames) if frames.frames is not None else None, limit) if n is not None]
        self.reading = min(known) if known else None
        # frames read past the last one --max-frames counts, to score it: a model whose target is not its clip's last
        # frame scores frame t once frame t + latency_frames has arrived (``at_limit``); 0 for a resumed file, whose
        # restored window holds them (its first frame read scores the first frame the earlier run had not)
        self.limit_lag = latency_frames(config)
        self.position = 0  # source frames the scorer has taken (its state is of them): where a resumed file continues
        # the scorer took a frame whose row is not written (its outputs failed, or the run crashed in between): its
        # state is ahead of the rows, so none is saved from then on (the last one saved, consistent with them, stays)
        self.pending = False
        # a resumed run (``resume``): the times the run was resumed, the frames scored before this part, the source
        # positions below which frames only refill the raw frames of the restored window (a file's), the last frame
        # whose row the earlier run wrote (a file's frames up to it are scored again, their outputs not written twice),
        # the frame this part's --max-frames counts from, and what the earlier parts' annotated video was
        self.resumed = self.scored_before = self.replay = self.first_taken = 0
        self.written = -1
        self.last_written = -1  # the frame of the last row written (by this part or, resumed, an earlier one): saved
        self.footage = _footage(frames)  # what the footage was (``_footage``): a resumed run's is compared with it
        self.earlier_video: tuple[int, int] = (0, 0)  # (files deleted, first frame of annotated.mkv)
        self.earlier_clock: float | None = None  # a resumed camera's first clock_start: its times continue from it
        # its frames are places in footage that a --resume reads again from where the earlier run was (``resume``): a
        # video file, frame folder or glob; and a file served over the network, known once resumed (its state's)
        self.as_file = not frames.live
        self.time_offset: float | None = None  # seconds added to a resumed camera's frame times (from its first frame)

    def resume(self, state: Path, last_row: int | None) -> None:
        """Continue the earlier run's source from its saved state (``mnad detect --resume``): the scorer's memory,
        normaliser and trailing mean, the counts, the numbering. A camera's or stream's footage after a restart is not
        consecutive with what was scored: the clip window is dropped and its frames numbered after the earlier run's
        last (``last_row``, or the frames it took), a gap counted as a reconnection. A file (one served over the
        network too: ``as_file``), frame folder or glob continues where the state was saved, its window restored: the
        frames the earlier run took are skipped (``FrameSource.start``), and those it scored after its last saved state
        (up to ``last_row``) are scored again to rebuild the state, their rows, events, maps and pictures not written
        twice. The event tracker goes on from the state too, an event open at a kill with it (``_resume_events``).
        ``DataError`` (one line) for a state that cannot be continued."""
        if not state.is_file():
            raise _no_state(state)
        try:
            extra = self.scorer.load_state(state)
        except CheckpointError as exc:
            raise DataError(f"{exc}; --resume continues a run only with the model and settings it was scored with: "
                            "pass those, or start afresh with --overwrite (or another --out)") from exc
        counts = {k: extra.get(k) for k in RESUME_COUNTS}
        if bad := [k for k, v in counts.items() if isinstance(v, bool) or not isinstance(v, int) or v < 0]:
            raise DataError(f"{state}: not a detect run's stream state (no {', '.join(bad)}): it cannot be resumed; start "
                            "afresh with --overwrite (or another --out)")
        clock = extra.get("clock_start")
        if clock is not None and (isinstance(clock, bool) or not isinstance(clock, int | float) or not math.isfinite(clock)
                                  or clock < 0):  # the times of every later frame and event count from it
            raise DataError(f"{state}: not a detect run's stream state (clock_start {clock!r} is no wall-clock time): it "
                            "cannot be resumed; start afresh with --overwrite (or another --out)")
        # a URL whose saved frames have no clock_start was a file served over the network (its stream reported a frame
        # count; a camera's or stream's frames are timed on the wall clock): read once like a local file, it continues
        # like one (was: as a camera, replayed from frame 0 and numbered after the earlier run's frames)
        self.as_file = self.as_file or ("clock_start" in extra and clock is None)
        if isinstance(footage := extra.get("footage"), dict):  # a state saved before it was recorded: not compared
            self._check_footage(state, footage)
        written = extra.get("written")  # the last row the state counts (a state saved before it was recorded: its frame)
        lag = latency_frames(self.config)
        if isinstance(written, bool) or not isinstance(written, int) or written < -1:
            written = counts["position"] - lag - 1 if counts["scored"] else -1
        last = last_row if last_row is not None else -1
        if last < written and self.as_file:  # the rows after it were lost (a power cut, a failed write)
            raise DataError(f"{state}: the rows on the disk end {f'at frame {last}' if last >= 0 else 'before any'}, but the "
                            f"saved state scored frames up to {written}: the rows of frames {last + 1}-{written} are "
                            "missing (lost in a power cut, or never written), and this state cannot write them again; "
                            "start afresh with --overwrite (or another --out)")
        if last < written:  # a camera's: its frames are gone, numbered on after the state's all the same
            log.warning(f"{self.frames.name}: the rows of frames {last + 1}-{written} are not on the disk (lost in a power "
                        "cut, or never written); the resumed run numbers its frames after them")
        self.resumed = counts["resumed"] + 1
        self.scored = self.scored_before = counts["scored"]
        self.events, self.above, self.alerts = counts["events"], counts["above"], counts["alerts"]
        self.not_finite, self.reconnections = counts["not_finite"], counts["reconnections"]
        self.earlier_video = (counts["video_deleted"], counts["video_first"])
        # the rows written after the state was saved are on the disk: counted from there, so that the summary's counts
        # are those of the rows (a file's are scored again below, not counted twice); its events too (``_resume_events``)
        rows_on_disk = rows_after(self.out_dir, written)
        for written_row in rows_on_disk:
            self.scored += 1
            self.alerts += written_row.get("alert") == "1"
            try:
                smoothed = float(written_row.get("smoothed", "nan"))
            except ValueError:
                smoothed = math.nan
            self.not_finite += math.isnan(smoothed)
            self.above += self.threshold is not None and smoothed > self.threshold
        self.scored_before = self.scored
        self.last_written = last
        lost = self._resume_events(state, extra, written, rows_on_disk)
        if not self.as_file:  # a camera or stream: new footage, after a gap
            self.scorer.new_video()
            self.taken = self.base = self.first_taken = max(counts["taken"], last_row + 1 if last_row is not None else 0)
            self.position = self.taken  # saved again as it is, should this part score nothing
            self.reconnections += 1
            self.earlier_clock = None if clock is None else float(clock)
        else:
            position = counts["position"]
            if self.frames.frames is not None and len(self.frames.frames) < position:
                raise DataError(f"{state}: the earlier run took {position} frames of {self.frames.name}, which has "
                                f"{len(self.frames.frames)}: not the footage it scored; start afresh with --overwrite")
            # the restored window's clips score frames up to latency_frames back: their source frames are read again
            self.frames.start = self.taken = max(position - latency_frames(self.config), 0)
            self.replay = self.first_taken = self.position = position  # saved again as it is, should this part score nothing
            self.limit_lag = 0  # --max-frames N: the N frames from position - latency_frames on, the first not scored before
            self.base = counts["base"]
            self.written = last_row if last_row is not None else -1
        self.writer = DetectWriter(self.out_dir, maps=self.options.save_maps, rows_segment=self.options.rows_segment,
                                   rows_keep=self.options.keep_bytes("rows"), maps_keep=self.options.keep_bytes("maps"),
                                   resume=(counts["rows_deleted"], counts["maps_deleted"]))
        for event in lost:  # a camera's, ended by rows on the disk whose events' lines are not: before its first new row
            self._record(event, again=False, frame=self.taken)

    def _resume_events(self, state: Path, extra: dict, written: int, rows: list[dict[str, str]]) -> list[Event]:
        """The event tracker as the state saved it (``EventTracker.state``: the event open then, its scored frames) and
        the events written since, read back from the events files (``events_after``: the lines after the state's last
        one, ``last_event_line``; counted, and known so that none is written twice, ``_record``; the events.csv of each
        segment read made whole from its events.jsonl, ``mend_events_csv``: a kill may have cut its last rows). A file's
        frames scored again then end, grow or confirm the open event as the earlier run did; a camera's rows written after the state
        (``rows``: its frames are not scored again) are pushed to the tracker from the disk (their times to the ms, their
        smoothed scores exactly as compared, ``smoothed_text``, no region: the error maps are gone), so that the event open at the kill goes on
        after the gap, as across a reconnection. A state saved by an mnad before the tracker was (no ``tracker``, no
        ``last_event_line``): as then, no open event, the events counted as that mnad counted them (its events.csv made
        whole all the same). Returns the events a camera's rows end whose lines the events files do not hold (a power cut
        kept the rows, not the line: the files reach the disk each on its own until ``DetectWriter.sync``), to be written.

        A line marked ``open`` (an event open at an earlier part's end, written, whose state was then not saved) is
        counted, a line of the events files, but does not stand for its event: the state has it open, and this run
        writes it complete when it ends, after that line; only an identical line (the same start, end and mark) is not
        written again (``_record``)."""
        tracked = extra.get("tracker")
        if "last_event_start" in extra or "last_event" in extra:
            raise DataError(f"{state}: not a stream state of this mnad (last_event_start: an mnad in development saved it): "
                            "it cannot be resumed; start afresh with --overwrite (or another --out)")
        line = extra.get("last_event_line")
        if line is not None and not (isinstance(line, list) and len(line) == 3 and all(
                isinstance(v, int) and not isinstance(v, bool) for v in line[:2]) and isinstance(line[2], bool)):
            raise DataError(f"{state}: not a detect run's stream state (last_event_line {printable(repr(line))[:60]}): "
                            "it cannot be resumed; start afresh with --overwrite (or another --out)")
        if self.tracker is not None and tracked is not None:
            try:
                restored = self.tracker.restore(tracked)
            except DataError as exc:
                raise DataError(f"{state}: {exc}: it cannot be resumed; start afresh with --overwrite (or another --out)") from exc
            if not restored:
                log.warning(f"{self.frames.name}: the event open when the state was saved was tracked under another "
                            "--hysteresis or --min-event-frames: the resumed run starts with no open event")
        if "last_event_line" not in extra:  # an earlier mnad's state
            events_after(self.out_dir, None, written, mend=True)  # only events.csv made whole: its events counted as then
            self.known = None
            return []
        self.last_line = tuple(line) if line is not None else None
        on_disk = events_after(self.out_dir, self.last_line, written, mend=True)  # events.csv made whole as it reads
        self.events += len(on_disk)
        self.known = {event_line(e) for e in on_disk} | ({self.last_line} if self.last_line is not None else set())
        if on_disk:
            self.last_line = event_line(on_disk[-1])
        if self.tracker is None or self.as_file or tracked is None:
            return []
        lost: list[Event] = []
        for row in rows:  # events these end are in the events files, counted above (unless a power cut lost the line)
            try:
                smoothed = float(row.get("smoothed", "nan"))
                frame, seconds = int(row["frame"]), float(row["time"])
            except (KeyError, TypeError, ValueError):
                continue
            if math.isfinite(smoothed) and (ended := self.tracker.push(frame, seconds, smoothed)) is not None:
                lost += [ended] if (ended.start_frame, ended.end_frame, ended.open) not in self.known else []
        complete = [start for start, _, marked in self.known if not marked]
        if self.tracker.current is not None and complete and self.tracker.current.start_frame <= max(complete):
            self.tracker.drop()  # it ended, and was written, before the kill cut the row that ended it
        return lost

    def _record(self, event: Event, again: bool, frame: int | None = None) -> None:
        """An event the tracker ended (at ``frame``, whose row comes next; None: at the end): written to the events
        files and counted, unless they hold it already: one whose line (start, end, marked ``open``) is the last one the
        saved state counted or one of those read back after it (``known``: written before a kill, a state not saved
        after it), as one ended among a resumed file's frames scored again is (``again``: the earlier run wrote it
        before that frame's row, counted from the disk; under a state of an mnad before the tracker was saved, counted
        here, as that mnad did), unless a power cut lost its line but not that row (written now)."""
        line = (event.start_frame, event.end_frame, event.open)
        if again and self.known is None:  # an earlier mnad's state: its events are counted as it counted them
            self.events += 1
            return
        if self.known is not None and line in self.known:
            return
        if again:  # its row is on the disk, its line not: a power cut (the files reach the disk each on its own until
            # ``DetectWriter.sync``); written now, into the segment of this run's first row
            frame = max(self.written, self.last_written) + 1
        assert self.writer is not None
        self.writer.event(event, self.clock_start(), frame=frame)
        self.events += 1
        self.last_line = line
        if self.known is None:
            self.known = set()

    def _check_footage(self, state: Path, earlier: dict) -> None:
        """``DataError`` (one line) when the source is not the footage the state was saved from (``_footage``): another
        path or URL, or a file (a folder's first frame file) of another size, or of another modification time and
        content (``_fingerprint``: a byte-identical copy or restore of a video file is the same footage; a state saved
        without one, by an earlier mnad, is refused on the time alone; a folder's or glob's first frame file is refused
        on its time as before, since its other frames may have been rewritten with it), or a folder of fewer frames (one
        of more continues into them), or one whose frame files the earlier run had are not the same names, sizes and
        modification times (``_frames_digest``; a state saved before it was recorded: not compared)."""
        now = self.footage
        if earlier.get("source") != now["source"]:
            raise DataError(f"{state}: the earlier run scored {printable(str(earlier.get('source')))[:160]}, not "
                            f"{now['source'][:160]}; --resume continues a run of the same footage: pass that source, or "
                            "choose another --out (or --overwrite)")
        changed = [f"{key} {earlier.get(key)}, now {now[key]}" for key in ("size", "mtime_ns")
                   if key in now and earlier.get(key) != now[key]]
        same_bytes = "fingerprint" in now and earlier.get("fingerprint") == now["fingerprint"]
        whole_file = self.frames.frames is None  # the fingerprint covers a video file, but only a folder's first frame
        if whole_file and same_bytes and "size" in now and earlier.get("size") == now["size"]:  # only its time changed
            changed = []
        elif "fingerprint" in earlier and "fingerprint" in now and not same_bytes:
            changed.append("its content differs")
        if isinstance(was := earlier.get("frames"), int) and now.get("frames") is not None and now["frames"] < was:
            changed.append(f"{was} frames, now {now['frames']}")
        elif isinstance(listed := earlier.get("frame_files"), str) and isinstance(was, int) and self.frames.frames is not None:
            files = self.frames.frames.files
            # the frames it had, not those added since (a folder of more frames continues into them)
            if (now.get("frame_files") if len(files) == was else _frames_digest(files[:was])) not in (None, listed):
                changed.append(f"its first {was} frame files differ (a name, size or modification time)")
        if changed:
            raise DataError(f"{state}: {self.frames.name} is not the footage the earlier run scored ({'; '.join(changed)}): "
                            "it cannot be resumed; start afresh with --overwrite (or another --out)")

    def resume_state(self) -> dict:
        """What ``resume`` continues from, saved with the scorer's state (``StreamScorer.save_state``'s extra)."""
        video = (self.video.deleted, self.video.first) if self.video is not None else self.earlier_video
        return {"source": self.frames.name, "footage": self.footage, "written": self.last_written,
                "position": self.position, "taken": self.taken, "base": self.base,
                "reconnections": self.reconnections, "scored": self.scored, "events": self.events, "above": self.above,
                "alerts": self.alerts, "not_finite": self.not_finite,
                # the event open now (``EventTracker.state``) and the last one written: --resume continues them
                "tracker": self.tracker.state() if self.tracker is not None else None,
                "rows_deleted": self.writer.kept.deleted if self.writer is not None else 0,
                "maps_deleted": self.writer.maps_kept.deleted if self.writer is not None else 0,
                "video_deleted": video[0], "video_first": video[1], "resumed": self.resumed, "clock_start": self.clock_start()} | (
                    {} if self.known is None else  # an earlier mnad's state, no event written since: resumed as it is
                    {"last_event_line": list(self.last_line) if self.last_line is not None else None})

    def save_state(self) -> bool:
        """The scorer's state and ``resume_state`` into ``STATE_FILE`` (atomically, hashed), between batches (no clip
        waits for its result); written before summary.json, whenever it is. The outputs written so far are made durable
        first, here and nowhere else (the rows, events and error maps: ``DetectWriter.sync``; the annotated video's
        closed files: ``SegmentedVideo.sync``), so that a power cut never leaves a state ahead of the outputs on the
        disk. Not saved (False) once the scorer took a frame whose row was not written (``pending``): the last state
        saved, which the rows on the disk reach, stays."""
        if self.pending:
            return False
        if self.writer is not None:
            self.writer.sync()
        if self.video is not None:
            self.video.sync()
        self.scorer.save_state(self.out_dir / STATE_FILE, self.resume_state())
        return True

    def take(self, item: RawFrame | SourceEnded) -> np.ndarray | None:
        """The reader's next item -> the prepared frame to score, or None when the stream ends with it."""
        if isinstance(item, SourceEnded):
            if item.error is None and self.taken < self.replay:  # a resumed file, now shorter than what was scored
                self.fail(DataError(f"{self.frames.name}: ended after {self.taken} frames, but the earlier run took "
                                    f"{self.replay}: not the footage it scored; start afresh with --overwrite"))
            elif item.error is None:
                self.end("end of source")
            elif isinstance(item.error, DataError):
                self.fail(item.error)
            else:  # a bug: as it would have been raised reading in this thread
                raise item.error
            return None
        i = self.taken
        self.taken += 1
        if self.earlier_clock is not None and self.frames.clocked and self.frames.clock_start is not None:  # one clock
            if self.time_offset is None:
                self.time_offset = max(self.frames.clock_start - self.earlier_clock, 0.0)
            item = replace(item, time=item.time + self.time_offset)
        if i < self.replay:  # a resumed file's frame already in the restored window: kept for its row's picture only
            self.raw[i] = item
            self.raw.pop(i - self.config.model.t_length, None)
            return None
        if item.fresh and i > 0:  # the frames before the gap and after it are not consecutive: no clip spans it
            self.scorer.new_video()
            self.base, self.reconnections = i, self.reconnections + 1
        if self.writer is None:  # the source delivered (into a staging folder while an earlier run is in --out)
            self.writer = DetectWriter(self.out_dir, maps=self.options.save_maps, rows_segment=self.options.rows_segment,
                                       rows_keep=self.options.keep_bytes("rows"), maps_keep=self.options.keep_bytes("maps"))
        self.raw[i] = item
        self.raw.pop(i - self.config.model.t_length, None)
        self.times = (item.time, item.time) if self.times is None else (self.times[0], item.time)
        m = self.config.model
        return prepare_frame(item.image, m.image_size, m.channels, self.frames.name, m.pixel_range, frames=self.reading)

    def score(self, row: FrameResult) -> None:
        """Events and outputs of one scored frame. Its row is written now and never rewritten, so its alert (the column,
        the annotated video's red border) is 1 only once its event is confirmed (``EventTracker.alerting``: it has
        reached --min-event-frames frames), and for every later frame of that event: a run dropped as too short never
        alerts, and every alert row lies in an event of events.csv, which starts at its first frame above the threshold."""
        assert self.writer is not None
        row = replace(row, index=self.base + row.index)  # the scorer counts from the last reconnection
        shown = self.raw[row.index]
        rows_before = self.writer.changes  # a row segment opened, closed or deleted: the summary says so
        alert = False
        # a resumed file's frame whose row the earlier run wrote after its last saved state: scored again to rebuild
        # the state and counted once (the earlier part's counts are the saved state's), its outputs not written twice
        again = row.index <= self.written
        if not row.finite and not again:
            self.not_finite += 1
            if self.not_finite == 1:
                log.warning(f"{self.frames.name}: frame {row.index}: {NOT_FINITE}; such frames are written with NaN scores "
                            "and change nothing later frames are scored with, and the run will end with an error")
        if self.tracker is not None and row.finite:  # no score is no evidence: an open event neither ends nor grows
            where = functools.partial(source_box, row.error_map, shown.image.shape) if row.error_map is not None else None
            ended = self.tracker.push(row.index, shown.time, row.smoothed, where=where)
            alert = self.tracker.alerting
            if not again:  # a row the earlier run wrote: counted from the disk (``resume``)
                self.above += row.smoothed > self.threshold
                self.alerts += alert
            if ended is not None:  # one ended among the frames scored again: the earlier run wrote it (``_record``)
                self._record(ended, again, row.index)
        if again:  # its row is the earlier run's: the state is of the frames taken so far
            self.pending, self.position = False, self.taken
            return
        self.writer.score(row, shown.time, alert)  # into the next row segment when the open one's time is up
        self.scored += 1  # its row is written: scored, whatever befalls its map or picture
        self.last_written = row.index
        # the state is of the frames taken so far, their rows written: it may be saved, whatever befalls the map or
        # picture below (was: a failure there left ``pending``, and the final state was not saved, with a false warning)
        self.pending, self.position = False, self.taken
        self.due |= self.scored == self.scored_before + 1 or self.writer.changes != rows_before
        # a map that is not finite has no picture (a png would be black: no error anywhere); the npy holds it as it is
        if row.error_map is not None and self.options.save_maps and (self.options.save_maps == "npy" or np.isfinite(row.error_map).all()):
            maps_before = self.writer.maps_kept.deleted
            self.writer.error_map(row.index, row.error_map)  # a shard closed, the oldest past --maps-keep deleted
            self.due |= self.writer.maps_kept.deleted != maps_before
        if self.options.save_video:
            self.history.append(row.smoothed)
            if self.video_size is None:
                self.video_size = video_size(*shown.image.shape[:2])
            # as the model saw it: a 16-bit frame mapped by model.pixel_range (its warning, if any, already said)
            image = to_8bit(shown.image, self.frames.name, self.config.model.pixel_range, warn=False)
            picture = annotated_frame(image, row.error_map, frame=row.index, seconds=shown.time, smoothed=row.smoothed,
                                      threshold=self.threshold, alert=alert, history=self.history, fps=self.frames.fps,
                                      size=self.video_size, region_sigma=self.options.region_sigma)
            if self.video is None:
                rate = self.frames.fps  # a camera's claim, until its frames' times measure it (``SegmentedVideo``)
                self.video = SegmentedVideo(self.out_dir, rate, self.options.video_segment, clocked=self.frames.clocked,
                                            keep_bytes=self.options.keep_bytes("video"))
                if self.resumed:  # the earlier parts' files stay, listed; this part's follow them
                    self.video.adopt(*self.earlier_video)
            before = self.video.changes  # a count, not a copy of the file list per frame (weeks of files)
            self.video.write(picture, row.index, shown.time)
            # a file opened or closed, annotated.mkv moved into annotated/, or an old file deleted: the summary says so
            self.due |= self.video.changes != before

    def source_fps(self) -> float:
        """The source's frame rate: for a camera or stream (frame times off the wall clock) the rate its frames came at,
        since what it reports is often nominal (FFmpeg says 25 for any MJPEG camera) or nonsense (1000); the file's or
        --fps otherwise."""
        taken = self.taken - self.first_taken  # this part's, in a resumed run (its frame times are)
        if self.frames.clocked and self.times is not None and taken > 1 and self.times[1] > self.times[0]:
            return (taken - 1) / (self.times[1] - self.times[0])
        return self.frames.fps

    def behind(self) -> float | None:
        """Seconds the scores fell behind a camera or stream (``SourceReader.waited``); None for footage that waits."""
        return self.reader.waited if self.frames.clocked else None

    def clock_start(self) -> float | None:
        """The wall-clock time of a camera's or stream's time 0 (its frames' times are seconds after it; a resumed one's,
        the earlier run's); None for footage whose times are places in a file."""
        if self.earlier_clock is not None:
            return self.earlier_clock
        return self.frames.clock_start if self.frames.clocked else None

    def check_pace(self) -> None:
        """Warn once when a camera's frames come faster than they are scored: its alerts fall ever further behind."""
        behind = self.behind()
        if behind is not None and behind > FALLING_BEHIND and not self.warned_behind:
            self.warned_behind = True
            log.warning(f"{self.frames.name}: frames arrive faster than they are scored ({behind:.0f} s behind the camera so "
                        "far): alerts come that late, and the camera or the network drops the frames its buffers cannot "
                        "hold; score fewer sources at once or a faster path (--bf16 --compile, --int8, a smaller model)")

    def at_limit(self) -> bool:
        """It has taken what scores the --max-frames N frames asked for (this part's first N: from the source's start,
        a resumed camera's first new frame, or a resumed file's first frame not scored before), so it ends once they
        are scored, not at the next frame (which a camera that stalls or goes away right after them would never give:
        the run would wait through its read timeout and reconnections, then fail as a lost source). A model that scores
        frame t once frame t + latency_frames has arrived reads that many frames more (``limit_lag``; was: N read,
        their last latency_frames never scored). Frames no clip can score (a source's first ``model.target_index``, the
        first ones after a reconnection) count among the N all the same."""
        return (self.options.max_frames is not None
                and self.taken - self.first_taken >= self.options.max_frames + self.limit_lag)

    def move(self, out_dir: Path) -> None:
        """The outputs' folder was moved (``DetectFolder.take_over``): the files still to be written follow it."""
        self.out_dir = out_dir
        if self.writer is not None:
            self.writer.out_dir = out_dir
        if self.video is not None:
            self.video.out_dir = out_dir

    def end(self, why: str) -> None:
        if self.ended_by is None:
            self.ended_by, self.ended_at = why, time.perf_counter()
            self.due = True
            finish_narrow(self.frames.name)  # no more of its frames are looked at: a short reading is decided on them
        self.reader.halt.set()

    def fail(self, error: DataError) -> None:
        if self.ended_by is None:
            self.failure = error
        self.end(f"error: {error}")

    def crash(self, error: BaseException) -> None:
        """The run stopped on an exception that is not this source's DataError (a bug, no memory): a source still
        running did not end well."""
        if self.ended_by is None:
            self.broken = error
        self.end(f"crashed ({type(error).__name__}: {error})")

    def close(self, started: float, smoothing: int, calibration: Calibration | None) -> SourceSummary | None:
        """Complete the outputs (the event still open, summary.json); the summary, or None when the source gave nothing. Its
        seconds and fps are this source's own: from the run's ``started`` (perf_counter) to this source's end."""
        self.end("stopped")  # any reader still running stops; a run that ended keeps its reason
        if self.video is not None:
            try:
                self.video.close()
            except DataError as exc:  # said once the other outputs are complete
                if self.failure is None:
                    self.failure = exc
        if self.writer is None:
            return None
        # an event open when a resumed run wrote nothing of its own (``DetectWriter.resuming``) and stopped before the
        # end of its footage (a file stopped among the frames it scores again, a camera that gave no new frame) is not
        # ended here: the saved state keeps it open, and a further --resume goes on with it as the earlier run did (it
        # ended later, written, or was open at the kill). Any other is ended, marked open: a resumed file that reached
        # its end with no row of its own (the earlier run wrote every row, then was killed in its close; a state saved
        # at a run's end holds no open event) writes it into a segment of its own, named by the frame after the last row
        at_end = self.as_file and self.ended_by == "end of source"
        if self.tracker is not None and (not self.writer.resuming or at_end):
            last = self.tracker.finish()
            if last is None or (self.known is not None and (last.start_frame, last.end_frame, last.open) in self.known):
                pass  # the events files hold it so (written by an earlier part, killed before its state was saved)
            elif self.writer.open_segment is None and not self.writer.resuming:  # a row segment failed to close or open
                log.warning(f"{self.frames.name}: the event open at the end (frames {last.start_frame}-{last.end_frame}) "
                            "is in no events file: no row segment was open")
            else:
                self._record(last, again=False, frame=max(self.written, self.last_written) + 1)
        for close in (self.writer.close_rows, self.writer.close_maps):  # the open row segment and map shard close:
            try:  # listed among those kept
                close()
            except DataError as exc:  # said once the other outputs are complete
                if self.failure is None:
                    self.failure = exc
        try:  # rows that may not be on the disk refuse it (``DetectWriter.sync``): the last state saved, which they reach, stays
            if not self.save_state():  # where a --resume continues (a camera stopped with SIGTERM and restarted)
                log.warning(f"{self.frames.name}: the scorer's state is not saved at the end: it took a frame whose row "
                            "was not written; a --resume continues from the last one saved (a file's scores that frame "
                            "again; a camera's numbers its new frames after the last row)")
        except ConfigError:  # a clip waits for its result (a crash mid-batch): the last saved state stays
            log.warning(f"{self.frames.name}: the scorer's state could not be saved at the end (a batch was cut short): "
                        "a --resume continues from the last one saved")
        except DataError as exc:
            if self.failure is None:
                self.failure = exc
        summary = self.summary(started, smoothing, calibration, complete=True)
        self.writer.close(summary.as_json())
        return summary

    def summary(self, started: float, smoothing: int, calibration: Calibration | None, *, complete: bool) -> SourceSummary:
        """This source's summary.json: the final one (``complete``, written by ``close``) or one written while the run
        goes on (``progress``): ``ended_by`` null while the source runs, its seconds up to now, the events ended so far
        and the annotated video's files closed so far."""
        end = self.ended_at if self.ended_at is not None else time.perf_counter()
        seconds = end - started
        lag, fps = latency_frames(self.config), self.source_fps()
        video_files = list(self.video.files) if self.video is not None else self.earlier_video_files()
        return SourceSummary(
            source=self.frames.name, frames_scored=self.scored, seconds=round(seconds, 3),
            fps=round((self.scored - self.scored_before) / seconds, 2) if seconds else None,  # this part's
            source_fps=round(fps, 3),
            latency_frames=lag, latency_seconds=round(lag / fps, 3) if fps else None,
            behind_seconds=round(behind, 3) if (behind := self.behind()) is not None else None,
            reconnections=self.reconnections,
            clock_start=wall_clock(start) if (start := self.clock_start()) is not None else None,
            calibrated=calibration is not None, threshold=self.threshold,
            false_alarm_rate=calibration.false_alarm_rate if calibration else None,
            above_threshold_rate=round(self.above / self.scored, 5) if calibration and self.scored else None,
            alert_frames=self.alerts if calibration else None,
            not_finite_frames=self.not_finite,
            calibration_held_out_false_alarm_rate=(calibration.held_out_false_alarms.get(rate_key(calibration.false_alarm_rate))
                                                   if calibration else None),
            scoring_precision=self.scorer.precision, calibration_precision=calibration.precision if calibration else None,
            calibration_overlaps_training=self.overlap,
            smoothing=smoothing, events=self.events,
            ended_by=printable(self.ended_by) if complete and self.ended_by is not None else None,
            annotated_video=bool(video_files), annotated_video_files=video_files,
            annotated_video_deleted=self.video.deleted if self.video is not None else self.earlier_video[0],
            annotated_video_open=self.video.open_name if self.video is not None and not complete else None,
            row_segments=list(self.writer.kept.names) if self.writer is not None else [],
            row_segments_open=self.writer.open_segment if self.writer is not None and not complete else None,
            row_segments_deleted=self.writer.kept.deleted if self.writer is not None else 0,
            map_shards_deleted=self.writer.maps_kept.deleted if self.writer is not None else 0,
            note=None if calibration else UNCALIBRATED,
            complete=complete, updated_at=wall_clock(time.time()), update_seconds=SUMMARY_SECONDS, resumed=self.resumed,
        )

    def earlier_video_files(self) -> list[str]:
        """The annotated video's files of the earlier parts of a resumed run (none: a run started afresh)."""
        return video_files_in(self.out_dir) if self.resumed else []

    def progress(self, started: float, smoothing: int, calibration: Calibration | None) -> None:
        """Rewrite summary.json as the run goes on ("complete": false), atomically; a failure fails this source."""
        self.due = False
        if self.writer is None:  # nothing scored yet: no folder of its own yet
            return
        try:
            self.save_state()  # first: a kill between the two leaves a summary older than the state, never newer
            write_detect_summary(self.out_dir, self.summary(started, smoothing, calibration, complete=False).as_json())
        except DataError as exc:
            self.fail(exc)

    def error(self) -> DataError | None:
        """Why this source did not do what was asked, after the run: its failure, or no frame scored."""
        if self.failure is not None:
            return self.failure
        if self.scored == 0:
            return DataError(f"{self.frames.name}: no frame was scored ({self.config.model.t_length} frames make the "
                             "first clip)")
        if self.not_finite:
            return DataError(f"{self.frames.name}: {self.not_finite} of the {self.scored} frames scored have no score: "
                             f"{NOT_FINITE} (their rows in scores.csv hold NaN)")
        return None

    def problem(self) -> str | None:
        """What went wrong with this source, for the run's summary.json: its error, the crash it was cut short by, or
        the failure to complete its outputs; None when it did what was asked."""
        wrong = self.error() or self.broken
        return None if wrong is None else printable(str(wrong) if isinstance(wrong, DataError) else f"{type(wrong).__name__}: {wrong}")


def detect(
    model: MNAD,
    config: Config,
    source: str | Path | int | Sequence[str | Path | int],
    out_dir: str | Path,
    options: DetectOptions | None = None,
    *,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Score ``source`` frame by frame and write scores.csv, events.jsonl, events.csv (in segments of
    ``options.rows_segment`` seconds of footage: ``outputs.DetectWriter``) and summary.json to ``out_dir`` as it goes.
    ``model``: a model or an exported one (``export.load_onnx``). An interrupted run (Ctrl-C, SIGTERM)
    still completes its outputs and re-raises; a source that gave nothing or was lost raises ``DataError`` after the
    outputs are written. Returns the summary. An earlier run in ``out_dir`` (``overwrite``) is replaced whole, and only
    once this run scored a frame (``outputs.DetectFolder``): until then its rows go to a staging folder. It is deleted
    only when this run ended well: its outputs completed, no source failed, no crash (a Ctrl-C or SIGTERM is an end:
    how a live stream is stopped). Otherwise it is kept in ``out_dir/.mnad-detect-earlier``, said in the error or, when
    a crash or an interrupt is re-raised, in a warning.

    Several sources (a list of more than one) are scored at once, their frames batched: each source's outputs go to
    its own folder ``out_dir/<index>_<name>`` (``stream_folder``), with a summary.json of the run in ``out_dir``; a
    source that ends or fails does not stop the others, and the run raises ``DataError`` at the end when any source
    failed or scored nothing. Returns the run's summary. A PyTorch model only (an exported ONNX graph is batch 1).

    The scores are normalised by the model's calibration, else by a running min-max; ``options.normalization`` may ask
    for either ('calibrated', 'causal': refused when the model has no calibration, or has one), never for 'video'
    (``DetectOptions``). ``config.eval.normalization`` is read only for a calibrated model (``calibration.scoring_calibration``).

    ``options.resume``: continue the run in ``out_dir`` (same sources, model and settings; ``_check_resumable``,
    ``_SourceRun.resume``) from each source's saved state (``STATE_FILE``, saved with its summary.json): a camera keeps
    its memory, normaliser, trailing mean and open event and numbers its frames after the earlier ones; a file
    continues where it stopped, as an uninterrupted run would have (its events too). Its rows follow the earlier
    run's, whose outputs stay. A source the earlier run scored nothing of (killed before its first frame: no state,
    header-only files) starts afresh there, and so does an ``out_dir`` that is missing or empty."""
    single_process("mnad detect")  # each rank would score every source into the same out_dir
    checked_config(config)  # a Config changed by hand as a config file, before --out or any source is touched
    apply_threads(config)  # train.threads (--threads), as train() applies it
    options = DetectOptions() if options is None else options
    if not isinstance(options, DetectOptions):
        raise ConfigError(f"options must be a mnad.detect.DetectOptions or None, got {type(options).__name__}")
    if options.normalization is not None:  # asked: checked as the model's own setting (Config, calibration.scoring_calibration)
        config = config.override([f"eval.normalization={options.normalization}"])
    out_dir = output_path(out_dir, "out_dir (--out)")
    sources = [source] if isinstance(source, str | Path | int) else source
    if not isinstance(sources, list | tuple) or not all(isinstance(s, str | Path | int) and not isinstance(s, bool) for s in sources):
        raise ConfigError(f"source must be a str or Path (file, folder, glob, URL), an int camera index, or a list of them; "
                          f"got {printable(repr(source))[:80]}")
    for s in sources:  # an int is a camera; as '0' it would be the path of that name (streams.camera_index)
        if isinstance(s, int) and os.path.lexists(str(s)):
            raise ConfigError(f"camera index {s}: the current folder holds a file or folder named '{s}', which a source "
                              "named by digits is (streams.camera_index); run from another folder")
    sources = [str(s) for s in sources]  # a camera index as the CLI passes it: '0'
    if not sources:
        raise ConfigError("no source to score")
    # the model as trained (an export: as exported) before --out is touched (was: a traceback at the first frame, or
    # scoring at another size, with partial outputs left)
    check_same_model(model, config)
    check_calibrated_weights(model, config)  # its calibration, if any, fitted on these weights (was: any model's scored)
    check_output_folder(out_dir, "--out")
    with locked_output(out_dir, remove_detect_temps):  # the whole run: a second run into --out is refused at once
        return _detect(model, config, sources, out_dir, options, device=device, progress=progress)


def _detect(model: MNAD, config: Config, sources: list[str], out_dir: Path, options: DetectOptions, *, device: str,
            progress: bool) -> dict:
    """``detect``, with ``out_dir`` held (``run_folder.locked_output``)."""
    several = len(sources) > 1
    calibration = scoring_calibration(config)  # the model's, or None: a running min-max
    sourced = [FrameSource(s, options.source) for s in sources]  # checks every source before any output is touched
    earlier = detect_run_entries(out_dir)  # the whole earlier run, whatever its sources: an overwrite leaves none of it
    for path in earlier:  # its sources' folders: a killed run's temporary files, as in out_dir (run_folder.locked_output)
        if STREAM_FOLDER.fullmatch(path.name) and path.is_dir():
            remove_detect_temps(path)
    if options.resume:  # before the model is set up: a folder with nothing to resume is said at once
        _check_resumable(out_dir, earlier, sources)
    elif earlier and not options.overwrite:
        shown = ", ".join(map(str, earlier[:3])) + (f" and {len(earlier) - 3} more" if len(earlier) > 3 else "")
        raise DataError(f"{out_dir}: holds the outputs of an earlier run ({shown}); choose another --out or pass --overwrite "
                        "(or --resume to continue it)")
    scorers = StreamScorer.for_streams(model, config, len(sources), normalization="calibrated" if calibration else "causal",
                                       calibration=calibration, device=device,
                                       smoothing=None,  # the calibration's window, else eval.smoothing (--smoothing)
                                       # an alert says where (``Event.peak_x`` ...): the worst patch of its peak frame's map
                                       maps=options.save_video or bool(options.save_maps) or calibration is not None)
    if calibration is None:
        log.warning(UNCALIBRATED)
    # calibration footage the model's file records training on: warned once, recorded in summary.json
    overlap = training_overlap(calibration, model) if calibration is not None else None
    if (lag := latency_frames(config)) > 0:
        log.warning(f"this model scores each frame {lag} frames after it arrives (motion cues): alerts come {lag} frames late")
    names = [stream_folder(i, s, len(sources)) for i, s in enumerate(sources)] if several else []
    for name in names:  # a folder no earlier summary.json names is a user's: never written into, never moved
        if os.path.lexists(out_dir / name) and out_dir / name not in earlier:
            raise DataError(f"{out_dir / name}: is in the way of a source's outputs and is no earlier run's (the "
                            f"summary.json of {out_dir} does not name it); move it, or choose another --out")
    place = DetectFolder(out_dir, [] if options.resume else earlier)  # a resumed run writes beside the earlier one
    aside = out_dir / EARLIER_DIR
    if options.resume and aside in earlier and not (aside / MOVING_MARK).exists():
        # the run an --overwrite (killed) replaced, set aside: deleted once the resumed run ends well, as the overwrite
        # would have (``DetectFolder.finish``); kept, and said, otherwise
        log.info(f"{aside}: the run an --overwrite replaced, kept aside until the run it began ends well: deleted then")
        place.earlier = [aside]
    folders = [place.root / name for name in names] if several else [place.root]
    wake = threading.Event()
    runs = [_SourceRun(frames, scorer, folder, options, config, calibration, wake, overlap)
            for frames, scorer, folder in zip(sourced, scorers, folders, strict=True)]
    if options.resume:
        for run in runs:  # a source of several that gave nothing before has no folder: it starts afresh
            # a folder with rows but no state was refused (``_check_resumable``): one without a state scored nothing
            if (run.out_dir / STATE_FILE).is_file():
                mend_row_segments(run.out_dir)  # a kill while a segment moved or opened: made whole before it is read
                run.resume(run.out_dir / STATE_FILE, last_row_frame(run.out_dir))
            elif os.path.lexists(run.out_dir):  # the earlier run scored nothing there: it starts afresh in place
                _start_afresh(run.out_dir)
    if several:  # names the run's folders from its start: a killed run's are known to be detect's (detect_run_entries)
        try:
            write_detect_summary(place.root, _run_summary(runs, folders, 0.0, calibration, complete=False).as_json())
        except DataError:
            place.finish(failed=True)
            raise
    started = time.perf_counter()
    bar = tqdm(desc="detect", unit="frame", disable=not progress)
    for run in runs:
        run.reader.start()
    stop: BaseException | None = None  # what cut _score short: an interrupt, or a crash
    try:
        _score(runs, scorers, bar, wake, place, _Progress(runs, folders, place, several, started, scorers[0].smoothing, calibration))
    except BaseException as exc:  # every way out completes the outputs; re-raised below
        stop = exc
        for run in runs:
            if isinstance(exc, KeyboardInterrupt):
                run.end("interrupted (SIGINT)")
            elif isinstance(exc, Terminated):
                run.end(f"stopped ({exc.signal})")
            elif isinstance(exc, DataError):  # the run's, not one source's (its outputs could not replace the earlier run's)
                run.fail(exc)
            else:
                run.crash(exc)
    interrupted = isinstance(stop, KeyboardInterrupt | Terminated)
    with held_interrupts():  # a second Ctrl-C does not cut the outputs' completion short
        bar.close()
        seconds = time.perf_counter() - started
        summaries, overall, unfinished = _complete(runs, folders, place.root if several else None, started, seconds,
                                                   scorers[0].smoothing, calibration)
        # only a run that ended well replaces the earlier one: its outputs complete, no source failed, no crash. A run
        # stopped by Ctrl-C or SIGTERM ended well (how a live stream is stopped; its outputs are completed)
        ended_well = (stop is None or interrupted) and not unfinished and not any(run.error() is not None for run in runs)
        kept = place.finish(failed=not ended_well)
        if not earlier and not any(run.scored for run in runs):  # nothing scored, no earlier run: nothing to keep
            _remove_outputs(out_dir, runs, several)
    deadline = time.monotonic() + 2.0  # readers stop at their next frame; a silent camera's read may take its timeout
    for run in runs:
        run.reader.join(timeout=max(deadline - time.monotonic(), 0.0))
    note = f"; {kept}" if kept else ""  # where the earlier run's outputs are, when this run did not end well
    if stop is not None and not (interrupted and unfinished):  # the interrupt or the crash goes on, said where the earlier run is
        for error in unfinished:
            log.warning(f"the outputs could not be completed: {error}")
        if isinstance(stop, DataError) and note:
            raise DataError(f"{stop}{note}") from stop
        if kept:
            log.warning(kept)
        raise stop
    if unfinished:  # outputs not completed: the run did not do what was asked, whatever else happened
        if isinstance(unfinished[0], DataError):
            raise DataError(f"{unfinished[0]}{note}") from unfinished[0]
        if kept:
            log.warning(kept)
        raise unfinished[0]
    errors = [e for run in runs if (e := run.error()) is not None]
    if not several:
        if errors:
            raise DataError(f"{errors[0]}{note}") if note else errors[0]
        assert summaries[0] is not None
        return summaries[0].as_json()
    if errors:
        raise DataError(f"{len(errors)} of {len(runs)} sources failed (the others ran to their end; outputs in {out_dir}): "
                        + "; ".join(str(e) for e in errors) + note)
    assert overall is not None
    return overall.as_json()


def _footage(frames: FrameSource) -> dict:
    """What tells a source's footage apart cheaply, saved with its state and compared by ``--resume``
    (``_SourceRun._check_footage``): the source (a file's, folder's or glob's resolved path; a live source's URL as
    shown, its password hidden) and, for a file, folder or glob, its frames where known (a folder's, a glob's) and the
    size, modification time and fingerprint (``_fingerprint``: at most 2 MiB read, once, at the start) of the file (a
    folder's, a glob's first frame file), and a folder's or glob's frame files' names, sizes and modification times
    (``_frames_digest``)."""
    if frames.live:
        return {"source": frames.name}
    path = Path(frames.source)
    first = frames.frames.files[0] if frames.frames is not None and len(frames.frames) else path
    footage: dict = {"source": printable(str(path.resolve())), "frames": len(frames.frames) if frames.frames is not None else None}
    try:
        stat = Path(first).stat()
    except OSError:  # gone since it was checked: the reader says so
        return footage
    footage |= {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if (fingerprint := _fingerprint(Path(first), stat.st_size)) is not None:
        footage["fingerprint"] = fingerprint
    if frames.frames is not None and (listed := _frames_digest(frames.frames.files)) is not None:
        footage["frame_files"] = listed
    return footage


def _frames_digest(files: Sequence[str | Path]) -> str | None:
    """SHA-256 of a frame folder's or glob's frame files' names, sizes and modification times, in order: the first
    frame's fingerprint (``_fingerprint``) says nothing of the others, and a folder whose later frames were replaced
    (re-extracted, another camera's export under the same names, frames of one size) is other footage. A stat per
    frame, no frame read (a resumed run's position may be a million frames in); their times, as the first frame
    file's are compared, since frames of one size (uncompressed, or noise) differ in nothing else a stat gives. None
    when one cannot be (gone: the reader says so)."""
    digest = hashlib.sha256()
    try:
        for file in files:
            stat = os.stat(file)
            digest.update(f"{Path(file).name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    except OSError:
        return None
    return digest.hexdigest()


FINGERPRINT_BYTES = 1 << 20  # what ``_fingerprint`` reads of a file's start and of its end


def _fingerprint(path: Path, size: int) -> str | None:
    """SHA-256 of the first and the last ``FINGERPRINT_BYTES`` of the file at ``path`` (``size`` bytes long; all of a
    smaller one): a copy or restore of the footage that changed its modification time (cp, rsync without -t) is
    told from a file rewritten since (``_SourceRun._check_footage``) without reading a video of hours. None when it
    cannot be read."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            digest.update(handle.read(FINGERPRINT_BYTES))
            if size > FINGERPRINT_BYTES:
                handle.seek(max(size - FINGERPRINT_BYTES, FINGERPRINT_BYTES))
                digest.update(handle.read(FINGERPRINT_BYTES))
    except OSError:
        return None
    return digest.hexdigest()


def _check_resumable(out_dir: Path, earlier: list[Path], sources: list[str]) -> None:
    """``--resume``: ``out_dir`` must hold an earlier detect run of the same sources (as many, in the same order, the
    same folder names: ``stream_folder``), each source's folder with a saved state (``STATE_FILE``) to continue, or
    one where the earlier run scored no frame (``_scored_nothing``: it starts afresh there); an ``out_dir`` missing or
    empty (but for its lock) starts afresh, said in a warning (a service whose command line always carries --resume,
    on its first start); ``DataError`` (one line) otherwise. Whether each state is of this model, settings and footage
    is ``_SourceRun.resume``'s check."""
    summary = read_json_if_present(out_dir / SUMMARY_FILE, "detect summary", lambda data: None, None)
    if not earlier:  # a service whose command line always carries --resume, on its first start: a fresh run
        if any(p.name not in (LOCK_FILE, STAGING_DIR) for p in out_dir.iterdir()):
            raise DataError(f"{out_dir}: holds no earlier detect run to resume (no {SUMMARY_FILE}), but other files: "
                            "--resume continues a detect run, or starts one in an empty --out; choose another --out")
        log.warning(f"{out_dir}: no earlier detect run to resume: it starts afresh (--resume)")
        return
    if not isinstance(summary, dict):  # a single source's run killed before its first summary: its header-only rows
        if len(sources) == 1 and _scored_nothing(out_dir):
            return
        raise DataError(f"{out_dir}: holds no earlier detect run to resume (no {SUMMARY_FILE}, beside its other "
                        "outputs); pass --overwrite to start afresh")
    streams = summary.get("streams")
    if len(sources) > 1:
        names = [stream_folder(i, s, len(sources)) for i, s in enumerate(sources)]
        had = ([s.get("folder") for s in streams] if isinstance(streams, list) and all(isinstance(s, dict) for s in streams)
               else None)
        if had is None or len(had) != len(names) or any(f is not None and f != n for f, n in zip(had, names, strict=True)):
            raise DataError(f"{out_dir}: the earlier run scored other sources ({len(had) if had is not None else 1} of them: "
                            f"{', '.join(str(f) for f in (had or [summary.get('source')]))[:200]}); --resume continues "
                            f"a run of the same sources in the same order ({', '.join(names)[:200]}); choose another --out")
        for name, stream in zip(names, streams, strict=True):  # a folder gone would start its source afresh, its
            scored = stream.get("frames_scored") if isinstance(stream, dict) else None  # memory and numbering lost
            if isinstance(scored, int) and not isinstance(scored, bool) and scored > 0 and not os.path.lexists(out_dir / name):
                raise DataError(f"{out_dir / name}: missing, but the earlier run scored {scored} frames of "
                                f"{printable(str(stream.get('source')))[:120]} into it: --resume cannot continue that "
                                "source; put the folder back, or start afresh with --overwrite (or another --out)")
        folders = [out_dir / n for n in names if os.path.lexists(out_dir / n)]  # a source that gave nothing made none
    else:
        source = summary.get("source")
        if streams is not None or not isinstance(source, str) or stream_folder(0, source, 1) != stream_folder(0, sources[0], 1):
            what = f"{len(streams)} sources" if isinstance(streams, list) else printable(repr(source))[:120]
            raise DataError(f"{out_dir}: the earlier run scored {what}, not {printable(sources[0])[:120]}; --resume "
                            "continues a run of the same source: choose another --out")
        folders = [out_dir]
    for folder in folders:  # before the model is set up: rows without a state cannot be continued
        if not (folder / STATE_FILE).is_file() and not _scored_nothing(folder):
            raise _no_state(folder / STATE_FILE)


def _no_state(state: Path) -> DataError:
    """A source's folder with rows but no saved state (``_scored_nothing``: a folder without rows starts afresh)."""
    return DataError(f"{state}: no stream state here, beside rows the earlier run scored (it was killed between its "
                     "first rows and their summary, or written by an mnad before --resume): it cannot be resumed; start "
                     "afresh with --overwrite (or another --out)")


def _scored_nothing(folder: Path) -> bool:
    """An earlier run's source folder (a single source's --out) that ``--resume`` starts afresh in place, nothing of it
    lost: no saved state (``STATE_FILE``), no row past any scores.csv's header (not even one cut by a kill), no error
    map, no annotated video, and a summary.json, if any, of no frame scored: what a run killed (SIGKILL, power loss)
    before it scored a frame, or before it saved its first state, leaves."""
    if (folder / STATE_FILE).exists() or video_files_in(folder):
        return False
    for segment in row_segments_in(folder):
        try:
            with (folder / segment / SCORES_FILE).open("rb") as handle:
                handle.readline()  # the header
                if handle.read(1):
                    return False
        except OSError:  # not readable as a file: not known to be empty
            return False
    if (folder / MAPS_DIR).is_dir() and any(p.is_file() for p in (folder / MAPS_DIR).rglob("*")):
        return False
    summary = read_json_if_present(folder / SUMMARY_FILE, "detect summary", lambda data: None, None)
    return not isinstance(summary, dict) or summary.get("frames_scored") in (0, None)


def _remove_detect_files(folder: Path, *, strict: bool) -> None:
    """Delete detect's outputs in ``folder`` (``DETECT_FILES``, files or folders); ``strict``: a failure is a
    ``DataError`` naming the file, else it is let be."""
    import shutil

    for name in DETECT_FILES:
        path = folder / name
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif os.path.lexists(path):
                path.unlink()
        except OSError as exc:
            if strict:
                raise DataError(f"{path}: cannot remove what the earlier run, which scored nothing, left there "
                                f"({exc.strerror or exc})") from exc


def _start_afresh(folder: Path) -> None:
    """A source folder the earlier run scored nothing into (``_scored_nothing``): its header-only files go, so that
    this run writes its outputs there as a fresh run does."""
    _remove_detect_files(folder, strict=True)


def _remove_outputs(out_dir: Path, runs: list[_SourceRun], several: bool) -> None:
    """A run that scored no frame into a folder with no earlier run leaves no outputs (header-only files would be
    taken for an earlier run's, and refuse the retry): what it wrote goes."""
    for run in runs:
        _remove_detect_files(run.out_dir, strict=False)
        if several:
            with contextlib.suppress(OSError):
                run.out_dir.rmdir()
    if several:
        (out_dir / SUMMARY_FILE).unlink(missing_ok=True)


def _complete(runs: list[_SourceRun], folders: list[Path], summary_dir: Path | None, started: float, seconds: float,
              smoothing: int, calibration: Calibration | None) -> tuple[list[SourceSummary | None], RunSummary | None, list[Exception]]:
    """Complete every source's outputs, and the run's summary.json in ``summary_dir`` (several sources), each whatever
    the others did: a source whose outputs cannot be completed leaves the next ones to be (their annotated video
    released, their summary written). Returns the sources' summaries, the run's, and what could not be completed."""
    summaries: list[SourceSummary | None] = []
    unfinished: list[Exception] = []
    for run in runs:
        try:
            summaries.append(run.close(started, smoothing, calibration))
        except Exception as exc:  # said once every source is closed
            summaries.append(None)
            unfinished.append(exc)
            if run.broken is None:
                run.broken = exc
    overall = None
    if summary_dir is not None:
        overall = _run_summary(runs, folders, seconds, calibration)
        try:
            write_detect_summary(summary_dir, overall.as_json())
        except Exception as exc:  # said with the others
            unfinished.append(exc)
    return summaries, overall, unfinished


class _Progress:
    """The summary.json files rewritten while the run goes on (``SUMMARY_SECONDS``): each source's, and the run's with
    several sources (in ``place.root``, which follows the outputs when they replace an earlier run's)."""

    def __init__(self, runs: list[_SourceRun], folders: list[Path], place: DetectFolder, several: bool, started: float,
                 smoothing: int, calibration: Calibration | None) -> None:
        self.runs, self.folders, self.place, self.several = runs, folders, place, several
        self.started, self.smoothing, self.calibration = started, smoothing, calibration
        self.next = time.monotonic() + SUMMARY_SECONDS

    def tick(self) -> None:
        """After each batch (or wait): rewrite the summaries that are due. Not once every source has ended: the
        complete ones follow at once. A source's failure to write fails it; the run's raises ``DataError``."""
        if all(run.ended_by is not None for run in self.runs):
            return
        due = time.monotonic() >= self.next
        wrote = False
        for run in self.runs:
            if due or run.due:
                wrote = True
                run.progress(self.started, self.smoothing, self.calibration)
        if self.several and wrote:
            write_detect_summary(self.place.root, _run_summary(self.runs, self.folders, time.perf_counter() - self.started,
                                                               self.calibration, complete=False).as_json())
        if due:  # from when they were written (each source's state first, ``_SourceRun.progress``): never sooner
            self.next = time.monotonic() + SUMMARY_SECONDS


def _score(runs: list[_SourceRun], scorers: list[StreamScorer], bar: tqdm, wake: threading.Event, place: DetectFolder,
           progress: _Progress) -> None:
    """Until every source has ended: take at most one waiting frame of each source, score those frames as one batch,
    and hand each result to its source's events and outputs. A source's DataError (its frames or its outputs) ends
    that source only; with a single source it ends the run. The first frame scored puts the run's outputs in place of
    an earlier run's (``DetectFolder.take_over``)."""
    compiling = any(scorer.config.eval.compile for scorer in scorers)  # a batch may compile (a new batch size, too)
    while any(run.ended_by is None for run in runs):
        wake.clear()  # before looking: a frame queued after the look sets it again, so the wait below misses none
        frames: list[np.ndarray | None] = [None] * len(runs)
        took = False  # an item was taken (a frame to score, a resumed file's window frame, the end): look again at once
        for k, run in enumerate(runs):
            if run.ended_by is not None:
                continue
            try:
                item = run.reader.queue.get_nowait()
            except queue.Empty:
                continue
            took = True
            try:
                frames[k] = run.take(item)
            except DataError as exc:
                run.fail(exc)
        if all(f is None for f in frames):
            if not took:
                wake.wait(0.5)
            with held_interrupts():
                progress.tick()  # a camera that stalls: its summary still says the run is alive
            continue
        for run, frame in zip(runs, frames, strict=True):
            run.pending |= frame is not None  # the scorer takes it: its state is ahead of the rows until its row is written
        # a stop (Ctrl-C, SIGTERM) waits for the batch's rows, so that the scorer's state is theirs again and the last
        # state is saved at the end (was: a stop inside score_streams, most of the time, left the scorer a frame ahead
        # of the rows, and a --resume went back to the last state saved, up to a minute earlier); not under
        # eval.compile, where a batch may be compiling for tens of seconds: there a stop acts at once, as before
        with held_interrupts() if not compiling else contextlib.nullcontext():
            rows = score_streams(scorers, frames)
            _write_batch(runs, frames, rows, place, bar, progress)


def _write_batch(runs: list[_SourceRun], frames: list[np.ndarray | None], rows: list[FrameResult | None], place: DetectFolder,
                 bar: tqdm, progress: _Progress) -> None:
    """Hand each source's result of a batch (``frames`` scored into ``rows``) to its rows, events, outputs and
    summaries, whole or not at all."""
    with held_interrupts():  # each frame's row, events and count are written whole or not at all
        for run, frame, row in zip(runs, frames, rows, strict=True):
            if frame is not None and row is None:  # taken into the clip window, no row of it: the state is of it
                run.pending, run.position = False, run.taken
        if place.root != place.out_dir and any(r is not None and run.ended_by is None for run, r in zip(runs, rows, strict=True)):
            staging = place.root
            place.take_over()
            for run in runs:
                run.move(place.out_dir / run.out_dir.relative_to(staging))
        for run, row in zip(runs, rows, strict=True):
            if row is None or run.ended_by is not None:
                continue
            try:
                run.score(row)
            except DataError as exc:  # its state stays the last saved one (``pending``): its row is scored again
                run.fail(exc)
            else:
                bar.update(1)
        for run in runs:
            run.check_pace()
            if run.ended_by is None and run.at_limit():
                run.end("--max-frames")
        progress.tick()


def _run_summary(runs: list[_SourceRun], folders: list[Path], seconds: float, calibration: Calibration | None, *,
                 complete: bool = True) -> RunSummary:
    """The summary of a run over several sources: each source's outcome and folder (null for a source that gave
    nothing), the frames scored in all. Written first with ``complete`` false, naming every folder the run may make, and
    so again while the run goes on (``_Progress``)."""
    total = sum(run.scored for run in runs)
    now = sum(run.scored - run.scored_before for run in runs)  # this part's (a resumed run's fps is its own)
    streams = []
    for run, folder in zip(runs, folders, strict=True):
        # while it runs (or in what a killed run left) only a source's own failure so far: "no frame scored" is not yet
        problem = run.problem() if complete else printable(str(run.failure)) if run.failure is not None else None
        streams.append(StreamOutcome(source=run.frames.name,
                                     folder=folder.name if run.writer is not None or not complete else None,
                                     frames_scored=run.scored, events=run.events,
                                     ended_by=printable(run.ended_by) if run.ended_by is not None else None,
                                     failed=problem is not None, error=problem))
    return RunSummary(sources=len(runs), complete=complete, failed=sum(s.failed for s in streams), frames_scored=total,
                      seconds=round(seconds, 3), fps=round(now / seconds, 2) if seconds else None,
                      latency_frames=latency_frames(runs[0].config),
                      calibrated=calibration is not None, threshold=calibration.threshold if calibration else None,
                      scoring_precision=runs[0].scorer.precision,
                      calibration_precision=calibration.precision if calibration else None,
                      calibration_overlaps_training=runs[0].overlap,
                      note=None if calibration else UNCALIBRATED,
                      updated_at=wall_clock(time.time()), update_seconds=SUMMARY_SECONDS,
                      resumed=max(run.resumed for run in runs), streams=streams)


def load_detector(checkpoint: str | Path, *, threads: int | Callable[[Config], int] = 0) -> tuple[MNAD, Config]:
    """A model file, run folder, shipped model name, or exported ``.onnx`` (scored with ONNX Runtime, with ``threads``
    intra-op threads: ``export.load_onnx``)."""
    if is_onnx_export(checkpoint):
        from mnad.export import load_onnx

        onnx = load_onnx(checkpoint, threads=threads)
        return onnx, onnx.config
    return load_model(checkpoint)

