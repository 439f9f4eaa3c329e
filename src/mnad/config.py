"""Configuration as data: one dataclass per concern, recipes as TOML files.

A recipe (``configs/<name>.toml``, shipped inside the package) fills these dataclasses; the CLI and the
Python API override single fields with ``section.field=value`` strings.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from numbers import Integral, Real
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mnad.errors import ConfigError, printable

if TYPE_CHECKING:
    from mnad.calibration import Calibration

MAX_IMAGE_SIZE = 2048  # model.image_size's largest: far above any published setting; larger only exhausts memory
PSNR_PEAKS = ("one", "max")  # eval.psnr_peak
REGULAR_SCORES = ("code", "paper")  # eval.regular_score
REGIONS = ("frame", "patch")  # eval.psnr_region, eval.distance_region: the whole frame or its worst region
NORMALIZATIONS = ("video", "causal", "calibrated")  # eval.normalization: per video, running min-max, a calibration's ranges
SECTIONS = ("model", "train", "eval")  # a Config's sections, each a dataclass of fields
# train.threads' largest: far above any machine's cores; more only fails as torch's thread pool cannot be made (a
# segmentation fault, or libgomp's abort, at the first parallel operation: --threads 100000 killed the process)
MAX_THREADS = 1024
UPDATE_MAX_OVER = ("all", "assigned")  # model.update_max_over: the published code's max, or the paper's Eq. 5


@dataclass
class ModelConfig:
    task: Literal["pred", "recon"] = "pred"  # predict the next frame (U-Net with skips) or reconstruct (no skips)
    # frames per clip. pred: the first t_length-1 predict the last. recon: all t_length are input and the middle one
    # (index t_length // 2) is reconstructed: 1 is the plain model, 16 the paper's "motion cues" variant (9th of 16)
    t_length: int = 5
    channels: int = 3  # image channels (3 even for grayscale Ped2, as in the published runs)
    image_size: int = 256
    width: int = 64  # channels of the first U-Net stage; the query dimension is 8 * width (512 by default)
    memory: bool = True  # False gives the paper's "w/o Mem." baseline: decoder sees the query alone
    memory_size: int = 10
    update_max_over: Literal["all", "assigned"] = "all"  # code: max over all queries; Eq. 5: U_m of the batch (method.md 2.4)
    # 16-bit frames (thermal, scientific cameras): [low, high] maps low..high linearly onto 0..255, clipped outside;
    # [] keeps their high byte (a 12-bit camera's frames nearly black: a warning says so). A model setting: it is what
    # the model sees, so training, evaluation, calibration and detection must read frames alike (docs/data.md)
    pixel_range: list[int] = field(default_factory=list)

    @property
    def feature_dim(self) -> int:
        return 8 * self.width

    @property
    def input_frames(self) -> int:
        return self.t_length - 1 if self.task == "pred" else self.t_length

    @property
    def target_index(self) -> int:
        """Position in the clip of the frame that is predicted or reconstructed, i.e. the frame a clip scores."""
        return self.t_length - 1 if self.task == "pred" else self.t_length // 2

    @property
    def lag(self) -> int:
        """Frames between a clip's last frame and the frame it scores: 0 for prediction, t_length - 1 - t_length // 2
        for reconstruction (7 of 16 with motion cues); a frame is scored this many frames after it arrives."""
        return self.t_length - 1 - self.target_index


@dataclass
class TrainConfig:
    epochs: int = 60
    batch_size: int = 4
    lr: float = 2e-4
    lambda_compact: float = 0.1
    lambda_separate: float = 0.1
    seed: int = 0
    clip_stride: int = 1  # take every n-th clip of each training video per epoch (1 = all, as published)
    bf16: bool = False  # bf16 autocast for the U-Net (memory maths stays fp32)
    channels_last: bool = False
    compile: bool = False  # torch.compile the step's forward and backward (mnad.train.compiled_forward_losses); compiles at the first step
    device: str = "cpu"
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    # frame folders: decode and resize each frame once, keep it in memory (video files: decoded to disk whatever it says)
    cache_frames: bool = True
    sync_batchnorm: bool = False  # several ranks (torchrun): BatchNorm statistics over the global batch, not per rank
    holdout: float = 0.0  # own footage: fraction of each video's frames (its end) kept out of training, for calibration
    # whole videos (by name) kept out of training, for calibration and the stream protocol (docs/results.md)
    holdout_videos: list[str] = field(default_factory=list)
    tensorboard: bool = False  # also log each epoch's record to <run folder>/tensorboard (needs the tensorboard package)
    keep_epochs: bool = False  # also keep each epoch's model as epoch_NNN.safetensors (for AUC-against-epochs curves)
    # also checkpoint (last.safetensors) part way through an epoch once this many minutes have passed since the last
    # checkpoint, so that a killed run loses at most about this much; 0: only at epoch ends
    checkpoint_minutes: float = 10.0


@dataclass
class EvalConfig:
    alpha: float = 0.6  # weight of PSNR in the score (lambda in the paper); 1.0 = PSNR only
    gamma: float = 0.01  # test-time memory update when the weighted regular score E_t < gamma
    test_update: bool = True
    regular_score: Literal["code", "paper"] = "code"  # per-element squared errors (code) or per-pixel norms (paper)
    psnr_peak: Literal["one", "max"] = "one"  # code: peak 1; paper: max of the predicted frame
    # the PSNR term of S_t: over the whole frame (published) or of its worst-predicted patch (scoring.patch_psnr)
    psnr_region: Literal["frame", "patch"] = "frame"
    # the D term of S_t: over all queries (published) or of the worst block of queries, the same regions (scoring.patch_distance)
    distance_region: Literal["frame", "patch"] = "frame"
    # per-video min-max (published), running min-max over the frames so far, or fixed ranges fitted on normal footage
    normalization: Literal["video", "causal", "calibrated"] = "video"
    smoothing: int = 1  # trailing (causal) mean of the score over this many frames; 1 = none, the published protocol
    bf16: bool = False  # bf16 autocast while scoring
    channels_last: bool = False  # channels_last (NHWC) weights and inputs while scoring: faster convolutions on CPU
    compile: bool = False  # torch.compile the whole scoring step, weights frozen (ReLU fused into convolutions); compiles at first frame
    # set by `mnad calibrate`: ranges, threshold, false-alarm rate, as stored; read as a Calibration by Config.calibration
    calibration: dict = field(default_factory=dict)


@dataclass
class Config:
    name: str = "custom"
    dataset: str = ""  # dataset folder name under the data root (ped2, avenue, shanghai, ...)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def calibration(self, source: str = "eval.calibration") -> Calibration | None:
        """The model's calibration (``eval.calibration``, as stored) as a ``Calibration``, None without one: its one
        reader (cheap: called once per command or scorer, so never cached, and a hand-edited dict is read as it is
        now). A calibration that would not load is one ``ConfigError`` naming ``source``. Not called by ``validate``:
        a model whose stored calibration breaks a rule still loads, to be scored without it (``--normalization
        video``), and is refused only where its calibration is used."""
        if not self.eval.calibration:
            return None
        from mnad.calibration import Calibration  # here: it reads this module's settings

        return Calibration.from_dict(self.eval.calibration, source=source)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> Config:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a config is a table of sections and fields (a dict), got {data!r}")
        cfg = cls()
        for key, value in data.items():
            if not isinstance(key, str):
                raise ConfigError(f"{source}: field names are text, got {key!r}")
            if isinstance(value, dict):
                section = getattr(cfg, key, None)
                if not dataclasses.is_dataclass(section):
                    raise ConfigError(f"{source}: unknown section [{key}]")
                for sub_key, sub_value in value.items():
                    if not isinstance(sub_key, str):
                        raise ConfigError(f"{source}: [{key}]: field names are text, got {sub_key!r}")
                    _set_field(section, sub_key, sub_value, f"{source}: [{key}]")
            else:
                _set_field(cfg, key, value, source)
        cfg.validate(source)
        return cfg

    def override(self, assignments: list[str], *, source: str = "overrides") -> Config:
        """Apply ``section.field=value`` strings (value parsed as TOML, bare words as strings); a value refused is
        reported as ``<source>: ...`` (the CLI names the option the user typed)."""
        # a lone string would be taken letter by letter ("override 't': expected section.field=value")
        if not isinstance(assignments, list | tuple) or not all(isinstance(text, str) for text in assignments):
            raise ConfigError(f"override: assignments must be a list of 'section.field=value' strings, got {assignments!r}")
        data = self.to_dict()
        for text in assignments:
            key, sep, raw = text.partition("=")
            if not sep:
                raise ConfigError(f"override {text!r}: expected section.field=value")
            *path, last = key.strip().split(".")
            target = data
            for part in path:
                if not isinstance(target.get(part), dict):
                    raise ConfigError(f"override {text!r}: unknown section {part!r}")
                target = target[part]
            if last not in target:
                raise ConfigError(f"override {text!r}: unknown field {key!r}")
            if not path and last in SECTIONS:  # a table for a whole section would put every field it leaves out back to
                # its default, the recipe's and earlier overrides' values lost unsaid (was: --set 'model={}' trained 256x256)
                raise ConfigError(f"override {text!r}: {last} is a section, not a field; set its fields one at a time "
                                  f"({last}.FIELD=VALUE)")
            target[last] = _parse_value(raw.strip(), target[last])
        return Config.from_dict(data, source=source)

    def validate(self, source: str = "config") -> None:
        _check_types(self, source)
        _check_numbers(self, source)
        if self.dataset in (".", "..") or "/" in self.dataset or "\\" in self.dataset:
            raise ConfigError(f"{source}: dataset must be a folder name under the data root (ped2, avenue, ...), got {self.dataset!r}")
        m = self.model
        if m.task not in ("pred", "recon"):
            raise ConfigError(f"{source}: model.task must be 'pred' or 'recon', got {m.task!r}")
        if m.task == "pred" and m.t_length < 2:
            raise ConfigError(f"{source}: the prediction task needs model.t_length >= 2, got {m.t_length}")
        if m.channels not in (1, 3):
            raise ConfigError(f"{source}: model.channels must be 1 or 3, got {m.channels}")
        if m.image_size % 8 or m.image_size < 16:
            raise ConfigError(f"{source}: model.image_size must be a multiple of 8 and >= 16, got {m.image_size}")
        if m.update_max_over not in UPDATE_MAX_OVER:
            raise ConfigError(f"{source}: model.update_max_over must be 'all' or 'assigned'")
        # one form, a list, as TOML, JSON and the saved model hold it: a tuple given in Python compares unequal to it
        m.pixel_range = list(check_pixel_range(m.pixel_range, f"{source}: model.pixel_range"))
        e = self.eval
        if not 0.0 <= e.alpha <= 1.0:
            raise ConfigError(f"{source}: eval.alpha must lie in [0, 1], got {e.alpha}")
        if e.regular_score not in REGULAR_SCORES or e.psnr_peak not in PSNR_PEAKS:
            raise ConfigError(f"{source}: eval.regular_score must be code|paper and eval.psnr_peak one|max")
        for key in ("psnr_region", "distance_region"):
            if getattr(e, key) not in REGIONS:
                raise ConfigError(f"{source}: eval.{key} must be 'frame' or 'patch', got {getattr(e, key)!r}")
        if e.normalization not in NORMALIZATIONS:
            raise ConfigError(f"{source}: eval.normalization must be 'video', 'causal' or 'calibrated'")
        if e.gamma < 0:  # the memory updates where E_t < gamma: a negative gamma would silently never update it
            raise ConfigError(f"{source}: eval.gamma (--gamma) must be >= 0, got {e.gamma}")
        if e.smoothing < 1:
            raise ConfigError(f"{source}: eval.smoothing must be >= 1 frame, got {e.smoothing}")
        if e.normalization == "calibrated" and "threshold" not in e.calibration:
            raise ConfigError(f"{source}: eval.normalization = 'calibrated' needs a calibration: run `mnad calibrate` first")
        if self.train.batch_size < 1 or self.train.epochs < 0 or self.train.clip_stride < 1:
            raise ConfigError(f"{source}: train.batch_size and train.clip_stride must be >= 1, train.epochs >= 0")


def checked_config(config: object) -> Config:
    """``config`` checked as a config file is (``Config.validate``, the same ``ConfigError``): a public entry point takes
    a Config changed by hand after it was made (``config.eval.gamma = -1``) only if a file could have said it. Once per
    call, up front, never per frame."""
    if not isinstance(config, Config):
        raise ConfigError(f"config must be a mnad Config (mnad.load_config gives one), got a {type(config).__name__}")
    config.validate()
    return config


def mixing_weight(config: Config) -> float:
    """alpha of S_t: the configured weight of PSNR, or 1 (PSNR only) for a model without memory, which has no D."""
    return config.eval.alpha if config.model.memory else 1.0


def check_count(name: str, value: object, *, minimum: int = 1) -> None:
    """Refuse a ``value`` that is not a whole number >= ``minimum`` (a bool is not one; a numpy integer is), with one
    ``ConfigError`` naming ``name`` (the option as the user wrote it)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ConfigError(f"{name} must be a whole number >= {minimum}, got {value!r}")


