"""Calibration on normal footage, without labels: how S_t is scored, the fixed ranges that make it causal, and alert
thresholds.

The scoring (which PSNR and D terms S_t mixes, and the trailing mean's length) is chosen on pseudo-anomalies made from
the same footage (``mnad.pseudo``, docs/method.md section 9.2). PSNR and D are scaled by their 1st-99th percentile
range on the normal frames; the threshold of a false-alarm rate r is the (1 - r) quantile of the smoothed calibrated
score there, so about r of normal frames alert.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from mnad.calibration import (
    UNCALIBRATED_SETTINGS,
    Calibration,
    has_range,
    rate_key,
    scoring_calibration,
    warn_trained_footage,
)
from mnad.checkpoint import (
    PRETRAINED,
    TRAIN_STATE_FILE,
    calibration_weights,
    check_model_path,
    load_model,
    save_model,
    weights_digest,
)
from mnad.config import REGIONS, Config, EvalConfig, check_count, check_same_model, checked_config, mixing_weight
from mnad.data import Video
from mnad.data.layouts import list_videos
from mnad.data.spans import footage_span, span_text, spans_overlap
from mnad.data.videos import FrameRange, check_clip_lengths, check_pixel_ranges, open_video
from mnad.errors import CheckpointError, ConfigError, DataError
from mnad.evaluate import score_frames
from mnad.launch import single_process
from mnad.model import MNAD
from mnad.outputs import check_output_file, check_replace, output_path
from mnad.pseudo import pseudo_anomalies, source_frames
from mnad.scoring import anomaly_score, check_alpha, check_rate, frames_needed, score_terms, smooth
from mnad.stream import FrameResult, scoring_precision
from mnad.threads import apply_threads
from mnad.train import holdout_videos, training_record

log = logging.getLogger(__name__)

ALERT_SMOOTHING = 5  # frames in the trailing mean alerts are raised on, where the recipe sets none
TABLE_RATES = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1)  # thresholds kept beside the chosen one (the stream protocol reports 1 % and 5 %)


def alert_window(config: Config) -> int:
    """Frames in the trailing mean alerts are raised on: the recipe's ``eval.smoothing`` where it sets one, else
    ALERT_SMOOTHING (a raw per-frame score flickers)."""
    return config.eval.smoothing if config.eval.smoothing > 1 else ALERT_SMOOTHING


FALSE_ALARM_RATE = 0.01  # the alert threshold's default target: 1 % of normal frames alert
SCORING = "choose"  # by default the scoring is chosen on pseudo-anomalies of the footage (docs/method.md 9.2)


def calibrate(
    model: MNAD,
    config: Config,
    videos: list[Video],
    *,
    false_alarm_rate: float = FALSE_ALARM_RATE,
    smoothing: int | None = None,
    scoring: str = SCORING,
    trained_on: list[tuple[str, int, int]] | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> Calibration:
    """Choose the scoring, then fit the score normalisation and the alert thresholds on normal ``videos``.

    ``scoring``: 'choose' the terms of S_t (and, unless ``smoothing`` is given, the trailing mean) that best separate
    pseudo-anomalies made from ``videos`` (``choose_scoring``), or score as the 'config' says. ``smoothing``: frames
    in the trailing mean, by default chosen (or ``alert_window(config)``). ``trained_on``: the footage the
    model was trained on (``train.training_record``), by default what the model file it was loaded from records
    (``MNAD.trained_footage``, set by ``checkpoint.load_model``; a model built in Python records none); calibrating on
    any of it is warned about, since the model has learnt those frames and scores them lower than unseen normal
    footage (thresholds then alert too often). A calibrated ``config`` is
    calibrated from the model's own settings (``uncalibrated``), not from its calibration's choice.
    """
    single_process("mnad calibrate")
    checked_config(config)  # a Config changed by hand as a config file, before any footage is read
    apply_threads(config)  # train.threads (--threads), as train() applies it
    config = uncalibrated(config)  # its old alpha, window and terms would otherwise fix every candidate's (an alpha of 1: no D)
    check_same_model(model, config)  # the footage is scored as the trained model is, and the model saved with this config
    false_alarm_rate = check_rate(false_alarm_rate)
    if smoothing is not None:
        check_count("--smoothing", smoothing)
        smoothing = int(smoothing)
    if scoring not in ("choose", "config"):
        raise ConfigError(f"--scoring must be 'choose' or 'config', got {scoring!r}")
    videos = footage_videos(videos, config.model.pixel_range)
    if not videos:
        raise DataError("no calibration footage given")
    # no frame of a shorter one scored: nothing to fit, and its held-out check would be the mean of nothing (NaN)
    check_clip_lengths(videos, config.model.t_length, f"calibrate on videos of at least {config.model.t_length} frames")
    spans = [footage_span(v) for v in videos]
    twice = sorted({span_text(a) for i, a in enumerate(spans) for b in spans[:i] if spans_overlap(a, b)})
    if twice:
        raise DataError(f"{twice[0]}: calibration footage given twice (or overlapping footage given); give each video once")
    if trained_on is None:  # the record of the model file it was loaded from (checkpoint.load_model), where one was
        trained_on = getattr(model, "trained_footage", None)
    warn_trained_footage(spans, trained_on or [])
    scored = min(len(v) for v in videos) - config.model.t_length + 1  # scored frames of the shortest video
    if smoothing is not None:
        check_window(smoothing, scored, f"--smoothing {smoothing}")
    elif scoring == "config" or not any(len(v) >= source_frames(config.model.t_length, config.model.lag) for v in videos):
        # the window is the default (nothing to choose on): refused now, before any footage is scored
        smoothing = default_window(config, scored)
    terms = footage_terms(model, config, videos, device=device, progress=progress)
    choice = None
    if scoring == "choose":
        choice = choose_on_pseudo_anomalies(model, config, videos, terms, smoothing=smoothing, longest=scored,
                                            device=device, progress=progress)
    if choice is not None:
        config = config.override([f"eval.psnr_region={choice.psnr_region}", f"eval.distance_region={choice.distance_region}",
                                  f"eval.alpha={choice.alpha}"])
        smoothing = choice.smoothing
    if smoothing is None:  # no pseudo-anomaly was made after all
        smoothing = default_window(config, scored)
    psnr_values, distances = score_terms(config, *(terms[name] for name in TERMS))
    alpha = mixing_weight(config)
    fitted = fit_calibration(psnr_values, distances, alpha=alpha, false_alarm_rate=false_alarm_rate, smoothing=smoothing,
                             scored_with=config, footage=[span_text(s) for s in spans], where=footage_name(videos))
    held_out = held_out_false_alarms(psnr_values, distances, scored_with=config, false_alarm_rate=false_alarm_rate,
                                     smoothing=smoothing)
    realised = held_out.get(rate_key(false_alarm_rate))
    if realised is None and len(videos) > 1:
        shortest = fold_frames(psnr_values)
        why = (f"leaving out the longest video leaves {shortest} scored frames, fewer than the {frames_needed(false_alarm_rate)} "
               f"a {false_alarm_rate:g} rate needs" if shortest < frames_needed(false_alarm_rate)
               else "the footage left after leaving one video out does not vary")
        log.warning("the thresholds for the %.3g false-alarm rate could not be checked on a calibration video left out of "
                    "the fit: %s (checked: %s); give more normal footage", false_alarm_rate, why,
                    ", ".join(held_out) or "no rate")
    if realised is not None and realised > 2 * false_alarm_rate:
        log.warning("thresholds fitted for a %.3g false-alarm rate alerted on %.3g of the frames of a calibration video "
                    "left out of the fit (mean over %d videos): expect more alerts than asked on new footage; calibrate on "
                    "more, and more varied, normal footage", false_alarm_rate, realised, len(videos))
    # fit_calibration recorded what it was fitted with; what the other checks found, and the weights scored and the
    # precision they were scored in (its scorers warn where theirs differs: Calibration.check_precision), are added here
    return dataclasses.replace(fitted, held_out_false_alarms=held_out, pseudo_anomaly_auc=choice.auc if choice else {},
                               weights_sha256=calibration_weights(model), precision=scoring_precision(model, config, device))


@dataclasses.dataclass(frozen=True)
class CalibratedModel:
    """What ``calibrate_checkpoint`` wrote: the model file, the config saved in it and that config's calibration."""

    path: Path
    config: Config
    calibration: Calibration


