"""Per-frame scores (docs/method.md, section 5), each formula once: PSNR, feature distance D, weighted regular score
E_t, the normalisers g and the abnormality score S_t = alpha * (1 - g(P)) + (1 - alpha) * g(D), the trailing mean,
and the error map with its regions (Fig. 4).

Frames are in [-1, 1]; errors are measured on frames mapped to [0, 1], as published.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from numbers import Real
from typing import TYPE_CHECKING, Any, TypeVar

import cv2
import numpy as np
import torch

from mnad.config import PSNR_PEAKS, REGULAR_SCORES, check_count
from mnad.data.spans import parse_span
from mnad.errors import ConfigError, DataError

if TYPE_CHECKING:
    from mnad.config import Config

ArrayOrFloat = TypeVar("ArrayOrFloat", np.ndarray, float)



def check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    """Refuse a mode that is not one of ``allowed`` (one ``ConfigError`` naming ``name``): an unknown one would
    otherwise be scored as the other mode without a word. A tuple lookup: cheap enough for every frame."""
    if value not in allowed:
        raise ConfigError(f"{name} must be {' or '.join(map(repr, allowed))}, got {value!r}")


def check_alpha(alpha: object) -> None:
    """S_t's weight of PSNR: a finite number in [0, 1] (outside, S_t leaves its range; NaN makes every score NaN)."""
    if isinstance(alpha, bool) or not isinstance(alpha, Real) or not 0 <= alpha <= 1:  # NaN fails the range
        raise ConfigError(f"alpha (eval.alpha, S_t's weight of PSNR) must be a number from 0 to 1, got {alpha!r}")


def psnr(predicted: torch.Tensor, target: torch.Tensor, *, peak: str = "one") -> torch.Tensor:
    """PSNR per sample of (B, C, H, W) frames. ``peak``: 'one' (published code) or 'max' of the prediction (paper)."""
    check_choice("peak (eval.psnr_peak)", peak, PSNR_PEAKS)
    pred01, target01 = (predicted.float() + 1) / 2, (target.float() + 1) / 2
    mse = ((pred01 - target01) ** 2).flatten(1).mean(1)
    top = torch.ones_like(mse) if peak == "one" else pred01.flatten(1).amax(1) ** 2
    return 10 * torch.log10(top / mse.clamp_min(1e-12))


PATCHES = 8  # patch_psnr: patches of 1/8 of the frame's side, overlapping by half (a 15 x 15 grid)


