"""ONNX export of the scoring step, and scoring with ONNX Runtime.

The exported graph is ``stream.ScoringStep``: memory items are an explicit input and output, so the test-time memory
update stays possible (the streaming scorer feeds each step's ``items`` into the next). The sidecar ``<file>.json``
holds the config and the trained items, with the SHA-256 of the graph and of its own content: both are checked
before use. An int8 export (``mnad.quantize``) is the same graph with its convolutions quantised; its sidecar also
records how it was calibrated (``int8``; null for fp32).
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import io
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mnad.atomic import atomic_write_many
from mnad.calibrate import footage_videos
from mnad.checkpoint import check_calibrated_weights, is_onnx_export, non_finite, weights_digest
from mnad.config import Config, check_count, check_same_model, checked_config
from mnad.data.videos import Video
from mnad.errors import CheckpointError, ConfigError, DataError, MNADError
from mnad.launch import single_process
from mnad.model import MNAD
from mnad.outputs import check_output_file, check_replace, output_path
from mnad.quantize import CALIBRATION_CLIPS, check_footage, quantize_graph
from mnad.stream import ScoringStep, StepResult
from mnad.threads import apply_threads

SIDECAR_FORMAT = "mnad-onnx-2"  # 2: the step also outputs patch_distance
INPUTS = ["inputs", "target", "items"]
OUTPUTS = [f"{name}_out" if name in INPUTS else name for name in StepResult._fields]  # ONNX names are unique: items -> items_out


def example_inputs(config: Config) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    m, size = config.model, config.model.image_size
    inputs = torch.zeros(1, m.channels * m.input_frames, size, size)
    target = torch.zeros(1, m.channels, size, size)
    items = torch.nn.functional.normalize(torch.ones(m.memory_size if m.memory else 1, m.feature_dim), dim=1)
    return inputs, target, items


def _sidecar_digest(side: dict) -> str:
    body = {k: v for k, v in side.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def check_export_output(path: str | Path, *, overwrite: bool = False) -> Path:
    """Where an export is written (``--out``, a .onnx file, and its sidecar beside it): both writable, and no earlier
    export there (either file) unless ``overwrite`` (``outputs.check_replace``); checked before minutes of tracing
    and quantising, not at the write. Returns the graph's path."""
    path = output_path(path, "--out")
    if not is_onnx_export(path):  # readers tell an export from a PyTorch model by this name
        raise ConfigError(f"{path}: an ONNX export is written as a .onnx file (its sidecar beside it, .onnx.json)")
    if not path.parent.is_dir():
        raise DataError(f"{path.parent}: the output folder does not exist")
    for target in (path, Path(f"{path}.json")):
        check_output_file(target)
    check_replace([path, Path(f"{path}.json")], overwrite=overwrite)
    return path