def calibrate_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    *,
    data: list[str | Path | Video] | None = None,
    configure: Callable[[MNAD, Config], Config] | None = None,
    keep_smoothing: bool = False,
    false_alarm_rate: float = FALSE_ALARM_RATE,
    scoring: str = SCORING,
    overwrite: bool = False,
    progress: bool = True,
) -> CalibratedModel:
    """``mnad calibrate``: the model ``checkpoint`` names (a model file, run folder or shipped name) calibrated on
    normal footage (``calibrate``) and saved to ``out`` with its calibration and its training record (``out`` is
    checked before anything is loaded or scored; an earlier file there is replaced only with ``overwrite``).

    ``data``: the footage (videos or paths, as ``calibrate`` takes them), by default the footage the training run
    held out (``train.holdout_videos``; a shipped model keeps none). ``configure``: the calibrating run's settings,
    given the model and its own config (a calibrated model's without its calibration) and returning the config to
    score with; ``keep_smoothing``: the trailing mean is that config's ``eval.smoothing``, not chosen. The model is
    saved with its own settings and the scoring chosen (``config_to_save``), not the run's other settings."""
    single_process("mnad calibrate")  # each rank would score the footage and write the same out
    out = check_model_output(out, overwrite=overwrite)  # before the footage is scored, not after
    if isinstance(data, list | tuple) and not data:  # a shell glob that matched nothing: never the held-out part instead
        raise ConfigError("--data names no footage: give video files or frame folders, or leave --data out to calibrate on "
                          "the run's held-out part")
    # a calibration of other weights is refused by every scorer, but not here: it is replaced
    model, trained_config = load_model(checkpoint, check_calibration=False)
    # a calibrated model is calibrated again from its own settings (the options then apply), not its calibration's choice
    own = uncalibrated(trained_config)
    config = configure(model, own) if configure is not None else own
    if data is not None:
        videos = data  # paths: calibrate opens them (open_footage)
    else:
        if str(checkpoint) in PRETRAINED:  # its name is no path: the current folder's holdout.json is no part of it
            raise ConfigError(f"{checkpoint}: a shipped model keeps no held-out footage; pass --data with normal footage of your camera")
        videos = holdout_videos(Path(checkpoint) if Path(checkpoint).is_dir() else Path(checkpoint).parent,
                                config.model.pixel_range)
    # carried on: the footage (never calibrate on it) and the epochs, read again: of the weights loaded, or refused
    trained = training_record(checkpoint, weights_digest(model))
    calibration = calibrate(model, config, videos, smoothing=config.eval.smoothing if keep_smoothing else None,
                            trained_on=trained.get("footage", []), false_alarm_rate=false_alarm_rate, scoring=scoring,
                            device=config.train.device, progress=progress)
    # the record is of the model's settings, not this run's options: recalibrating it is calibrating the plain model
    calibrated = with_calibration(config_to_save(trained_config, config), calibration, own=own)  # refuses one that would not load
    save_model(out, model, calibrated, extra=trained)
    return CalibratedModel(out, calibrated, calibrated.calibration())  # as saved (with its record of the model's own settings)