def check_pixel_range(value: object, name: str = "model.pixel_range") -> tuple[int, ...]:
    """``value`` as a 16-bit pixel range: () (none set) or (low, high), whole numbers with 0 <= low < high <= 65535;
    anything else is one ``ConfigError`` naming ``name``."""
    if value is None or (isinstance(value, list | tuple) and len(value) == 0):
        return ()
    if (not isinstance(value, list | tuple) or len(value) != 2
            or not all(isinstance(v, Integral) and not isinstance(v, bool) for v in value)
            or not 0 <= value[0] < value[1] <= 65535):
        raise ConfigError(f"{name} must be [] (8-bit frames as they are, 16-bit frames' high byte) or [low, high]: "
                          f"two whole numbers, 0 <= low < high <= 65535, the 16-bit values shown as black and white; "
                          f"got {value!r}")
    return int(value[0]), int(value[1])


def model_differences(asked: ModelConfig, other: ModelConfig, other_is: str) -> list[str]:
    """The model settings in which ``asked`` differs from ``other``, as 'name=asked (<other_is> value)'."""
    return [f"{k}={v!r} ({other_is} {getattr(other, k)!r})" for k, v in vars(asked).items() if getattr(other, k) != v]


# The scoring settings an ONNX export's graph computes with, fixed when it was traced (export.export_onnx): a config
# that asks for others cannot be honoured by that graph
EXPORT_FIXED = ("psnr_peak", "regular_score", "test_update", "gamma")


