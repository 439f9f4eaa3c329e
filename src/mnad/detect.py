"""Anomaly detection on footage as it arrives: video files, frame folders, globs, cameras and network streams.

Scores are causal (no look-ahead, no per-video min-max): a calibration fitted on normal footage (``calibrate``)
fixes the normalisation and the alert threshold; without one, a running min-max is used and no alerts are raised.
Alerts become events through a trailing moving average and hysteresis.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from mnad.config import Config
from mnad.data.sources import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, Video, prepare_frame, read_image
from mnad.errors import DataError
from mnad.evaluate import score_stream, score_videos
from mnad.model import MNAD
from mnad.scoring import RunningMinMax, anomaly_score, smooth

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------
# Sources


@dataclass
class RawFrame:
    image: np.ndarray  # as decoded (BGR, any size)
    time: float  # seconds from the start of the source


def is_live(source: str) -> bool:
    return source.isdigit() or "://" in source


def iter_source(source: str, *, fps: float = 25.0, reconnects: int = 3, retry_delay: float = 1.0) -> Iterator[RawFrame]:
    """Frames of a video file, a frame folder, a glob of images, a camera index or an RTSP/HTTP URL.

    A live source that stops delivering is reopened up to ``reconnects`` times (``retry_delay`` seconds apart);
    then the iteration ends, so that everything scored so far is kept.
    """
    path = Path(source)
    if not is_live(source) and path.is_dir() or any(c in source for c in "*?["):
        files = sorted(path.iterdir()) if path.is_dir() else sorted(Path(p) for p in glob.glob(source))
        files = [f for f in files if f.suffix.lower() in IMAGE_EXTENSIONS]
        if not files:
            raise DataError(f"{source}: no image frames found")
        for i, file in enumerate(files):
            yield RawFrame(read_image(file), i / fps)
        return
    if not is_live(source):
        if not path.is_file():
            raise DataError(f"{source}: no such video file, frame folder, camera index or URL")
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            raise DataError(f"{source}: not a video file ({'/'.join(sorted(VIDEO_EXTENSIONS))})")
    capture_arg: int | str = int(source) if source.isdigit() else source
    attempts, count, started = 0, 0, time.monotonic()
    while True:
        capture = cv2.VideoCapture(capture_arg)
        if capture.isOpened():
            source_fps = capture.get(cv2.CAP_PROP_FPS) or fps
            while True:
                ok, image = capture.read()
                if not ok:
                    break
                stamp = time.monotonic() - started if is_live(source) else count / source_fps
                count += 1
                attempts = 0
                yield RawFrame(image, stamp)
        capture.release()
        if not is_live(source):
            if count == 0:
                raise DataError(f"{source}: cannot open video or it has no frames")
            return
        if attempts >= reconnects:
            log.warning("%s: stream ended or stalled; gave up after %d reconnection attempts", source, reconnects)
            return
        attempts += 1
        log.warning("%s: stream lost, reconnecting (%d/%d)", source, attempts, reconnects)
        time.sleep(retry_delay)


# ---------------------------------------------------------------------------------------------------------------
# Calibration: score normal footage, fit the normalisation ranges and the threshold for a false-alarm rate


ALERT_SMOOTHING = 5


def alert_window(config: Config) -> int:
    """Frames in the trailing mean alerts are raised on: the recipe's ``eval.smoothing`` where it sets one, else
    ALERT_SMOOTHING (a raw per-frame score flickers)."""
    return config.eval.smoothing if config.eval.smoothing > 1 else ALERT_SMOOTHING


def calibrate(
    model: MNAD, config: Config, videos: list[Video], *, false_alarm_rate: float = 0.01, smoothing: int | None = None,
    device: str = "cpu", progress: bool = True,
) -> dict[str, float]:
    """Fit the score normalisation and the alert threshold on normal footage, without labels.

    PSNR and D are scaled by their 1st-99th percentile range on the normal frames; the threshold is the
    (1 - false_alarm_rate) quantile of the smoothed score there, so about that fraction of normal frames alerts.
    ``smoothing``: frames in the trailing mean, by default ``alert_window(config)``.
    """
    if smoothing is None:
        smoothing = alert_window(config)
    if not 0 < false_alarm_rate < 1:
        raise ValueError(f"false_alarm_rate must lie in (0, 1), got {false_alarm_rate}")
    results = score_videos(model, config, videos, device=device, progress=progress)
    p = np.concatenate([r.psnr for r in results])
    d = np.concatenate([r.distance for r in results])
    cal = {
        "psnr_low": float(np.percentile(p, 1)), "psnr_high": float(np.percentile(p, 99)),
        "distance_low": float(np.percentile(d, 1)), "distance_high": float(np.percentile(d, 99)),
    }
    alpha = config.eval.alpha if config.model.memory else 1.0
    smoothed = np.concatenate([
        smooth(anomaly_score(r.psnr, r.distance, alpha=alpha, normalization="calibrated", calibration=cal), smoothing)
        for r in results
    ])
    cal.update(threshold=float(np.quantile(smoothed, 1 - false_alarm_rate)), false_alarm_rate=false_alarm_rate,
               smoothing=smoothing, frames=int(p.size))
    return cal


# ---------------------------------------------------------------------------------------------------------------
# Events: smoothing + hysteresis


@dataclass
class Event:
    start_frame: int
    end_frame: int
    peak_frame: int
    peak_score: float
    start_time: float
    end_time: float


class EventTracker:
    """Opens an event when the smoothed score rises above ``threshold`` and closes it when it falls below
    ``threshold - hysteresis`` (so a score hovering at the threshold does not flicker); events shorter than
    ``min_frames`` are dropped."""

    def __init__(self, threshold: float, *, hysteresis: float = 0.05, min_frames: int = 3) -> None:
        self.threshold, self.low, self.min_frames = threshold, threshold - hysteresis, min_frames
        self.current: Event | None = None

    def push(self, frame: int, stamp: float, score: float) -> Event | None:
        """Feed one smoothed score; returns an event when one ends."""
        if self.current is None:
            if score > self.threshold:
                self.current = Event(frame, frame, frame, score, stamp, stamp)
            return None
        if score >= self.low:
            self.current.end_frame, self.current.end_time = frame, stamp
            if score > self.current.peak_score:
                self.current.peak_frame, self.current.peak_score = frame, score
            return None
        return self.finish()

    def finish(self) -> Event | None:
        event, self.current = self.current, None
        if event is not None and event.end_frame - event.start_frame + 1 >= self.min_frames:
            return event
        return None


# ---------------------------------------------------------------------------------------------------------------
# Localisation and the annotated video


def region_mask(error: np.ndarray, sigma: float = 0.0) -> np.ndarray:
    """Regions whose (blurred) error is above the frame's mean (paper Fig. 4), or mean + sigma * std."""
    blurred = cv2.GaussianBlur(error.astype(np.float32), (0, 0), 2.0)
    return blurred > blurred.mean() + sigma * blurred.std()