def check_window(window: int, scored: int, said: str) -> int:
    """``window`` (``said`` names where it came from), refused (``ConfigError``) where it is longer than ``scored``, the
    shortest calibration video's scored frames: a trailing mean never full on the footage would be fitted on means of
    fewer frames than it averages when scoring, and its thresholds would describe nothing."""
    if window > scored:
        raise ConfigError(f"{said} is longer than the shortest calibration video's {max(scored, 0)} scored frames: the "
                          f"trailing mean would never be fitted whole; give --smoothing {max(scored, 1)} or less, or "
                          "longer footage")
    return window


def default_window(config: Config, scored: int) -> int:
    """``alert_window(config)``, the window calibrate takes where none is given or chosen, checked (``check_window``)."""
    window = alert_window(config)
    source = "the recipe's eval.smoothing" if config.eval.smoothing > 1 else "the default where the recipe sets none"
    return check_window(window, scored, f"the alert window, a {window}-frame trailing mean ({source}),")


def open_footage(path: str | Path, pixel_range: list[int] | tuple[int, ...] = ()) -> list[Video]:
    """The videos a path of footage names, as ``--data`` takes them: a video file, or a folder: a frame folder or a
    folder of videos, as ``list_videos`` reads it (``footage_in``'s rule: one that mixes the two is refused)."""
    folder = Path(path)
    return list_videos(folder, pixel_range) if folder.is_dir() else [open_video(folder, pixel_range)]


def footage_name(videos: list[Video]) -> str:
    """Calibration footage as a whole, as messages about all of it (too short, never changing) name it: the one video,
    else the folder holding them, with how many and a few of their names (held-out parts with their frames)."""
    spans = [footage_span(v) for v in videos]
    parts = [isinstance(v, FrameRange) for v in videos]
    shown = [f"{Path(p).name}[{a}:{b}]" if part else Path(p).name for (p, a, b), part in zip(spans, parts, strict=True)]
    if len(videos) == 1:
        return str(Path(spans[0][0]).parent / shown[0])
    folder = os.path.commonpath([str(Path(p).parent) for p, _, _ in spans])
    more = f" and {len(shown) - 3} more" if len(shown) > 3 else ""
    what = "the held-out frames of " if all(parts) else ""
    return f"{folder} ({what}{len(videos)} videos: {', '.join(shown[:3])}{more})"


def footage_videos(videos: object, pixel_range: list[int] | tuple[int, ...] = ()) -> list[Video]:
    """Calibration footage as given to ``calibrate`` or an int8 ``export.export_onnx``: a list (or tuple) of videos
    (``mnad.data.Video``) or paths (``open_footage``: files, frame folders, folders of them), opened; anything else is
    one ``ConfigError`` (a single path is not a list: its characters would be taken for videos)."""
    if not isinstance(videos, list | tuple):
        raise ConfigError(f"the calibration footage must be a list of videos (mnad.data.Video or paths), got {type(videos).__name__}")
    videos = [video for v in videos for video in (open_footage(v, pixel_range) if isinstance(v, str | Path) else [v])]
    if not all(isinstance(v, Video) for v in videos):
        raise ConfigError("the calibration footage must be a list of videos (mnad.data.Video or paths), got "
                          + ", ".join(sorted({type(v).__name__ for v in videos if not isinstance(v, Video)})))
    check_pixel_ranges(videos, pixel_range)
    return videos