def export_onnx(model: MNAD, config: Config, path: str | Path, *, opset: int = 18, int8: bool = False,
                calibration: Sequence[Video] = (), calibration_clips: int | None = None, overwrite: bool = False) -> Path:
    """Write the scoring step as ONNX (fp32, batch 1) and its sidecar ``<path>.json``; both or neither. An earlier
    export there (either file) is refused unless ``overwrite``, and then replaced only once the new one is written.

    ``int8``: the U-Net's convolutions quantised to int8 (``mnad.quantize``), calibrated on ``calibration_clips`` clips
    (default ``quantize.CALIBRATION_CLIPS``) spread over ``calibration``, normal footage such as the training videos."""
    if isinstance(model, OnnxModel):  # its graph is what is exported: nothing to trace (was: a pickling TypeError)
        raise ConfigError("the model is an ONNX export already: export again from the .safetensors model it was exported "
                          "from (--int8 for an int8 one)")
    if not isinstance(model, MNAD):
        raise ConfigError(f"the model to export must be an MNAD (mnad.load_model of a .safetensors model), got {type(model).__name__}")
    if not isinstance(int8, bool):  # a string such as "no" would be true
        raise ConfigError(f"int8 must be True or False, got {int8!r}")
    checked_config(config)  # a Config changed by hand as a config file, before the output is checked or footage read
    single_process("mnad export")  # each rank would write the same file
    apply_threads(config)  # train.threads (--threads), as train() applies it (the int8 calibration runs the model)
    path = check_export_output(path, overwrite=overwrite)
    check_same_model(model, config)  # the sidecar's config must describe the graph (was: another memory size recorded)
    bad = non_finite({k: v.detach().cpu() for k, v in model.state_dict().items()})
    if bad is not None:  # as save_checkpoint refuses them (was: written, loaded, and every frame scored NaN)
        raise CheckpointError(f"{path}: refusing to export a model whose tensor {bad!r} holds NaN or Inf (training diverged?)")
    check_calibrated_weights(model, config)  # its calibration, if any, must be of these weights (the sidecar records them)
    if calibration_clips is not None:
        check_count("--calibration-clips", calibration_clips)
    calibration = footage_videos(calibration, config.model.pixel_range)
    if int8 and not calibration:
        raise ConfigError("an int8 export is calibrated on normal footage: give the training videos (--data-root or --calibration-data)")
    if (calibration or calibration_clips is not None) and not int8:
        raise ConfigError("calibration footage and clips are for an int8 export only (add --int8)")
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise ConfigError(f"opset must be a whole number (an ONNX opset version), got {opset!r}")
    clips = CALIBRATION_CLIPS if calibration_clips is None else calibration_clips
    if int8:
        check_footage(calibration, config, clips)  # checked before the minutes of tracing and calibrating
    onnx_modules("an ONNX export", "onnx")
    # the ONNX graph is fp32 and traced from the eager modules, whatever the scoring options; it scores on the CPU
    # (ONNX Runtime's CPU provider), so a model trained on a GPU does not make its export's commands ask for one
    fp32 = config.override(["eval.bf16=false", "eval.channels_last=false", "eval.compile=false", "train.device=cpu"])
    # a copy: eval() and float() act in place, and the caller's model (in training, or bf16) is left as it was; on the
    # CPU, where example_inputs are (was: a model loaded on a GPU failed the trace with torch's device mismatch)
    step = ScoringStep(copy.deepcopy(model).cpu().eval().float(), fp32).eval()
    buffer = io.BytesIO()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter handles this graph as it is; the torch.export-based one is not needed.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the sizes are fixed: the graph is for one frame size
        try:
            torch.onnx.export(step, example_inputs(config), buffer, input_names=INPUTS, output_names=OUTPUTS,
                              opset_version=opset, dynamo=False)
        except torch.onnx.errors.OnnxExporterError as exc:  # an opset too old for one of the step's operators
            raise ConfigError(f"opset {opset}: the scoring step cannot be exported with it ({exc}); use the default, 18") from exc
        except RuntimeError as exc:  # torch's own check of the opset's range is a plain RuntimeError
            if "opset" not in str(exc).lower():
                raise
            raise ConfigError(f"opset {opset}: {exc}; use the default, 18") from exc
    graph, record = buffer.getvalue(), None
    items = model.memory.items.detach().float().cpu() if model.memory is not None else None
    if int8:
        graph, record = quantize_graph(graph, config, items, calibration, clips=clips)
    side = {
        "format": SIDECAR_FORMAT,
        "onnx_sha256": hashlib.sha256(graph).hexdigest(),
        "config": fp32.to_dict(),  # what the graph does (was the model's: eval.compile=true made the export unusable)
        "memory_items": items.tolist() if items is not None else None,
        "int8": record,
        # of the model exported (as load_model reads it): a calibration must have been fitted on it (OnnxModel.weights_sha256)
        "weights_sha256": weights_digest(model),
    }
    side["sha256"] = _sidecar_digest(side)
    atomic_write_many({path: graph, Path(f"{path}.json"): json.dumps(side, allow_nan=False).encode()})
    return path


