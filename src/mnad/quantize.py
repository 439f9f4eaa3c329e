"""int8 scoring: the exported scoring step with its U-Net convolutions quantised by ONNX Runtime.

Static quantisation (``onnxruntime.quantization.quantize_static``), QDQ format: the U-Net's inner convolutions that
end in a ReLU (all but those at the frame's ends, below), those ReLUs and the max-pooling run on 8-bit integers.
Weights are int8 per output channel; activations uint8 with one scale per tensor, fixed by their min-max over clips of
normal footage (the training frames: the footage the model will mostly see). ONNX Runtime fuses the QDQ graph into
integer convolutions (QLinearConv, the ReLU folded into the output's range), which on the AVX2 CPU here was faster
than the QOperator graph. The weights keep a 7-bit range (``reduce_range``): AVX2 without VNNI multiplies uint8 by
int8 in pairs summed into int16, which can saturate with full 8-bit weights (2 x 255 x 127 > 32767) and cannot with
7-bit ones (2 x 255 x 63 = 32130). That is a guarantee for any model and any frame, and an export made on one CPU may
run on another. It costs a little accuracy where nothing saturates: on the shipped model with this graph, full 8-bit
weights were closer to fp32 (on Ped2 training clips, PSNR 0.021 against 0.031 dB off; benchmarks/README.md, "int8").

Everything else stays fp32: the convolution that makes the queries (the encoder's last, no ReLU); the convolutions at
the frame's ends, the first (it reads the frames) and the decoder's head (everything after its last upsampling: the
frame is made there); the transposed convolutions (ONNX Runtime has no integer kernel for them: quantised they ran
slower); and all the memory maths and scores: the memory read, D, the gated update, PSNR, E_t, the error map. The memory
maths is a negligible part of the work (10 items against the queries next to billions of multiply-adds in the
convolutions) and it is where 8 bits would hurt: D is a difference between nearly equal unit-vector products (computed
from 8-bit features, it moved by up to a quarter of its range over Ped2 test clips; by 3 % with the query convolution
kept fp32), the update is gated by E_t < gamma with gamma = 0.01, and PSNR takes the log of a small mean squared error.
Quantised, the frame's ends added a faint error to every pixel of the predicted frame. E_t weights the large errors
most, so many small new ones lowered it on nearly every frame, and more frames passed the update's gate than in fp32
(with the gate's hard threshold, each extra update then changes the memory every later frame reads). Kept fp32, E_t
follows fp32's closely; docs/performance.md, "int8 scoring", gives both evaluations on Ped2.

The int8 graph is written as any mnad export (``mnad.export``): the sidecar holds the config and the trained items,
and an ``int8`` record (method, ONNX Runtime version, which frames of which videos calibrated it, the fp32 graph's
SHA-256), all covered by the sidecar's SHA-256.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from mnad.config import Config
from mnad.data.clips import split_clip, spread_clips, to_tensor
from mnad.data.videos import Video
from mnad.errors import ConfigError, DataError, os_reason

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

CALIBRATION_CLIPS = 256  # spread over all the footage given; a few minutes of calibration on 2 cores
QUANTISED_OPS = ["Conv", "Relu", "MaxPool"]  # of which only the convolutions that end in a ReLU (kept_fp32)


def pick_clips(videos: Sequence[Video], config: Config, clips: int) -> list[tuple[int, int]]:
    """(video index, first frame) of ``clips`` clips spread evenly over every clip position of ``videos``."""
    if clips < 1:
        raise ConfigError(f"the number of calibration clips must be at least 1, got {clips}")
    length = config.model.t_length
    picks = spread_clips(videos, length, clips)
    if not picks:
        names = ", ".join(str(v.path) for v in videos[:3])
        raise DataError(f"{names}: too few frames to calibrate on (clips of {length} consecutive frames are needed)")
    return picks


def check_footage(videos: Sequence[Video], config: Config, clips: int) -> list[tuple[int, int]]:
    """``pick_clips``, and the footage's frames checked as ``calibrate`` checks its footage: the int8 ranges are the
    activations' min-max over these clips, so footage that never changes (a still or blank picture: every activation
    range fitted to one picture) is refused. Fewer clips than asked (short footage) is said in a warning."""
    picks = pick_clips(videos, config, clips)
    m = config.model
    first = videos[picks[0][0]].frame(picks[0][1], m.image_size, m.channels)
    if all(np.array_equal(videos[v].frame(start + i, m.image_size, m.channels), first)
           for v, start in picks for i in (0, m.t_length - 1)):
        names = ", ".join(sorted({str(videos[v].path) for v, _ in picks})[:3])
        raise DataError(f"{names}: calibration footage does not change (every frame is the same picture); "
                        "calibrate the int8 ranges on real normal footage")
    if len(picks) < clips:
        log.warning("int8 calibration on %d clips of %d frames, fewer than the %d asked: the footage has no more; "
                    "its activation ranges may not cover new footage (give more normal footage)", len(picks), m.t_length, clips)
    return picks


def calibration_feeds(videos: Sequence[Video], config: Config, items: torch.Tensor | None,
                      picks: list[tuple[int, int]]) -> Iterator[dict[str, np.ndarray]]:
    """The exported graph's inputs for each picked clip, with the trained memory items."""
    m = config.model
    memory = (items if items is not None else torch.zeros(1, m.feature_dim)).numpy()
    for v, start in picks:
        frames = np.stack([videos[v].frame(start + i, m.image_size, m.channels) for i in range(m.t_length)])
        inputs, target = split_clip(to_tensor(frames)[None], m)
        yield {"inputs": inputs.numpy(), "target": target.numpy(), "items": memory}


