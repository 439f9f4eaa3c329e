"""ONNX export of the scoring step, and scoring with ONNX Runtime.

The exported graph is ``evaluate.ScoringStep``: memory items are an explicit input and output, so the test-time
memory update stays possible: the caller feeds each step's ``items_out`` into the next step.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from mnad.checkpoint import atomic_write
from mnad.config import Config
from mnad.errors import CheckpointError
from mnad.evaluate import ScoringStep
from mnad.model import MNAD

INPUTS = ["inputs", "target", "items"]
OUTPUTS = ["frame", "psnr", "distance", "regular_score", "items_out", "error_map"]


def example_inputs(config: Config) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    m, size = config.model, config.model.image_size
    inputs = torch.zeros(1, m.channels * m.input_frames, size, size)
    target = torch.zeros(1, m.channels, size, size)
    items = torch.nn.functional.normalize(torch.ones(m.memory_size if m.memory else 1, m.feature_dim), dim=1)
    return inputs, target, items


def export_onnx(model: MNAD, config: Config, path: str | Path, *, opset: int = 18) -> Path:
    """Write the scoring step as ONNX (fp32, batch 1) and its config as ``<path>.json`` beside it."""
    path = Path(path)
    # the ONNX graph is fp32 and traced from the eager modules, whatever the scoring options
    fp32 = config.override(["eval.bf16=false", "eval.channels_last=false", "eval.compile=false"])
    step = ScoringStep(model.eval().float(), fp32).eval()
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            # The TorchScript exporter handles this graph as it is; the torch.export-based one is not needed.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(step, example_inputs(config), str(tmp), input_names=INPUTS, output_names=OUTPUTS,
                              opset_version=opset, dynamo=False)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    side = {"config": config.to_dict(), "memory_items": model.memory.items.tolist() if model.memory is not None else None}
    atomic_write(Path(f"{path}.json"), json.dumps(side).encode())
    return path


class OnnxStep:
    """``ScoringStep`` run by ONNX Runtime: torch tensors in and out, so ``evaluate.score_stream`` can use it."""

    def __init__(self, path: str | Path, *, threads: int = 0) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: ONNX model not found")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise CheckpointError(f"{path}: not a loadable ONNX model ({exc})") from exc
        self.input_names = {i.name for i in self.session.get_inputs()}

    def __call__(self, inputs: torch.Tensor, target: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feed = {"inputs": inputs, "target": target, "items": items}
        feed = {k: np.ascontiguousarray(v.cpu().numpy(), dtype=np.float32) for k, v in feed.items() if k in self.input_names}
        outputs = self.session.run(OUTPUTS, feed)
        return tuple(torch.from_numpy(o) for o in outputs)


def load_onnx(path: str | Path, *, threads: int = 0) -> tuple[MNAD, Config, OnnxStep]:
    """An exported model: the step that runs it, its config, and a model shell holding the trained memory items
    (the shell's weights are never used: it provides the clip layout and carries the memory between steps)."""
    side = Path(f"{path}.json")
    if not side.is_file():
        raise CheckpointError(f"{side}: the config written beside the ONNX model is missing")
    data = json.loads(side.read_text())
    config = Config.from_dict(data["config"], source=str(side))
    step = OnnxStep(path, threads=threads)
    shell = MNAD(config.model)
    if shell.memory is not None:
        shell.memory.items.copy_(torch.tensor(data["memory_items"]))
    return shell, config, step
