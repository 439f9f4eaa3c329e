"""The streaming scorer: one frame in, one typed result out (docs/method.md, section 5).

Data flows one way: frames (``mnad.data.streams``) -> clip window -> scoring step -> stream state -> scores.
``StreamScorer`` owns every piece of state that scoring carries from frame to frame: the frozen scoring copy of the
model, the memory items (updated at test time when E_t < gamma), the window of recent frames, the causal normaliser
and the trailing mean. The caller's model is never mutated; the state can be saved and restored (a camera restart).

The scoring step is a pure function, (input frames, target frame, memory items) -> ``StepResult``: the same graph
runs eagerly, compiled (``eval.compile``) and, exported, in ONNX Runtime (``mnad.export``).

Several streams (cameras) are scored together by ``score_streams``: each ``StreamScorer`` builds its clip from its
own window (``clip``), the clips that are complete run as one batch with each stream's own memory items (B, M, C),
and each scorer takes its sample of the result (``consume``); ``push`` is the same two halves around a batch of one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from mnad.aot import AotStep
from mnad.atomic import atomic_write
from mnad.calibration import PRECISIONS, Calibration, scoring_calibration
from mnad.checkpoint import metadata_digest, tensor_digest, weights_digest
from mnad.config import Config, ModelConfig, check_count, check_same_model, checked_config, mixing_weight
from mnad.data import split_clip, to_tensor
from mnad.errors import CheckpointError, ConfigError, DataError
from mnad.interrupts import held_interrupts
from mnad.model import MNAD, inference_copy
from mnad.model.memory import updated_memory
from mnad.model.mnad import FrozenCompiled
from mnad.model.unet import QUERY_STRIDE
from mnad.precision import bf16_taken, checked_device, native_bf16
from mnad.scoring import (
    CausalScore,
    RunningMinMax,
    TrailingMean,
    error_map,
    feature_distance,
    patch_distance,
    patch_psnr,
    psnr,
    regular_score,
    score_terms,
)

log = logging.getLogger(__name__)


class StepResult(NamedTuple):
    """What one scoring step computes, batch B (1 for one stream; several streams scored together: one per stream)."""

    frame: torch.Tensor  # predicted (or reconstructed) frame, (B, C, H, W) in [-1, 1]
    psnr: torch.Tensor  # (B,)
    patch_psnr: torch.Tensor  # PSNR of the worst-predicted patch, (B,)
    distance: torch.Tensor  # D, query-to-nearest-item distance, (B,); zeros without memory
    patch_distance: torch.Tensor  # D of the worst block of queries (the regions of patch_psnr), (B,); zeros without memory
    regular: torch.Tensor  # E_t, the weighted regular score that gates the memory update, (B,)
    items: torch.Tensor  # memory items after the gated test-time update, (M, C), or (B, M, C) as they came in
    error_map: torch.Tensor  # pixel-wise squared error, (B, H, W)


Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], StepResult]


class ScoringStep(torch.nn.Module):
    """One test-time step (docs/method.md 5.1-5.4) on a frozen inference copy of the model: memory in, memory out.

    ``items`` (M, C): one stream's memory, batch 1, updated from its queries. ``items`` (B, M, C): one memory per
    sample (several streams in one batch), each read by its own sample and updated from its own queries when its own
    E_t is below gamma; sample b scores as it would alone with ``items[b]`` (up to the rounding of batched kernels).
    """

    def __init__(self, model: MNAD, config: Config, device: torch.device | None = None) -> None:
        super().__init__()
        self.eval_config = config.eval
        self.digest = weights_digest(model)  # of the model as given, not of its folded copy: what a saved state belongs to
        self.model = inference_copy(model, bf16=self.eval_config.bf16, channels_last=self.eval_config.channels_last)
        if device is not None:  # the copy, on the device its scorer's frames and memory are on; the caller's model stays
            self.model = self.model.to(device)
        self.update_max_over = config.model.update_max_over

    def forward(self, inputs: torch.Tensor, target: torch.Tensor, items: torch.Tensor) -> StepResult:
        if self.eval_config.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        # no autocast region at all in fp32: torch.export would still wrap the model in a disabled one, hiding its
        # convolutions from graph passes such as PT2E quantisation (benchmarks/int8.py); a caller's own autocast, if
        # any, then applies here as it does to any module
        with torch.autocast(inputs.device.type, dtype=torch.bfloat16) if self.eval_config.bf16 else contextlib.nullcontext():
            output = self.model(inputs, items)
        p = psnr(output.frame, target, peak=self.eval_config.psnr_peak)
        local = patch_psnr(output.frame, target)
        e = regular_score(output.frame, target, kind=self.eval_config.regular_score)
        errors = error_map(output.frame, target)
        if self.model.memory is None:
            return StepResult(output.frame, p, local, torch.zeros_like(p), torch.zeros_like(p), e, items, errors)
        d = feature_distance(output.queries, items)  # both before this frame's update, as published
        grid = (target.shape[-2] // QUERY_STRIDE, target.shape[-1] // QUERY_STRIDE)  # the query map's (height, width)
        d_local = patch_distance(output.queries, items, grid)
        if self.eval_config.test_update:  # after scoring this frame, as published; strict '<'
            per_sample = items.dim() == 3
            new_items = updated_memory(output.queries if per_sample else output.queries[0], items, max_over=self.update_max_over)
            gate = (e < self.eval_config.gamma)[:, None, None] if per_sample else e[0] < self.eval_config.gamma
            items = torch.where(gate, new_items, items)
        return StepResult(output.frame, p, local, d, d_local, e, items, errors)


# why several streams cannot share an ONNX export (StreamScorer.for_streams, score_streams)
ONNX_ONE_STREAM = ("several sources at once need a PyTorch model: the exported ONNX graph scores one clip with one memory "
                   "(run one `mnad detect` per source, or use the checkpoint the ONNX file was exported from)")


def scoring_step(model: MNAD, config: Config, device: str | torch.device | None = None) -> Step:
    """The step scoring runs on ``device`` (default: the model's): ``ScoringStep``, compiled as one graph with its
    weights frozen under ``eval.compile`` (the memory items stay an argument, so test-time updates still reach the next
    frame): ahead of time on the CPU (``mnad.aot``), by ``torch.compile`` at the first frame elsewhere (not measured off
    the CPU with AOTInductor). The model given is not moved: the step scores a copy."""
    device = checked_device(device) if device is not None else next(model.parameters()).device
    if not native_bf16(config.eval.bf16, device, "scoring"):
        config = config.override(["eval.bf16=false"])
    if config.eval.compile and device.type == "cpu":
        return AotStep(model, config)  # compiled in a child process: the compiler's memory stays out of this one
    step = ScoringStep(model, config, device)
    return FrozenCompiled(step) if config.eval.compile else step


def step_digest(step: Step) -> str | None:
    """The SHA-256 of the weights that ``step`` scores with (``checkpoint.weights_digest`` of the model it was built
    from, taken once when it was built), or None when that cannot be told: a step that is no torch module (an ONNX
    step: ``StreamScorer.for_model`` passes its graph's digest)."""
    inner = step.module if isinstance(step, FrozenCompiled) else step
    if isinstance(inner, ScoringStep | AotStep):
        return inner.digest
    if isinstance(inner, torch.nn.Module):  # another step module (a quantised graph): its own weights
        return weights_digest(inner)
    return None


def step_precision(step: Step) -> str | None:
    """The precision ``step`` computes scores in (one of ``calibration.PRECISIONS``): 'bf16' or 'fp32' for a
    ``ScoringStep`` (compiled or not, ``AotStep`` too) as ``scoring_step`` built it (bf16 only where native), an ONNX
    step's as exported ('fp32', or 'int8' convolutions); None where it cannot be told (another step, e.g. a graph
    quantised by the caller), which a calibration does not compare (``Calibration.check_precision``)."""
    inner = step.module if isinstance(step, FrozenCompiled) else step
    if isinstance(inner, ScoringStep):
        return "bf16" if inner.eval_config.bf16 else "fp32"
    if isinstance(inner, AotStep):
        return "bf16" if inner.config.eval.bf16 else "fp32"
    precision = getattr(inner, "precision", None)  # an ONNX step (export.OnnxStep) says its own
    return precision if isinstance(precision, str) and precision in PRECISIONS else None


def scoring_precision(model: MNAD, config: Config, device: str | torch.device | None = None) -> str | None:
    """The precision a scorer of ``model`` under ``config`` on ``device`` (default: the model's) computes scores in,
    without building its step: ``step_precision`` of ``StreamScorer.for_model``'s step (``mnad calibrate`` records it
    in the calibration it fits, ``Calibration.precision``)."""
    from mnad.export import OnnxModel

    if isinstance(model, OnnxModel):
        return step_precision(model.step)
    device = checked_device(device) if device is not None else next(model.parameters()).device
    return "bf16" if bf16_taken(config.eval.bf16, device) else "fp32"  # scoring_step's decision, without its warning


@dataclass
class FrameResult:
    """One scored frame."""

    index: int  # position of the scored frame in its video (0-based); a clip scores its target frame
    psnr: float
    patch_psnr: float  # PSNR of the worst-predicted patch
    distance: float  # D
    patch_distance: float  # D of the worst block of queries
    regular: float  # E_t
    updated: bool  # whether this frame updated the memory
    score: float | None  # S_t under the causal normaliser; None under the per-video one (known only at the video's end)
    smoothed: float | None  # trailing mean of S_t over the last ``smoothing`` frames (causal)
    error_map: np.ndarray | None = None  # (H, W), when the scorer was asked for maps
    # False: the model's output was not finite (a term NaN or infinite, or the memory it updated): the frame changed
    # nothing (no memory update, not in the causal normaliser or the trailing mean, so one bad frame does not blind the
    # next ones) and its score and smoothed score are NaN; the terms are as computed
    finite: bool = True


@dataclass
class StreamState:
    """Everything a stream carries from one frame to the next, to save and restore."""

    items: torch.Tensor | None
    window: list[np.ndarray]  # the last frames (uint8, prepared), at most t_length - 1 of them are needed
    frames_seen: int  # frames pushed since the start of the current video
    psnr_range: tuple[float, float]  # running min-max state ('causal')
    distance_range: tuple[float, float]
    recent: list[float]  # the trailing mean's scores
    # what the state is of (``StreamScorer._belongs_to``: the model's weights and model.* settings, the scoring settings and
    # calibration): ``restore`` takes it only into a scorer for which these are the same
    belongs_to: dict | None = None


# the model settings a state records; one that a saved state lacks is not compared (``StreamScorer._state_problem``)
_MODEL_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelConfig))
# the settings of how the memory and the scores evolve that a state records since after the others (the test-time update,
# the scoring precision), each with the name its messages give it; one that a saved state lacks was not recorded by the
# mnad that wrote it: taken as this scorer's with a warning, as such a state restored before (``StreamScorer._restore``)
_LATER_SCORING = {"test_update": "eval.test_update", "gamma": "eval.gamma", "regular_score": "eval.regular_score",
                  "precision": "the scoring precision"}