def onnx_modules(what: str, *names: str) -> None:
    """Refuse, with one ``ConfigError`` naming the missing package, ``what`` that needs ``names`` (onnx to write an
    export, onnxruntime to score one): they are the optional ``export`` extra, not installed with mnad itself."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"{what} needs {name}, which is not installed ({exc}): pip install 'mnad[export]'") from exc


def check_graph_inputs(step: OnnxStep, config: Config, side_path: Path) -> None:
    """Refuse (``CheckpointError`` naming the sidecar) a graph whose inputs are not of the sizes the sidecar's config
    gives them (``example_inputs``: frame size, channels, frames, memory items): the scorer feeds it frames and items of
    those sizes (was: ONNX Runtime's INVALID_ARGUMENT traceback at the first frame scored)."""
    wanted = dict(zip(INPUTS, (tuple(t.shape) for t in example_inputs(config)), strict=True))
    for node in step.session.get_inputs():
        shape = wanted.get(node.name)
        got = tuple(node.shape)
        if shape is not None and (len(got) != len(shape) or any(isinstance(g, int) and g != w for g, w in zip(got, shape, strict=True))):
            raise CheckpointError(f"{side_path}: the graph takes {node.name} of shape {got}, and its config gives "
                                  f"{shape}: the sidecar is not this graph's")


class OnnxStep:
    """``ScoringStep`` run by ONNX Runtime: torch tensors in, a ``StepResult`` out. ``precision``: what its graph
    computes in, 'fp32' or 'int8' (quantised convolutions), as ``stream.step_precision`` reads it."""

    def __init__(self, graph: bytes, source: Path, *, threads: int = 0, precision: str = "fp32") -> None:
        self.precision = precision
        onnx_modules(f"{source}: scoring an ONNX export", "onnxruntime")
        import onnxruntime as ort

        options = ort.SessionOptions()
        # no pre-planned block for all intermediate tensors: ~110 MiB less at 256x256, as fast (benchmarks/memory.py)
        options.enable_mem_pattern = False
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise CheckpointError(f"{source}: not a loadable ONNX model ({exc})") from exc
        self.input_names = {i.name for i in self.session.get_inputs()}

    def __call__(self, inputs: torch.Tensor, target: torch.Tensor, items: torch.Tensor) -> StepResult:
        feed = {"inputs": inputs, "target": target, "items": items}
        feed = {k: np.ascontiguousarray(v.cpu().numpy(), dtype=np.float32) for k, v in feed.items() if k in self.input_names}
        return StepResult(*(torch.from_numpy(o) for o in self.session.run(OUTPUTS, feed)))


@dataclass
class OnnxModel:
    """An exported model: the step that runs it, its config and its trained memory items (explicit state)."""

    step: OnnxStep
    config: Config
    items: torch.Tensor | None
    int8: dict | None = None  # how an int8 export was quantised and calibrated; None: fp32
    digest: str | None = None  # SHA-256 of the graph (its weights): what a saved stream state belongs to
    # SHA-256 of the weights of the model it was exported from (checkpoint.weights_digest), which a calibration must have
    # been fitted on, int8 or not; None in a sidecar written before it was recorded (not compared)
    weights_sha256: str | None = None

    def to(self, device: str | torch.device) -> OnnxModel:
        """As a torch module's ``to``, for code that moves models (``evaluate``): ONNX Runtime scores on the CPU here."""
        if torch.device(device).type != "cpu":
            raise ConfigError(f"an ONNX model scores on the CPU (ONNX Runtime's CPU provider), not on {device}")
        return self

    def eval(self) -> OnnxModel:
        return self


def load_onnx(path: str | Path, *, threads: int | Callable[[Config], int] = 0) -> OnnxModel:
    """Load an exported model, its graph and sidecar checked against their SHA-256. ``threads``: ONNX Runtime's
    intra-op threads (0: its default, one per physical core), or a function of the export's config that gives them
    (the session is built with them, so a caller whose options set them, the CLI's --threads, applies them first)."""
    if not isinstance(path, str | Path):
        raise ConfigError(f"the ONNX export to load must be a path (str or Path), got {type(path).__name__}")
    path, side_path = Path(path), Path(f"{path}.json")
    for needed in (path, side_path):
        if not needed.is_file():
            raise CheckpointError(f"{needed}: not found (`mnad export` writes the .onnx file and its .onnx.json together)")
    try:
        graph = path.read_bytes()
        side = json.loads(side_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested beyond Python's stack
        raise CheckpointError(f"{side_path}: not a readable sidecar (truncated or damaged: {exc})") from exc
    if not isinstance(side, dict) or side.get("format") != SIDECAR_FORMAT:
        raise CheckpointError(f"{side_path}: not an mnad ONNX sidecar (export the model again with this version)")
    if side.get("sha256") != _sidecar_digest(side):
        raise CheckpointError(f"{side_path}: content does not match its stored SHA-256 (the file was altered or damaged)")
    if side.get("onnx_sha256") != hashlib.sha256(graph).hexdigest():
        raise CheckpointError(f"{path}: the ONNX graph does not match the SHA-256 in {side_path.name} (altered, or another export's)")
    try:
        config = Config.from_dict(side["config"], source=str(side_path))
        items = torch.tensor(side["memory_items"], dtype=torch.float32) if side["memory_items"] is not None else None
    except (KeyError, TypeError, ValueError, MNADError) as exc:
        raise CheckpointError(f"{side_path}: the stored config or memory is unusable ({exc})") from exc
    m = config.model
    if (items is None) == m.memory or (items is not None and tuple(items.shape) != (m.memory_size, m.feature_dim)):
        raise CheckpointError(f"{side_path}: the memory items do not match the config")
    if items is not None and not bool(torch.isfinite(items).all()):  # as load_model refuses a model file's (JSON reads NaN)
        raise CheckpointError(f"{side_path}: the memory items hold NaN or Inf values; the export is unusable")
    int8 = side.get("int8")  # absent in sidecars written before int8 exports: fp32
    if int8 is not None and not isinstance(int8, dict):
        raise CheckpointError(f"{side_path}: the int8 record is unusable")
    weights = side.get("weights_sha256")  # absent in sidecars written before it was recorded
    if weights is not None and not (isinstance(weights, str) and len(weights) == 64 and set(weights) <= set("0123456789abcdef")):
        raise CheckpointError(f"{side_path}: the weights' SHA-256 is unusable")
    if callable(threads):
        threads = threads(config)
    check_count("threads", threads, minimum=0)
    step = OnnxStep(graph, path, threads=threads, precision="int8" if int8 is not None else "fp32")
    check_graph_inputs(step, config, side_path)
    model = OnnxModel(step, config, items, int8, side["onnx_sha256"], weights)
    check_calibrated_weights(model, config, str(side_path))
    return model
