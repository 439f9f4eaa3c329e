"""Anomaly detection on footage as it arrives: video files, frame folders, globs, cameras and network streams.

source (``data.sources.FrameSource``) -> prepared frame -> ``stream.StreamScorer`` (causal S_t, trailing mean) ->
``events.EventTracker`` (alerts) -> outputs (``outputs``: scores.csv, events, summary; the annotated video).

Scores are causal (no future frame, no statistic of the footage being scored): a calibration fitted on normal
footage (``mnad calibrate``) fixes the normalisation and the alert threshold; without one, a running min-max is used
and no alerts are raised (said loudly). Frame numbers are 0-based positions in the source.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import cv2
from tqdm import tqdm

from mnad.annotate import TIMELINE_FRAMES, annotated_frame
from mnad.calibrate import alert_window
from mnad.config import Config
from mnad.data.sources import FrameSource, RawFrame, SourceOptions, prepare_frame
from mnad.errors import ConfigError, DataError, Terminated
from mnad.events import HYSTERESIS, MIN_EVENT_FRAMES, Event, EventTracker
from mnad.model import MNAD
from mnad.outputs import DETECT_FILES, DetectWriter
from mnad.scoring import Calibration
from mnad.stream import StreamScorer

log = logging.getLogger(__name__)

UNCALIBRATED = ("this model carries no calibration: scores use a running min-max and NO ALERTS are raised; "
                "calibrate it on normal footage first: mnad calibrate --checkpoint MODEL --data NORMAL_FOOTAGE --out calibrated.safetensors")


@dataclass
class DetectOptions:
    save_video: bool = False  # annotated.mp4: state, regions while alerting, labelled score timeline
    save_maps: str | None = None  # 'npy' or 'png': each frame's error map
    region_sigma: float = 0.0  # regions above the error map's mean + sigma * std
    hysteresis: float = HYSTERESIS
    min_event_frames: int = MIN_EVENT_FRAMES
    max_frames: int | None = None  # stop after this many source frames
    overwrite: bool = False  # replace the outputs of an earlier run in the output folder
    source: SourceOptions = field(default_factory=SourceOptions)

    def __post_init__(self) -> None:
        if self.save_maps not in (None, "npy", "png"):
            raise ConfigError(f"--save-maps must be npy or png, got {self.save_maps!r}")
        if self.hysteresis < 0 or self.min_event_frames < 1:
            raise ConfigError("--hysteresis must be >= 0 and --min-event-frames >= 1")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"--max-frames must be >= 1, got {self.max_frames}")


def detect(
    model: MNAD,
    config: Config,
    source: str,
    out_dir: str | Path,
    options: DetectOptions | None = None,
    *,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Score ``source`` frame by frame and write scores.csv, events.jsonl, events.csv and summary.json to ``out_dir``
    as it goes. ``model``: a model or an exported one (``export.load_onnx``). An interrupted run (Ctrl-C, SIGTERM)
    still completes its outputs and re-raises; a source that gave nothing or was lost raises ``DataError`` after the
    outputs are written. Returns the summary."""
    options = options or DetectOptions()
    calibration = Calibration.from_dict(config.eval.calibration) if config.eval.calibration else None
    if calibration is not None and config.eval.smoothing not in (1, calibration.smoothing):
        raise ConfigError(f"the model's alert threshold was fitted on a {calibration.smoothing}-frame mean of the score, not "
                          f"{config.eval.smoothing}: recalibrate with `mnad calibrate --smoothing {config.eval.smoothing}`")
    frames = FrameSource(source, options.source)  # checks the source before any output is touched
    out_dir = Path(out_dir)
    earlier = [name for name in DETECT_FILES if (out_dir / name).exists()]
    if earlier and not options.overwrite:
        raise DataError(f"{out_dir}: holds the outputs of an earlier run ({', '.join(earlier)}); choose another --out or pass --overwrite")
    if calibration is None:
        log.warning(UNCALIBRATED)
    scorer = StreamScorer.for_model(model, config, normalization="calibrated" if calibration else "causal",
                                    calibration=calibration, device=device,
                                    smoothing=None if calibration else alert_window(config),  # the calibration's own window
                                    maps=options.save_video or bool(options.save_maps))
    threshold = calibration.threshold if calibration is not None else None
    tracker = EventTracker(threshold, hysteresis=options.hysteresis, min_frames=options.min_event_frames) if calibration else None
    size, channels = config.model.image_size, config.model.channels

    raw: dict[int, RawFrame] = {}  # source frames waiting for their score (a clip scores a frame up to t_length-1 back)
    events: list[Event] = []
    history: deque[float] = deque(maxlen=TIMELINE_FRAMES)
    writer: DetectWriter | None = None
    video: cv2.VideoWriter | None = None
    n, started, ended_by, failure = 0, time.perf_counter(), "end of source", None
    bar = tqdm(desc="detect", unit="frame", disable=not progress)
    try:
        for i, frame in enumerate(frames):
            if options.max_frames is not None and i >= options.max_frames:
                ended_by = "--max-frames"
                break
            if writer is None:  # the source delivered: only now may an earlier run's outputs be replaced
                writer = DetectWriter(out_dir, maps=options.save_maps)
            raw[i] = frame
            raw.pop(i - config.model.t_length, None)
            row = scorer.push(prepare_frame(frame.image, size, channels, source))
            if row is None:
                continue
            shown = raw[row.index]
            alert = False
            if tracker is not None:
                ended = tracker.push(row.index, shown.time, row.smoothed)
                alert = tracker.alerting
                if ended is not None:
                    events.append(ended)
                    writer.event(ended)
            writer.score(row, shown.time, alert)
            if row.error_map is not None and options.save_maps:
                writer.error_map(row.index, row.error_map)
            if options.save_video:
                history.append(row.smoothed)
                picture = annotated_frame(shown.image, row.error_map, frame=row.index, seconds=shown.time, smoothed=row.smoothed,
                                          threshold=threshold, alert=alert, history=history, fps=frames.fps,
                                          region_sigma=options.region_sigma)
                if video is None:
                    h, w = picture.shape[:2]
                    video = cv2.VideoWriter(str(out_dir / "annotated.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), frames.fps, (w, h))
                    if not video.isOpened():
                        raise DataError(f"{out_dir / 'annotated.mp4'}: cannot write the annotated video (no mp4v encoder?)")
                video.write(picture)
            n += 1
            bar.update(1)
    except DataError as exc:
        if writer is None:
            raise
        ended_by, failure = f"error: {exc}", exc
    except KeyboardInterrupt:
        ended_by = "interrupted (SIGINT)"
        raise
    except Terminated:
        ended_by = "stopped (SIGTERM)"
        raise
    finally:
        bar.close()
        if video is not None:
            video.release()
        if writer is not None:
            if tracker is not None:
                last = tracker.finish()
                if last is not None:
                    events.append(last)
                    writer.event(last)
            seconds = time.perf_counter() - started
            summary = {
                "source": source, "frames_scored": n, "seconds": round(seconds, 3), "fps": round(n / seconds, 2) if seconds else None,
                "source_fps": round(frames.fps, 3), "calibrated": calibration is not None, "threshold": threshold,
                "false_alarm_rate": calibration.false_alarm_rate if calibration else None,
                "smoothing": scorer.smoothing, "events": len(events), "ended_by": ended_by,
                "annotated_video": options.save_video and video is not None,
                "note": None if calibration else UNCALIBRATED,
            }
            writer.close(events, summary)
    if failure is not None:
        raise failure
    if n == 0:
        raise DataError(f"{source}: no frame was scored ({config.model.t_length} frames make the first clip)")
    return summary


def load_detector(checkpoint: str | Path) -> tuple[MNAD, Config]:
    """A model file, run folder, shipped model name, or exported ``.onnx`` (scored with ONNX Runtime)."""
    if str(checkpoint).endswith(".onnx"):
        from mnad.export import load_onnx

        onnx = load_onnx(checkpoint)
        return onnx, onnx.config
    from mnad.checkpoint import load_model

    return load_model(checkpoint)