def export_fixed_differences(asked: Config, export: Config) -> list[str]:
    """The eval settings (``EXPORT_FIXED``) in which ``asked`` differs from what an export's graph was traced with
    (``export``, its sidecar's config), as 'eval.name=asked (the export has value)'. Those the graph does not use are
    not compared: test_update and gamma without memory, gamma without the test-time update."""
    names = [n for n in EXPORT_FIXED if (n != "test_update" or export.model.memory)
             and (n != "gamma" or export.model.memory and export.eval.test_update)]
    return [f"eval.{n}={getattr(asked.eval, n)!r} (the export has {getattr(export.eval, n)!r})"
            for n in names if getattr(asked.eval, n) != getattr(export.eval, n)]


def check_same_model(model: object, config: Config) -> None:
    """Refuse a ``config`` whose model.* settings differ from the trained ``model``'s (an override may change how a
    model is scored, eval.*, never what it is). An ONNX export (its ``config`` a whole Config, the sidecar's) is checked
    the same way, and for the eval settings its graph fixed at export (``EXPORT_FIXED``)."""
    actual = getattr(model, "config", None)
    export = actual if isinstance(actual, Config) else None
    if export is not None:
        actual = export.model
    if isinstance(actual, ModelConfig) and actual != config.model:
        fix = ("; an ONNX export's graph fixes them when it is exported" if export is not None
               else "; only eval.* can change")
        raise ConfigError(f"the config's model settings differ from the model's: model."
                          f"{', model.'.join(model_differences(config.model, actual, 'the model has'))}{fix}")
    if export is not None and (differ := export_fixed_differences(config, export)):
        raise ConfigError(f"{', '.join(differ)}: an ONNX export's graph fixes this setting when it is exported; score the "
                          "PyTorch model it was exported from, or export again with the setting (export_onnx with that config)")


