"""The work of mnad's two steps, counted: GFLOP per scored frame (``stream.ScoringStep``, batch 1) and per training
step (``train.train_step``: forward, backward, Adam, memory update), convolutions and matrix products as torch's
FlopCounterMode counts them (a multiply-add is 2 FLOP). Both run the very steps scoring and training run, in fp32,
eagerly, once on zero inputs on the CPU (FlopCounterMode counts what runs): the count follows any change to the steps
(the patch D's product included) instead of a copy of them that could drift. Used by speed.py and multistream.py."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from mnad.config import Config
from mnad.model import MNAD
from mnad.stream import ScoringStep
from mnad.train import train_step

FP32_EAGER = ("eval.bf16=false", "eval.channels_last=false", "eval.compile=false",
              "train.bf16=false", "train.channels_last=false", "train.compile=false")


def score_gflop_per_frame(config: Config) -> float:
    """GFLOP of one scored frame: ``ScoringStep`` (the network, PSNR, D, patch D, the gated memory update)."""
    config = config.override(list(FP32_EAGER))
    m = config.model
    torch.manual_seed(0)
    model = MNAD(m).eval()
    step = ScoringStep(model, config).eval()
    inputs = torch.zeros(1, m.channels * m.input_frames, m.image_size, m.image_size)
    target = torch.zeros(1, m.channels, m.image_size, m.image_size)
    items = model.memory.items if model.memory is not None else torch.zeros(0)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        step(inputs, target, items)
    return counter.get_total_flops() / 1e9


def train_gflop_per_step(config: Config, batch: int) -> float:
    """GFLOP of one training step on ``batch`` clips: ``train.train_step`` as training runs it."""
    return sum(train_gflop_by_operator(config, batch).values())


def train_gflop_by_operator(config: Config, batch: int) -> dict[str, float]:
    """GFLOP of one training step on ``batch`` clips by the operator that does them (e.g. ``convolution``,
    ``convolution_backward``, ``mm``): ``train.train_step`` as training runs it."""
    config = config.override(list(FP32_EAGER))
    m = config.model
    torch.manual_seed(0)
    model = MNAD(m).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    clip = torch.zeros(batch, m.t_length, m.channels, m.image_size, m.image_size)
    counter = FlopCounterMode(display=False)
    with counter:
        train_step(model, optimizer, clip, config.train)
    by_name: dict[str, float] = {}
    for op, flops in counter.get_flop_counts()["Global"].items():  # overloads of one operator add up under its name
        name = str(getattr(op, "__name__", op)).split(".")[0]
        by_name[name] = by_name.get(name, 0.0) + flops / 1e9
    return by_name