def check_model_output(path: str | Path, *, overwrite: bool = False) -> Path:
    """Where ``mnad calibrate`` writes the calibrated model: a .safetensors file that can be written, and no earlier
    output unless ``overwrite`` (``check_replace``); checked before the footage is scored, not after."""
    check_model_path(output_path(path, "--out"))
    if Path(path).name == TRAIN_STATE_FILE:  # a model file there would end the run's resumability (its optimiser state gone)
        raise CheckpointError(f"{path}: the name of a run's training checkpoint, which a calibrated model would replace "
                              "(the run could no longer be resumed); write it under another name")
    path = check_output_file(path, error=CheckpointError)
    check_replace([path], overwrite=overwrite)  # after: a folder in the way is said as one
    return path


# The scorings ``choose_scoring`` picks from, simplest first (a tie goes to the earlier): PSNR over the frame or its
# worst patch, alone or mixed with D over the frame or its worst block, averaged over 1, 5 or 9 frames.
WINDOWS = (1, 5, 9)
CANDIDATES: tuple[tuple[str, str | None], ...] = tuple(
    (p_region, d_region) for d_region in (None, *REGIONS) for p_region in REGIONS)


@dataclasses.dataclass(frozen=True)
class ScoringChoice:
    """What ``choose_scoring`` picked, and how every candidate did (ROC AUC of pseudo-anomalous against normal frames)."""

    psnr_region: str
    distance_region: str  # 'frame' where the choice is PSNR only (D is then not mixed in: alpha 1)
    alpha: float
    smoothing: int
    name: str
    auc: dict[str, float]  # by candidate_name
    pseudo_anomalous_frames: int


def candidate_name(p_region: str, d_region: str | None, window: int) -> str:
    return f"{p_region} PSNR{f' + {d_region} D' if d_region else ''}, {window}-frame mean"


def describe_scoring(calibration: Calibration) -> str:
    """How a calibration scores, in words, and whether that was chosen on pseudo-anomalies."""
    mixed = calibration.alpha is None or calibration.alpha < 1
    name = candidate_name(calibration.psnr_region or "configured", calibration.distance_region if mixed else None,
                          calibration.smoothing)
    auc = calibration.pseudo_anomaly_auc
    if name in auc:
        return f"{name} (chosen on pseudo-anomalies: AUC {auc[name]:.4f}, best of {len(auc)})"
    return f"{name} (as configured)"


def smoothed_scores(psnr_values: list[np.ndarray], distances: list[np.ndarray], calibration: Calibration, alpha: float,
                    window: int) -> list[np.ndarray]:
    """The calibrated S_t of each video, smoothed on its own by a ``window``-frame trailing mean."""
    return [smooth(anomaly_score(p, d, alpha=alpha, normalization="calibrated", calibration=calibration), window)
            for p, d in zip(psnr_values, distances, strict=True)]


def choose_on_pseudo_anomalies(model: MNAD, config: Config, videos: list[Video], terms: dict[str, list[np.ndarray]], *,
                               smoothing: int | None, longest: int | None = None, device: str = "cpu",
                               progress: bool = True) -> ScoringChoice | None:
    """``choose_scoring`` on pseudo-anomalies made from ``videos`` (whose terms are ``terms``); ``smoothing`` fixes the
    window, else it is one of WINDOWS no longer than ``longest`` (the shortest video's scored frames: a longer window
    would never be fitted whole). None, with a warning, where no video is long enough to make one from."""
    windows = (smoothing,) if smoothing else tuple(w for w in WINDOWS if longest is None or w <= longest)
    if not windows:  # WINDOWS holds 1, which every video with a scored frame fits: only a longest below 1 leaves none
        raise ConfigError(f"no trailing-mean window ({', '.join(map(str, WINDOWS))} frames) fits the shortest calibration "
                          f"video's {longest} scored frames; calibrate on longer footage")
    # sized from the model's clip (pseudo.clip_shape): each one has scored frames before and after its speed-up
    clip = {"t_length": config.model.t_length, "lag": config.model.lag}
    made = pseudo_anomalies(videos, config.model.image_size, config.model.channels, **clip)
    if not made:
        configured = (config.eval.psnr_region, f" + {config.eval.distance_region} D" if mixing_weight(config) < 1 else " only")
        if any(len(v) >= source_frames(**clip) for v in videos):  # long enough, but never moving where one is cut
            log.warning("the calibration footage does not move in any stretch a pseudo-anomaly would be made from: "
                        "scoring as configured (%s PSNR%s); give normal footage with motion to have the scoring chosen",
                        *configured)
        else:
            log.warning("no calibration video is long enough (%d frames, for this model's %d-frame clips) to make "
                        "pseudo-anomalies from: scoring as configured (%s PSNR%s); give longer normal footage to have "
                        "the scoring chosen", source_frames(**clip), clip["t_length"], *configured)
        return None
    pseudo = footage_terms(model, config, made, device=device, progress=progress)
    labels = [v.labels(len(p), config.model.lag) for v, p in zip(made, pseudo["psnr"], strict=True)]
    # a model whose own S_t weighs PSNR alone (alpha 1) has no "PSNR + D" candidate: D would be mixed in with weight 0,
    # each a copy of a PSNR-only candidate under a name that says otherwise
    choice = choose_scoring(terms, pseudo, labels, scored_with=config, windows=windows)
    log.info("scoring chosen on %d pseudo-anomalous frames: %s (AUC %.4f)", choice.pseudo_anomalous_frames, choice.name,
             choice.auc[choice.name])
    return choice