def overlay(image: np.ndarray, error: np.ndarray, mask: np.ndarray, *, scale: float) -> np.ndarray:
    """The frame with the error as a heatmap and the marked regions outlined."""
    h, w = image.shape[:2]
    if image.ndim == 2 or image.shape[2] == 1:
        image = cv2.cvtColor(image.reshape(h, w), cv2.COLOR_GRAY2BGR)
    heat = cv2.resize(np.clip(error / scale, 0, 1), (w, h))
    heat = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    blended = cv2.addWeighted(image[:, :, :3], 0.6, heat, 0.4, 0)
    contours, _ = cv2.findContours(cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST),
                                   cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(blended, contours, -1, (255, 255, 255), 1)
    return blended


def timeline(scores: deque[float], width: int, threshold: float | None, height: int = 60) -> np.ndarray:
    """A strip plotting the recent scores, with the threshold as a red line."""
    strip = np.full((height, width, 3), 30, np.uint8)
    values = list(scores)
    top = max([*values, threshold or 0.0, 1e-6]) * 1.1
    low = min([*values, 0.0])
    def y(v: float) -> int:
        return int(height - 1 - (v - low) / (top - low) * (height - 1))
    if threshold is not None:
        cv2.line(strip, (0, y(threshold)), (width - 1, y(threshold)), (0, 0, 255), 1)
    if len(values) > 1:
        xs = np.linspace(0, width - 1, scores.maxlen or len(values))[-len(values):]
        points = np.array([[int(x), y(v)] for x, v in zip(xs, values, strict=True)], np.int32)
        cv2.polylines(strip, [points], False, (255, 255, 255), 1)
    return strip


# ---------------------------------------------------------------------------------------------------------------
# The detection run


