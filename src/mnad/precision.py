"""Where and in what precision a model runs: the device named by ``train.device`` (``--device``), checked, and the
choice between bf16 and fp32 (and the tensor layout that goes with each) for training and for scoring.

bf16 is taken only where it is native (a GPU from Ampere on, a CPU with AVX512-BF16 or AMX): elsewhere it would be
emulated, far slower than fp32, and fp32 runs instead, said once.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass

import torch

from mnad.config import Config
from mnad.errors import ConfigError

log = logging.getLogger(__name__)


def bf16_is_native(device: torch.device | str) -> bool:
    """Whether bf16 runs at full speed: a GPU, or a CPU with AVX512-BF16 / AMX. Elsewhere (e.g. an AVX2-only CPU)
    oneDNN emulates bf16, hundreds of times slower than fp32 (measured on an AMD EPYC with AVX2: 0.29 against
    57 GFLOP/s per core for a 1024x1024 matmul)."""
    device = torch.device(device)
    if device.type == "cuda":  # Ampere and later; older GPUs emulate it too
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return True
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def bf16_taken(requested: bool, device: torch.device | str) -> bool:
    """Whether bf16 runs: asked for and native on ``device`` (``native_bf16``'s decision, without its warning)."""
    return requested and bf16_is_native(device)


def native_bf16(requested: bool, device: torch.device | str, what: str) -> bool:
    """bf16 where it was asked for and runs natively; where it would be emulated, fp32 instead, said once."""
    taken = bf16_taken(requested, device)
    if requested and not taken:
        log.warning("%s: bf16 asked for, but this CPU has no native bf16 (AVX512-BF16 or AMX) and would emulate it, far "
                    "slower than fp32: using fp32", what)
    return taken


# channels_last at fp32 too (the path where bf16 is not native): on an AVX2-only CPU (AMD EPYC) it took 7-9 % less
# CPU time per frame than NCHW at 128x128 and 256x256 (benchmarks/README.md, "A shared machine"), as with bf16.
FP32_CHANNELS_LAST = True
# Training is the other way round: on the same CPU an fp32 training step (128x128, batch 4) took 3.08 s in NCHW and
# 3.61 s in channels_last, side by side (benchmarks/results/repeats/train_fp32_128_avx2.json).
FP32_TRAIN_CHANNELS_LAST = False


def training_precision(config: Config, device: torch.device | str) -> Config:
    """``config`` as training runs it: a recipe's bf16 where it is native; where it would be emulated, the fp32 path
    instead, said once, with the layout that is fastest for fp32 training on a CPU (``FP32_TRAIN_CHANNELS_LAST``).
    To choose the fp32 layout yourself, set ``train.bf16=false``: then nothing is replaced."""
    if not config.train.bf16 or bf16_is_native(device):
        return config
    layout = config.train.channels_last if torch.device(device).type != "cpu" else FP32_TRAIN_CHANNELS_LAST
    log.warning("training: bf16 asked for, but this %s has no native bf16 and would emulate it, far slower than fp32: "
                "using fp32%s (set train.bf16=false to choose the fp32 layout yourself)",
                "CPU" if torch.device(device).type == "cpu" else "device", " + channels_last" if layout else ", NCHW")
    return config.override(["train.bf16=false", f"train.channels_last={str(layout).lower()}"])


@dataclass(frozen=True)
class ScoringPath:
    """The numeric path scoring takes: ``eval.bf16`` and ``eval.channels_last``, and why, in words."""

    bf16: bool
    channels_last: bool
    reason: str

    @property
    def name(self) -> str:
        return ("bf16" if self.bf16 else "fp32") + (" + channels_last" if self.channels_last else "")

    def describe(self) -> str:
        """One line for the user, e.g. ``fp32 (this CPU has no native bf16)``."""
        return f"{self.name} ({self.reason})"

    def apply(self, config: Config) -> Config:
        return config.override([f"eval.bf16={str(self.bf16).lower()}", f"eval.channels_last={str(self.channels_last).lower()}"])


def scoring_path(config: Config, device: str | torch.device, *, fp32: bool = False, explicit: Collection[str] = ()) -> ScoringPath:
    """The path ``mnad evaluate``, ``calibrate`` and ``detect`` score with: the fast one (bf16 weights + channels_last) where
    bf16 is native (a CPU with AVX512-BF16 or AMX, a GPU from Ampere on), fp32 elsewhere or with ``fp32`` (with channels_last
    too where ``FP32_CHANNELS_LAST``).

    ``explicit`` names the fields the user set (``eval.bf16``, ``eval.channels_last``): those win over the choice, except
    that bf16 where it would be emulated is still fp32 (hundreds of times slower). The model's own config (a recipe's
    ``eval.bf16``) is not a choice of the user's: it is what a model was trained and scored with, not where it runs.
    """
    device = checked_device(device)
    native = bf16_is_native(device)
    what = "this CPU" if device.type == "cpu" else "this GPU"
    user_bf16 = config.eval.bf16 if "eval.bf16" in explicit else None
    if fp32 and user_bf16:
        raise ConfigError("--fp32 and eval.bf16=true ask for two different scoring paths: give one of them")
    if fp32 or user_bf16 is False:
        bf16, reason = False, "--fp32" if fp32 else "eval.bf16=false"
    elif user_bf16 and not native:
        bf16, reason = False, f"bf16 asked for, but {what} has no native bf16 and would emulate it, far slower than fp32"
    elif user_bf16:
        bf16, reason = True, "eval.bf16=true"
    elif native:
        bf16, reason = True, f"{what} runs bf16 natively; --fp32 for fp32"
    else:
        bf16, reason = False, f"{what} has no native bf16" + (": no AVX512-BF16 or AMX" if device.type == "cpu" else "")
    if "eval.channels_last" in explicit:
        channels_last = config.eval.channels_last
    else:
        channels_last = True if bf16 else FP32_CHANNELS_LAST
    return ScoringPath(bf16, channels_last, reason)


def checked_device(device: str | torch.device, said: str | None = None) -> torch.device:
    """The device named by ``train.device`` (``--device``), refused with a ConfigError if it is not one or this
    machine does not have it (instead of a RuntimeError from deep inside torch later). ``said``: how the errors name
    what the caller passed (an API argument and its value); by default as the CLI's ``--device`` sets train.device."""
    said = said or f"--device {device}"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ConfigError(f"{said}: not a device (expected cpu, cuda or cuda:N)") from exc
    if parsed.type == "cpu":
        return parsed
    names = {"cuda": "CUDA", "mps": "MPS", "xpu": "XPU"}
    backends = {"cuda": torch.cuda, "mps": getattr(torch.backends, "mps", None), "xpu": getattr(torch, "xpu", None)}
    backend = backends.get(parsed.type)
    if backend is None:
        raise ConfigError(f"{said}: unsupported device type {parsed.type!r} (expected cpu, cuda or cuda:N)")
    if not backend.is_available():
        raise ConfigError(f"{said}: {names[parsed.type]} is not available on this machine")
    count = getattr(backend, "device_count", lambda: 1)()
    if parsed.index is not None and parsed.index >= count:
        raise ConfigError(f"{said}: this machine has {count} {names[parsed.type]} device(s), {parsed.type}:0 to {parsed.type}:{count - 1}")
    return parsed