def varies(series: list[np.ndarray]) -> bool:
    """Whether a term's 1st–99th percentile range over the footage's series is one a calibration can scale by."""
    values = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in series]) if series else np.zeros(0)
    return values.size > 0 and has_range(float(np.percentile(values, 1)), float(np.percentile(values, 99)))


def choose_scoring(normal: dict[str, list[np.ndarray]], pseudo: dict[str, list[np.ndarray]], labels: list[np.ndarray], *,
                   scored_with: Config, windows: tuple[int, ...] = WINDOWS) -> ScoringChoice:
    """The candidate scoring whose calibrated, smoothed S_t best separates the pseudo-anomalous frames (``labels``) of
    the ``pseudo`` videos from every frame of the ``normal`` footage (both terms as ``footage_terms`` returns them,
    scored with ``scored_with``), each candidate calibrated on the normal footage as ``calibrate`` does it. D is mixed
    in with ``scored_with``'s PSNR weight (eval.alpha); a model whose S_t weighs PSNR alone (no memory, or alpha 1) has
    only the PSNR-only candidates (D mixed in with weight 0 would copy them under a name that says otherwise)."""
    alpha = mixing_weight(check_scored_with(scored_with))
    lengths = [np.size(p) for p in pseudo.get("psnr", [])], [np.size(m) for m in labels]
    if lengths[0] != lengths[1]:  # was: a ValueError from zip, or frames labelled by another video's labels
        raise ConfigError(f"the labels must be one per pseudo-anomalous video, frame for frame: {len(lengths[1])} label "
                          f"series of {lengths[1][:5]} frames for {len(lengths[0])} videos of {lengths[0][:5]} scored frames")
    for where, series in (("normal", normal), ("pseudo-anomalous", pseudo)):
        for name, values in series.items():  # a NaN would drop a candidate unsaid (varies) or fail deep in a fit
            if not all(np.isfinite(np.asarray(v, dtype=np.float64)).all() for v in values):
                raise ConfigError(f"the {where} footage's {name} holds values that are not finite: every term must be a "
                                  "finite number")
    key = {"frame": ("psnr", "distance"), "patch": ("patch_psnr", "patch_distance")}
    auc: dict[str, float] = {}
    best: ScoringChoice | None = None
    for p_region, d_region in CANDIDATES:
        if d_region is not None and (alpha == 1 or not varies(normal[key[d_region][1]])):
            continue  # a D that does not vary on the footage has no range to scale by (Calibration refuses it)
        weight, p_key, d_key = (alpha if d_region else 1.0), key[p_region][0], key[d_region or "frame"][1]
        # the candidate as a config scores it: the footage's own memory update, peak and E_t, its terms and weight
        candidate = scored_with.override([f"eval.psnr_region={p_region}", f"eval.distance_region={d_region or 'frame'}",
                                          f"eval.alpha={weight}"])
        for window in windows:
            # only the ranges matter here (the AUC does not depend on a threshold)
            fitted = fit_calibration(normal[p_key], normal[d_key], alpha=weight, false_alarm_rate=0.5, smoothing=window,
                                     scored_with=candidate)
            normal_scores = np.concatenate(smoothed_scores(normal[p_key], normal[d_key], fitted, weight, window))
            pseudo_scores = np.concatenate([s[m] for s, m in zip(
                smoothed_scores(pseudo[p_key], pseudo[d_key], fitted, weight, window), labels, strict=True)])
            name = candidate_name(p_region, d_region, window)
            auc[name] = float(roc_auc_score(np.r_[np.zeros(normal_scores.size), np.ones(pseudo_scores.size)],
                                            np.r_[normal_scores, pseudo_scores]))
            if best is None or auc[name] > auc[best.name]:
                best = ScoringChoice(p_region, d_region or "frame", weight, window, name, {}, int(pseudo_scores.size))
    assert best is not None
    return dataclasses.replace(best, auc=auc)