def detect(
    model: MNAD,
    config: Config,
    source: str,
    out_dir: str | Path,
    *,
    save_video: bool = False,
    save_maps: str | None = None,
    region_sigma: float = 0.0,
    fps: float = 25.0,
    reconnects: int = 3,
    retry_delay: float = 1.0,
    hysteresis: float = 0.05,
    min_event_frames: int = 3,
    max_frames: int | None = None,
    device: str = "cpu",
    progress: bool = True,
    step: Callable[..., tuple] | None = None,
) -> dict:
    """Score ``source`` frame by frame and write scores.csv, events.jsonl, events.csv and summary.json to
    ``out_dir`` as it goes (a stopped run keeps what it has). ``save_maps``: 'npy' or 'png'. ``step``: another
    implementation of the scoring step, e.g. ``export.OnnxStep``."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{out_dir}: cannot create the output folder ({exc.strerror or exc})") from exc
    cal = config.eval.calibration
    calibrated = "threshold" in cal
    threshold = cal.get("threshold")
    window = int(cal.get("smoothing", alert_window(config)))
    alpha = config.eval.alpha if config.model.memory else 1.0
    size, channels = config.model.image_size, config.model.channels

    raw: dict[int, RawFrame] = {}  # frames waiting for their score (a clip scores a frame up to t_length-1 back)

    def prepared() -> Iterator[np.ndarray]:
        for i, frame in enumerate(iter_source(source, fps=fps, reconnects=reconnects, retry_delay=retry_delay)):
            if max_frames is not None and i >= max_frames:
                return
            raw[i] = frame
            for old in [k for k in raw if k < i - config.model.t_length]:
                del raw[old]
            yield prepare_frame(frame.image, size, channels, source)

    if save_maps:
        (out_dir / "maps").mkdir(exist_ok=True)
    tracker = EventTracker(threshold, hysteresis=hysteresis, min_frames=min_event_frames) if calibrated else None
    recent: deque[float] = deque(maxlen=window)
    plotted: deque[float] = deque(maxlen=200)
    running_psnr, running_distance = RunningMinMax(), RunningMinMax()
    events: list[Event] = []
    writer_video = None
    started = time.perf_counter()
    saved_items = model.memory.items.clone() if model.memory is not None else None
    scores_file = (out_dir / "scores.csv").open("w", newline="")
    events_file = (out_dir / "events.jsonl").open("w")
    bar = tqdm(desc="detect", unit="frame", disable=not progress)
    n = 0
    try:
        scores_csv = csv.writer(scores_file)
        scores_csv.writerow(["frame", "time", "psnr", "distance", "regular_score", "memory_updated", "score", "smoothed", "alert"])
        for row in score_stream(model, config, prepared(), device=device, maps=save_video or bool(save_maps), step=step):
            frame = raw[row.index]
            if calibrated:
                score = float(anomaly_score(np.array([row.psnr]), np.array([row.distance]), alpha=alpha,
                                            normalization="calibrated", calibration=cal)[0])
            else:  # running min-max over the frames so far: causal, but uncalibrated
                g_p, g_d = running_psnr(row.psnr), running_distance(row.distance)
                score = alpha * (1 - g_p) + (1 - alpha) * g_d
            recent.append(score)
            smoothed = float(np.mean(recent))
            alert = False
            if tracker is not None:
                ended = tracker.push(row.index, frame.time, smoothed)
                alert = tracker.current is not None
                if ended is not None:
                    events.append(ended)
                    events_file.write(json.dumps(asdict(ended)) + "\n")
                    events_file.flush()
            scores_csv.writerow([row.index, f"{frame.time:.3f}", f"{row.psnr:.5f}", f"{row.distance:.8f}", f"{row.regular:.8f}",
                                 int(row.updated), f"{score:.6f}", f"{smoothed:.6f}", int(alert)])
            if row.error_map is not None:
                mask = region_mask(row.error_map, region_sigma)
                if save_maps == "npy":
                    np.save(out_dir / "maps" / f"{row.index:06d}.npy", row.error_map.astype(np.float32))
                elif save_maps == "png":
                    cv2.imwrite(str(out_dir / "maps" / f"{row.index:06d}.png"),
                                (np.clip(row.error_map / max(row.error_map.max(), 1e-6), 0, 1) * 255).astype(np.uint8))
                if save_video:
                    plotted.append(smoothed)
                    picture = overlay(frame.image, row.error_map, mask, scale=max(float(np.percentile(row.error_map, 99.9)), 0.02))
                    if alert:
                        cv2.rectangle(picture, (0, 0), (picture.shape[1] - 1, picture.shape[0] - 1), (0, 0, 255), 4)
                    picture = np.vstack([picture, timeline(plotted, picture.shape[1], threshold)])
                    if writer_video is None:
                        h, w = picture.shape[:2]
                        writer_video = cv2.VideoWriter(str(out_dir / "annotated.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                    writer_video.write(picture)
            n += 1
            bar.update(1)
            bar.set_postfix(fps=f"{n / (time.perf_counter() - started):.1f}")
        if tracker is not None:
            ended = tracker.finish()
            if ended is not None:
                events.append(ended)
                events_file.write(json.dumps(asdict(ended)) + "\n")
    finally:
        bar.close()
        scores_file.close()
        events_file.close()
        if writer_video is not None:
            writer_video.release()
        if saved_items is not None:
            model.memory.items.copy_(saved_items)
        seconds = time.perf_counter() - started
        with (out_dir / "events.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(Event.__dataclass_fields__))
            writer.writeheader()
            writer.writerows(asdict(e) for e in events)
        summary = {
            "source": source, "frames_scored": n, "seconds": round(seconds, 3), "fps": round(n / seconds, 2) if seconds else None,
            "calibrated": calibrated, "threshold": threshold, "events": len(events),
            "note": None if calibrated else "no calibration in the checkpoint: running min-max scores, no alerts (run `mnad calibrate`)",
        }
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def with_calibration(config: Config, calibration: dict[str, float]) -> Config:
    """A copy of ``config`` that scores with ``calibration`` (causal, fixed ranges and threshold)."""
    return config.override(["eval.normalization=calibrated", f"eval.calibration={_toml_table(calibration)}"])


def _toml_table(values: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in values.items()) + "}"


