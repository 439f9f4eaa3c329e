"""MNAD as a plain nn.Module: encoder -> L2-normalised queries -> memory read -> decoder.

Training glue lives in ``mnad.losses`` (the objective) and ``mnad.train`` (the step and the memory update schedule);
scoring in ``mnad.scoring`` (the formulas) and ``mnad.stream`` (the scoring step and the state it carries).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mnad.config import ModelConfig
from mnad.model.memory import Memory, read_memory
from mnad.model.unet import Decoder, Encoder, fold_batchnorm


@dataclass
class MNADOutput:
    frame: torch.Tensor  # predicted (pred) or reconstructed (recon) frame, (B, C, H, W) in [-1, 1]
    queries: torch.Tensor  # L2-normalised queries, (B, K, C) with K = (H/8) * (W/8), fp32 (fp64 in an fp64 model)


def outside_autocast(device_type: str) -> contextlib.AbstractContextManager:
    """Autocast switched off where it is on, so that the memory maths stays fp32 under bf16 autocast (it would run
    the read's two matmuls in bf16); elsewhere no region at all, so an exported fp32 graph holds none."""
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):  # none on "meta"
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


class MNAD(nn.Module):
    # the footage its training run recorded, [(absolute path, first frame, end frame)] (train.training_record's),
    # set by checkpoint.load_model from the model file: calibrate and the stream protocol check with it that the
    # calibration footage was not trained on. None: unknown (a model built here, or a file that records none)
    trained_footage: list[tuple[str, int, int]] | None = None

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c, w = config.channels, config.width
        self.encoder = Encoder(c * config.input_frames, w)
        self.memory = Memory(config.memory_size, config.feature_dim, update_max_over=config.update_max_over) if config.memory else None
        decoder_in = 2 * config.feature_dim if config.memory else config.feature_dim
        self.decoder = Decoder(decoder_in, c, w, skips=config.task == "pred")

    def forward(self, frames: torch.Tensor, items: torch.Tensor | None = None) -> MNADOutput:
        """``frames``: (B, input_frames * C, H, W), input frames stacked along channels, oldest first.
        ``items``: memory items to read instead of the module's own (an explicit input for ONNX export): (M, C), one
        set for the whole batch, or (B, M, C), each sample its own (several streams scored in one batch)."""
        features, skips = self.encoder(frames)
        b, c, h, w = features.shape
        # Queries are normalised per position in fp32 (or wider: an fp64 model stays fp64) and read the memory so, also
        # under bf16 autocast.
        query_map = F.normalize(features.to(torch.promote_types(features.dtype, torch.float32)), dim=1)
        queries = query_map.permute(0, 2, 3, 1).reshape(b, h * w, c)
        if self.memory is not None:
            items = self.memory.items if items is None else items
            flat = queries.reshape(-1, c) if items.dim() == 2 else queries  # per-sample items: each sample reads its own
            with outside_autocast(frames.device.type):
                read = read_memory(flat, items).reshape(b, h, w, c).permute(0, 3, 1, 2)
            decoder_in = torch.cat([query_map, read], dim=1)
        else:  # "w/o Mem." baseline: the decoder sees the query alone
            decoder_in = query_map
        return MNADOutput(frame=self.decoder(decoder_in, skips), queries=queries)

    def split_clip(self, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C, H, W) clip -> (model input stacked on channels, target frame): ``mnad.data.split_clip``."""
        from mnad.data.clips import split_clip

        return split_clip(clip, self.config)


def inference_copy(model: MNAD, *, bf16: bool = False, channels_last: bool = False) -> MNAD:
    """A frozen copy of ``model`` for scoring, the caller's model untouched: BatchNorm folded into the convolutions;
    with ``bf16`` the U-Net weights are cast once (under autocast they would be cast again at every frame) while the
    memory stays fp32 (run a bf16 copy under bf16 autocast); with ``channels_last`` the weights are stored NHWC."""
    # The structure is copied but the tensors are not: folding gives the convolutions new tensors, and only what
    # folding left shared is cloned, so the weights are never held three times over while the copy is made.
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    frozen = fold_batchnorm(copy.deepcopy(model, memo=dict(shared)).eval())
    for layer in frozen.modules():
        for name, tensor in layer._parameters.items():
            if tensor is not None and id(tensor) in shared:
                layer._parameters[name] = nn.Parameter(tensor.detach().clone())
        for name, tensor in layer._buffers.items():
            if tensor is not None and id(tensor) in shared:
                layer._buffers[name] = tensor.clone()
    frozen.requires_grad_(False)
    for layer in frozen.modules():
        if isinstance(layer, nn.ReLU):
            layer.inplace = True  # no autograd to keep the input for: save a feature map's allocation and pass
    if bf16:
        frozen.encoder.to(torch.bfloat16)
        frozen.decoder.to(torch.bfloat16)
    if channels_last:
        frozen.to(memory_format=torch.channels_last)
    return frozen


class FrozenCompiled(nn.Module):
    """``torch.compile`` of a module whose weights no longer change, with inductor's freezing: the weights become
    constants, so on CPU they are pre-packed for oneDNN once, each ReLU is fused into its convolution and the small
    operations between the convolutions are fused into a few kernels. Compiles at the first call, tens of seconds on
    a CPU; torch caches the result on disk. Only parameters and buffers are frozen: whatever changes between calls
    (the memory items at test time) must be an argument. Once compiled, the wrapped module's own weights are
    discarded (freeing their memory): use it through this wrapper only."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        object.__setattr__(self, "compiled", torch.compile(module, dynamic=False))  # not a submodule: no duplicate weights

    def forward(self, *args: torch.Tensor) -> torch.Tensor | tuple:
        from torch._inductor import config as inductor_config

        # Freezing is inductor configuration read while compiling (at the first call), not a torch.compile option.
        with inductor_config.patch(freezing=True, freezing_discard_parameters=True):
            return self.compiled(*args)
