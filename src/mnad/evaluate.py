"""Scoring test videos and frame-level AUC (docs/method.md, section 5), under two protocols.

Frames are scored one at a time, in order, by ``mnad.stream.StreamScorer``: the test-time memory update after frame
t (when E_t < gamma) changes the memory that frame t+1 reads, so the order is part of the result. The memory evolves
over the whole test set, in sorted video order, starting from the trained items; the caller's model is not changed.
The published protocol then normalises each video's scores over the whole video (not causal); the stream protocol
scores with a calibration fitted on held-out normal footage, causally, and measures alerts as a camera would raise them.

Under ``torchrun`` each rank scores a contiguous share of the videos (in order, balanced by frame count: a video
file's as its container reports it, as it is not decoded yet), starting from the trained items, and the scores are
gathered before any AUC: the memory then carries over videos only within a rank's share (exact when
``eval.test_update`` is off). Each video file is decoded once, by the rank that scores it. docs/distributed.md has
the details.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mnad import distributed
from mnad.calibration import Calibration, rate_key, scoring_calibration, training_overlap
from mnad.checkpoint import calibration_weights
from mnad.config import Config, check_same_model, checked_config, mixing_weight
from mnad.data import Video, VideoFile, find_label_file, load_labels, split_videos
from mnad.data.layouts import dataset_dir
from mnad.data.spans import footage_span, parse_span, span_text, spans_overlap
from mnad.data.streams import check_fps
from mnad.data.videos import check_clip_lengths, check_pixel_ranges
from mnad.errors import CheckpointError, ConfigError, DataError
from mnad.events import HYSTERESIS, MIN_EVENT_FRAMES, EventTracker, event_measures
from mnad.model import MNAD
from mnad.outputs import check_evaluation_output, write_evaluation
from mnad.scoring import anomaly_score, frames_needed, score_terms, smooth
from mnad.stream import FrameResult, StreamScorer
from mnad.threads import apply_threads

log = logging.getLogger(__name__)


@dataclass
class VideoScores:
    name: str
    frames: np.ndarray  # frame positions that have a score (a prediction model skips the first t_length-1)
    psnr: np.ndarray
    patch_psnr: np.ndarray
    distance: np.ndarray
    patch_distance: np.ndarray  # D of the worst block of queries
    regular: np.ndarray
    updated: np.ndarray
    score: np.ndarray = field(default_factory=lambda: np.zeros(0))  # S_t (smoothed where asked), high = abnormal
    labels: np.ndarray | None = None
    unsmoothed_score: np.ndarray | None = None  # S_t before the trailing mean, where one was taken


def score_videos(
    model: MNAD, config: Config, videos: list[Video], *, device: str = "cpu", progress: bool = True,
    scorer: StreamScorer | None = None,
) -> list[VideoScores]:
    """Raw per-frame terms of every video, in order, through one streaming scorer: the memory carries across videos,
    a clip never spans two. With ``scorer`` (a causal one), ``score`` holds its smoothed causal S_t and
    ``unsmoothed_score`` the S_t before smoothing; otherwise ``add_scores`` computes S_t afterwards. ``videos`` opened
    with another pixel range than the model's (``open_video(path)`` for a model with ``model.pixel_range``) are
    refused before any frame is scored: their 16-bit frames would be read otherwise than the model saw them."""
    checked_config(config)  # a Config changed by hand as a config file (also when a scorer is given)
    return score_frames(model, config, videos, device=device, progress=progress, scorer=scorer)


# Called with each frame as it is scored: the video, the frame's position in it, the frame (uint8, as the model reads
# it) and the scorer's row (None until a clip is full); a caller's own check of the footage, in the one scoring pass.
FrameWatch = Callable[[Video, int, np.ndarray, FrameResult | None], None]


def score_frames(model: MNAD, config: Config, videos: list[Video], *, device: str = "cpu", progress: bool = True,
                 scorer: StreamScorer | None = None, desc: str = "scoring",
                 watch: FrameWatch | None = None) -> list[VideoScores]:
    """``score_videos`` of a ``config`` already checked: the one loop that scores footage video by video (``evaluate``
    checks the config once, up front; ``calibrate.footage_terms`` scores its footage with it, ``watch`` seeing each
    frame). A video too short for one clip is refused (``DataError``), before any video is scored."""
    check_same_model(model, config)  # then config.model.pixel_range is the model's own
    check_pixel_ranges(videos, config.model.pixel_range)
    t_length = config.model.t_length
    check_clip_lengths(videos, t_length, f"score videos of at least {t_length} frames (model.t_length)")
    scorer = scorer or StreamScorer.for_model(model, config, normalization="video", device=device)
    size, channels = config.model.image_size, config.model.channels
    results = []
    with tqdm(total=sum(len(v) for v in videos), desc=desc, unit="frame", disable=not progress, leave=False) as bar:
        for video in videos:
            scorer.new_video()
            rows: list[FrameResult] = []
            for i in range(len(video)):
                frame = video.frame(i, size, channels)
                row = scorer.push(frame)
                bar.update(1)
                if watch is not None:
                    watch(video, i, frame, row)
                if row is not None:
                    rows.append(row)
            scores = VideoScores(
                name=video.name,
                frames=np.array([r.index for r in rows]),
                psnr=np.array([r.psnr for r in rows]),
                patch_psnr=np.array([r.patch_psnr for r in rows]),
                distance=np.array([r.distance for r in rows]),
                patch_distance=np.array([r.patch_distance for r in rows]),
                regular=np.array([r.regular for r in rows]),
                updated=np.array([r.updated for r in rows]),
            )
            if scorer.normalization != "video":
                scores.score = np.array([r.smoothed for r in rows])
                scores.unsmoothed_score = np.array([r.score for r in rows])
            results.append(scores)
    return results


def check_finite(video: VideoScores, **terms: np.ndarray) -> None:
    """Refuse a NaN or infinite per-frame value: min-max normalisation would turn a video with one into zeros
    (NaN compares false) or NaNs, and the AUC would be computed from them or fail with a traceback."""
    for what, values in terms.items():
        bad = np.flatnonzero(~np.isfinite(np.asarray(values, dtype=np.float64)))
        if bad.size:
            frame = int(video.frames[bad[0]]) if bad[0] < video.frames.size else int(bad[0])
            raise CheckpointError(f"video {video.name}, frame {frame}: {what} is {values[bad[0]]} ({bad.size} of its "
                                  f"{len(values)} scored frames are not finite): the model's outputs overflow on this "
                                  "footage (a diverged training?); no AUC is computed from such scores")


def add_scores(videos: list[VideoScores], config: Config) -> None:
    """S_t per video: PSNR and D normalised per video (or causally), mixed with alpha (PSNR only without memory),
    then averaged over the last eval.smoothing frames (1: not at all, the published protocol)."""
    alpha = mixing_weight(config)
    # the published protocol's 'video' and 'causal' look at the scores alone, whatever calibration the model has
    calibration = scoring_calibration(config) if config.eval.normalization == "calibrated" else None
    for v in videos:
        p, d = score_terms(config, v.psnr, v.patch_psnr, v.distance, v.patch_distance)
        check_finite(v, PSNR=p, **({"D": d} if alpha < 1 else {}))
        raw = anomaly_score(p, d, alpha=alpha, normalization=config.eval.normalization, calibration=calibration)
        v.score = smooth(raw, config.eval.smoothing)
        # kept beside the smoothed S_t where they differ (scores.csv's unsmoothed_score column)
        v.unsmoothed_score = raw if config.eval.smoothing > 1 else None


def auc_metrics(videos: list[VideoScores]) -> dict:
    """Micro AUC (all frames pooled: the paper's metric), macro AUC (mean over videos with both classes), per video."""
    from sklearn.metrics import roc_auc_score  # here, not at the top: scoring a stream never needs it (tens of MB of RSS)

    for v in videos:
        check_finite(v, score=v.score)
    labels = np.concatenate([v.labels for v in videos])
    scores = np.concatenate([v.score for v in videos])
    per_video = {v.name: float(roc_auc_score(v.labels, v.score)) for v in videos if 0 < v.labels.sum() < v.labels.size}
    both = len(np.unique(labels)) == 2
    return {
        "micro_auc": float(roc_auc_score(labels, scores)) if both else None,
        "macro_auc": float(np.mean(list(per_video.values()))) if per_video else None,
        "per_video_auc": per_video,
        "frames_scored": int(labels.size),
        "abnormal_frames": int(labels.sum()),
        "videos": len(videos),
        "videos_in_macro": len(per_video),
    }


def attach_labels(videos: list[VideoScores], labels: list[np.ndarray]) -> None:
    for v, video_labels in zip(videos, labels, strict=True):
        v.labels = video_labels[v.frames]


PROTOCOLS = ("published", "stream")
STREAM_RATES = (0.01, 0.05)  # target false-alarm rates the stream protocol reports the realised rate of


def stream_thresholds(calibration: Calibration) -> dict[float, float | None]:
    """The calibration's threshold for each of ``STREAM_RATES`` (None where it was fitted on too few frames to say
    anything about that rate, ``frames_needed``); ``ConfigError`` for one it lacks (a calibration of an earlier mnad,
    or made by hand, without the table): ``evaluate`` asks before any frame is scored."""
    return {rate: calibration.threshold_for(rate) if calibration.frames >= frames_needed(rate) else None
            for rate in STREAM_RATES}
DATASET_FPS = {"ped1": 10.0, "ped2": 10.0, "avenue": 25.0, "shanghai": 24.0, "shanghaitech": 24.0}  # recording rates


DEFAULT_FPS = 25.0  # the stream protocol's rate for footage that records none (own frame folders), without --fps


def stream_rates(videos: list[Video], dataset: str, fps: float | None) -> tuple[float, dict[str, float], str]:
    """The frame rates the stream protocol times the test ``videos`` at (false events per minute, event times):
    ``fps`` (--fps) where given, for every video; else each video file's own (its container's, where
    ``VideoFile.frame_rate`` takes it, as ``mnad detect`` times a file), and for the rest the benchmark's recording
    rate (``DATASET_FPS``) or DEFAULT_FPS. Returns the rate of the videos not in the second item, the rates of the
    videos timed otherwise (by name; empty when one rate times them all) and which was used, in words."""
    if fps is not None:
        check_fps(fps, "fps (--fps)")
        return float(fps), {}, "--fps"
    if dataset in DATASET_FPS:
        default, default_source = DATASET_FPS[dataset], f"the {dataset} dataset's recording rate"
    else:
        default, default_source = DEFAULT_FPS, f"the default {DEFAULT_FPS:g} (the footage records no rate: set --fps)"
    own = {v.name: rate for v in videos if (rate := v.frame_rate()) is not None}
    if not own:
        return default, {}, default_source
    if len(own) == len(videos) and len(set(own.values())) == 1:
        return next(iter(own.values())), {}, "the video files' own (their containers')"
    if len(own) == len(videos):  # several rates: each video at its own
        return default, own, "each video file's own (its container's)"
    return default, own, (f"each video file's own (its container's) for {len(own)} of {len(videos)} videos, "
                          f"{default_source.removeprefix('the ')} for the others")


def stream_metrics(videos: list[VideoScores], calibration: Calibration, *, fps: float, hysteresis: float = HYSTERESIS,
                   min_event_frames: int = MIN_EVENT_FRAMES, video_fps: dict[str, float] | None = None,
                   fps_source: str | None = None) -> dict:
    """What a deployed detector would have done on the labelled stream: the realised false-alarm rate on the normal
    frames and the detection rate on the abnormal ones at each calibrated threshold, and events (at the calibration's
    own threshold) against the labels. Frames are timed at ``fps``, a video named in ``video_fps`` at its own rate;
    ``fps_source`` says where the rates came from (``stream_rates``)."""
    from sklearn.metrics import roc_auc_score

    for v in videos:
        check_finite(v, score=v.score, **({"unsmoothed score": v.unsmoothed_score} if v.unsmoothed_score is not None else {}))
    labels = np.concatenate([v.labels for v in videos]).astype(bool)
    smoothed = np.concatenate([v.score for v in videos])
    raw = np.concatenate([v.unsmoothed_score for v in videos])
    at_rate = {}
    for rate, threshold in stream_thresholds(calibration).items():
        if threshold is None:  # a threshold fitted on too few frames says nothing about the rate
            at_rate[rate_key(rate)] = {"threshold": None, "false_alarm_rate": None, "detection_rate": None,
                                       "not_estimable": f"the calibration's {calibration.frames} frames are fewer than the "
                                                        f"{frames_needed(rate)} a {rate:g} rate needs"}
            continue
        at_rate[rate_key(rate)] = {
            "threshold": threshold,
            "false_alarm_rate": float((smoothed[~labels] > threshold).mean()) if (~labels).any() else None,
            "detection_rate": float((smoothed[labels] > threshold).mean()) if labels.any() else None,
        }
    tracker, events = EventTracker(calibration.threshold, hysteresis=hysteresis, min_frames=min_event_frames), []
    rates = dict(video_fps or {})
    for v in videos:
        for frame, score in zip(v.frames, v.score, strict=True):
            ended = tracker.push(int(frame), float(frame) / rates.get(v.name, fps), float(score), v.name)
            if ended is not None:
                events.append(ended)
    last = tracker.finish()
    events += [last] if last is not None else []
    measures = event_measures(events, [(v.name, v.frames, v.labels) for v in videos], fps=fps, video_fps=rates or None)
    return {
        "micro_auc_unsmoothed": float(roc_auc_score(labels, raw)) if 0 < labels.sum() < labels.size else None,
        "at_false_alarm_rate": at_rate,
        "event_threshold": calibration.threshold,
        "event_false_alarm_rate": calibration.false_alarm_rate,
        "hysteresis": hysteresis,
        "min_event_frames": min_event_frames,
        "event_measures": measures,
        "calibration_frames": calibration.frames,
        "fps_source": fps_source,  # the rate itself: event_measures' fps (and video_fps)
    }


def check_held_out(calibration: Calibration, videos: list[Video], protocol: str = "stream") -> None:
    """Refuse a calibration whose recorded footage overlaps the test ``videos`` (same resolved path, overlapping frames):
    its ranges and thresholds would have seen the test set. ``protocol``: the one that would score with it (said)."""
    if not calibration.footage:
        log.warning("the calibration does not record its footage (written by an older mnad): it cannot be checked to "
                    "be held out from the test videos")
    fitted = [parse_span(entry) for entry in calibration.footage]  # each parses: Calibration.from_dict checked them
    spans = [footage_span(v) for v in videos]
    shared = sorted({span_text(a) for a in fitted for b in spans if spans_overlap(a, b)})
    if shared:
        used = "the stream protocol's rates" if protocol == "stream" else f"the {protocol} protocol's calibrated scores"
        raise ConfigError(f"the calibration was fitted on the test videos it would be evaluated on ({', '.join(shared[:3])}"
                          f"{f' and {len(shared) - 3} more' if len(shared) > 3 else ''}): {used} would then use the "
                          "test set; calibrate on held-out normal footage, not the testing split")


def model_provenance(model: MNAD, checkpoint: str | Path | None, out_dir: str | Path | None) -> dict:
    """What metrics.json says of the evaluated model, so that a report shows its own training and no other's:
    ``weights_sha256`` (the tensor digest its model file records) and ``run_dir``, the run folder of the
    ``checkpoint`` it came from (relative to ``out_dir``, absolute without one; None: not a run's model, or unknown)."""
    from mnad.checkpoint import resolve_checkpoint, weights_digest
    from mnad.errors import MNADError
    from mnad.report.provenance import is_run_dir, relative_path

    run_dir = None
    if checkpoint is not None:
        try:
            folder = resolve_checkpoint(checkpoint).resolve().parent
        except MNADError:
            folder = None
        if folder is not None and is_run_dir(folder):
            run_dir = relative_path(folder, Path(out_dir)) if out_dir is not None else str(folder)
    # an ONNX export holds its weights in a graph, not in tensors a run's model files could be matched against: no digest
    digest = weights_digest(model) if isinstance(model, torch.nn.Module) else None
    return {"weights_sha256": digest, "run_dir": run_dir}


def scored_share(videos: list[Video], ctx: distributed.Context) -> list[Video]:
    """This rank's share of the test ``videos`` (all of them in one process), each of its video files decoded now, the
    one decode that counts it (the videos are listed with ``decode_as``). The shares are balanced by the frame counts
    known before any decode (a video file's container count: the true one is its decode, which only its own rank
    makes); the counts of the other ranks' video files are then gathered from them, so that the labels are split
    and checked by true counts on every rank, none of which decodes a video it does not score."""
    # a video that cannot be read or decoded on one rank (damaged, or its disk full) stops every rank, not just its
    # own, before the others wait for its counts in the gather
    with distributed.together(ctx, "while reading its share of the test videos"):
        sizes = [max(v.expected_frames(), 1) for v in videos]  # a container without a count weighs as one frame
        mine = distributed.shard_contiguous(videos, sizes, ctx)
        counts = [len(v) for v in mine]
    if ctx.enabled:
        every = [n for part in distributed.all_gather_objects(counts, ctx) for n in part]  # the shares in rank order
        decoded = {id(v) for v in mine}
        for video, count in zip(videos, every, strict=True):
            if id(video) not in decoded and isinstance(video, VideoFile):
                video.counted_elsewhere(count)
    return mine


def evaluate(
    model: MNAD,
    config: Config,
    data_root: str | Path,
    *,
    labels_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
    protocol: str = "published",
    fps: float | None = None,
    overwrite: bool = False,
    checkpoint: str | Path | None = None,
) -> dict:
    """Score the test split under ``data_root`` and compute AUCs; writes scores.csv and metrics.json to ``out_dir``:
    an earlier evaluation there is refused before any scoring unless ``overwrite``, and then replaced only once the
    new pair is written (``outputs.check_replace``).

    ``protocol``: 'published' (the paper's: S_t normalised per video with ``eval.normalization``, which by default
    looks at the whole video) or 'stream' (what a camera can do: the test videos scored in order as one stream by a
    calibrated model, every score causal, nothing reset but the clip window between videos; adds the realised
    false-alarm rates and event measures, with ``fps`` the footage's frame rate, by default each video file's own, else the
    dataset's: ``stream_rates``).

    The stream protocol refuses a calibration fitted on the test videos (``check_held_out``) and warns about one fitted
    on footage the model's file records training on, which metrics.json records (``training_overlap``).

    metrics.json records which model was evaluated (``model_provenance``): the SHA-256 of its weights and, given the
    ``checkpoint`` it was loaded from, the run folder that trained it, which ``mnad report`` shows the training of.
    """
    checked_config(config)  # before --out is made or any footage read
    apply_threads(config)  # train.threads (--threads), as train() applies it
    if protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if out_dir is not None:  # before anything is read or scored, not at the write
        out_dir = check_evaluation_output(out_dir, overwrite=overwrite)
    check_same_model(model, config)
    if protocol == "stream" and not config.eval.calibration:  # read once, below
        raise ConfigError("the stream protocol scores with a calibration fitted on held-out normal footage: "
                          "run `mnad calibrate` and evaluate the calibrated model")
    # the calibration the scores are scaled by, whichever protocol (the published one too, under eval.normalization
    # 'calibrated'): its ranges enter every score, so it must be held out from the test videos (check_held_out)
    calibration = None
    if protocol == "stream" or config.eval.normalization == "calibrated":  # and of the model's weights (was: any model's)
        calibration = scoring_calibration(config, weights=calibration_weights(model))
    if protocol == "stream":
        stream_thresholds(calibration)  # each rate's threshold is there (was: found missing after all the scoring)
        if fps is not None:  # before any footage is read
            check_fps(fps, "fps (--fps)")
    elif fps is not None:
        raise ConfigError("--fps applies to --protocol stream only (the published protocol has no time)")
    # every frame of a video is read, at the model's size: a video file is counted by its one decode to disk, and
    # those of the whole split are checked to fit together first (as training's; under torchrun, the ranks of one
    # machine share its disk)
    size, channels = config.model.image_size, config.model.channels
    videos = split_videos(data_root, config.dataset, "testing", config.model.pixel_range, decode_as=(size, channels))
    if labels_path is None:
        labels_path = find_label_file(dataset_dir(data_root, config.dataset), config.dataset)
        if labels_path is None:
            raise DataError(
                f"{data_root}: no label file found (frame_labels_<dataset>.npy, test_anomalies.csv or a UCSD .m file); pass one"
            )
    ctx = distributed.setup(device)  # under torchrun: this rank's device; one process: unchanged
    if protocol == "stream" and ctx.world_size > 1:  # refused before any decode, and before --out is created
        raise ConfigError("the stream protocol scores the test videos as one stream: run it in one process, not under torchrun")
    mine = scored_share(videos, ctx)  # decoded here, once each; the counts of the others' come from their ranks
    labels = load_labels(labels_path, videos)  # checked against the frame counts before any scoring
    # every test video, not only this rank's, before any is scored (was: found when reached, hours of scoring in)
    check_clip_lengths(videos, config.model.t_length, f"every test video needs at least {config.model.t_length} frames "
                       "(model.t_length) to be scored: remove it from the test split, or lengthen it")
    if calibration is not None:
        check_held_out(calibration, videos, protocol)
    overlap = training_overlap(calibration, model) if protocol == "stream" else None  # warned before the scoring
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"{out_dir}: cannot create the output folder ({exc.strerror or exc})") from exc
    device = str(ctx.device)
    record = model_provenance(model, checkpoint, out_dir)  # before scoring: a test-time update may change the memory
    model = model.to(device)
    scorer = None
    if protocol == "stream":  # warns where the calibration was fitted in another precision (Calibration.check_precision)
        scorer = StreamScorer.for_model(model, config, normalization="calibrated", calibration=calibration, device=device)
    elif calibration is not None:  # the raw terms scaled by it afterwards (add_scores): its precision compared here
        scorer = StreamScorer.for_model(model, config, normalization="video", device=device)  # as score_frames builds it
        if ctx.is_main:
            calibration.check_precision(scorer.precision, exported=scorer.exported)
    with distributed.together(ctx, "while scoring its share of the test videos"):  # a rank that fails stops them all
        results = score_frames(model, config, mine, device=device, progress=progress and ctx.is_main, scorer=scorer)
    results = [v for part in distributed.all_gather_objects(results, ctx) for v in part]  # all videos, in order
    attach_labels(results, labels)
    if protocol != "stream":
        add_scores(results, config)
    skipped = config.model.t_length - 1
    before, after = config.model.target_index, skipped - config.model.target_index
    if not skipped:
        note = "every frame is scored"
    elif not after:
        note = f"the first {before} frames of each video have no prediction and are excluded, as in the published protocol"
    else:  # recon with motion cues scores the middle frame of each clip
        note = f"the first {before} and last {after} frames of each video are not the middle of any clip and are excluded"
    metrics = auc_metrics(results)
    metrics.update(
        protocol=protocol,
        labels=str(labels_path),
        normalization="calibrated" if calibration is not None else config.eval.normalization,
        alpha=mixing_weight(config),
        smoothing=calibration.smoothing if calibration is not None else config.eval.smoothing,
        gamma=config.eval.gamma,
        test_update=config.eval.test_update,
        memory_updates=int(sum(v.updated.sum() for v in results)),
        ranks=ctx.world_size,  # > 1: the test-time memory restarted from the trained items on each rank's share
        frames_excluded_per_video=skipped,
        note=note,
        model=record,
    )
    if protocol == "stream":
        fps, video_fps, fps_source = stream_rates(videos, config.dataset, fps)
        metrics["stream"] = stream_metrics(results, calibration, fps=fps, video_fps=video_fps, fps_source=fps_source)
        metrics["stream"]["calibration_overlaps_training"] = overlap  # training_overlap: None where it cannot be told
    if out_dir is not None:
        with distributed.together(ctx, "while writing the scores and metrics"):  # no rank returns unwritten metrics
            if ctx.is_main:
                write_evaluation(out_dir, results, metrics, config.to_dict())  # both or neither (a full disk leaves the old pair)
    return metrics
