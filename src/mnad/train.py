"""Training: one flat loop. Adam, cosine annealing per epoch, the memory updated after every step.

A checkpoint (weights, memory, optimiser, scheduler, epoch) is written atomically after every epoch, and part way
through one every ``train.checkpoint_minutes`` (with the batches done and their loss sums); ``resume`` continues from
it. Batch order depends only on (seed, epoch), so a resumed run repeats an uninterrupted one.

Under ``torchrun`` the same loop runs on every rank (mnad.distributed, docs/distributed.md): ``train.batch_size`` is
the global batch, split evenly over the ranks; gradients are averaged by DDP, the memory update is reduced over all
ranks' queries, and only rank 0 writes files.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from mnad import distributed, precision
from mnad.atomic import atomic_write, remove_stale_temps
from mnad.checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    TRAIN_STATE_FILE,
    check_state_dtypes,
    non_finite,
    read_checkpoint,
    save_checkpoint,
    save_model,
)
from mnad.config import Config, EvalConfig, TrainConfig
from mnad.data import ClipDataset, FrameStore, Video, list_videos, open_video, split_videos
from mnad.data.spans import footage_span
from mnad.data.videos import FrameRange
from mnad.errors import CheckpointError, ConfigError, DataError, Terminated, os_reason, printable
from mnad.interrupts import held_interrupts
from mnad.losses import Losses, mnad_loss
from mnad.model import MNAD
from mnad.outputs import TRAIN_LOG, output_path, read_train_log
from mnad.run_folder import (
    HOLDOUT_FILE,
    TENSORBOARD_DIR,
    RunFolderLock,
    check_run_folder,
    discard_earlier_run,
    set_aside_run,
)
from mnad.threads import apply_threads

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # tensorboard is an optional package
    from torch.utils.tensorboard import SummaryWriter

LOG_FILE = TRAIN_LOG
LOSS_NAMES = [f.name for f in dataclasses.fields(Losses)]  # total, frame, compact, separate: the log's loss_* keys
# train settings that shape the optimisation: a resume keeps them, or the run would be neither the one asked for nor
# the one it continues. The others choose where and how fast it runs and what is kept, and may change across resumes
# (bf16 too: a bf16 run may go on in fp32 where bf16 is not native, as precision.training_precision does itself)
RESUME_FIXED = ("epochs", "batch_size", "lr", "lambda_compact", "lambda_separate", "seed", "clip_stride", "sync_batchnorm",
                "holdout", "holdout_videos")


def training_videos(config: Config, data_root: str | Path, *, decode: bool = True) -> list[Video]:
    """The training split of the benchmark layout of ``config.dataset``, or, with no dataset (own footage, ``mnad
    train --data``), every video and frame folder in the folder, whatever their names. Video files are counted by
    their one decode to disk at the model's size (``decode_as``), checked to fit together first; ``decode`` False (a
    reader of a few clips, such as figures) decodes nothing here: a video is decoded when read."""
    decode_as = (config.model.image_size, config.model.channels) if decode else None
    if config.dataset:
        return split_videos(data_root, config.dataset, "training", config.model.pixel_range, decode_as=decode_as)
    # own footage is never read as a layout: a camera folder named Train/ or training/ there is one of its videos
    # (was: read as the training split, the folder's other videos left out, unsaid)
    return list_videos(data_root, config.model.pixel_range, decode_as=decode_as)


def split_holdout(
    videos: list[Video], fraction: float, min_frames: int = 1, whole: list[str] | tuple[str, ...] = ()
) -> tuple[list[Video], list[FrameRange]]:
    """Keep the videos named in ``whole`` and the last ``fraction`` of each other video's frames (at least
    ``min_frames``, one clip) out of training, for calibration. A held-out part of fewer than ``min_frames`` frames
    (a video shorter than one clip) is no calibration footage: it is left out of both (``warn_unused`` says so)."""
    names = [v.name for v in videos]
    missing = sorted(set(whole) - set(names))
    if missing:
        raise ConfigError(f"train.holdout_videos: no training video named {', '.join(missing)} (videos: {', '.join(names)})")
    held = [FrameRange(v, 0, len(v)) for v in videos if v.name in whole]
    videos = [v for v in videos if v.name not in whole]
    if not videos:
        raise ConfigError("train.holdout_videos holds out every training video")
    train_part = videos
    if fraction > 0:
        train_part = []
        for video in videos:
            keep = max(len(video) - max(int(round(len(video) * fraction)), min_frames), 0)
            train_part.append(FrameRange(video, 0, keep))
            held.append(FrameRange(video, keep, len(video)))
    return train_part, [h for h in held if len(h) >= max(min_frames, 1)]


def warn_unused(footage: list[Video], trained: list[Video], held: list[FrameRange], t_length: int, *,
                holding_out: bool) -> None:
    """One warning naming the videos of ``footage`` that give no training clip (fewer than ``t_length`` frames once
    their held-out part is off), and, where footage is held out (``holding_out``), where each went: into the held-out
    part, or nowhere (too short for calibration too: neither trained on nor held out); another where a hold-out was
    asked but no part is long enough to be kept (``mnad calibrate`` then needs --data)."""
    if holding_out and not held:
        log.warning("no footage is held out for calibration (no held-out part has a clip of %d frames): calibrate with "
                    "--data and normal footage the model was not trained on", t_length)

    def source(video: Video) -> Video:
        return video.video if isinstance(video, FrameRange) else video

    trained_on = {id(source(v)) for v in trained if len(v) >= t_length}
    held_out = {id(source(h)) for h in held}
    whole = {id(source(h)) for h in held if len(h) == len(source(h))} - {id(source(v)) for v in trained}
    candidates = [v for v in footage if id(v) not in whole]  # a video held out whole is calibration footage, as asked
    short = [v for v in candidates if id(v) not in trained_on]
    if not short:
        return
    went = {True: "held out for calibration", False: "neither trained on nor held out: too short for calibration too"}
    names = [f"{v.name} ({went[id(v) in held_out]})" if holding_out else v.name for v in short]
    log.warning("%d of the %d training videos have fewer frames than a clip of %d and are not used: %s", len(short),
                len(candidates), t_length, ", ".join(names[:5]) + (", ..." if len(names) > 5 else ""))


def training_clips(videos: list[Video]) -> list[list]:
    """What a training checkpoint records of its footage, and a resume compares: each training video's name (with
    its frame range where part of it is held out) and frame count, in order. Names, not paths: a data folder may move."""
    return [[v.name, len(v)] for v in videos]


def check_epochs(config: Config) -> None:
    """Refuse ``train.epochs`` below 1: config allows 0 (a recipe used only to score), but a run of 0 epochs would
    write a random model."""
    if config.train.epochs < 1:
        raise ConfigError(f"train.epochs must be >= 1 to train, got {config.train.epochs} (the model would keep its random "
                          "initial weights)")


def check_one_batch(clips: int, config: Config, data_root: str | Path) -> None:
    """Refuse training footage of ``clips`` clips that fill no batch of ``train.batch_size``."""
    if clips < config.train.batch_size:
        raise DataError(f"{data_root}: {clips} training clips of {config.model.t_length} frames, fewer than one batch of "
                        f"{config.train.batch_size}")


class _Planned(Video):
    """A training video of a known length whose frames are not written yet: counted, never read."""

    def __init__(self, name: str, length: int) -> None:
        self.name, self.path, self._length = name, Path(name), length

    def __len__(self) -> int:
        return self._length


def check_planned_training(config: Config, lengths: dict[str, int], data_root: str | Path) -> None:
    """The checks ``train`` makes before it reads a frame, made for footage not yet written (the demo's scene, whose
    training videos are named and sized by ``lengths``), so that a run refused by them writes nothing: the config,
    ``train.epochs``, the device, and one batch of clips after the held-out part and the clip stride (counted by the
    split and the dataset training uses)."""
    config.validate("config")
    check_epochs(config)
    precision.checked_device(config.train.device)
    t_length = config.model.t_length
    videos, _ = split_holdout([_Planned(n, k) for n, k in lengths.items()], config.train.holdout, t_length,
                              config.train.holdout_videos)
    store = FrameStore(videos, config.model.image_size, config.model.channels, cache=False)
    check_one_batch(len(ClipDataset(store, t_length, stride=config.train.clip_stride)), config, data_root)


def holdout_videos(run_dir: str | Path, pixel_range: list[int] | tuple[int, ...] = ()) -> list[FrameRange]:
    """The held-out frames recorded by a training run (``holdout.json`` in its folder), 16-bit frames mapped by
    ``pixel_range`` (the model's ``model.pixel_range``)."""
    path = Path(run_dir) / HOLDOUT_FILE
    if not path.is_file():
        raise DataError(f"{run_dir}: the run kept no held-out footage ({HOLDOUT_FILE} missing); pass --data")
    try:
        records = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: not UTF-8 or not JSON; RecursionError: nested too deep
        raise DataError(f"{path}: not a readable held-out footage record ({exc}); pass --data") from exc

    def whole(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    if not isinstance(records, list) or not records or not all(
        isinstance(r, dict) and isinstance(r.get("path"), str) and whole(r.get("start")) and whole(r.get("stop"))
        and r["start"] < r["stop"] for r in records
    ):
        raise DataError(f"{path}: not an mnad held-out footage record (expected a list of {{path, start, stop}} with "
                        "0 <= start < stop); pass --data")
    ranges = []
    for r in records:
        video = open_video(r["path"], pixel_range)
        if r["stop"] > len(video):
            raise DataError(f"{path}: held-out frames {r['start']}:{r['stop']} of {r['path']}, which has {len(video)} frames "
                            "(the footage changed since training?); pass --data")
        ranges.append(FrameRange(video, r["start"], r["stop"]))
    return ranges


def tensorboard_writer(out_dir: Path) -> SummaryWriter:  # imported only when asked for
    """A TensorBoard writer for ``out_dir/tensorboard`` (train.tensorboard = true); tensorboard is an optional package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ConfigError("train.tensorboard = true needs the tensorboard package: pip install tensorboard") from exc
    return SummaryWriter(log_dir=str(out_dir / TENSORBOARD_DIR))


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Adam's state as flat tensors (safetensors) plus the JSON-able rest."""
    state = optimizer.state_dict()
    tensors = {f"optim.{i}.{k}": v for i, s in state["state"].items() for k, v in s.items()}
    return tensors, {"param_groups": state["param_groups"]}


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def read_train_state(path: Path, cfg: Config, clips: list[list] | None = None,
                     batches: int | None = None) -> tuple[dict[str, torch.Tensor], Config, dict]:
    """The training checkpoint ``path`` that a resume of the run ``cfg`` describes continues from, checked before any
    frame is decoded: (tensors, the run's stored config, extra metadata). ``restore_train_state`` loads it.

    Refused with a CheckpointError naming the file: a run of other model or RESUME_FIXED settings; a file that is
    not a training checkpoint of this run (a model file copied to ``last.safetensors``, one of another version, an
    epoch count outside the run's); one written part way through an epoch (``step``) whose batches done are not
    within the epoch's ``batches`` (the run's batches an epoch) or whose loss sums and seconds are not numbers
    (``check_mid_epoch``); ``clips`` (the training footage, ``training_clips``) other than the checkpoint records, as
    its batches would not be the run's."""
    tensors, stored, extra = read_checkpoint(path)
    if stored.model != cfg.model or stored.dataset != cfg.dataset:
        raise CheckpointError(f"{path}: was trained with other model settings; resume with the same recipe")
    changed = [f"train.{k} {getattr(stored.train, k)!r} -> {getattr(cfg.train, k)!r}"
               for k in RESUME_FIXED if getattr(stored.train, k) != getattr(cfg.train, k)]
    if changed:
        raise CheckpointError(f"{path}: the run was trained with other settings ({', '.join(changed)}); resume "
                              "with the same settings, or start a new run (another --out, or --overwrite)")
    epoch = extra.get("epoch")
    if not any(k.startswith("optim.") for k in tensors) or not isinstance(extra.get("param_groups"), list) \
            or not isinstance(extra.get("scheduler"), dict) or isinstance(epoch, bool) or not isinstance(epoch, int):
        raise CheckpointError(f"{path}: not a training checkpoint (no optimiser state or epoch: a model file saved "
                              f"under this name?); a run resumes from the {TRAIN_STATE_FILE} its training wrote")
    recorded = extra.get("clips")  # absent in checkpoints written before it was recorded
    # as training writes them (training_clips: [name, frames] each; the last epoch's log record a JSON object), before
    # they are compared or carried on (was: a TypeError traceback for clips not a list of such pairs)
    if recorded is not None and not (isinstance(recorded, list) and all(
            isinstance(r, list) and len(r) == 2 and isinstance(r[0], str) and isinstance(r[1], int) and not isinstance(r[1], bool)
            for r in recorded)) or not isinstance(extra.get("record", {}), dict | None):
        raise CheckpointError(f"{path}: not a training checkpoint of mnad's (its record of the training footage, clips, "
                              "or of the last epoch, record, is not as training writes it)")
    if clips is not None and recorded is not None and recorded != clips:
        was = {tuple(r) for r in recorded if isinstance(r, list)}
        now = {tuple(c) for c in clips}
        diff = [f"{n} ({f} frames)" for n, f in sorted(was - now)][:3], [f"{n} ({f} frames)" for n, f in sorted(now - was)][:3]
        raise CheckpointError(f"{path}: the run was trained on other footage (then: {', '.join(diff[0]) or 'the same videos'}; now: "
                              f"{', '.join(diff[1]) or 'the same videos, in another order'}); resume with the data it was "
                              "trained on, or start a new run")
    if "step" in extra:
        check_mid_epoch(path, extra, cfg.train.epochs, batches)
    elif not 1 <= epoch <= cfg.train.epochs:
        raise CheckpointError(f"{path}: the checkpoint says {epoch} epochs were done, outside the run's 1 to {cfg.train.epochs}")
    return tensors, stored, extra


def check_mid_epoch(path: Path, extra: dict, epochs: int, batches: int | None) -> None:
    """Refuse, with a CheckpointError naming ``path``, the part of a mid-epoch checkpoint's metadata that a resume
    continues from unless it is one a run of ``epochs`` epochs of ``batches`` batches (None: not checked) writes:
    ``epoch`` (the epochs done) below ``epochs``, ``step`` (the batches done in the next) from 1 to the epoch's last
    but one (its last writes an epoch-end checkpoint), ``sums`` one finite number per loss, ``seconds`` >= 0."""
    def number(value: object) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)

    epoch, step, sums, seconds = extra["epoch"], extra["step"], extra.get("sums"), extra.get("seconds")
    if isinstance(step, bool) or not isinstance(step, int) or not isinstance(sums, list) or len(sums) != len(LOSS_NAMES) \
            or not all(number(v) for v in sums) or not number(seconds) or seconds < 0:
        raise CheckpointError(f"{path}: not a training checkpoint of mnad's (a mid-epoch one needs whole batches done, "
                              f"{len(LOSS_NAMES)} loss sums and seconds >= 0; got step {step!r}, sums {sums!r:.80}, "
                              f"seconds {seconds!r})")
    if not 0 <= epoch < epochs:
        raise CheckpointError(f"{path}: the checkpoint says {epoch} epochs were done and the next was under way, outside "
                              f"the run's {epochs}")
    if step < 1 or batches is not None and step >= batches:
        # never "1 to 0" or "1 to -1": an epoch of one batch (or none) writes no mid-epoch checkpoint
        within = ("1 or more" if batches is None else f"the epoch's 1 to {batches - 1}" if batches > 1 else
                  f"any: an epoch of {batches} batch{'es' * (batches != 1)} writes none part way")
        raise CheckpointError(f"{path}: the checkpoint says {step} batches of epoch {epoch + 1} were done, outside "
                              f"{within} (the footage changed?)")


def computed_with(train: TrainConfig) -> str:
    """How a run's steps compute, in the settings a resume may change that change their rounding (not what they
    compute): precision, layout, compiled or eager. Each epoch's record says it (``computed``), as config.json says
    only the last session's settings."""
    return ", ".join(("bf16" if train.bf16 else "fp32", "channels_last" if train.channels_last else "NCHW",
                      "compiled" if train.compile else "eager"))


def epoch_computed_with(extra: dict | None, stored: TrainConfig | None, now: str) -> str:
    """``computed`` of the epoch a resume goes on with: ``now``, after how its batches before a mid-epoch checkpoint
    (``extra``, with the checkpoint's config ``stored``) computed where that differs ('A then B')."""
    if extra is None or "step" not in extra or stored is None:
        return now
    earlier = extra.get("computed")
    earlier = earlier if isinstance(earlier, str) and earlier else computed_with(stored)  # older checkpoints: their config's
    return earlier if earlier.rsplit(" then ", 1)[-1] == now else f"{earlier} then {now}"


def resumed_step(extra: dict | None) -> tuple[int, list[float] | None, float]:
    """Where a resume from the checkpoint metadata ``extra`` (None: a new run) starts in its first epoch: the batches
    done, their loss sums and the seconds the epoch had run; (0, None, 0.0) from an epoch-end checkpoint."""
    if extra is None or "step" not in extra:
        return 0, None, 0.0
    return extra["step"], extra["sums"], float(extra["seconds"])


def epoch_indices(sampler: torch.utils.data.DistributedSampler, epoch: int, skip: int) -> list[int]:
    """This rank's clips of ``epoch``, in the sampler's order (from the seed and epoch only), less the first ``skip``:
    those of the batches a mid-epoch checkpoint says were done, dropped without reading them."""
    sampler.set_epoch(epoch)
    return list(sampler)[skip:]


def checkpoint_due(since: float, minutes: float, step: int, batches: int) -> bool:
    """Whether to checkpoint after batch ``step`` of the epoch's ``batches``: ``minutes`` (train.checkpoint_minutes;
    0: never) have passed ``since`` the last checkpoint (a ``time.monotonic()`` reading) and the epoch is not at its
    last batch (its end writes one)."""
    return minutes > 0 and step < batches and time.monotonic() - since >= minutes * 60


POLL_SECONDS = 5.0  # on several ranks: about how often rank 0 tells the others whether a mid-epoch checkpoint is due


class CheckpointClock:
    """When to write a checkpoint part way through an epoch: once ``checkpoint_due`` says so on rank 0's clock, at
    the same step on every rank, so that the ranks take the write together (``distributed.together``).

    On one process it asks at every step (a clock reading, nothing more). On several ranks rank 0 asks at agreed
    steps only, about every POLL_SECONDS of training (the first at the epoch's first step), and shares in one
    broadcast its answer and the step at which it asks next (from its measured time a step): a checkpoint comes at
    most about POLL_SECONDS late, and the loop reads nothing back from the devices in between."""

    def __init__(self, minutes: float, ctx: distributed.Context) -> None:
        self.minutes, self.ctx = minutes, ctx
        self.since = time.monotonic()  # the last checkpoint's time
        self.next_step = 1  # of the epoch, where the ranks next ask (several ranks)
        self.asked = (0, time.perf_counter())  # rank 0's (step, time) of its last asking

    def start_epoch(self, done: int) -> None:
        """An epoch starts after its ``done`` batches (a mid-epoch checkpoint's; else 0)."""
        self.next_step, self.asked = done + 1, (done, time.perf_counter())

    def saved(self) -> None:
        """A checkpoint was written now."""
        self.since = time.monotonic()

    def due(self, step: int, batches: int) -> bool:
        """Whether to checkpoint after batch ``step`` of the epoch's ``batches``: the same answer on every rank."""
        if not self.ctx.enabled:
            return checkpoint_due(self.since, self.minutes, step, batches)
        if self.minutes <= 0 or step != self.next_step:
            return False
        due, ahead = 0.0, 1.0
        if self.ctx.is_main:
            due = float(checkpoint_due(self.since, self.minutes, step, batches))
            now = time.perf_counter()
            per_step = (now - self.asked[1]) / max(step - self.asked[0], 1)
            ahead = float(max(1, min(batches, int(POLL_SECONDS / per_step) if per_step > 0 else batches)))
            self.asked = (step, now)
        due, ahead = distributed.from_main([due, ahead], self.ctx)
        self.next_step = step + int(ahead)
        return bool(due)


def training_state(model: MNAD, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                   epoch: int, clips: list[list]) -> tuple[dict[str, torch.Tensor], dict]:
    """A training checkpoint's tensors (optimiser and model) and metadata after ``epoch`` epochs, on ``clips``."""
    tensors, extra = optimizer_tensors(optimizer)
    tensors.update({f"model.{k}": v for k, v in model.state_dict().items()})
    extra.update(epoch=epoch, scheduler=scheduler.state_dict(), clips=clips)
    return tensors, extra


def save_mid_epoch(path: Path, tensors: dict[str, torch.Tensor], cfg: Config, extra: dict, sums: torch.Tensor,
                   kept: list[tuple[int, int]]) -> None:
    """Write the mid-epoch checkpoint ``path`` as the epoch-end one is (atomically, a Ctrl-C or SIGTERM waiting), its
    ``extra`` with the epoch's loss ``sums`` so far, and record it in ``kept`` (train's: what a stop says is left) in
    the same held block, so that a signal that came during the write finds it recorded; nothing where a loss, weight
    or state is NaN or Inf (the epoch's end stops the run, ``check_diverged``)."""
    values = sums.tolist()
    if not all(math.isfinite(v) for v in values) or non_finite(tensors) is not None:
        return
    with held_interrupts():
        save_checkpoint(path, tensors, cfg, extra | {"sums": values})
        kept.append((extra["epoch"], extra["step"]))


def without_calibration(config: Config) -> Config:
    """``config`` with the calibration it carries (one of a calibrated model's, loaded to train another) dropped and
    the scoring settings it replaced put back (``calibrate.uncalibrated``), with one warning: a calibration's threshold
    and ranges were fitted to the scores of other weights and would be wrong for the new model's."""
    if not config.eval.calibration and config.eval.normalization != "calibrated":
        return config
    from mnad.calibrate import uncalibrated  # here: mnad.calibrate imports this module

    plain = uncalibrated(config) if config.eval.calibration else config
    if plain.eval.normalization == "calibrated":  # no calibration recorded to say what it replaced: the default
        plain = dataclasses.replace(plain, eval=dataclasses.replace(plain.eval, normalization=EvalConfig().normalization))
    log.warning("the config carries a calibration (eval.normalization = 'calibrated'), fitted to another model's scores: "
                "it is dropped, the new model is trained with eval.normalization = %r; calibrate it once trained "
                "(mnad calibrate --checkpoint RUN)", plain.eval.normalization)
    return plain


def kept_eval_settings(config: Config, stored: Config, *, warn: bool = True) -> Config:
    """A resumed run's config: ``config`` with the eval.* settings the run was started with (``stored``, its
    checkpoint's). They are the run's, fixed when it started, as its train settings are: a resume only continues
    training and never changes how its model scores (a command line's default eval.* would otherwise silently replace
    the run's own). One warning per field that ``config`` gives otherwise, saying which value is kept; scoring
    settings are changed where a model is used: ``mnad evaluate`` or ``calibrate --set eval.FIELD=VALUE``."""
    if warn:
        for f in dataclasses.fields(EvalConfig):
            ours, given = getattr(stored.eval, f.name), getattr(config.eval, f.name)
            if ours != given:
                log.warning("resume: the run keeps eval.%s = %r, set when it started (this run's config gives %r); to score "
                            "with another value, pass --set eval.%s=VALUE to mnad evaluate or calibrate",
                            f.name, ours, given, f.name)
    return dataclasses.replace(config, eval=stored.eval)


def restore_train_state(
    path: Path,
    tensors: dict[str, torch.Tensor],
    extra: dict,
    model: MNAD,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> int:
    """Load a training checkpoint that ``read_train_state`` checked (read from ``path``) into ``model``,
    ``optimizer`` and ``scheduler``; returns the epochs done. A state that does not fit is a CheckpointError."""
    state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    check_state_dtypes(path, model, state)  # load_state_dict would cast another kind of tensor silently
    try:
        model.load_state_dict(state)
        load_optimizer(optimizer, tensors, extra["param_groups"])
        scheduler.load_state_dict(extra["scheduler"])
        for group in optimizer.param_groups:  # Adam would fail only at its first step on moments of another shape
            for param in group["params"]:
                state = optimizer.state.get(param, {})
                for name, value in list(state.items()):
                    if value.dim() and value.shape != param.shape:
                        raise ValueError(f"optimiser state {name!r} of shape {tuple(value.shape)} for a weight of shape {tuple(param.shape)}")
                    if value.dim() and value.stride() != param.stride():
                        # loaded contiguous: in the weight's layout (channels_last) again, as an uninterrupted run holds
                        # Adam's moments, so that its updates do not mix layouts after every resume
                        state[name] = torch.empty_like(param, dtype=value.dtype).copy_(value)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: the training state does not fit this run's model and optimiser ({detail})") from exc
    return extra["epoch"]


def finished(extra: dict, cfg: Config, out_dir: Path) -> bool:
    """Whether the run in ``out_dir``, whose training checkpoint's metadata is ``extra``, is finished: the checkpoint
    is the end of its last epoch (not one part way into it) and the final model was written (a kill between the two
    leaves a run that a resume finishes by writing it)."""
    return extra.get("epoch") == cfg.train.epochs and "step" not in extra and (out_dir / MODEL_FILE).is_file()


def check_compiler(cfg: TrainConfig, device: torch.device) -> None:
    """Refuse ``train.compile`` on a CPU without a C++ compiler torch inductor can use (it compiles the graphs' CPU
    kernels with one, at the first step: a traceback after the run's files were written), as a ConfigError saying
    so. The compiler is looked for the way inductor looks for it (``CXX``, else g++); a torch without that lookup
    is not checked here (``train_step`` still reports a failed compilation in one line)."""
    if not cfg.compile or device.type != "cpu":
        return
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:
        return
    try:
        get_cpp_compiler()
    except Exception as exc:  # noqa: BLE001 -- torch's InvalidCxxCompiler, or whatever its private lookup raises
        detail = printable(str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__)
        raise ConfigError(f"train.compile = true needs a working C++ compiler for torch.compile on the CPU, and none "
                          f"was found ({detail}): install g++ or clang++ (or set CXX to one), or set "
                          "train.compile=false") from exc


def forward_losses(model: MNAD, net: nn.Module, clip: torch.Tensor, cfg: TrainConfig) -> tuple[Losses, torch.Tensor]:
    """The step's forward half: predict the target frame of each clip and the loss of Eq. 8 against the memory
    before this batch's update. Returns the losses and the queries (B, K, C) that the update reads."""
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    inputs, target = model.split_clip(clip)
    with torch.autocast(clip.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):  # the queries and memory maths stay fp32 (MNAD.forward)
        output = net(inputs.contiguous(memory_format=memory_format))
    return mnad_loss(model, output, target, cfg.lambda_compact, cfg.lambda_separate), output.queries


@functools.cache
def compiled_forward_losses(device_type: str) -> Callable[..., tuple[Losses, torch.Tensor]]:
    """``forward_losses`` through torch.compile (train.compile): the forward and, by AOTAutograd, its backward become
    two graphs whose small operations (BatchNorm, ReLU, concatenations, the memory read and losses) run fused.
    Compiles at the first step (tens of seconds to minutes on a CPU; torch caches the result on disk) and again only
    if a shape changes. One compiled function per device type for every model: the weights are inputs of the graphs,
    not constants. On a CPU the convolutions keep the layout they are given: inductor's layout optimisation would
    make them channels_last, whose fp32 backward convolutions were measured slower than NCHW on an AVX2 CPU."""
    return torch.compile(forward_losses, dynamic=False, options={"layout_optimization": device_type != "cpu"})


def train_step(
    model: MNAD,
    optimizer: torch.optim.Optimizer,
    clip: torch.Tensor,
    cfg: TrainConfig,
    *,
    net: nn.Module | None = None,
    ctx: distributed.Context | None = None,
) -> Losses:
    """One optimisation step on a batch of clips (B, T, C, H, W) already on the model's device: predict the target
    frame, the loss of Eq. 8, an Adam step, then the memory update (Eqs. 3-5). Returns the step's losses.

    ``net`` is what runs the forward pass (``model`` wrapped by DDP under torchrun; ``model`` itself by default);
    ``ctx`` reduces the memory update over the ranks. With ``cfg.compile`` the forward and backward run compiled
    (``compiled_forward_losses``); Adam and the memory update run eagerly either way: the same update code on the
    same queries. benchmarks/speed.py times this very function.
    """
    net = model if net is None else net
    if cfg.compile:  # one memory layout in, one graph: the DataLoader's batches and a contiguous one differ in strides
        try:
            losses, queries = compiled_forward_losses(clip.device.type)(model, net, clip.contiguous(), cfg)
        except torch._dynamo.exc.BackendCompilerFailed as exc:  # at the first step: no compiler, headers missing...
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"train.compile: torch.compile could not compile the training step ({printable(detail)}); "
                              "set train.compile=false and train again (--resume where a checkpoint was written, "
                              "else --overwrite)") from exc
    else:
        losses, queries = forward_losses(model, net, clip, cfg)
    optimizer.zero_grad(set_to_none=True)
    losses.total.backward()
    optimizer.step()
    if model.memory is not None:  # after the losses and the read: they use the pre-update items
        # over the queries of all ranks: every rank ends the step with the same items
        model.memory.update(queries.detach().reshape(-1, queries.shape[-1]),
                            reduce_max=ctx.reduce_max if ctx else None, reduce_sum=ctx.reduce_sum if ctx else None)
    return losses


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """What ``train_run`` did: ``model_path``, the final model file (what ``train`` returns); ``untouched``, True where
    ``resume`` found the run finished and left it as it is (nothing written: its model, perhaps calibrated in place
    since, is the one it was)."""

    model_path: Path
    untouched: bool


def train(
    config: Config,
    data_root: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> Path:
    """Train a model on the training videos under ``data_root``; returns the path of the final model file.

    ``out_dir`` is locked while this process writes it (a second writer gets a DataError at once). ``resume``
    continues the run there from its last checkpoint (an error if there is none, or if ``config`` changes one of its
    RESUME_FIXED settings or its footage; a finished run is left as it is); otherwise ``out_dir`` must hold no run,
    unless ``overwrite``: then the previous run's files are moved to ``<out_dir>/.mnad-train-earlier/`` before the
    new config is written, and deleted once the new run has written its model (``run_folder.set_aside_run``).
    A calibrated model or an export mnad wrote into ``out_dir`` (``run_folder.models_beside``) refuses both a new run
    and ``overwrite``: it holds the run's weights, and is moved out by the user, never deleted with the run.
    ``train_run`` says besides whether a finished run was left as it is.
    """
    return train_run(config, data_root, out_dir, resume=resume, overwrite=overwrite, progress=progress,
                     on_epoch=on_epoch).model_path


def train_run(
    config: Config,
    data_root: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> TrainedRun:
    """``train``, its model file's path with whether the run was left as it is (``TrainedRun``)."""
    if not isinstance(config, Config):
        raise ConfigError(f"train() needs a mnad.config.Config (load_config(name) gives one), got {type(config).__name__}")
    # refused before anything is locked, decoded or written: a wrong one would fail only where it is used (on_epoch
    # after the first epoch's files are written) or be taken for another ("no" is a true overwrite, which sets aside
    # the run there)
    wrong = [f"{name} must be True or False, got {printable(repr(value))[:60]}" for name, value in
             (("resume", resume), ("overwrite", overwrite), ("progress", progress)) if not isinstance(value, bool)]
    if on_epoch is not None and not callable(on_epoch):
        wrong.append(f"on_epoch must be a function, called as on_epoch(epoch, record), or None, got a "
                     f"{type(on_epoch).__name__}")
    if wrong:
        raise ConfigError(f"train(): {'; '.join(wrong)}")
    out_dir = output_path(out_dir, "out_dir (--out)")  # '' would be the current folder, which nobody means
    data_root = output_path(data_root, "data_root (--data-root)")  # not written, but '' is no more meant here
    kept: list[tuple[int, int]] = []  # what out_dir's checkpoint holds, once this run writes there (_train): (epochs, batches of the next)
    with RunFolderLock(out_dir) as lock:  # released however training ends
        try:
            model = _train(config, data_root, out_dir, lock, resume=resume, overwrite=overwrite, progress=progress,
                           on_epoch=on_epoch, kept=kept)
            # _train fills ``kept`` once the folder is this run's: a finished run returned as it is left it empty
            return TrainedRun(model, untouched=not kept)
        except (KeyboardInterrupt, Terminated) as stop:  # the CLI's last line says what is left (cli.kept_when_stopped)
            if kept:  # absent: stopped before it wrote anything
                stop.epochs_kept, stop.steps_kept = kept[-1]  # type: ignore[attr-defined]
            raise


def _train(
    config: Config,
    data_root: str | Path,
    out_dir: str | Path,
    lock: RunFolderLock,
    *,
    resume: bool,
    overwrite: bool,
    progress: bool,
    on_epoch: Callable[[int, dict], None] | None,
    kept: list[tuple[int, int]],
) -> Path:
    cfg, out_dir = config, Path(out_dir)
    cfg.validate("config")  # a Config built or changed in Python gets the checks a recipe gets
    cfg = without_calibration(cfg)
    check_epochs(cfg)
    ctx = distributed.setup(cfg.train.device)  # joins torchrun's process group, if any; one GPU per rank
    warn_unsynced_batchnorm(cfg.train, ctx)
    cfg = precision.training_precision(cfg, ctx.device)  # the run's config.json says what ran
    check_compiler(cfg.train, ctx.device)  # before anything is written: it would fail only at the first step
    # every rank has seen the folder before rank 0 writes to it; a refusal on any rank stops them all (so below)
    with distributed.together(ctx, "while checking the output folder"):
        check_run_folder(out_dir, resume=resume, overwrite=overwrite)  # every rank, before any data is decoded
        if ctx.is_main and out_dir.is_dir():
            lock.acquire()  # a second writer fails now; a new folder is locked when it is created
    device = ctx.device
    local_batch = distributed.local_batch_size(cfg.train.batch_size, ctx)  # train.batch_size is the global batch
    apply_threads(cfg)
    torch.manual_seed(cfg.train.seed)  # fixes the weight and memory initialisation

    with distributed.together(ctx, "while reading the training footage or checkpoint"):  # one machine's may differ
        footage = training_videos(cfg, data_root)
        videos, holdout = split_holdout(footage, cfg.train.holdout, cfg.model.t_length, cfg.train.holdout_videos)
        clips = training_clips(videos)
        checkpoint_path = out_dir / TRAIN_STATE_FILE
        store = FrameStore(videos, cfg.model.image_size, cfg.model.channels, cache=cfg.train.cache_frames)
        dataset = ClipDataset(store, cfg.model.t_length, stride=cfg.train.clip_stride)
        batches = len(dataset) // cfg.train.batch_size  # an epoch's, on any number of ranks (distributed.sampler)
        state = read_train_state(checkpoint_path, cfg, clips, batches) if resume else None  # checked before any frame is decoded
        if ctx.is_main:  # videos that give no clip: the run would learn less footage than it was given, unsaid
            warn_unused(footage, videos, holdout, cfg.model.t_length,
                        holding_out=cfg.train.holdout > 0 or bool(cfg.train.holdout_videos))
        check_one_batch(len(dataset), cfg, data_root)
        if cfg.train.cache_frames:
            dataset.preload()  # a bad frame fails now, before anything is written

    model = prepared_for_training(MNAD(cfg.model), cfg.train, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.train.epochs, 1))

    if state is not None and finished(state[2], cfg, out_dir):  # a finished run is left as it is: its model may
        # since have been calibrated in place (mnad calibrate --out RUN/model.safetensors), which a rewrite would undo
        restore_train_state(checkpoint_path, state[0], state[2], model, optimizer, scheduler)  # one that does not fit is still refused
        with distributed.together(ctx, "while leaving the finished run as it is"):
            if ctx.is_main:
                log.info("%s: the run there is finished (%d epochs); --resume leaves it as it is", out_dir, cfg.train.epochs)
                discard_earlier_run(out_dir)  # the run an --overwrite replaced, if a kill came between the model and this
        return out_dir / MODEL_FILE  # before ``kept`` is filled: train_run says the run was left as it is

    # from here on the folder is this run's
    kept.append((int(state[2].get("epoch", 0)), resumed_step(state[2])[0]) if state is not None else (0, 0))
    board = None
    with distributed.together(ctx, "while preparing the output folder"):  # what rank 0 writes, the others wait for
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            if ctx.is_main:
                lock.acquire()
                check_run_folder(out_dir, resume=resume, overwrite=overwrite)  # again, under the lock
                if overwrite:  # the old run's model never sits beside the new config, even if this run is killed; it is
                    # kept aside until this run has its model (discard_earlier_run below), so a failed retrain loses nothing
                    earlier = set_aside_run(out_dir)  # the run's files and what was written beside it (run_folder.output_names)
                    if earlier is not None:
                        log.warning("%s: the run there is kept in %s until this one has written its model", out_dir, earlier)
                remove_stale_temps(out_dir)  # left by a run killed while writing a checkpoint
            start_epoch = 0
            if state is not None:
                tensors, stored, extra = state
                start_epoch = restore_train_state(checkpoint_path, tensors, extra, model, optimizer, scheduler)
                if ctx.is_main and computed_with(stored.train) != computed_with(cfg.train) and start_epoch < cfg.train.epochs:
                    # allowed (a GPU's session, a CPU without native bf16), but the run is then neither setting's own
                    log.warning("%s: the run so far computed with %s, this session with %s: their rounding differs, so the "
                                "run is neither setting's uninterrupted one; config.json says this session's, each epoch's "
                                "record in %s says its own (computed)", out_dir, computed_with(stored.train),
                                computed_with(cfg.train), LOG_FILE)
                cfg = kept_eval_settings(cfg, stored, warn=ctx.is_main)
                if start_epoch == cfg.train.epochs:  # a finished run: nothing runs, the files keep saying what ran
                    cfg = stored
                if ctx.is_main:  # a kill -9 between the checkpoint and the epoch's other files: write them now
                    reconcile_log(out_dir / LOG_FILE, start_epoch, extra.get("record"))
                    if cfg.train.keep_epochs and start_epoch and "step" not in extra and not epoch_model(out_dir, start_epoch).exists():
                        save_model(epoch_model(out_dir, start_epoch), model, cfg, extra={"epochs": start_epoch})
            if ctx.is_main:
                atomic_write(out_dir / CONFIG_FILE, json.dumps(cfg.to_dict(), indent=2).encode())
            if holdout and ctx.is_main:
                # absolute: the run is calibrated from wherever `mnad calibrate` is started
                ranges = [{"path": str(Path(v.path).resolve()), "start": v.start, "stop": v.stop} for v in holdout]
                atomic_write(out_dir / HOLDOUT_FILE, json.dumps(ranges, indent=2).encode())
        except OSError as exc:
            raise DataError(f"{out_dir}: cannot write to the output folder ({exc.strerror or exc})") from exc
        if cfg.train.tensorboard and ctx.is_main:
            board = tensorboard_writer(out_dir)

    net = distributed.wrap(model, ctx, sync_batchnorm=cfg.train.sync_batchnorm)  # DDP on several ranks; `model` stays unwrapped
    sampler = distributed.sampler(dataset, ctx, seed=cfg.train.seed * 100_003)  # order from (seed, epoch) only
    # a resume from a mid-epoch checkpoint goes on in its epoch: its batches done are skipped, its loss sums and seconds
    # continue, so the epoch's record is an uninterrupted run's (on several ranks, the sums before the stop are rank 0's)
    last_record = state[2].get("record") if state is not None else None  # what a mid-epoch checkpoint carries on
    clock = CheckpointClock(cfg.train.checkpoint_minutes, ctx)  # the next mid-epoch checkpoint: checkpoint_minutes after the last
    for epoch in range(start_epoch, cfg.train.epochs):
        model.train()
        resumed = state[2] if state is not None and epoch == start_epoch else None
        done, resumed_sums, resumed_seconds = resumed_step(resumed)
        computed = epoch_computed_with(resumed, state[1].train if state is not None else None, computed_with(cfg.train))
        indices = epoch_indices(sampler, epoch, done * local_batch)
        loader = DataLoader(dataset, batch_size=local_batch, sampler=indices, drop_last=True, pin_memory=device.type == "cuda")
        # of the losses, in LOSS_NAMES order
        sums = None if resumed_sums is None else torch.tensor(resumed_sums, dtype=torch.float64, device=device)
        epoch_lr = optimizer.param_groups[0]["lr"]  # the rate this epoch trains at (the scheduler steps at its end)
        started = time.perf_counter() - resumed_seconds
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", disable=not progress or not ctx.is_main, leave=False,
                   initial=done, total=batches)
        clock.start_epoch(done)
        for step, clip in enumerate(bar, start=done + 1):
            losses = train_step(model, optimizer, clip.to(device, non_blocking=True), cfg.train, net=net, ctx=ctx)
            # summed on the device, in float64 and in step order (the same sums as Python floats): reading them back
            # once an epoch, not every step, lets a GPU run ahead of the host (only the progress bar reads each step)
            values = torch.stack([getattr(losses, name).detach() for name in LOSS_NAMES]).double()
            sums = values if sums is None else sums + values
            if not bar.disable:
                bar.set_postfix({k: f"{v:.4f}" for k, v in zip(LOSS_NAMES, values.tolist(), strict=True)})
            if clock.due(step, batches):  # at the same step on every rank: they take the write together
                with distributed.together(ctx, f"while writing a checkpoint part way into epoch {epoch + 1}"):
                    if ctx.is_main:
                        tensors, extra = training_state(model, optimizer, scheduler, epoch, clips)
                        extra.update(record=last_record, step=step, seconds=time.perf_counter() - started, computed=computed)
                        save_mid_epoch(checkpoint_path, tensors, cfg, extra, sums, kept)
                clock.saved()
        scheduler.step()
        totals = dict(zip(LOSS_NAMES, sums.tolist(), strict=True)) if sums is not None else {}
        totals = distributed.mean_over_ranks(totals, ctx)  # the log shows the loss of the global batches

        record = {"epoch": epoch + 1, "lr": epoch_lr, "seconds": round(time.perf_counter() - started, 2), "computed": computed}
        record.update({f"loss_{k}": v / max(batches, 1) for k, v in totals.items()})
        tensors, extra = training_state(model, optimizer, scheduler, epoch + 1, clips)
        # one step of every rank: a divergence (the same on every rank: reduced totals, shared weights, but BatchNorm's
        # statistics are each rank's own without sync_batchnorm) or a failed write of rank 0 stops them all at once
        with distributed.together(ctx, f"at the end of epoch {epoch + 1} (checking it, or writing its checkpoint)"):
            check_diverged(totals, tensors, epoch + 1, cfg.train, kept=kept[-1])  # before anything of this epoch is written
            if ctx.is_main:  # every rank holds the same weights and items; one writes them
                # the checkpoint first, holding the epoch's log record: a resume restores the record if a kill -9 came
                # before the log line; a Ctrl-C or SIGTERM waits until the epoch's files are all written
                with held_interrupts():
                    save_checkpoint(checkpoint_path, tensors, cfg, extra | {"record": record})
                    kept.append((epoch + 1, 0))
                    clock.saved()
                    last_record = record
                    if cfg.train.keep_epochs:
                        save_model(epoch_model(out_dir, epoch + 1), model, cfg, extra={"epochs": epoch + 1})
                    append_log(out_dir / LOG_FILE, record)
                if board is not None:
                    for key, value in record.items():
                        if key not in ("epoch", "computed"):
                            board.add_scalar(key, value, epoch + 1)
                    board.flush()
                if progress:
                    tqdm.write(" ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
                if on_epoch is not None:
                    on_epoch(epoch + 1, record)
        if not ctx.is_main:  # rank 0 has written the checkpoint of the weights every rank holds
            kept.append((epoch + 1, 0))

    if board is not None:
        board.close()
    model_path = out_dir / MODEL_FILE
    with distributed.together(ctx, "while writing the final model"):  # the other ranks return once the model file exists
        if ctx.is_main:
            # the footage it learnt, so that `mnad calibrate` can warn when asked to calibrate on it
            footage = [list(footage_span(v)) for v in videos]
            save_model(model_path, model, cfg, extra={"epochs": cfg.train.epochs, "footage": footage})
            discard_earlier_run(out_dir)  # the run an --overwrite replaced, kept until now
    return model_path


def prepared_for_training(model: nn.Module, cfg: TrainConfig, device: torch.device | str | None = None) -> nn.Module:
    """``model`` as ``train`` trains it: on ``device`` (None: where it is), stored channels_last where
    ``train.channels_last`` says (the layout its convolutions run fastest in under bf16), in training mode. The
    benchmarks use it too."""
    if device is not None:
        model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.train()


def warn_unsynced_batchnorm(cfg: TrainConfig, ctx: distributed.Context) -> None:
    """Say so (rank 0) when several ranks train without ``train.sync_batchnorm``: the published recipe trains batch 4
    on one GPU, so BatchNorm sees the 4 clips together; split over ranks it sees each rank's share, and the run is
    not the one-process run (docs/distributed.md). A warning, not a refusal: a run keeps the setting it started with."""
    if ctx.enabled and ctx.is_main and not cfg.sync_batchnorm:
        log.warning("train.sync_batchnorm is off: BatchNorm normalises each rank's %d clip(s) on their own, not the "
                    "global batch of %d as one process (the published recipe) does; set train.sync_batchnorm=true "
                    "for a new run with the same statistics", cfg.batch_size // ctx.world_size, cfg.batch_size)


def check_diverged(totals: dict[str, float], tensors: dict[str, torch.Tensor], epoch: int, cfg: TrainConfig, *,
                   kept: tuple[int, int] | None = None) -> None:
    """Stop a run whose loss, weights, BatchNorm statistics, memory items or optimiser state became NaN or infinite
    (it diverged: too high a learning rate, most often) at the end of the epoch it happened in, before anything of
    that epoch is written, with one error saying so, what to change and what the run folder's checkpoint holds:
    ``kept``, (epochs done, batches of the next) as train records it, a mid-epoch checkpoint's part way into
    ``epoch``; without it, the end of the epoch before."""
    bad = [f"loss_{name} {value}" for name, value in totals.items() if not math.isfinite(value)]
    tensor = non_finite(tensors)
    if tensor is not None:
        bad.append(f"{tensor.removeprefix('model.')} holds NaN or Inf")
    if bad:
        epochs, steps = kept if kept is not None else (epoch - 1, 0)
        if steps:
            said = f"the checkpoint part way into epoch {epochs + 1} (after {steps} of its batches) is kept"
        elif epochs:
            said = f"the checkpoint of epoch {epochs} is kept"
        else:
            said = "no checkpoint was written"
        raise ConfigError(f"training diverged in epoch {epoch} ({', '.join(bad)}); lower train.lr "
                          f"(now {cfg.lr:g}) and train again (--overwrite); {said}")


def append_log(path: Path, record: dict) -> None:
    """One epoch's line of the training log; a failed write (disk full, ...) is a DataError naming the log (the
    checkpoint already holds the record: a resume restores it, ``reconcile_log``)."""
    try:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
    except OSError as exc:
        reason = os_reason(exc)
        raise DataError(f"{path}: cannot write ({reason}); the epoch's checkpoint is written: once fixed, "
                        "resume with --resume") from exc


def epoch_model(out_dir: Path, epoch: int) -> Path:
    """Where ``train.keep_epochs`` keeps the model after ``epoch`` epochs (``checkpoint.EPOCH_GLOB``)."""
    return out_dir / f"epoch_{epoch:03d}.safetensors"


def reconcile_log(path: Path, epochs: int, last: dict | None) -> None:
    """Make the log say what the checkpoint holds: the records of its ``epochs`` epochs, the last one (``last``, kept
    in the checkpoint) restored if a kill came between the checkpoint and the log line; lines past it, cut short or
    damaged (not UTF-8, not JSON) go, by the one rule of ``outputs.read_train_log``."""
    old = path.read_bytes() if path.exists() else b""  # bytes: a damaged byte is repaired here, not an error
    kept = [r for r in (read_train_log(path) if old else []) if isinstance(r["epoch"], int) and r["epoch"] <= epochs]
    if last is not None and last.get("epoch") == epochs and all(r["epoch"] != epochs for r in kept):
        kept.append(last)
    text = "".join(json.dumps(r) + "\n" for r in kept).encode()
    if text != old:
        atomic_write(path, text)


def training_record(checkpoint: str | Path, weights: str | None = None) -> dict[str, Any]:
    """What a model's training run recorded about it that a model made from it (``mnad calibrate``'s) carries on:
    ``footage``, [(absolute path, first frame, end frame)] it was trained on, and ``epochs``, each left out when
    unknown (a model trained before it was recorded; the shipped one keeps no footage). ``weights``: the SHA-256 of
    the model loaded from ``checkpoint`` (``checkpoint.weights_digest``), which the file read here must still hold:
    else a CheckpointError (it changed since it was loaded, a run's last.safetensors rewritten by its training or its
    final model written meanwhile, and its record would be of other weights)."""
    from mnad.checkpoint import loaded_digest, model_state, read_checkpoint, recorded_footage, resolve_checkpoint
    from mnad.errors import MNADError

    try:
        path = resolve_checkpoint(checkpoint)
        tensors, _, extra = read_checkpoint(path)
    except MNADError:
        if weights is not None:  # loaded a moment ago: unreadable now is another file
            raise CheckpointError(f"{checkpoint}: changed since its model was loaded (a training run writing it?); "
                                  "run the command again") from None
        return {}
    if weights is not None and loaded_digest(model_state(tensors)) != weights:
        raise CheckpointError(f"{path}: changed since its model was loaded (its weights are another model's now: a "
                              "training run writing it?); run the command again")
    record: dict[str, Any] = {}
    if footage := recorded_footage(extra):
        record["footage"] = footage
    epochs = extra.get("epochs", extra.get("epoch"))  # a model file's, or a training checkpoint's
    if isinstance(epochs, int) and not isinstance(epochs, bool):
        record["epochs"] = epochs
    return record