TERMS = ("psnr", "patch_psnr", "distance", "patch_distance")  # the per-frame terms S_t can mix, in score_terms' argument order


def footage_terms(
    model: MNAD, config: Config, videos: list[Video], *, device: str = "cpu", progress: bool = True
) -> dict[str, list[np.ndarray]]:
    """Each of TERMS (PSNR, patch PSNR, D, patch D) of every scored frame, one array per video (memory carried across
    them, as when scoring: ``evaluate.score_frames``); refuses footage that never changes, and a model whose output is
    not finite on it."""
    watch = FootageWatch()
    scored = score_frames(model, config, videos, device=device, progress=progress, desc="calibrating", watch=watch)
    if not watch.changes:  # over all the videos: the footage as a whole is named
        raise DataError(f"{footage_name(videos)}: calibration footage does not change (every frame is the same picture); "
                        "calibrate on real normal footage")
    return {name: [getattr(video, name) for video in scored] for name in TERMS}


class FootageWatch:
    """``footage_terms``' checks of each frame as it is scored (``evaluate.FrameWatch``): whether any frame differs from
    the one before it in its video (``changes``), and the model's output finite (refused at the first frame that is
    not: thresholds and the choice would be fitted on NaN)."""

    def __init__(self) -> None:
        self.changes = False
        self._previous: np.ndarray | None = None

    def __call__(self, video: Video, index: int, frame: np.ndarray, row: FrameResult | None) -> None:
        if not self.changes:  # once one frame changed, the footage does
            self.changes = index > 0 and self._previous is not None and not np.array_equal(frame, self._previous)
            self._previous = frame
        if row is not None and not row.finite:
            raise CheckpointError(f"{video.name}, frame {row.index}: the model's output is not finite on this "
                                  "footage (a diverged training?); nothing can be calibrated on it")


def check_series(psnr_values: object, distances: object, where: str) -> None:
    """Per-video PSNR and D series as the fits take them: two lists (or tuples) with one series of each per video, of
    the same length; anything else is one ``ConfigError`` (no footage: a ``DataError``)."""
    if not isinstance(psnr_values, list | tuple) or not isinstance(distances, list | tuple):
        raise ConfigError("the PSNR and D series must be lists of one series per video, got "
                          f"{type(psnr_values).__name__} and {type(distances).__name__}")
    if not psnr_values:
        raise DataError(f"{where}: no calibration footage given (no PSNR series)")
    lengths = [np.size(p) for p in psnr_values], [np.size(d) for d in distances]
    if lengths[0] != lengths[1]:
        raise ConfigError(f"the PSNR and D series differ: {len(psnr_values)} PSNR series of {lengths[0][:5]} frames, "
                          f"{len(distances)} D series of {lengths[1][:5]} frames; give one of each per video, frame for frame")


def check_scored_with(scored_with: object) -> Config:
    """The config per-frame terms were scored with, as the fits take it (what a calibration records of its scoring comes
    from it): a mnad Config, else one ``ConfigError``."""
    if not isinstance(scored_with, Config):
        raise ConfigError(f"scored_with must be the mnad Config the footage was scored with, got {type(scored_with).__name__}")
    return scored_with