def patch_psnr(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR of the worst-predicted patch per sample, -10 log10(max_r MSE_r) over patches r of 1/PATCHES of the side
    (peak 1): an object that covers a small part of the frame is not averaged away with the rest of it (not in the
    paper; a localised score, as video anomaly detectors that score regions use). (B,)"""
    worst = _worst_patch(error_map(predicted, target)[:, None])  # the error map (B, 1, H, W) on [0, 1]
    return 10 * torch.log10(1 / worst.clamp_min(1e-12))


def _patch_starts(length: int, side: int, stride: int) -> list[int]:
    """Where the blocks along one axis begin: every ``stride`` pixels, and one more flush with the far edge where the
    strides stop short of it (a side of 40 has blocks of 5 every 2: the last pixel would be in none)."""
    starts = list(range(0, length - side + 1, stride))
    return starts if starts[-1] + side == length else [*starts, length - side]


def _patch_means(values: torch.Tensor) -> tuple[torch.Tensor, list[int], list[int], int]:
    """The means of ``values`` (B, 1, h, w) over blocks of 1/PATCHES of the width, overlapping by half and covering
    every pixel (``_patch_starts``): the regions of ``patch_psnr`` and ``patch_distance``. (B, 1, rows, cols), with
    the blocks' top rows and left columns and their side."""
    h, w = values.shape[-2:]
    side = max(w // PATCHES, 1)
    stride = max(side // 2, 1)
    rows, cols = _patch_starts(h, side, stride), _patch_starts(w, side, stride)
    means = torch.nn.functional.avg_pool2d(values, side, stride=stride)
    if len(cols) > means.shape[-1]:  # the blocks flush with the right edge, then with the bottom one (shapes are static)
        means = torch.cat([means, torch.nn.functional.avg_pool2d(values[..., -side:], side, stride=stride)], -1)
    if len(rows) > means.shape[-2]:
        means = torch.cat([means, _patch_means_of_strip(values[..., -side:, :], side, stride, len(cols))], -2)
    return means, rows, cols, side


def _patch_means_of_strip(strip: torch.Tensor, side: int, stride: int, columns: int) -> torch.Tensor:
    """The block means of the bottom strip (B, 1, side, w), at the columns ``_patch_means`` uses. (B, 1, 1, columns)"""
    means = torch.nn.functional.avg_pool2d(strip, side, stride=stride)
    if columns > means.shape[-1]:
        means = torch.cat([means, torch.nn.functional.avg_pool2d(strip[..., -side:], side)], -1)
    return means


def _worst_patch(values: torch.Tensor) -> torch.Tensor:
    """The largest block mean of ``values`` (B, 1, h, w) (``_patch_means``). (B,)"""
    return _patch_means(values)[0].flatten(1).amax(1)


def worst_patch_box(error: np.ndarray) -> tuple[int, int, int, int]:
    """Where ``patch_psnr`` looks in one frame: (x, y, width, height), in the error map's pixels, of its worst-predicted
    patch. ``error``: the frame's error map (H, W) or (1, H, W), as ``error_map`` gives it."""
    plane = np.asarray(error, dtype=np.float32)
    if plane.ndim == 3 and plane.shape[0] == 1:
        plane = plane[0]
    if plane.ndim != 2 or plane.size == 0:
        raise DataError(f"error: an error map must be one frame's (H, W), or (1, H, W), not empty, got shape {np.shape(error)}")
    means, rows, cols, side = _patch_means(torch.from_numpy(np.ascontiguousarray(plane))[None, None])
    row, col = divmod(int(means.flatten().argmax()), means.shape[-1])
    return cols[col], rows[row], side, side


def _nearest_item_errors(queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Squared difference of each query (B, K, C) to its nearest item (M, C), or with items (B, M, C), each sample's
    own (several streams in one batch) to the nearest of its own items. (B, K, C)"""
    nearest = (queries @ items.transpose(-2, -1)).argmax(-1)
    chosen = items[nearest] if items.dim() == 2 else torch.take_along_dim(items, nearest[..., None], dim=1)
    return (queries - chosen) ** 2


def feature_distance(queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """D per sample: mean squared distance of the queries (B, K, C) to their nearest items, as an MSE. (B,)"""
    return _nearest_item_errors(queries, items).flatten(1).mean(1)


def patch_distance(queries: torch.Tensor, items: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """D of the worst region per sample: each query's distance to its nearest item, averaged over blocks of 1/PATCHES
    of the query map's side (stride half a block) and the largest block kept; the same regions as ``patch_psnr``, so
    both terms of S_t look at where the frame is most abnormal rather than at how busy the whole frame is (not in the
    paper; ``eval.distance_region``). ``grid``: the query map's (height, width), K = height * width. (B,)"""
    return _worst_patch(_nearest_item_errors(queries, items).mean(-1).reshape(-1, 1, *grid))  # per query (B, 1, h, w)


def regular_score(predicted: torch.Tensor, target: torch.Tensor, *, kind: str = "code") -> torch.Tensor:
    """Weighted regular score E_t per sample (paper Eqs. 6-7), which gates the test-time memory update.

    'code': per-element squared errors (what the published gamma values are calibrated to);
    'paper': per-pixel L2 norms over the colour channels.
    """
    check_choice("kind (eval.regular_score)", kind, REGULAR_SCORES)
    diff = (predicted.float() - target.float()) / 2  # difference of the frames mapped to [0, 1]
    error = diff**2 if kind == "code" else diff.norm(dim=1, keepdim=True)
    weight = 1 - torch.exp(-error)
    return (weight * error).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp_min(1e-12)


def mixing_weight(config: Config) -> float:
    """alpha of S_t: the configured weight of PSNR, or 1 (PSNR only) for a model without memory, which has no D."""
    return config.eval.alpha if config.model.memory else 1.0


def score_terms(config: Config, psnr_value: ArrayOrFloat, patch_psnr_value: ArrayOrFloat, distance: ArrayOrFloat,
                patch_distance_value: ArrayOrFloat) -> tuple[ArrayOrFloat, ArrayOrFloat]:
    """The (PSNR, D) pair that S_t mixes: each over the whole frame (published) or of the worst region
    (``eval.psnr_region``, ``eval.distance_region``)."""
    e = config.eval
    return (patch_psnr_value if e.psnr_region == "patch" else psnr_value,
            patch_distance_value if e.distance_region == "patch" else distance)


def abnormality(g_psnr: ArrayOrFloat, g_distance: ArrayOrFloat, alpha: float) -> ArrayOrFloat:
    """S_t = alpha (1 - g(P)) + (1 - alpha) g(D) (docs/method.md 5.3): high PSNR and small D are normal."""
    return alpha * (1 - g_psnr) + (1 - alpha) * g_distance


# Normalisers g(.): per video (published, sees the whole video), running (causal) or calibrated (causal, fixed).


def minmax(values: np.ndarray) -> np.ndarray:
    """Min-max normalise to [0, 1] over the whole series (per video, the published protocol: not causal);
    a constant series maps to zeros rather than dividing by zero."""
    values = np.asarray(values, dtype=np.float64)
    span = values.max() - values.min() if values.size else 0.0
    return (values - values.min()) / span if span > 0 else np.zeros_like(values)


@dataclass
class RunningMinMax:
    """Min-max over the values seen so far, one value at a time: causal, constant memory; its state is the range."""

    low: float = math.inf
    high: float = -math.inf

    def __call__(self, value: float) -> float:
        self.low, self.high = min(self.low, value), max(self.high, value)
        span = self.high - self.low
        return (value - self.low) / span if span > 0 else 0.0


def causal_minmax(values: np.ndarray) -> np.ndarray:
    """``RunningMinMax`` over a whole series: each value scaled by the range of the values up to it."""
    running = RunningMinMax()
    return np.array([running(float(v)) for v in np.asarray(values, dtype=np.float64)], dtype=np.float64)


MIN_RANGE = 1e-6  # narrowest range of PSNR or D a calibration scales by (narrower: the footage did not vary)


@dataclass(frozen=True)
class Calibration:
    """What ``mnad calibrate`` fits on normal footage (no labels), stored in the model's config (``eval.calibration``):
    the ranges that scale PSNR and D (their 1st-99th percentiles), the alert threshold on the smoothed score for the
    chosen false-alarm rate, and the thresholds of other rates (keyed by the rate as text, e.g. "0.05")."""

    psnr_low: float
    psnr_high: float
    distance_low: float
    distance_high: float
    threshold: float
    false_alarm_rate: float
    smoothing: int  # frames in the trailing mean the thresholds were fitted on
    frames: int  # normal frames it was fitted on
    thresholds: dict[str, float] = field(default_factory=dict)
    footage: list[str] = field(default_factory=list)  # the videos it was fitted on (for the train/calibrate overlap check)
    # label-free check of the thresholds on unseen normal footage: each calibration video left out in turn, the rest
    # calibrated, the fraction of its frames that alerted (mean over videos), keyed by rate; empty with one video
    held_out_false_alarms: dict[str, float] = field(default_factory=dict)
    # the terms its ranges are of (eval.psnr_region, eval.distance_region when fitted); a calibration written before
    # they were recorded has no psnr_region (it was fitted on its config's) and was fitted on the whole-frame D
    psnr_region: str | None = None
    distance_region: str = "frame"
    # S_t's weight of PSNR it was fitted with (1: PSNR only); None in a calibration written before it was recorded
    alpha: float | None = None
    # how each scoring separated pseudo-anomalies from the footage (ROC AUC, by name) when the scoring was chosen
    # (docs/method.md 9.2); empty where it was not
    pseudo_anomaly_auc: dict[str, float] = field(default_factory=dict)
    # the test-time memory update the footage was scored with (eval.test_update, eval.gamma): it changes the memory,
    # hence D and the PSNR the ranges were fitted on; None in a calibration written before they were recorded
    test_update: bool | None = None
    gamma: float | None = None
    # the PSNR's peak (eval.psnr_peak: it sets the scale of PSNR) and E_t's kind (eval.regular_score: it gates the memory
    # update, hence D and PSNR) the footage was scored with; None in a calibration written before they were recorded,
    # which was fitted with its model's own values (any of them: the settings are as old as mnad), so none is compared
    psnr_peak: str | None = None
    regular_score: str | None = None
    # the model's eval settings that ``calibrate.with_calibration`` replaced (normalization, smoothing, the regions, alpha),
    # as they were: a recalibration starts from them (``calibrate.uncalibrated``), not from this calibration's choice;
    # empty in a calibration written before they were recorded
    uncalibrated: dict[str, Any] = field(default_factory=dict)

    def check_scoring(self, config: Config, *, smoothing: int | None = None) -> None:
        """Refuse to score other than as the ranges and thresholds were fitted: the same terms and PSNR weight, the
        same test-time memory update (gamma, E_t), the same PSNR peak and, where ``smoothing`` (the window the caller will average over) is given, the
        same trailing mean. The one check for every scorer of a calibrated model (StreamScorer, detect, evaluate)."""
        fitted = (self.psnr_region or config.eval.psnr_region, self.distance_region)
        wanted = (config.eval.psnr_region, config.eval.distance_region)
        if fitted != wanted:
            raise ConfigError(f"the calibration was fitted on PSNR over the {fitted[0]} and D over the {fitted[1]}, but the "
                              f"model scores PSNR over the {wanted[0]} and D over the {wanted[1]} "
                              "(eval.psnr_region, eval.distance_region): run `mnad calibrate` again")
        if self.alpha is not None and not math.isclose(self.alpha, mixing_weight(config)):
            raise ConfigError(f"the calibration was fitted with S_t's PSNR weight {self.alpha:g}, but the model scores with "
                              f"{mixing_weight(config):g} (eval.alpha): run `mnad calibrate` again")
        if self.test_update is not None and (config.eval.test_update, config.eval.gamma if config.eval.test_update else None) != (
                self.test_update, self.gamma if self.test_update else None):
            fitted_as = f"the test-time memory update at gamma {self.gamma:g}" if self.test_update else "no test-time memory update"
            asked = f"at gamma {config.eval.gamma:g}" if config.eval.test_update else "off (--no-test-update)"
            raise ConfigError(f"the calibration's ranges were fitted with {fitted_as}, but the model scores with it {asked} "
                              "(eval.test_update, eval.gamma): run `mnad calibrate` again with the same settings")
        # E_t matters only where it gates an update: the model's (the test_update check above made the two agree, or the
        # calibration predates test_update's record)
        if (config.eval.test_update and self.test_update is not False and self.regular_score is not None
                and config.eval.regular_score != self.regular_score):
            raise ConfigError(f"the calibration's ranges were fitted with the memory update gated by E_t as "
                              f"'{self.regular_score}', but the model gates it by E_t as '{config.eval.regular_score}' "
                              "(eval.regular_score): run `mnad calibrate` again with the same settings")
        if self.psnr_peak is not None and config.eval.psnr_peak != self.psnr_peak:
            raise ConfigError(f"the calibration's ranges were fitted on PSNR with peak '{self.psnr_peak}', but the model scores "
                              f"PSNR with peak '{config.eval.psnr_peak}', another scale (eval.psnr_peak): run `mnad calibrate` "
                              "again with the same settings")
        if smoothing is not None and smoothing != self.smoothing:
            raise ConfigError(f"the model's alert threshold was fitted on a {self.smoothing}-frame mean of the score, not "
                              f"{smoothing} (--smoothing, eval.smoothing): leave it unset or recalibrate with "
                              f"`mnad calibrate --smoothing {smoothing}`")

    def scale_psnr(self, value: ArrayOrFloat) -> ArrayOrFloat:
        return (value - self.psnr_low) / max(self.psnr_high - self.psnr_low, 1e-12)

    def scale_distance(self, value: ArrayOrFloat) -> ArrayOrFloat:
        return (value - self.distance_low) / max(self.distance_high - self.distance_low, 1e-12)

    def threshold_for(self, false_alarm_rate: float) -> float:
        if math.isclose(false_alarm_rate, self.false_alarm_rate):
            return self.threshold
        key = rate_key(false_alarm_rate)
        if key not in self.thresholds:
            raise ConfigError(f"the calibration has no threshold for a false-alarm rate of {false_alarm_rate} "
                              f"(it has {', '.join([rate_key(self.false_alarm_rate), *self.thresholds])}): recalibrate")
        return self.thresholds[key]

    def __post_init__(self) -> None:
        """The one rule of what a calibration holds, whether built by ``calibrate``, by hand or read (``from_dict``):
        a hand-built one with an empty range or a NaN threshold would otherwise score nonsense without a word."""
        tables = ("thresholds", "held_out_false_alarms", "pseudo_anomaly_auc")
        for key in tables:
            table = getattr(self, key)
            if not isinstance(table, dict) or not all(isinstance(k, str) for k in table):
                raise ConfigError(f"the calibration's {key} must map rates or names (text) to numbers, got {table!r}")
        numbers = {f.name: getattr(self, f.name) for f in fields(self)[:8]}
        numbers.update({f"{key}[{k}]": v for key in tables for k, v in getattr(self, key).items()})
        if self.alpha is not None:
            numbers["alpha"] = self.alpha
        for name, value in numbers.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"every calibration value must be a finite number: {name} is {value!r}")
        if self.psnr_high <= self.psnr_low or self.distance_high < self.distance_low:
            raise ConfigError("the calibration's ranges are empty (the footage it was fitted on did not vary): psnr_low "
                              f"{self.psnr_low}, psnr_high {self.psnr_high}, distance_low {self.distance_low}, "
                              f"distance_high {self.distance_high}")
        # D is scaled by its range wherever S_t weighs it (alpha < 1): an empty one would divide float noise in D by
        # ~1e-12 and swamp the score. Without memory (alpha 1) D is constant and its range rightly empty. (A calibration
        # written before alpha was recorded is scored with its model's alpha, unknown here.)
        if self.alpha is not None and self.alpha < 1 and self.distance_high - self.distance_low < MIN_RANGE:
            raise ConfigError(f"the calibration's D range is empty (distance_low {self.distance_low}, distance_high "
                              f"{self.distance_high}: D did not vary on the footage it was fitted on), but its score "
                              f"weighs D (alpha {self.alpha:g} < 1), so float noise in D would swamp the score: calibrate "
                              "on footage on which D varies, or score with PSNR only (--alpha 1)")
        if not 0 < self.false_alarm_rate < 1:
            raise ConfigError(f"the calibration's false_alarm_rate must lie in (0, 1), got {self.false_alarm_rate}")
        for name, minimum in (("smoothing", 1), ("frames", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < minimum:  # bool is refused above
                raise ConfigError(f"the calibration's {name} must be a whole number >= {minimum}, got {value!r}")
        if self.alpha is not None and not 0 <= self.alpha <= 1:
            raise ConfigError(f"the calibration's alpha must lie in [0, 1], got {self.alpha}")
        if not isinstance(self.footage, list) or not all(isinstance(v, str) and parse_span(v) for v in self.footage):
            raise ConfigError(f"the calibration's footage must be a list of 'path[first:end]' spans, got {self.footage!r}")
        for key in ("psnr_region", "distance_region"):
            value = getattr(self, key)
            if (value is not None or key == "distance_region") and value not in ("frame", "patch"):
                raise ConfigError(f"the calibration's {key} must be 'frame' or 'patch', got {value!r}")
        if self.test_update is not None and not isinstance(self.test_update, bool):
            raise ConfigError(f"the calibration's test_update must be true or false, got {self.test_update!r}")
        # Config.validate refuses a negative eval.gamma before any scoring; this catches a hand-built calibration's
        gamma = self.gamma
        if gamma is not None and (isinstance(gamma, bool) or not isinstance(gamma, int | float) or not math.isfinite(gamma) or gamma < 0):
            raise ConfigError(f"the calibration's gamma must be a finite number >= 0, got {gamma!r}")
        for key, allowed in (("psnr_peak", PSNR_PEAKS), ("regular_score", REGULAR_SCORES)):
            value = getattr(self, key)  # None: written before it was recorded (fitted with its model's own value)
            if value is not None and value not in allowed:
                raise ConfigError(f"the calibration's {key} must be {' or '.join(map(repr, allowed))}, got {value!r}")
        check_uncalibrated(self.uncalibrated)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "eval.calibration") -> Calibration:
        """A stored calibration (JSON, TOML): the fields converted to the dataclass's types, then checked by its one
        rule (``__post_init__``), errors naming ``source``."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a calibration is a table of its fields, got {data!r}")
        names = [f.name for f in fields(cls)]
        missing = [k for k in names[:8] if k not in data]
        if missing:
            raise ConfigError(f"{source}: the calibration lacks {', '.join(missing)}: run `mnad calibrate` again")
        unknown = sorted(map(str, set(data) - set(names)))
        if unknown:
            raise ConfigError(f"{source}: unknown calibration field(s) {', '.join(unknown)}")
        values = {k: data[k] for k in names if k in data}
        # a count written as 5.0 (TOML, JSON) is the count 5; 2.5 stays as it is, for the rule to refuse
        for key in ("smoothing", "frames"):
            if isinstance(values[key], float) and values[key].is_integer():
                values[key] = int(values[key])
        for key in ("thresholds", "held_out_false_alarms", "pseudo_anomaly_auc"):
            table = values.get(key, {})
            if isinstance(table, dict):  # keys as text (rates), whole numbers as floats; anything else is for the rule
                values[key] = {str(k): float(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in table.items()}
        if isinstance(values.get("footage"), list | tuple):  # a copy: the calibration never shares the config's lists
            values["footage"] = list(values["footage"])
        if isinstance(values.get("uncalibrated"), dict):
            values["uncalibrated"] = dict(values["uncalibrated"])
        if values.get("distance_region") is None:
            values["distance_region"] = "frame"  # absent or null: written before it was recorded, fitted on the whole frame
        for key in ("alpha", "gamma"):
            if isinstance(values.get(key), int) and not isinstance(values[key], bool):
                values[key] = float(values[key])
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from exc


# The eval settings ``calibrate.with_calibration`` replaces, with the values each may have had before (Calibration.uncalibrated)
UNCALIBRATED_SETTINGS: dict[str, tuple[str, ...] | None] = {
    "normalization": ("video", "causal"), "smoothing": None, "psnr_region": ("frame", "patch"),
    "distance_region": ("frame", "patch"), "alpha": None}


def check_uncalibrated(record: object) -> None:
    """A calibration's ``uncalibrated`` record, checked: each of UNCALIBRATED_SETTINGS at most once, with a value that
    setting can take (smoothing a count >= 1, alpha in [0, 1])."""
    if not isinstance(record, dict) or set(record) - set(UNCALIBRATED_SETTINGS):
        raise ConfigError(f"the calibration's uncalibrated must map some of {', '.join(UNCALIBRATED_SETTINGS)} "
                          f"to their values, got {record!r}")
    for key, value in record.items():
        allowed = UNCALIBRATED_SETTINGS[key]
        if allowed is not None:
            fine = value in allowed
        elif key == "smoothing":
            fine = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        else:
            fine = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1
        if not fine:
            raise ConfigError(f"the calibration's uncalibrated {key} cannot be {value!r}")


def rate_key(false_alarm_rate: float) -> str:
    return f"{false_alarm_rate:g}"


def check_rate(false_alarm_rate: object) -> float:
    """A false-alarm rate as the fits and ``frames_needed`` take it: a number strictly between 0 and 1 (0 would need
    infinitely many frames, 1 alerts on every frame; NaN or one outside makes every threshold meaningless), else one
    ``ConfigError``."""
    if isinstance(false_alarm_rate, bool) or not isinstance(false_alarm_rate, Real) or not 0 < false_alarm_rate < 1:
        raise ConfigError("the false-alarm rate (false_alarm_rate, --false-alarm-rate) must be a number strictly between "
                          f"0 and 1, got {false_alarm_rate!r}")
    return float(false_alarm_rate)


def frames_needed(false_alarm_rate: float) -> int:
    """Normal frames a threshold for ``false_alarm_rate`` is fitted on at least (one alert's worth: 1 / rate), the rule
    ``calibrate`` refuses by and the threshold table and the stream protocol leave rates out by (capped at 1e18). A
    rate ``check_rate`` refuses is refused (was: -10 frames for -0.1, a ZeroDivisionError for 0)."""
    return math.ceil(min(1 / check_rate(false_alarm_rate), 1e18))


def check_calibrated_scoring(config: Config, calibration: Calibration) -> None:
    """Refuse a scoring of a calibrated model (``config``, ``calibration`` its eval.calibration) other than the one its
    thresholds were fitted on (``Calibration.check_scoring``; ``with_calibration`` set eval.smoothing to the
    calibration's window, so any other, 1 included, was asked for), and ``eval.normalization`` other than 'calibrated'
    (a calibrated model scores with its fixed ranges; an option that would be ignored is refused)."""
    if config.eval.normalization != "calibrated":
        raise ConfigError(f"the model's alert threshold was fitted on the calibrated score, not on --normalization "
                          f"{config.eval.normalization}: a calibrated model scores with its calibration's fixed ranges; "
                          "drop --normalization")
    calibration.check_scoring(config, smoothing=config.eval.smoothing)


def anomaly_score(
    psnr_values: np.ndarray,
    distances: np.ndarray,
    *,
    alpha: float,
    normalization: str = "video",
    calibration: Calibration | dict[str, Any] | None = None,
) -> np.ndarray:
    """S_t of one video's frames: g is per-video min-max ('video', the published protocol), min-max over the frames
    so far ('causal') or the ranges of a calibration on normal footage ('calibrated'). The streaming scorer computes
    the causal ones frame by frame with the same normalisers."""
    check_alpha(alpha)
    psnr_values, distances = np.asarray(psnr_values, dtype=np.float64), np.asarray(distances, dtype=np.float64)
    if normalization == "calibrated":
        if calibration is None or not calibration:
            raise ConfigError("calibrated normalisation needs a calibration (run `mnad calibrate`)")
        cal = calibration if isinstance(calibration, Calibration) else Calibration.from_dict(calibration)
        g_p, g_d = cal.scale_psnr(psnr_values), cal.scale_distance(distances)
    elif normalization in ("video", "causal"):
        g = minmax if normalization == "video" else causal_minmax
        g_p = g(psnr_values)
        g_d = g(distances) if alpha < 1 else np.zeros_like(g_p)
    else:
        raise ConfigError(f"unknown normalisation {normalization!r}")
    return abnormality(g_p, g_d, alpha)


@dataclass
class TrailingMean:
    """The mean of the last ``window`` scores, one score at a time (causal); its state is those scores."""

    window: int
    recent: list[float] = field(default_factory=list)

    def __call__(self, score: float) -> float:
        self.recent.append(score)
        del self.recent[: -self.window]
        return float(np.mean(self.recent))


@dataclass
class CausalScore:
    """S_t and its trailing mean, one frame at a time from past frames only: g is the calibration's fixed ranges,
    or a running min-max without one. What ``mnad detect`` and the stream protocol score with; its state is the
    running ranges and the trailing mean's scores."""

    alpha: float
    window: int
    calibration: Calibration | None = None
    psnr_range: RunningMinMax = field(default_factory=RunningMinMax)
    distance_range: RunningMinMax = field(default_factory=RunningMinMax)
    mean: TrailingMean | None = None

    def __post_init__(self) -> None:
        self.mean = self.mean or TrailingMean(self.window)

    def __call__(self, psnr_value: float, distance: float) -> tuple[float, float]:
        """(S_t, its trailing mean) of one frame."""
        if self.calibration is not None:
            g_p, g_d = self.calibration.scale_psnr(psnr_value), self.calibration.scale_distance(distance)
        else:
            g_p, g_d = self.psnr_range(psnr_value), self.distance_range(distance) if self.alpha < 1 else 0.0
        score = float(abnormality(g_p, g_d, self.alpha))
        return score, self.mean(score)


def smooth(scores: np.ndarray, window: int) -> np.ndarray:
    """``TrailingMean`` over a whole series; window 1 leaves the scores as they are."""
    check_count("the smoothing window (eval.smoothing, --smoothing)", window)
    scores = np.asarray(scores, dtype=np.float64)
    if window <= 1:
        return scores
    mean = TrailingMean(window)
    return np.array([mean(float(v)) for v in scores], dtype=np.float64)


def error_map(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixel-wise abnormality map (paper Fig. 4): squared prediction error on [0, 1] frames, mean over channels, (B, H, W)."""
    return (((predicted.float() - target.float()) / 2) ** 2).mean(dim=1)


def abnormal_regions(error: np.ndarray, sigma: float = 0.0) -> np.ndarray:
    """Boolean mask (H, W) of the regions whose (slightly blurred) error is above the frame's mean + ``sigma`` std
    (paper Fig. 4 uses the mean); used by ``mnad detect`` and the report's thumbnails alike.

    ``error``: one frame's map, (H, W), or ``error_map``'s output for one frame, (1, H, W), whose batch of one is
    dropped; anything else (a batch of several, a single row, an empty map) is one ``DataError``: read as an image,
    cv2 would take (H, W, C) as H rows of W pixels with C channels and outline the wrong regions without a word."""
    try:
        plane = np.asarray(error, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(f"error: an error map must be an array of numbers, got {type(error).__name__}") from exc
    if plane.ndim == 3 and plane.shape[0] == 1:
        plane = plane[0]
    if plane.ndim != 2 or plane.size == 0:
        raise DataError(f"error: an error map must be one frame's (H, W), or (1, H, W), not empty, got shape {np.shape(error)}")
    blurred = cv2.GaussianBlur(plane, (0, 0), 2.0)
    return blurred > blurred.mean() + sigma * blurred.std()