def _typed(value: object, default: object, name: str) -> object:
    """``value`` of a field whose default is ``default``, in the default's type: a whole number for an int field (a
    numpy integer made an int; a bool is none), a number for a float field (made a float), a list for a list field
    (a tuple made one); anything else is one ``ConfigError`` naming ``name`` (was: a value set by hand in Python, such
    as train.epochs = "2" or train.batch_size = 2.5, passed validate and failed as a TypeError inside training)."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        expected = "true or false"
    elif isinstance(default, int):
        if isinstance(value, Integral) and not isinstance(value, bool):
            return int(value)
        expected = "a whole number"
    elif isinstance(default, float):
        if isinstance(value, Real) and not isinstance(value, bool):
            return _as_float(value, name)
        expected = "a number"
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
        expected = "text"
    elif isinstance(default, list):
        if isinstance(value, list | tuple):
            return list(value)
        expected = "a list"
    else:
        if isinstance(value, type(default)):
            return value
        expected = f"a {type(default).__name__}"
    raise ConfigError(f"{name} must be {expected}, got {printable(repr(value))[:80]}")


def _as_float(value: Real, name: str) -> float:
    """``value`` as a float; a whole number past a float's range (10**400) is one ``ConfigError`` naming ``name`` (was:
    float()'s OverflowError traceback)."""
    try:
        return float(value)
    except OverflowError:
        raise ConfigError(f"{name} must be a finite number, got {printable(repr(value))[:40]}...") from None