def _is_float(value: object) -> bool:
    """A real number as a state holds it (a float or an int; not a bool)."""
    return isinstance(value, float | int) and not isinstance(value, bool)


def checked_frame(frame: object, size: int, channels: int, *, owned: bool = False) -> np.ndarray:
    """``frame`` as the scorer takes it, uint8 (size, size, channels) C-contiguous (a strided view is copied, a gray
    (H, W) frame of a 1-channel model gains its axis); a DataError for anything that is not such a frame. ``owned``:
    always a copy of its own (one copy, a strided view's included), which the caller's later writes cannot reach."""
    if isinstance(frame, np.ndarray) and frame.dtype == np.uint8:
        if frame.ndim == 2 and channels == 1:
            frame = frame[:, :, None]
        if frame.shape == (size, size, channels):
            if owned:
                return np.array(frame, order="C", copy=True)
            return frame if frame.flags.c_contiguous else np.ascontiguousarray(frame)
    got = (f"a {frame.dtype} array of shape {frame.shape}" if isinstance(frame, np.ndarray) else f"a {type(frame).__name__}")
    raise DataError(f"frame: expected a numpy uint8 array of shape ({size}, {size}, {channels}) (the model's image size "
                    f"and channels, HxWxC, e.g. as mnad.data.pixels.prepare_frame makes it), got {got}")


