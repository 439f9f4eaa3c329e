"""A calibration (``mnad calibrate``, docs/method.md 9): the fixed ranges that scale PSNR and D and the alert thresholds
fitted on normal footage, its one validity rule, and the one rule of which normalisation scores with which calibration
(``scoring_calibration``). Loads neither torch nor OpenCV when imported, so the config (``Config.calibration``) reads
a model's calibration with it; checking a calibration's footage spans loads ``mnad.data`` (which does), on first use.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from mnad.config import NORMALIZATIONS, PSNR_PEAKS, REGIONS, REGULAR_SCORES, mixing_weight
from mnad.data.spans import parse_span, shared_footage
from mnad.errors import ConfigError

if TYPE_CHECKING:
    from mnad.config import Config

ArrayOrFloat = TypeVar("ArrayOrFloat", np.ndarray, float)

log = logging.getLogger(__name__)

# The precisions a model's scores are computed in (Calibration.precision, stream.step_precision): PyTorch in fp32 or
# bf16 (bf16 weights under bf16 autocast, the memory maths fp32: mnad.precision.scoring_path), an ONNX export in fp32
# or with its convolutions in int8. Layout (channels_last) and runtime (ONNX Runtime, a GPU's kernels) change the
# scores by rounding only, and are not told apart.
PRECISIONS = ("fp32", "bf16", "int8")


# A range narrower than this fraction of its values' size is float noise, not variation (the footage did not vary):
# fp32 rounds a mean to ~1e-7 of it. Relative, not absolute: a trained model's D lies near 3e-6 (results/ped2_stream:
# its D range, 6.4e-7, is 18 % of it), where the absolute floor of 1e-6 this replaced refused real footage.
MIN_RELATIVE_RANGE = 1e-5


def has_range(low: float, high: float) -> bool:
    """Whether ``[low, high]`` is a range a calibration can scale PSNR or D by: wider than float noise at the values'
    size (so an all-zero one is not)."""
    return high - low > MIN_RELATIVE_RANGE * max(abs(low), abs(high))


@dataclass(frozen=True)
class Calibration:
    """What ``mnad calibrate`` fits on normal footage (no labels), stored in the model's config (``eval.calibration``):
    the ranges that scale PSNR and D (their 1st-99th percentiles), the alert threshold on the smoothed score for the
    chosen false-alarm rate, and the thresholds of other rates (keyed by the rate as text, e.g. "0.05").

    It also records the precision the footage was scored in (``precision``: 'fp32', 'bf16' or 'int8'; ``mnad calibrate``
    scores in bf16 where bf16 is native, in fp32 elsewhere or with ``--fp32``). Its ranges and thresholds are of scores
    in that precision: a model scored in another one (``mnad detect --fp32`` or ``--bf16``, a machine without native
    bf16, an ONNX or int8 export of the calibrated model) still scores, with one warning naming both precisions
    (``check_precision``), as its scores, hence its alert rate, differ a little from the calibrated ones. None: not
    recorded (a calibration written before it was, or fitted by hand with ``calibrate.fit_calibration``), not compared."""

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
    # the SHA-256 of the weights (and memory items) it was fitted with (``checkpoint.weights_digest`` of the model as
    # ``load_model`` reads it): its ranges and thresholds are of those weights' scores, so every scorer refuses other
    # weights (``check_weights``); None in a calibration written before it was recorded, which is not compared
    weights_sha256: str | None = None
    # the precision the footage was scored in (one of PRECISIONS), which its scorers are compared with
    # (``check_precision``); None in a calibration written before it was recorded, or fitted by hand: not compared
    precision: str | None = None

    def check_precision(self, precision: str | None, *, exported: bool = False) -> bool:
        """Warn, once per call, where scores will be computed in ``precision`` (``stream.step_precision``: 'fp32',
        'bf16', 'int8'), not in the precision the calibration was fitted on: its ranges and thresholds are of those
        scores, so alerts come somewhat more or less often than calibrated. Not refused: a calibrated model moved to a
        machine without native bf16 still scores. Returns whether it warned; either precision None (not recorded, or
        a step whose precision cannot be told) is not compared. ``exported``: the scores come from an ONNX export,
        which takes no --bf16 (refused with an export), so the advice names what works for one."""
        if self.precision is None or precision is None or precision == self.precision:
            return False
        if precision == "int8":
            advice = (f"an int8 export cannot be calibrated itself: for the calibrated alert rate, score the model it was "
                      f"exported from in {self.precision}")
        elif self.precision == "int8":
            advice = "score the int8 export the calibration was fitted on, or run `mnad calibrate` again on this model"
        elif exported:
            advice = (f"an ONNX export scores as it was exported ({precision}): for the calibrated alert rate, score the model "
                      f"it was exported from in {self.precision}, or run `mnad calibrate"
                      f"{' --fp32' if precision == 'fp32' else ''}` and export the calibrated model again")
        elif self.precision == "bf16":
            advice = ("score in bf16 (--bf16, the default where bf16 is native), or run `mnad calibrate --fp32` to fit "
                      "the thresholds on fp32 scores")
        else:
            advice = ("score in fp32 (--fp32), or run `mnad calibrate` where bf16 is native, without --fp32, to fit the "
                      "thresholds on bf16 scores")
        log.warning("the model's calibration was fitted on scores computed in %s, but this scoring computes them in %s: "
                    "its ranges and thresholds are of %s scores, so alerts may come more or less often than calibrated; "
                    "%s", self.precision, precision, self.precision, advice)
        return True

    def check_weights(self, digest: str | None) -> None:
        """Refuse to score weights other than those it was fitted with: ``digest`` is the SHA-256 of the weights to be
        scored (``checkpoint.weights_digest``), None where it cannot be told (not compared, as a calibration that
        records none)."""
        if self.weights_sha256 is not None and digest is not None and digest != self.weights_sha256:
            raise ConfigError(f"the calibration was fitted on other weights (SHA-256 {self.weights_sha256[:16]}...) than the "
                              f"model's (SHA-256 {digest[:16]}...): its ranges and thresholds are of another model's scores; "
                              "run `mnad calibrate` again on this model")

    def check_scoring(self, config: Config, *, smoothing: int | None = None) -> None:
        """Refuse to score other than as the ranges and thresholds were fitted: the same terms and PSNR weight, the
        same test-time memory update (gamma, E_t), the same PSNR peak and, where ``smoothing`` (the window the caller will average over) is given, the
        same trailing mean. The one check for every scorer of a calibrated model (``scoring_calibration``)."""

        fitted = (self.psnr_region or config.eval.psnr_region, self.distance_region)
        wanted = (config.eval.psnr_region, config.eval.distance_region)
        if fitted != wanted:
            raise ConfigError(f"the calibration was fitted on PSNR over the {fitted[0]} and D over the {fitted[1]}, but the "
                              f"model scores PSNR over the {wanted[0]} and D over the {wanted[1]} "
                              "(eval.psnr_region, eval.distance_region): run `mnad calibrate` again")
        if self.alpha is not None and not math.isclose(self.alpha, mixing_weight(config)):
            raise ConfigError(f"the calibration was fitted with S_t's PSNR weight {self.alpha:g}, but the model scores with "
                              f"{mixing_weight(config):g} (eval.alpha): run `mnad calibrate` again")
        # a calibration written before alpha was recorded is scored with the config's: its D range is checked here
        self.check_distance_range(mixing_weight(config))
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

    def check_distance_range(self, alpha: float) -> None:
        """Refuse (``ConfigError``) an empty D range where S_t weighs D (``alpha`` < 1): D is scaled by its range, so
        an empty one would divide float noise in D by ~1e-12 and swamp the score. Without memory (alpha 1) D is
        constant and its range rightly empty."""
        if alpha < 1 and not has_range(self.distance_low, self.distance_high):
            raise ConfigError(f"the calibration's D range is empty (distance_low {self.distance_low}, distance_high "
                              f"{self.distance_high}: D did not vary on the footage it was fitted on), but its score "
                              f"weighs D (alpha {alpha:g} < 1), so float noise in D would swamp the score: calibrate "
                              "on footage on which D varies, or score with PSNR only (--alpha 1)")

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
        # D is scaled by its range wherever S_t weighs it (check_distance_range). A calibration written before alpha
        # was recorded is scored with its model's alpha, unknown here: check_scoring checks it against that one.
        if self.alpha is not None:
            self.check_distance_range(self.alpha)
        if not 0 < self.false_alarm_rate < 1:
            raise ConfigError(f"the calibration's false_alarm_rate must lie in (0, 1), got {self.false_alarm_rate}")
        for name, minimum in (("smoothing", 1), ("frames", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < minimum:  # bool is refused above
                raise ConfigError(f"the calibration's {name} must be a whole number >= {minimum}, got {value!r}")
        if self.alpha is not None and not 0 <= self.alpha <= 1:
            raise ConfigError(f"the calibration's alpha must lie in [0, 1], got {self.alpha}")
        if self.footage:  # here: the module reads frames (OpenCV), and only a calibration naming its footage needs it
            from mnad.data.spans import parse_span
        if not isinstance(self.footage, list) or not all(isinstance(v, str) and parse_span(v) for v in self.footage):
            raise ConfigError(f"the calibration's footage must be a list of 'path[first:end]' spans, got {self.footage!r}")
        for key in ("psnr_region", "distance_region"):
            value = getattr(self, key)
            if (value is not None or key == "distance_region") and value not in REGIONS:
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
        digest = self.weights_sha256
        if digest is not None and not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= set("0123456789abcdef")):
            raise ConfigError(f"the calibration's weights_sha256 must be a SHA-256 (64 lower-case hex digits), got {digest!r}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ConfigError(f"the calibration's precision must be {' or '.join(map(repr, PRECISIONS))}, got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def given(cls, calibration: Calibration | dict[str, Any] | None) -> Calibration | None:
        """A calibration passed to the Python API (``StreamScorer``, ``anomaly_score``): a Calibration, its dict
        (``to_dict``, as ``config.eval.calibration`` stores it; read with ``from_dict``) or None; anything else is one
        ``ConfigError``."""
        if calibration is None or isinstance(calibration, Calibration):
            return calibration
        if isinstance(calibration, dict):
            return cls.from_dict(calibration, source="calibration")
        raise ConfigError(f"calibration must be a Calibration or its dict (config.eval.calibration), got a "
                          f"{type(calibration).__name__}")

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
    "normalization": NORMALIZATIONS[:2], "smoothing": None, "psnr_region": REGIONS, "distance_region": REGIONS,
    "alpha": None}


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


def scoring_calibration(config: Config, normalization: str | None = None, calibration: Calibration | None = None, *,
                        smoothing: int | None = None, raw_terms: bool = False, weights: str | None = None) -> Calibration | None:
    """The calibration a scoring of ``config`` under ``normalization`` (default: the config's own) scales S_t by, None for
    none: the one rule of which normalisation scores with which calibration, for every scorer (StreamScorer, detect,
    evaluate, ``calibrate.with_calibration``).

    'calibrated' scores with ``calibration`` or, without one, the model's own (``Config.calibration``; its window,
    eval.smoothing, is then the one asked for), and only as it was fitted (``Calibration.check_scoring``, with
    ``smoothing``, the caller's window, where given) and on the weights it was fitted on (``Calibration.check_weights``
    with ``weights``, the SHA-256 of the weights to be scored, ``checkpoint.calibration_weights``: None, not compared).
    A ``calibration`` passed applies to 'calibrated' only: kept, it
    would silently replace the running min-max (and the smoothing) asked for. A calibrated model scores with
    'calibrated' only, its alert threshold being of that score; ``raw_terms`` (the API's StreamScorer) allows 'video'
    too, which gives no S_t, only the raw terms that the caller normalises (evaluate's published protocol)."""
    normalization = normalization or config.eval.normalization
    if normalization not in NORMALIZATIONS:
        raise ConfigError(f"unknown normalisation {normalization!r}")
    calibrated = bool(config.eval.calibration)  # not read where it is not used: an older one may not load (Config.calibration)
    if normalization == "calibrated":
        if calibration is None:
            if not calibrated:
                raise ConfigError("calibrated normalisation needs a calibration: run `mnad calibrate` first")
            calibration = config.calibration()
            if smoothing is None:  # the model's own calibration: its config's window is the one asked for
                smoothing = config.eval.smoothing
        calibration.check_weights(weights)
        calibration.check_scoring(config, smoothing=smoothing)
        return calibration
    if calibration is not None:
        raise ConfigError(f"a calibration was given, but normalization is '{normalization}', which does not use one (its "
                          "fixed ranges apply to 'calibrated' only): pass normalization='calibrated', or drop calibration")
    if calibrated and raw_terms and normalization == "causal":
        # a running min-max would drop the calibration the model's threshold is of
        raise ConfigError("the model is calibrated: its alert threshold was fitted on the calibrated score, not on "
                          "normalization 'causal' (a running min-max); drop normalization (the model's own: its "
                          "calibration's fixed ranges), or score the model as trained, without its calibration "
                          "(mnad.calibrate.uncalibrated(config))")
    if calibrated and not raw_terms:
        raise ConfigError(f"the model's alert threshold was fitted on the calibrated score, not on --normalization "
                          f"{normalization}: a calibrated model scores with its calibration's fixed ranges; "
                          "drop --normalization")
    return None


def training_overlap(calibration: Calibration, model: object) -> list[str] | None:
    """The calibration's footage that ``model`` was trained on (``span_text`` of each part, sorted; empty: none), with
    one warning where there is some: the stream protocol is of a model calibrated on normal footage it was not trained
    on, and a model scores frames it learnt lower than new ones, so thresholds fitted on them alert more often on the
    test videos than asked. Not refused: the rates measured are still the ones those thresholds give, and metrics.json
    records the overlap (``stream.calibration_overlaps_training``); ``detect`` warns likewise and records it in
    summary.json (``calibration_overlaps_training``). None: cannot be told (the model records no training footage,
    ``MNAD.trained_footage``: an ONNX export, a shipped model or one built in Python; or the calibration records no
    footage)."""
    trained = getattr(model, "trained_footage", None)
    if not trained or not calibration.footage:
        return None
    return warn_trained_footage([parse_span(entry) for entry in calibration.footage], trained)  # each parses (from_dict)


def warn_trained_footage(footage: list, trained: list) -> list[str]:
    """The parts of calibration ``footage`` (spans, ``footage_span``) that a model trained on ``trained`` has learnt
    (``shared_footage``: the frames both used), with one warning where there are some: the one check of it, for
    ``calibrate`` and for a calibration used later (``training_overlap``)."""
    overlap = shared_footage(footage, trained)
    if overlap:
        log.warning("the calibration was fitted on footage the model was trained on (%s%s): its thresholds then "
                    "alert more often than asked on new footage; calibrate on held-out normal footage",
                    ", ".join(overlap[:3]), f" and {len(overlap) - 3} more" if len(overlap) > 3 else "")
    return overlap