def fit_calibration(
    psnr_values: list[np.ndarray],
    distances: list[np.ndarray],
    *,
    alpha: float,
    false_alarm_rate: float,
    smoothing: int,
    scored_with: Config,
    footage: list[str] | None = None,
    where: str = "calibration footage",
) -> Calibration:
    """The calibration of per-video PSNR and D series of normal footage (each video smoothed on its own, as separate
    recordings): ranges from their 1st-99th percentiles, thresholds from quantiles of the smoothed score, recording
    what it was fitted with: ``alpha`` and, from ``scored_with`` (the config the series were scored with, whose S_t
    weight must be ``alpha``: required, as defaults would record the whole-frame terms and the default memory update
    whatever scored the series), the terms, the test-time memory update, the PSNR peak and E_t's kind, so that
    ``with_calibration`` and every scorer score as it was fitted (or refuse)."""
    false_alarm_rate = check_rate(false_alarm_rate)  # first: frames_needed of 0 or NaN is no number of frames
    check_alpha(alpha)
    check_count("--smoothing", smoothing)
    check_series(psnr_values, distances, where)
    check_scored_with(scored_with)
    if not math.isclose(alpha, mixing_weight(scored_with)):
        raise ConfigError(f"alpha {alpha:g} is not the PSNR weight {mixing_weight(scored_with):g} the footage was "
                          "scored with (eval.alpha; 1 without memory)")
    e = scored_with.eval
    recorded = {"psnr_region": e.psnr_region, "distance_region": e.distance_region, "test_update": e.test_update,
                "gamma": e.gamma, "psnr_peak": e.psnr_peak, "regular_score": e.regular_score}
    all_p, all_d = np.concatenate(psnr_values), np.concatenate(distances)
    needed = frames_needed(false_alarm_rate)
    if all_p.size < needed:
        raise DataError(f"{where}: calibration footage too short: {all_p.size} frames scored, a false-alarm rate "
                        f"of {false_alarm_rate:g} needs at least {needed:.10g} normal frames")
    ranges = {
        "psnr_low": float(np.percentile(all_p, 1)), "psnr_high": float(np.percentile(all_p, 99)),
        "distance_low": float(np.percentile(all_d, 1)), "distance_high": float(np.percentile(all_d, 99)),
    }
    if not has_range(ranges["psnr_low"], ranges["psnr_high"]):
        raise DataError(f"{where}: the calibration footage's PSNR does not vary; calibrate on real normal footage")
    # a footage problem, said as one (a leave-one-out fold skips it, held_out_false_alarms); Calibration refuses the
    # same range in a sidecar
    if alpha < 1 and not has_range(ranges["distance_low"], ranges["distance_high"]):
        raise DataError(f"{where}: the calibration footage's D does not vary, but S_t weighs it (alpha {alpha:g}); "
                        "calibrate on real normal footage, or score with PSNR only (--alpha 1)")
    fitted = Calibration(**ranges, threshold=0.0, false_alarm_rate=false_alarm_rate, smoothing=int(smoothing),
                         frames=int(all_p.size), footage=list(footage or []), alpha=float(alpha), **recorded)
    smoothed = np.concatenate(smoothed_scores(psnr_values, distances, fitted, alpha, fitted.smoothing))
    thresholds = {rate_key(r): float(np.quantile(smoothed, 1 - r)) for r in TABLE_RATES if all_p.size >= frames_needed(r)}
    return dataclasses.replace(fitted, threshold=float(np.quantile(smoothed, 1 - false_alarm_rate)), thresholds=thresholds)


def fold_frames(psnr_values: list[np.ndarray]) -> int:
    """The fewest frames any leave-one-out fold of ``held_out_false_alarms`` is fitted on: all the videos' scored
    frames but the longest one's."""
    return sum(map(len, psnr_values)) - max(map(len, psnr_values), default=0)


def held_out_false_alarms(psnr_values: list[np.ndarray], distances: list[np.ndarray], *, scored_with: Config,
                          false_alarm_rate: float, smoothing: int) -> dict[str, float]:
    """How well the ranges and thresholds carry over to normal footage they were not fitted on, without labels: each
    video left out in turn, the others calibrated (S_t as ``scored_with``, the config the series were scored with,
    weighs PSNR), the fraction of the left-out video's smoothed scores above each threshold (the chosen rate's and
    TABLE_RATES'), averaged over the videos. The scoring itself (``scored_with``'s terms, alpha and the window, which
    ``calibrate`` chooses on pseudo-anomalies of all its videos) is not chosen again per fold: each left-out video
    helped choose it, so the check is held out for the ranges and thresholds only.

    A rate is checked only where every fold has the frames it needs (``frames_needed``; ``fold_frames``), each fold
    fitted at the chosen rate where it can be, else at the largest rate checked: a chosen rate too low for the
    smallest fold is left out, not the whole check (``calibrate`` says so). Empty with fewer than two videos, when no
    rate can be checked, or when a fold cannot be calibrated (its footage does not vary)."""
    false_alarm_rate = check_rate(false_alarm_rate)  # before frames_needed, as fit_calibration checks it
    alpha = mixing_weight(check_scored_with(scored_with))
    check_series(psnr_values, distances, "calibration footage")
    if len(psnr_values) < 2:
        return {}
    shortest = fold_frames(psnr_values)
    rates = sorted(r for r in {*TABLE_RATES, false_alarm_rate} if shortest >= frames_needed(r))
    if not rates:
        return {}
    fit_rate = false_alarm_rate if false_alarm_rate in rates else rates[-1]  # the fewest frames needed: every fold's
    realised: dict[str, list[float]] = {rate_key(r): [] for r in rates}
    for i in range(len(psnr_values)):
        rest = [j for j in range(len(psnr_values)) if j != i]
        try:
            fitted = fit_calibration([psnr_values[j] for j in rest], [distances[j] for j in rest], alpha=alpha,
                                     false_alarm_rate=fit_rate, smoothing=smoothing, scored_with=scored_with)
        except DataError:  # the rest's PSNR or D does not vary: no threshold to check
            return {}
        (left_out,) = smoothed_scores([psnr_values[i]], [distances[i]], fitted, alpha, smoothing)
        if not left_out.size:  # a video with no scored frame has no frame that could alert (its mean would be NaN)
            continue
        for r in rates:
            realised[rate_key(r)].append(float((left_out > fitted.threshold_for(r)).mean()))
    return {key: float(np.mean(values)) for key, values in realised.items() if values}