class ClipWindow:
    """The last ``size`` frames of a stream, each held once as a pair: the frame as the scorer took it (uint8, prepared,
    a copy of its own: what a saved state holds) and its tensor on the scoring device (converted once per frame, not once
    per clip). One deque of pairs, so that the frames a state saves and the frames a clip scores cannot fall out of step."""

    def __init__(self, size: int) -> None:
        self._pairs: deque[tuple[np.ndarray, torch.Tensor]] = deque(maxlen=size)

    @property
    def size(self) -> int:
        """The frames a clip takes (t_length)."""
        return self._pairs.maxlen

    def __len__(self) -> int:
        return len(self._pairs)

    @property
    def full(self) -> bool:
        """Whether the window holds a whole clip."""
        return len(self._pairs) == self._pairs.maxlen

    def append(self, frame: np.ndarray, tensor: torch.Tensor) -> None:
        """Add a frame (``tensor`` is ``frame`` converted for the step); the oldest falls out once the window is full."""
        self._pairs.append((frame, tensor))

    def frames(self) -> list[np.ndarray]:
        """The uint8 frames, oldest first (``StreamState.window``)."""
        return [frame for frame, _ in self._pairs]

    def clip(self) -> torch.Tensor:
        """The tensors stacked as a batch-1 clip, (1, T, C, H, W), oldest first."""
        return torch.stack([tensor for _, tensor in self._pairs])[None]

    def mark(self) -> tuple[tuple[np.ndarray, torch.Tensor], ...]:
        """The window as it stands (references to its frames, no copy), for ``replace``."""
        return tuple(self._pairs)

    def replace(self, pairs: Sequence[tuple[np.ndarray, torch.Tensor]] = ()) -> None:
        """Hold ``pairs`` (a ``mark``, or (frame, tensor) pairs oldest first; the last ``size`` kept), or nothing."""
        self._pairs.clear()
        self._pairs.extend(pairs)


# The calibration's fields when a stream state first recorded its digest (``calibration_digest``)
_FIRST_DIGESTED = ("psnr_low", "psnr_high", "distance_low", "distance_high", "threshold", "false_alarm_rate", "smoothing",
                   "frames", "thresholds", "footage", "held_out_false_alarms", "psnr_region", "distance_region", "alpha",
                   "pseudo_anomaly_auc", "test_update", "gamma")


def calibration_digest(calibration: Calibration) -> str:
    """The SHA-256 a stream state records of the calibration it was scored with: of what scorers use (not
    ``uncalibrated``, the settings it replaced), the same for a calibration whatever fields were added to it since.

    A field added after ``_FIRST_DIGESTED`` is left out while it holds its default: a calibration read from a file
    written before the field existed holds the default there (``Calibration.from_dict``), so the default is the only
    sign that it was not recorded, and the digest must be byte for byte the one its older states recorded. The first
    fields are digested whatever they hold, defaults included, as they were then. This is not the rule of a state's
    model settings (``StreamScorer._state_problem``): there a recorded default is compared, and absence is seen as such.
    """
    unrecorded = {f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
                  for f in dataclasses.fields(Calibration) if f.name not in _FIRST_DIGESTED}  # every later one has a default
    data = {k: v for k, v in calibration.to_dict().items()
            if k != "uncalibrated" and (k in _FIRST_DIGESTED or v != unrecorded[k])}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


# a saved stream state's format: 2 adds meta_sha256, the SHA-256 of its metadata (state_metadata_digest); a state
# without a format (written before it) is read as before, its tensors checked by their hash, its metadata by _restore
STATE_FORMAT = "mnad-stream-2"


def state_metadata_digest(metadata: dict) -> str:
    """SHA-256 of a saved stream state's metadata (format, the ``mnad_stream_state`` JSON, the tensors' SHA-256), as
    ``checkpoint.metadata_digest`` digests a checkpoint's: the JSON in the place of a checkpoint's extra."""
    return metadata_digest({"format": metadata.get("format", ""), "extra": metadata.get("mnad_stream_state", ""),
                            "sha256": metadata.get("sha256", "")})


DEFAULT_DEVICE = "cpu"  # where a scorer scores unless told: its __init__ and for_model/for_streams's step