def _check_types(config: Config, source: str) -> None:
    """Every field of ``config`` in its type (``_typed``), checked in place: a Config changed by hand in Python gets
    the check a config file's values get from ``_set_field``."""
    for section in SECTIONS:
        kind = type(getattr(Config(), section))
        if not isinstance(getattr(config, section), kind):
            raise ConfigError(f"{source}: {section} must be a {kind.__name__}, got {printable(repr(getattr(config, section)))[:80]}")
    for obj, prefix in ((config, ""), (config.model, "model."), (config.train, "train."), (config.eval, "eval.")):
        defaults = type(obj)()
        for f in dataclasses.fields(obj):
            default = getattr(defaults, f.name)
            if not dataclasses.is_dataclass(default):
                setattr(obj, f.name, _typed(getattr(obj, f.name), default, f"{source}: {prefix}{f.name}"))


def _check_numbers(config: Config, source: str) -> None:
    """Every number finite (TOML accepts nan and inf) and in its range, naming the field at fault."""
    for section in ("model", "train", "eval"):
        for f in dataclasses.fields(getattr(config, section)):
            value = getattr(getattr(config, section), f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{source}: {section}.{f.name} must be a finite number, got {value}")
    m, t = config.model, config.train
    minimum = {"model.t_length": (m.t_length, 1), "model.width": (m.width, 1), "model.memory_size": (m.memory_size, 2 if m.memory else 1),
               "train.threads": (t.threads, 0)}
    for name, (value, low) in minimum.items():
        if value < low:
            raise ConfigError(f"{source}: {name} must be >= {low}, got {value}")
    # far above any published setting; larger values only exhaust memory (or run for days) before failing
    maximum = {"model.t_length": (m.t_length, 64), "model.width": (m.width, 1024), "model.memory_size": (m.memory_size, 10_000),
               "model.image_size": (m.image_size, MAX_IMAGE_SIZE), "train.threads": (t.threads, MAX_THREADS)}
    for name, (value, high) in maximum.items():
        if value > high:
            raise ConfigError(f"{source}: {name} must be at most {high}, got {value}")
    if not 0 <= t.seed < 2**32:  # the per-epoch shuffle seeds are seed * 100003 + epoch, within torch's 64 bits
        raise ConfigError(f"{source}: train.seed must lie in [0, 2**32), got {t.seed}")
    if not t.lr > 0:
        raise ConfigError(f"{source}: train.lr must be > 0, got {t.lr}")
    if t.lambda_compact < 0 or t.lambda_separate < 0:
        raise ConfigError(f"{source}: train.lambda_compact and train.lambda_separate must be >= 0")
    if t.checkpoint_minutes < 0:
        raise ConfigError(f"{source}: train.checkpoint_minutes must be >= 0 (0: checkpoint only at epoch ends), got {t.checkpoint_minutes}")
    if not 0 <= t.holdout < 1:
        raise ConfigError(f"{source}: train.holdout must lie in [0, 1), got {t.holdout}")
    if not all(isinstance(name, str) and name for name in t.holdout_videos):
        raise ConfigError(f"{source}: train.holdout_videos must be a list of video names, got {t.holdout_videos!r}")


def _set_field(obj: Any, key: str, value: Any, where: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if key not in fields:
        raise ConfigError(f"{where}: unknown field {key!r} (known: {', '.join(fields)})")
    current = getattr(obj, key)
    if isinstance(current, bool) and not isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be true or false, got {printable(repr(value))[:80]}")
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = _as_float(value, f"{where}: {key}")
    if type(current) is not type(value) and not (isinstance(current, str) and isinstance(value, str)):
        raise ConfigError(f"{where}: {key} must be {type(current).__name__}, got {printable(repr(value))[:80]}")
    setattr(obj, key, value)


def _parse_value(raw: str, current: object = None) -> Any:
    """An override's value: TOML, else, for a number field (``current``, its value now, an int or a float), a number
    as Python writes it (TOML refuses ``.001``, ``5.`` and ``010``, which were refused as text), else the bare word as text."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except (tomllib.TOMLDecodeError, ValueError):  # ValueError: a whole number of more than 4300 digits (Python's limit)
        pass
    if isinstance(current, int | float) and not isinstance(current, bool):
        try:
            return int(raw) if isinstance(current, int) else float(raw)
        except ValueError:
            pass
    return raw


def recipe_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("mnad.configs").iterdir() if p.name.endswith(".toml"))


# A camera's model is scored causally (calibrated) on the worst region of the frame: both terms of S_t, the PSNR of the
# worst patch and the memory distance of the worst block of queries, over the same regions (docs/results.md, "The
# stream protocol", says how this was chosen). `mnad calibrate` then chooses the scoring on pseudo-anomalies of the
# footage (docs/method.md 9.2); this is what it scores with under `--scoring config`.
OWN_FOOTAGE_SCORING = ("eval.psnr_region=patch", "eval.distance_region=patch")
DEFAULT_HOLDOUT = 0.1  # own footage: the tail of each video kept out of training, for calibration


def own_footage_config(recipe: Config, settings: Callable[[Config], Config] | None = None) -> Config:
    """``recipe`` made to train on one's own footage (``mnad train --data``): every video of the folder (no benchmark
    layout), scored on the worst region (OWN_FOOTAGE_SCORING), the last DEFAULT_HOLDOUT of each video held out for
    calibration unless whole videos are (train.holdout_videos, from the recipe or ``settings``; train.holdout then
    still adds tails). ``settings`` applies the user's own settings (the CLI's options); they are applied last, so
    they win."""
    settings = settings or (lambda config: config)
    config = recipe.override(["dataset=", *OWN_FOOTAGE_SCORING])
    if not settings(config).train.holdout_videos:
        config = config.override([f"train.holdout={DEFAULT_HOLDOUT}"])
    config = settings(config)
    if config.dataset:  # was: the folder read as a data root, <folder>/<dataset>/training trained on as own footage
        raise ConfigError(f"dataset {config.dataset!r} (--dataset, --set dataset=...) with own footage (--data): own footage "
                          "is every video and frame folder in its folder, no dataset's layout; leave the dataset out, or "
                          "train on a dataset's layout with --data-root")
    return config


def load_config(name_or_path: str | os.PathLike[str]) -> Config:
    """Load a recipe by name (``ped2_pred``) or from a TOML file path."""
    if not isinstance(name_or_path, str | os.PathLike):
        raise ConfigError(f"load_config: name_or_path must be a recipe name or a .toml path, got {name_or_path!r}")
    if not str(name_or_path).strip():  # Path('') is '.', the current folder: was ".: recipe file not found"
        raise ConfigError(f"no recipe given (an empty name); known: {', '.join(recipe_names())}, or a .toml file's path")
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if path.is_dir():
            raise ConfigError(f"{path}: a folder, not a recipe file (a .toml file, or a recipe's name: {', '.join(recipe_names())})")
        if not path.is_file():
            raise ConfigError(f"{path}: recipe file not found")
        try:  # utf-8-sig: a recipe saved by an editor that writes a byte-order mark reads too
            text, source = path.read_bytes().decode("utf-8-sig"), str(path)
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); a recipe is a TOML file") from exc
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the recipe ({exc.strerror or exc})") from exc
    else:
        resource = resources.files("mnad.configs") / f"{name_or_path}.toml"
        if not resource.is_file():
            raise ConfigError(f"unknown recipe {str(name_or_path)!r}; known: {', '.join(recipe_names())}")
        text, source = resource.read_text(encoding="utf-8"), f"recipe {name_or_path}"
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:  # ValueError: a number of more than 4300 digits (was: a traceback)
        raise ConfigError(f"{source}: not valid TOML ({exc})") from exc
    return Config.from_dict(data, source=source)