RUN_SETTINGS = ("bf16", "channels_last", "compile")  # eval.*: where and how fast a run scores, not how it scores


def config_to_save(model_config: Config, scoring: Config) -> Config:
    """The config a calibrated model is saved with: the model's own (its training record, ``train.*``, and its
    ``eval.bf16``, ``channels_last`` and ``compile``) with the scoring settings (the rest of ``eval.*``) of ``scoring``,
    the config the footage was scored with. Options of the calibrating run (``--threads``, ``--device``, ``--compile``,
    the scoring path this machine chose) describe that run, not the model: kept, they misrecorded its training and
    made every later run of it compile (and its ONNX export unusable)."""
    data = model_config.to_dict()
    data["eval"] = {**scoring.to_dict()["eval"], **{name: data["eval"][name] for name in RUN_SETTINGS}}
    return Config.from_dict(data, source="calibration")


def calibrated_settings(config: Config, calibration: Calibration) -> dict[str, object]:
    """The eval settings (of UNCALIBRATED_SETTINGS) ``with_calibration`` gives ``config`` to score with ``calibration``:
    causal with its fixed ranges, its trailing mean, and the terms and PSNR weight it records."""
    settings: dict[str, object] = {"normalization": "calibrated", "smoothing": calibration.smoothing,
                                   "distance_region": calibration.distance_region}
    if calibration.psnr_region is not None:
        settings["psnr_region"] = calibration.psnr_region
    if calibration.alpha is not None and config.model.memory:  # without memory alpha is 1 whatever eval.alpha says
        settings["alpha"] = calibration.alpha
    return settings


def with_calibration(config: Config, calibration: Calibration, *, own: Config | None = None) -> Config:
    """A copy of ``config`` that scores with ``calibration``: causal (fixed ranges and threshold), with the terms, PSNR
    weight and trailing mean it was fitted on; the settings it replaces are recorded in the calibration
    (``Calibration.uncalibrated``, for ``uncalibrated``): those of ``own`` (default ``config``), the model's config
    before the calibrating run's options (``mnad calibrate --alpha``, ``--smoothing``...) changed them. Refuses
    (``ConfigError``) a result that scorers would refuse to load (``scoring_calibration``), so that no such model
    is ever written."""
    if not isinstance(calibration, Calibration):  # a dict (Calibration.to_dict) would fail deep inside, as a TypeError
        raise ConfigError(f"the calibration must be a mnad.calibration.Calibration (fit_calibration, calibrate; "
                          f"Calibration.from_dict for a stored one), got {type(calibration).__name__}")
    config = uncalibrated(config)
    own = uncalibrated(own) if own is not None else config  # the record is of the model's own settings, never of an earlier calibration's
    calibration = dataclasses.replace(calibration, uncalibrated={name: getattr(own.eval, name) for name in UNCALIBRATED_SETTINGS})
    data = config.to_dict()
    data["eval"].update(calibrated_settings(config, calibration), calibration=calibration.to_dict())
    scored = Config.from_dict(data, source="calibration")
    scoring_calibration(scored)  # as detect checks it on load
    return scored


def uncalibrated(config: Config) -> Config:
    """``config`` as it was before ``with_calibration``: the settings the calibration set put back as the calibration
    recorded them, the calibration dropped (a config without one is returned as it is). A setting that no longer holds
    the calibration's value was changed since, by the caller, and is kept. For a calibration written before the record,
    the defaults (EvalConfig) stand for them (alpha: the calibration's where below 1, the model's weight that mixed D
    in), with a warning."""
    if not isinstance(config, Config):
        raise ConfigError(f"the config must be a mnad Config, got {type(config).__name__}")
    calibration = config.calibration()
    if calibration is None:
        return config
    record = dict(calibration.uncalibrated)
    if not record:
        defaults = EvalConfig()
        record = {name: getattr(defaults, name) for name in UNCALIBRATED_SETTINGS}
        if calibration.alpha is not None and calibration.alpha < 1:
            record["alpha"] = calibration.alpha
        log.warning("the model's calibration does not record the scoring settings the model had before it (it was written "
                    "by an older mnad): starting from %s; set others with --set", ", ".join(f"eval.{k}={v}" for k, v in record.items()))
    data = config.to_dict()
    for name, value in calibrated_settings(config, calibration).items():
        if data["eval"][name] == value and name in record:
            data["eval"][name] = record[name]
    data["eval"]["calibration"] = {}
    return Config.from_dict(data, source="the model's config without its calibration")