class StreamScorer:
    """Scores frames one at a time, in order; causal: a frame's result depends only on it and earlier frames.

    ``normalization``: 'video' (no per-frame S_t: the caller normalises each whole video, the published protocol),
    'causal' (running min-max) or 'calibrated' (``calibration``'s fixed ranges). ``smoothing``: frames in the
    trailing mean. ``maps``: also return each frame's error map. ``model_digest``: what a saved state must be of (the
    weights' SHA-256); when not given, ``step_digest(step)``, however the scorer is built (``for_model`` or directly).
    ``weights_sha256``: the SHA-256 of the trained weights the step scores with (``checkpoint.calibration_weights``),
    which a calibration must have been fitted on (``Calibration.check_weights``); when not given, that of a
    ``ScoringStep`` (``AotStep``) step, else unknown (not compared). ``precision_warning``: a calibration fitted in
    another precision than the step's (``step_precision``) is warned about once (``Calibration.check_precision``);
    ``for_streams`` warns with its first scorer only.
    """

    def __init__(
        self,
        step: Step,
        config: Config,
        items: torch.Tensor | None,
        *,
        normalization: str | None = None,
        calibration: Calibration | dict | None = None,
        smoothing: int | None = None,
        device: str = DEFAULT_DEVICE,
        maps: bool = False,
        model_digest: str | None = None,
        weights_sha256: str | None = None,
        precision_warning: bool = True,
    ) -> None:
        checked_config(config)  # built directly, as for_model/for_streams (which check before building the step)
        device = str(checked_device(device))
        self.step, self.config, self.device, self.maps = step, config, device, maps
        # the weights' SHA-256, however the scorer was built: a saved state restores only into a scorer of the same
        # weights; None (a step that is no torch module, no model_digest given): it restores into none (_state_problem)
        self.model_digest = model_digest if model_digest is not None else step_digest(step)
        self.normalization = normalization or config.eval.normalization
        if smoothing is not None:
            check_count("smoothing", smoothing)
        inner = step.module if isinstance(step, FrozenCompiled) else step
        if weights_sha256 is None and isinstance(inner, ScoringStep | AotStep):  # another step's digest is of other weights
            weights_sha256 = inner.digest
        calibration = scoring_calibration(config, self.normalization, Calibration.given(calibration), smoothing=smoothing,
                                          raw_terms=True, weights=weights_sha256)
        self.calibration = calibration
        self.precision = step_precision(step)  # what the scores are computed in: 'fp32', 'bf16', 'int8' or None (unknown)
        # an ONNX export's step (export.OnnxStep) says its own precision; a torch step is a ScoringStep or AotStep
        self.exported = not isinstance(inner, ScoringStep | AotStep) and isinstance(getattr(inner, "precision", None), str)
        if calibration is not None and precision_warning:  # scored, not refused, where the calibration was fitted otherwise
            calibration.check_precision(self.precision, exported=self.exported)
        self.alpha = mixing_weight(config)
        # no window given: the calibration's (the model's own was checked at its config's, which must equal it)
        self.smoothing = int(smoothing or (calibration.smoothing if calibration is not None else config.eval.smoothing))
        self.has_memory = items is not None
        # the scorer's own copy: test-time updates never reach the caller's model
        self._items = (items.detach().clone() if items is not None else torch.zeros(1, config.model.feature_dim)).to(device)
        m = config.model
        self._window = ClipWindow(m.t_length)
        self._lag = m.lag  # a clip scores its target frame, `lag` frames before its last
        self._seen = 0
        # the clip handed out by ``clip`` and not yet consumed: the index of the frame it scores, and the window as it
        # was before its frame (``_mark``), to put back when its step fails (``_rollback``)
        self._pending: tuple[int, tuple] | None = None
        self._causal = CausalScore(self.alpha, self.smoothing, calibration)
        self._split = functools.partial(split_clip, model=config.model)

    @classmethod
    def for_model(cls, model: MNAD, config: Config, **options) -> StreamScorer:
        """A scorer of ``model`` (weights copied and frozen; its memory items copied), or of an exported model."""
        from mnad.export import OnnxModel

        checked_config(config)  # before the step is built (a compiled one takes minutes)
        if isinstance(model, OnnxModel):
            # every scorer of an export is built here (evaluate, detect, for_streams): refused as evaluate's
            # model.to refuses it (was: --device cuda failed at the first frame, CPU outputs met items on the GPU)
            model.to(checked_device(options.get("device", DEFAULT_DEVICE)))  # a device this machine has first, as __init__
            # the graph is fp32 (or int8) and runs as exported: bf16 and channels_last ran fp32 unsaid, as compile cannot
            if unusable := [f"eval.{name}" for name in ("compile", "bf16", "channels_last") if getattr(config.eval, name)]:
                raise ConfigError(f"{' and '.join(unusable)} appl{'ies' if len(unusable) == 1 else 'y'} to PyTorch models, "
                                  "not to an ONNX model (ONNX Runtime scores the graph as it was exported, on the CPU)")
            # the graph computes with the model and scoring settings it was exported with, whatever the config says
            check_same_model(model, config)
            return cls(model.step, config, model.items, model_digest=model.digest, weights_sha256=model.weights_sha256, **options)
        # the model as trained, as score_videos, detect and calibrate check it (was: another image size or clip length
        # scored, or failed at the first clip, with no memory a PSNR-only score)
        check_same_model(model, config)
        items = model.memory.items if model.memory is not None else None
        # the model as given, its mode kept: the step scores a frozen eval-mode copy of it (inference_copy; AotStep's
        # child process builds its own)
        # on the scorer's device (was: the model's, so a CPU-loaded model met frames and memory on --device cuda)
        return cls(scoring_step(model, config, options.get("device", DEFAULT_DEVICE)), config, items, **options)

    @classmethod
    def for_streams(cls, model: MNAD, config: Config, streams: int, **options) -> list[StreamScorer]:
        """``streams`` scorers of ``model`` that ``score_streams`` scores together: one frozen step shared (one copy
        of the weights), and each its own memory, window and normaliser."""
        from mnad.export import OnnxModel

        check_count("streams", streams)
        checked_config(config)  # before the step is built, as for_model
        if streams == 1:
            return [cls.for_model(model, config, **options)]
        if isinstance(model, OnnxModel):
            raise ConfigError(ONNX_ONE_STREAM)
        check_same_model(model, config)  # as for_model
        items = model.memory.items if model.memory is not None else None
        step = scoring_step(model, config, options.get("device", DEFAULT_DEVICE))  # the model's mode kept, as for_model
        # the step knows its weights' digest; a calibration fitted in another precision is warned about once, not per stream
        return [cls(step, config, items, precision_warning=i == 0, **options) for i in range(streams)]

    @property
    def items(self) -> torch.Tensor | None:
        """The memory items as they stand (a copy)."""
        return self._items.clone() if self.has_memory else None

    def new_video(self) -> None:
        """Start a new video: frames of different videos are not consecutive, so no clip spans two of them. The memory,
        the causal normaliser and the trailing mean carry on (a per-video restart of those is the caller's choice)."""
        self._window.replace()
        self._seen = 0
        self._pending = None

    def push(self, frame: np.ndarray) -> FrameResult | None:
        """Score the clip that ``frame`` (uint8 (H, W, C), already resized) completes; None while the window fills."""
        clip = self.clip(frame)
        if clip is None:
            return None
        try:
            with torch.inference_mode():
                result = self.step(*clip, self._items)
        except BaseException:
            self._rollback(self._pending[1])  # the frame not taken (out of memory, a Ctrl-C): pushed again, it scores as it would have
            raise
        return self.consume(result)

    def clip(self, frame: np.ndarray) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The first half of ``push``: add ``frame`` to the window and return the (inputs, target) clip it completes,
        batch 1, to be scored with this scorer's items; None while the window fills. Its result goes to ``consume``
        before the next frame: a second ``clip`` while one waits for its result is refused (``ConfigError``), as its
        result would be taken for the second one's."""
        return self._take(*self._prepared(frame))

    def _prepared(self, frame: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        """``frame`` checked and converted for the window, nothing changed yet: ``score_streams`` prepares every
        stream's frame before any window moves."""
        if self._pending is not None:
            raise ConfigError(f"clip(): the clip of frame {self._pending[0]} still waits for its result: pass the step's "
                              "result to consume() before the next clip() (or call new_video() to drop it)")
        # the window's own copy (the one copy per frame): a caller may read each frame into one buffer (cv2's
        # cap.read(buf)), and a window of references to it would hold the latest frame t_length times, which a saved
        # state would save (the clips are not hit: their tensors are converted copies)
        frame = checked_frame(frame, self.config.model.image_size, self.config.model.channels, owned=True)
        return frame, to_tensor(frame).to(self.device)  # each frame converted once, not once per clip

    def _take(self, frame: np.ndarray, tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``clip`` of a frame ``_prepared``."""
        with held_interrupts():  # the window and the count move together (a Ctrl-C waits)
            mark = self._mark()
            self._window.append(frame, tensor)
            self._seen += 1
            if not self._window.full:
                return None
            clip = self._split(self._window.clip())
            self._pending = (self._seen - 1 - self._lag, mark)
        return clip

    def _mark(self) -> tuple:
        """The window as it stands (references to its frames, no copy), for ``_rollback``."""
        return self._window.mark(), self._seen

    def _rollback(self, mark: tuple) -> None:
        """Put the window back as ``_mark`` gave it, any clip handed out since dropped: a frame whose step failed is
        not taken (the memory and the normaliser take a frame only in ``consume``)."""
        window, seen = mark
        with held_interrupts():
            self._window.replace(window)
            self._seen = seen
            self._pending = None

    def consume(self, result: StepResult, sample: int = 0) -> FrameResult:
        """The second half of ``push``: take sample ``sample`` of a step run on the last ``clip`` with this scorer's
        items ((M, C) items in, batch 1; or (B, M, C), this scorer's at ``sample``): keep its memory update, score it.
        Once per clip, after it (``ConfigError`` otherwise, nothing changed)."""
        if self._pending is None:
            raise ConfigError("consume() takes the result of the step run on the clip that clip() returned, once: no "
                              "clip waits for its result (call clip() first)")
        if getattr(result, "_fields", None) != StepResult._fields:  # a StepResult, or a step's own namedtuple of its fields
            raise ConfigError(f"consume() takes the StepResult of the step run on the clip, got a {type(result).__name__}")
        batch = len(result.psnr)
        if isinstance(sample, bool) or not isinstance(sample, int | np.integer) or not 0 <= sample < batch:
            raise ConfigError(f"consume(): sample {sample!r} is not one of the result's {batch} (an integer from 0 to {batch - 1})")
        items = result.items[sample] if result.items.dim() == 3 else result.items
        terms = [float(t[sample]) for t in (result.psnr, result.patch_psnr, result.distance, result.patch_distance)]
        regular = float(result.regular[sample])
        # a model whose output overflows (bf16/int8 on unusual footage, diverged weights) must not poison the state
        # every later frame is scored with: NaN items would make every later D NaN
        finite = all(map(math.isfinite, (*terms, regular))) and bool(torch.isfinite(items).all())
        updated = finite and self.has_memory and not torch.equal(items, self._items)
        score = smoothed = None
        with held_interrupts():  # the memory and the causal normaliser take the frame together, or neither does
            (index, _), self._pending = self._pending, None
            if updated:
                self._items = items.clone()
            if self.normalization != "video":
                score, smoothed = self._causal(*score_terms(self.config, *terms)) if finite else (math.nan, math.nan)
        errors = result.error_map[sample].float().cpu().numpy() if self.maps else None
        return FrameResult(index, *terms, regular, updated, score, smoothed, errors, finite)

    # ------------------------------------------------------------------------------------------ state

    def state(self) -> StreamState:
        """What the stream carries to its next frame, to restore into a scorer of the same model and settings (or save).
        Refused (``ConfigError``) while a clip waits for its result: its frame is in the window but not scored, and a
        scorer restored from the state would never score it."""
        if self._pending is not None:
            raise ConfigError(f"the stream state: the clip of frame {self._pending[0]} still waits for its result: pass "
                              "the step's result to consume() first (or call new_video() to drop it)")
        return StreamState(
            items=self.items,
            window=[frame.copy() for frame in self._window.frames()],  # the caller's copies: writes to them do not reach the window
            frames_seen=self._seen,
            psnr_range=(self._causal.psnr_range.low, self._causal.psnr_range.high),
            distance_range=(self._causal.distance_range.low, self._causal.distance_range.high),
            recent=list(self._causal.mean.recent),
            belongs_to=self._belongs_to(),
        )

    def restore(self, state: StreamState) -> None:
        """Continue from ``state`` (``state()`` of a scorer of the same model and settings): the next frame scores as it
        would have. A state of another model or scorer, or not whole, is refused (``CheckpointError``) before anything
        changes."""
        self._restore(state, None)

    def _restore(self, state: StreamState, path: Path | None) -> None:
        """``restore``, for a state read from ``path`` (named in the errors) or given (None): every restore is checked
        here, by ``_state_problem``."""
        if (problem := self._state_problem(state)) is not None:
            raise CheckpointError(f"{path}: {problem}" if path is not None else problem)
        # model settings and _LATER_SCORING only (_state_problem refused any other)
        unrecorded = [k for k in self._belongs_to() if k not in state.belongs_to]
        if model := [k for k in unrecorded if k in _MODEL_FIELDS]:
            log.warning("%sthe stream state was saved by an older mnad, which did not record model.%s: taken as of this model "
                        "(the same weights); the next saved state records them", f"{path}: " if path is not None else "",
                        ", model.".join(model))
        if scoring := [_LATER_SCORING[k] for k in unrecorded if k in _LATER_SCORING]:
            log.warning("%sthe stream state was saved by an older mnad, which did not record %s: taken as this scorer's "
                        "(restored as before); the next saved state records them", f"{path}: " if path is not None else "",
                        ", ".join(scoring))
        m = self.config.model
        # copies the window owns: the state's frames stay the caller's (a StreamState written to after restore changes nothing)
        frames = [checked_frame(f, m.image_size, m.channels, owned=True) for f in list(state.window)[-self._window.size:]]
        pairs = [(f, to_tensor(f).to(self.device)) for f in frames]
        with held_interrupts():  # all of the state, or none of it
            if state.items is not None:
                self._items = state.items.detach().clone().to(self.device)
            self._window.replace(pairs)
            self._seen = state.frames_seen
            self._pending = None
            self._causal = CausalScore(self.alpha, self.smoothing, self.calibration, RunningMinMax(*state.psnr_range),
                                       RunningMinMax(*state.distance_range), TrailingMean(self.smoothing, [float(v) for v in state.recent]))

    def _state_problem(self, state: object) -> str | None:
        """What makes ``state`` wrong for this scorer, said, or None: not a ``StreamState``; of another model or scorer
        (``belongs_to``, as ``_belongs_to``), or recording none; memory items, window frames, counts, running ranges or
        trailing scores that are not as ``state()`` gives them for this scorer (a damaged or hand-made state: restored,
        it would score wrongly or fail at a later frame).

        A model setting (``_MODEL_FIELDS``) the state does not record, its key absent, is not compared, whichever
        setting it is and whenever it was first recorded: the weights' digest, always compared, pins the trained model
        and so its settings. A recorded value, its default included, is compared. The test-time update and the scoring
        precision (``_LATER_SCORING``), recorded since after the others, are not compared where absent either: a state
        saved before restores as it did (``_restore`` warns). Any other setting not recorded is refused: the weights do
        not pin how they are scored. This is not the rule of ``calibration_digest``, which
        cannot see absence (a field read as its default) and must keep older digests byte for byte."""
        if not isinstance(state, StreamState):
            return f"the stream state must be a StreamState (as StreamScorer.state() gives it), got a {type(state).__name__}"
        saved, here = state.belongs_to, self._belongs_to()
        if not isinstance(saved, dict):
            return ("the stream state does not record the model it belongs to (written by an older mnad, or not made by "
                    "StreamScorer.state()): start the stream afresh")
        if here["model"] is None:
            return ("this scorer does not know the weights of the model it scores (its step is no torch module): build it "
                    "with StreamScorer.for_model, or pass model_digest")
        # a model setting not recorded is not compared, anything else not recorded is refused (the docstring says why)
        if unrecorded := [k for k in here if k not in saved and k not in _MODEL_FIELDS and k not in _LATER_SCORING]:
            return f"the stream state does not record {', '.join(unrecorded)} (written by an older mnad): start the stream afresh"
        # gamma and E_t's kind are recorded only where the update runs: with test_update differing, it alone is said
        implied = ("gamma", "regular_score") if "test_update" in saved and saved["test_update"] != here["test_update"] else ()
        if differ := [f"{k} {saved[k]!r} (this scorer: {v!r})" for k, v in here.items() if k in saved and saved[k] != v and k not in implied]:
            return f"the stream state belongs to another model or scorer: {', '.join(differ)}"
        items = state.items
        if not self.has_memory:
            if items is not None:
                return "the stream state has memory items, and this scorer's model has no memory"
        elif not isinstance(items, torch.Tensor) or items.shape != self._items.shape or items.dtype != self._items.dtype:
            got = f"{items.dtype} {tuple(items.shape)}" if isinstance(items, torch.Tensor) else repr(items)[:80]
            return f"the stream state's memory items must be {self._items.dtype} {tuple(self._items.shape)}, got {got}"
        elif not bool(torch.isfinite(items).all()):
            return "the stream state's memory items hold NaN or infinite values"
        seen, window, size = state.frames_seen, state.window, self._window.size
        if isinstance(seen, bool) or not isinstance(seen, int) or seen < 0:
            return f"the stream state's frames_seen must be an integer >= 0, got {seen!r}"[:200]
        if not isinstance(window, list | tuple) or min(len(window), size) != min(seen, size):
            got = f"{len(window)} frames" if isinstance(window, list | tuple) else f"a {type(window).__name__}"
            return (f"the stream state's window must hold the last {min(seen, size)} of its {seen} frames seen (at most "
                    f"t_length {size}), got {got}")
        m = self.config.model
        for i, frame in enumerate(window):
            try:
                checked_frame(frame, m.image_size, m.channels)
            except DataError as exc:
                return f"the stream state's window frame {i}: {exc}".replace(": frame: ", ": ")
        for name in ("psnr_range", "distance_range"):
            low_high = getattr(state, name)
            if not (isinstance(low_high, list | tuple) and len(low_high) == 2 and all(_is_float(v) for v in low_high)
                    and (tuple(low_high) == (math.inf, -math.inf) or math.isfinite(low_high[0]) and math.isfinite(low_high[1])
                         and low_high[0] <= low_high[1])):
                return (f"the stream state's {name} must be (low, high), finite with low <= high, or (inf, -inf) before "
                        f"the first frame, got {low_high!r}")[:200]
        recent = state.recent
        if not (isinstance(recent, list | tuple) and len(recent) <= self.smoothing and all(_is_float(v) and math.isfinite(v) for v in recent)):
            return f"the stream state's recent must be at most {self.smoothing} finite scores (the smoothing window), got {recent!r}"[:200]
        return None

    def _belongs_to(self) -> dict:
        """What a saved state is of: a state restores only into a scorer for which these are the same."""
        m, e = self.config.model, self.config.eval
        # the scoring settings too: the running ranges are of the chosen PSNR and D terms, the trailing mean's scores
        # mix them with alpha, on the calibration's scale; restored under others they would be mixed with other numbers
        calibration = calibration_digest(self.calibration) if self.calibration is not None else None
        # every model setting, taken from the dataclass so that a field added to ModelConfig is recorded (pixel_range
        # was missed when they were listed by hand), as JSON reads it back (a tuple is compared as the saved list)
        model = json.loads(json.dumps(dataclasses.asdict(m)))
        # how the memory evolves (the test-time update: gamma and E_t's kind count only where it runs, as a calibration
        # compares them) and the precision the scores are computed in: the saved items and ranges are of these
        update = e.test_update
        return {"model": self.model_digest, **model, "feature_dim": m.feature_dim,
                "normalization": self.normalization, "smoothing": self.smoothing, "psnr_region": e.psnr_region,
                "distance_region": e.distance_region, "psnr_peak": e.psnr_peak, "alpha": self.alpha, "calibration": calibration,
                "test_update": update, "gamma": e.gamma if update else None, "regular_score": e.regular_score if update else None,
                "precision": self.precision}

    def save_state(self, path: str | Path, extra: dict | None = None) -> None:
        """Write the state as safetensors (tensors and JSON metadata, no code), atomically, with what it belongs to.
        Refused as ``state()`` is (``ConfigError``, nothing written) while a clip waits for its result. ``extra``: the
        caller's own JSON object saved with it, under the same metadata hash (``load_state`` returns it): what the caller
        needs to continue with the state, written in the same file so that the two cannot fall out of step (``mnad
        detect --resume``: its frame position and counts)."""
        from safetensors.torch import save

        if extra is not None and not isinstance(extra, dict):
            raise ConfigError(f"save_state(): extra must be a dict (a JSON object) or None, got {type(extra).__name__}")
        s = self.state()
        tensors = {f"window.{i}": torch.from_numpy(np.ascontiguousarray(f)) for i, f in enumerate(s.window)}
        if s.items is not None:
            tensors["items"] = s.items.cpu().contiguous()
        meta = {"frames_seen": s.frames_seen, "psnr_range": s.psnr_range, "distance_range": s.distance_range, "recent": s.recent,
                "belongs_to": self._belongs_to()}
        if extra is not None:
            try:
                meta["extra"] = json.loads(json.dumps(extra, allow_nan=False))  # JSON as it reads back, or refused
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"save_state(): extra must be a JSON object of finite numbers, strings, lists ({exc})") from exc
        metadata = {"format": STATE_FORMAT, "mnad_stream_state": json.dumps(meta), "sha256": tensor_digest(tensors)}
        metadata["meta_sha256"] = state_metadata_digest(metadata)  # the metadata too: ranges and scores edited are caught
        atomic_write(Path(path), save(tensors, metadata=metadata))

    def load_state(self, path: str | Path) -> dict:
        """Restore a state written by ``save_state``, checked by its hashes: of its tensors and of its metadata (running
        ranges, trailing scores, counts, what it belongs to, the caller's ``extra``). A state saved by an mnad before
        ``STATE_FORMAT`` (no format, no metadata hash) is restored as before, its tensors' hash checked and its metadata by
        ``_restore`` (a warning). Returns the ``extra`` saved with it ({} when none was)."""
        from safetensors import safe_open

        path = Path(path)
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 (safe_open has no iterator)
            info = json.loads(meta["mnad_stream_state"])
        except (OSError, KeyError, ValueError, Exception) as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable stream state ({exc})") from exc
        if meta.get("sha256") != tensor_digest(tensors):
            raise CheckpointError(f"{path}: the stream state's hash does not match its contents (damaged or edited)")
        if "format" in meta or "meta_sha256" in meta:  # without either: written before STATE_FORMAT, read as before
            if meta.get("format") != STATE_FORMAT:
                raise CheckpointError(f"{path}: not a stream state this mnad reads (format {meta.get('format')!r}, expected "
                                      f"{STATE_FORMAT!r}): start the stream afresh (delete the file)")
            if meta.get("meta_sha256") != state_metadata_digest(meta):
                raise CheckpointError(f"{path}: the stream state's hash does not match its metadata (damaged or edited)")
        else:
            log.warning("%s: the stream state was saved by an older mnad, whose hash covers its tensors only: its metadata "
                        "is checked, not hashed; the next saved state hashes it", path)
        if not isinstance(info, dict):
            raise CheckpointError(f"{path}: not a readable stream state (its metadata is a JSON {type(info).__name__}, not an object)")
        window = self._saved_window(tensors, path)
        # the metadata as hashed (or as an older mnad wrote it): _restore checks every field all the same
        extra = info.get("extra", {})
        if not isinstance(extra, dict):
            raise CheckpointError(f"{path}: not a readable stream state (its extra is a JSON {type(extra).__name__}, not an object)")
        self._restore(StreamState(tensors.get("items"), window, info.get("frames_seen"), info.get("psnr_range"), info.get("distance_range"),
                                  info.get("recent"), info.get("belongs_to")), path)
        return extra

    def _saved_window(self, tensors: dict[str, torch.Tensor], path: Path) -> list[np.ndarray]:
        """The window frames of a saved state's ``tensors``, oldest first, checked before any is converted: the tensors
        are exactly window.0 to window.{n-1} and, optionally, items; each frame uint8. Anything else (a hand-made or
        damaged state whose hashes were made again) is one ``CheckpointError`` naming ``path`` (was: a KeyError for a
        gap in the names, a TypeError for a bf16 frame). The frames' shapes and the items are ``_state_problem``'s, after
        what the state belongs to: a state of another model is said to be that, not to hold frames of another size."""
        names = sorted((k for k in tensors if k != "items"), key=lambda k: (not k.startswith("window."), len(k), k))
        frames = sum(k.startswith("window.") for k in names)
        if names != [f"window.{i}" for i in range(frames)]:
            window = f"{frames} window frames, window.0 to window.{frames - 1}," if frames else "window frames (window.0 on)"
            raise CheckpointError((f"{path}: the stream state's tensors must be its {window} and its memory items (items), "
                                   f"got {', '.join(names)}")[:300])
        for i, name in enumerate(names):
            if (dtype := tensors[name].dtype) != torch.uint8:
                raise CheckpointError(f"{path}: the stream state's window frame {i} must be uint8, got {str(dtype).removeprefix('torch.')}")
        return [tensors[name].numpy() for name in names]


def score_streams(scorers: Sequence[StreamScorer], frames: Sequence[np.ndarray | None]) -> list[FrameResult | None]:
    """One frame to each scorer (None: that stream sits this round out, e.g. no new frame yet or its source ended);
    the clips that are complete are scored as one batch, each with its scorer's own memory items, and each scorer
    takes its sample. Returns what each scorer's ``push`` would have (None while a window fills or without a frame),
    equal to it up to the rounding of batched kernels. The scorers share one step (``StreamScorer.for_streams``)."""
    if len(frames) != len(scorers):
        raise ConfigError(f"score_streams: {len(frames)} frames for {len(scorers)} streams (one frame, or None, per scorer)")
    if len({id(s) for s in scorers}) != len(scorers):  # its second clip would take the first one's result
        raise ConfigError("score_streams: a scorer is given twice (one scorer per stream)")
    from mnad.export import OnnxStep

    step = scorers[0].step if scorers else None
    if len(scorers) > 1 and isinstance(step, OnnxStep):  # its graph is batch 1: refused before any window moves
        raise ConfigError(ONNX_ONE_STREAM)
    if any(s.step is not step or s.device != scorers[0].device for s in scorers):  # checked before any window moves
        raise ConfigError("streams scored together must share one scoring step and device (make them with StreamScorer.for_streams)")
    # every frame checked (and no clip waiting) before any window moves: one bad frame takes no stream's frame
    prepared = [s._prepared(f) if f is not None else None for s, f in zip(scorers, frames, strict=True)]
    with held_interrupts():  # one hold for all the streams' windows (each clip's own hold is then a no-op)
        marks = [s._mark() for s in scorers]
        clips = {i: c for i, (s, p) in enumerate(zip(scorers, prepared, strict=True)) if p is not None and (c := s._take(*p)) is not None}
    results: list[FrameResult | None] = [None] * len(scorers)
    if not clips:
        return results
    ready = list(clips)
    try:
        with torch.inference_mode():
            if len(ready) == 1:  # batch 1 with (M, C) items: exactly ``push``
                result = step(*clips[ready[0]], scorers[ready[0]]._items)
            else:
                inputs, target = (torch.cat([clips[i][k] for i in ready]) for k in (0, 1))
                result = step(inputs, target, torch.stack([scorers[i]._items for i in ready]))
    except BaseException:
        with held_interrupts():  # no stream takes this round's frame, those whose window filled included: a retry scores it once
            for s, p, mark in zip(scorers, prepared, marks, strict=True):
                if p is not None:
                    s._rollback(mark)
        raise
    with held_interrupts():
        for sample, i in enumerate(ready):
            results[i] = scorers[i].consume(result, sample)
    return results