def kept_fp32(graph: onnx.ModelProto) -> list[str]:
    """The convolutions of an exported graph that stay fp32: the first (it reads the frames),
    those whose output is not a ReLU's input alone (the encoder's last, whose output makes the queries the memory maths
    reads, and the frame's), and every one after the last transposed convolution (the decoder's head, at the frame's
    resolution: the frame that PSNR and E_t read is made there)."""
    nodes = list(graph.graph.node)  # in topological order (ONNX requires it)
    readers: dict[str, list[str]] = {}
    for node in nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node.op_type)
    last_upsampling = max((i for i, n in enumerate(nodes) if n.op_type == "ConvTranspose"), default=len(nodes))
    convs = [(i, n) for i, n in enumerate(nodes) if n.op_type == "Conv"]
    first = convs[0][1].name if convs else None
    return [n.name for i, n in convs
            if n.name == first or readers.get(n.output[0]) != ["Relu"] or i > last_upsampling]


def quantize_graph(graph: bytes, config: Config, items: torch.Tensor | None, videos: Sequence[Video], *,
                   clips: int = CALIBRATION_CLIPS, reduce_range: bool = True) -> tuple[bytes, dict]:
    """The fp32 scoring graph with its convolutions quantised to int8, calibrated on ``clips`` clips of ``videos``
    (normal footage); returns the int8 graph and the record of how it was made (for the sidecar). ``reduce_range``:
    7-bit weights (see the module's docstring; False only to measure why, benchmarks/int8_range.py)."""
    try:
        import onnx
        import onnxruntime
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    except ImportError as exc:
        raise ConfigError(f"int8 export needs onnx and onnxruntime ({exc.name} is missing): pip install 'mnad[export]'") from exc

    if not videos:
        raise ConfigError("int8 needs normal footage to calibrate on (the training videos)")
    picks = pick_clips(videos, config, clips)  # export_onnx checked the footage (check_footage) before tracing
    feeds = calibration_feeds(videos, config, items, picks)

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(feeds, None)

    fp32 = kept_fp32(onnx.load_model_from_string(graph))
    disabled = logging.root.manager.disable
    try:
        with tempfile.TemporaryDirectory(prefix="mnad-int8-") as work:
            source, target = Path(work) / "fp32.onnx", Path(work) / "int8.onnx"
            source.write_bytes(graph)
            logging.disable(logging.WARNING)  # the quantiser's advice to pre-process the graph, on the root logger: no gain measured here
            try:
                quantize_static(
                    source, target, Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=QUANTISED_OPS, per_channel=True,
                    reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=fp32,
                )
            finally:
                logging.disable(disabled)
            quantised = target.read_bytes()
    except OSError as exc:  # the work files (the graph, the quantiser's augmented copy) live in the temporary folder
        reason = os_reason(exc)
        raise DataError(f"{exc.filename or tempfile.gettempdir()}: cannot write the int8 quantiser's work files ({reason}); "
                        "free space there or set TMPDIR to another folder") from exc
    record = {
        "method": "onnxruntime.quantization.quantize_static",
        "onnxruntime": onnxruntime.__version__,
        "format": "QDQ",
        "quantised_ops": QUANTISED_OPS,
        "fp32_convolutions": fp32,
        "weights": f"int8 with a {7 if reduce_range else 8}-bit range{' (reduce_range)' if reduce_range else ''}, symmetric, per output channel",
        "activations": "uint8, per tensor, min-max over the calibration clips",
        "fp32_onnx_sha256": hashlib.sha256(graph).hexdigest(),
        "calibration": {
            "clips": len(picks),
            "frames_per_clip": config.model.t_length,
            "videos": [{"path": str(video.path), "frames": len(video), "clip_starts": [s for i, s in picks if i == v]}
                       for v, video in enumerate(videos) if any(i == v for i, _ in picks)],
        },
    }
    return quantised, record


def check_int8(model: object, checkpoint: str | Path) -> None:
    """What ``--int8`` asks for: scoring with an int8 export. Anything else is refused, naming the command that makes one
    (quantising on the fly would need the training footage at every run and leave the int8 model nowhere to reuse)."""
    from mnad.export import OnnxModel

    if isinstance(model, OnnxModel) and model.int8 is not None:
        return
    if isinstance(model, OnnxModel):
        what, source = "an fp32 ONNX export", "MODEL"
    else:
        what, source = "a PyTorch model", str(checkpoint)
    raise ConfigError(
        f"{checkpoint}: --int8 scores with an int8 ONNX export and this is {what}; make one with `mnad export --checkpoint "
        f"{source} --int8 --data-root DATA --out model.int8.onnx` (calibrated on the training frames under DATA) and pass "
        "that file as --checkpoint"
    )
