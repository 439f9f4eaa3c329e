"""train.compile: the training step with its forward and backward compiled computes what the eager step computes.

One step from the same weights on the same batch, eager and compiled (fp32, the tiny 32x32 model, so that compiling
takes well under a minute on an idle 2-core CPU; torch caches the compiled graphs on disk). Tolerances, with what was
measured on an AVX2 CPU (torch 2.13):

- the four losses: relative 1e-5 (measured 2e-7);
- the memory items after the step's update: 1e-5 absolute (measured 8e-7); they are unit vectors;
- every parameter's gradient: ||compiled - eager|| / ||eager|| <= 1e-2 per tensor (where the gradient is 0 up to
  rounding, the bias of a convolution followed by BatchNorm, both below 1e-5 of the largest gradient's norm). Measured 2e-5, except where a ReLU
  input lies within float rounding of 0: the one path passes that element's gradient, the other does not, and every
  layer before it inherits the difference (2.5e-3 on this batch, from one such element in the decoder's head; eager
  fp32 differs from a float64 computation of the same step by the same 2.5e-3 there, compiled by 2e-5);
- the weights after the Adam step: 2 * lr absolute, since Adam moves each weight by at most about lr, whatever the
  size of its gradient (a gradient that is rounding noise, e.g. of a convolution bias before BatchNorm, still moves);
- the BatchNorm running statistics: 1e-5 absolute.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from mnad.model import MNAD
from mnad.train import train, train_step

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="torch.compile on CPU needs a C++ compiler")

LOSS_TOLERANCE = 1e-5  # relative
ITEMS_TOLERANCE = 1e-5  # absolute
GRAD_TOLERANCE = 1e-2  # per-tensor norm of the difference, relative
BUFFER_TOLERANCE = 1e-5  # BatchNorm running mean and variance, absolute


def _step(model: MNAD, clip: torch.Tensor, compile: bool) -> dict:
    config = tiny_config()
    config.train.compile = compile
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    losses = train_step(model, optimizer, clip, config.train)
    return {"losses": losses.as_floats(), "grads": {k: p.grad.clone() for k, p in model.named_parameters()},
            "state": {k: v.clone() for k, v in model.state_dict().items()}, "optimizer": optimizer, "config": config}


def test_compiled_step_equals_the_eager_step() -> None:
    config = tiny_config()
    torch.manual_seed(0)
    model = MNAD(config.model).train()
    before = model.memory.items.clone()
    clip = torch.rand(4, config.model.t_length, 3, 32, 32) * 2 - 1
    eager = _step(copy.deepcopy(model), clip, compile=False)
    compiled_model = copy.deepcopy(model)
    compiled = _step(compiled_model, clip, compile=True)

    for key, value in eager["losses"].items():
        assert compiled["losses"][key] == pytest.approx(value, rel=LOSS_TOLERANCE), key
    items = compiled["state"]["memory.items"]
    assert not torch.allclose(items, before, atol=1e-3)  # the step did update the memory
    assert (items - eager["state"]["memory.items"]).abs().max() <= ITEMS_TOLERANCE
    assert eager["grads"].keys() == compiled["grads"].keys()
    scale = max(float(g.norm()) for g in eager["grads"].values())
    for key, grad in eager["grads"].items():
        other = compiled["grads"][key]
        if grad.norm() < 1e-5 * scale:  # the bias of a convolution before BatchNorm: its gradient is 0 up to rounding
            assert other.norm() < 1e-5 * scale, key
        else:
            assert (other - grad).norm() <= GRAD_TOLERANCE * grad.norm(), key
    lr = config.train.lr
    for key, value in eager["state"].items():
        diff = (compiled["state"][key].double() - value.double()).abs().max()
        if key.endswith(("running_mean", "running_var")):
            assert diff <= BUFFER_TOLERANCE, key
        elif key.endswith("num_batches_tracked"):
            assert diff == 0, key
        elif key != "memory.items":
            assert diff <= 2 * lr, key

    # a second step reuses the compiled graphs (no recompilation), and still updates the memory
    with torch._dynamo.config.patch(error_on_recompile=True):
        losses = train_step(compiled_model, compiled["optimizer"], clip, compiled["config"].train)
    assert torch.isfinite(losses.total)
    assert not torch.equal(compiled_model.memory.items, items)


def test_train_with_compile_runs_and_records_it(synthetic_root: Path, tmp_path: Path) -> None:
    """train() with train.compile: the loop's batches (4 clips of 32x32) reuse the graphs compiled above (for another
    model: the weights are inputs of the graphs), or compile them here when this test runs alone."""
    config = tiny_config()
    config.train.compile = True
    config.train.batch_size = 4
    with torch._dynamo.config.patch(error_on_recompile=True):
        path = train(config, synthetic_root, tmp_path / "run", progress=False)
    assert path.is_file()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["compile"] is True
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and all(torch.isfinite(torch.tensor(log[0][k])) for k in ("loss_total", "loss_frame"))


def test_the_benchmarks_prepare_the_model_as_train_does() -> None:
    """speed.py, profile_train.py and train_precision.py each copied train()'s preparation (channels_last, train
    mode); they now call mnad.train.prepared_for_training, which train() calls too."""
    from mnad.config import TrainConfig
    from mnad.model import MNAD
    from mnad.train import prepared_for_training

    config = tiny_config()
    model = prepared_for_training(MNAD(config.model).eval(), TrainConfig(channels_last=True))
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert model.training and conv.weight.is_contiguous(memory_format=torch.channels_last)
    plain = prepared_for_training(MNAD(config.model).eval(), TrainConfig(channels_last=False), "cpu")
    assert next(m for m in plain.modules() if isinstance(m, torch.nn.Conv2d)).weight.is_contiguous()
    root = Path(__file__).resolve().parents[1]
    for name in ("speed.py", "profile_train.py", "train_precision.py"):
        text = (root / "benchmarks" / name).read_text()
        assert "prepared_for_training(" in text and "memory_format=torch.channels_last" not in text, name
