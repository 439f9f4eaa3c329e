"""The most int8 scoring can gain, from the work it leaves in floating point (issue #18); writes results/int8_bound.json.

    python benchmarks/int8_bound.py          # seconds: counts work, times nothing

Issue #18 asks int8 for >= 1.7x the compiled bf16 frame rate on the AMX Xeon. This machine-independent count says how
much of each frame's work the int8 graph can put on int8 at all. It exports the scoring step exactly as ``mnad export
--int8`` does (``mnad.export``; random weights: the work does not depend on them), reads every tensor's shape from ONNX
shape inference, and counts each convolution's multiply-adds (2 FLOP each), split as ``mnad.quantize`` runs them:

* ``int8``: the convolutions ONNX Runtime runs on integers (all but the next two kinds);
* ``kept``: the convolutions ``mnad.quantize.kept_fp32`` keeps fp32 for accuracy (the first, the query and frame
  convolutions, the decoder's head at the frame's resolution);
* ``transposed``: the transposed convolutions (no integer kernel in ONNX Runtime: they stay fp32).

From those and the AMX Xeon's matrix-multiply peaks in ``results/speed.json`` (fp32 and bf16, measured by
``speed.py``) it gives the frame rate each split would reach if every convolution ran at its precision's peak and
nothing else took any time: an upper bound. AMX's int8 peak is taken as twice its bf16 peak (AMX's int8 rate per cycle;
the issue's "about twice"): it is not measured (no int8 matrix product in torch is known to use AMX). A convolution can
beat the matmul peak a little: in ``results/profile.json`` the compiled bf16 convolutions ran at up to 116 % of it; each
bound is also given with every peak scaled by that measured ratio (the most generous bound). Each is set against the
goal: 1.7x the measured compiled bf16 frame rate in the same speed.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = HERE / "results" / "int8_bound.json"
SCHEMA = "mnad-int8-bound-1"
TARGET_SPEEDUP = 1.7
INT8_OVER_BF16 = 2.0  # AMX: 2048 int8 multiply-adds per cycle and core against 1024 bf16 (Intel's AMX specification)

sys.path.insert(0, str(HERE))
from speed import result_head, write_results  # noqa: E402  (the same helper as the other benchmarks)


def conv_gflop(size: int) -> dict:
    """GFLOP per frame of the exported scoring step's convolutions at ``size``, by how the int8 graph runs them."""
    import onnx
    import torch

    from mnad.config import load_config
    from mnad.export import export_onnx
    from mnad.model import MNAD
    from mnad.quantize import kept_fp32

    torch.manual_seed(0)
    config = load_config("ped2_pred").override([f"model.image_size={size}"])
    with tempfile.TemporaryDirectory(prefix="mnad-int8-bound-") as tmp:
        path = export_onnx(MNAD(config.model).eval(), config, Path(tmp) / "step.onnx")
        graph = onnx.shape_inference.infer_shapes(onnx.load(path))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*graph.graph.value_info, *graph.graph.input, *graph.graph.output]}
    weights = {w.name: list(w.dims) for w in graph.graph.initializer}
    kept = set(kept_fp32(graph))
    split = {"int8": 0.0, "kept": 0.0, "transposed": 0.0}
    layers = []
    for node in graph.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        w = weights[node.input[1]]  # Conv: [out, in/groups, kh, kw]; ConvTranspose: [in, out/groups, kh, kw]
        # each output element of a Conv, each input element of a ConvTranspose, takes w[1] * kh * kw multiply-adds
        elements = shapes[node.output[0]] if node.op_type == "Conv" else shapes[node.input[0]]
        gflop = 2 * math.prod(elements) * w[1] * w[2] * w[3] / 1e9
        kind = "transposed" if node.op_type == "ConvTranspose" else "kept" if node.name in kept else "int8"
        split[kind] += gflop
        layers.append({"name": node.name, "op": node.op_type, "runs_as": "int8" if kind == "int8" else "fp32",
                       "weight": w, "gflop": gflop})
    return {"size": size, "gflop": split, "total_gflop": sum(split.values()), "layers": layers}


def _relative(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def bounds(work: dict, speed: dict, conv_over_peak: float) -> dict:
    """Upper-bound frame rates of the int8 graph on the machine of ``speed`` (speed.json), against the goal;
    ``conv_over_peak``: the best measured convolution rate over the bf16 matmul peak (profile.json)."""
    fp32, bf16 = speed["peak"]["fp32"]["gflops_median"], speed["peak"]["bf16"]["gflops_median"]
    int8 = INT8_OVER_BF16 * bf16
    g = work["gflop"]
    rest = g["kept"] + g["transposed"]
    compiled = next(r["fps"] for r in speed["scoring"] if r["size"] == work["size"] and r["config"] == "mnad-compiled")
    cases = {
        "as_built": (g["int8"] / int8 + rest / fp32, "int8 as mnad.quantize builds it: the kept and transposed "
                     "convolutions at the fp32 peak (ONNX Runtime has no bf16 convolution on x86)"),
        "rest_in_bf16": (g["int8"] / int8 + rest / bf16, "the same split with the kept and transposed convolutions in "
                         "bf16 (a runtime that mixes int8 and bf16 kernels)"),
        "all_int8": (work["total_gflop"] / int8, "every convolution int8 (the accuracy goal given up)"),
    }
    goal = TARGET_SPEEDUP * compiled
    return {
        "peaks_gflops": {"fp32": fp32, "bf16": bf16, "int8_assumed": int8},
        "conv_over_matmul_peak": conv_over_peak,
        "compiled_bf16_fps": compiled,
        "goal_fps": goal,
        "cases": {name: {"what": what, "bound_fps": 1 / seconds, "bound_vs_compiled_bf16": 1 / seconds / compiled,
                         "generous_bound_fps": conv_over_peak / seconds,
                         "generous_bound_vs_compiled_bf16": conv_over_peak / seconds / compiled,
                         "goal_reachable": conv_over_peak / seconds >= goal}
                  for name, (seconds, what) in cases.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--speed", type=Path, default=HERE / "results" / "speed.json",
                        help="speed.json of the machine to bound (its matmul peaks and compiled bf16 row)")
    parser.add_argument("--profile", type=Path, default=HERE / "results" / "profile.json",
                        help="profile.json of the same machine (how far its convolutions beat the matmul peak)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    speed, profile = json.loads(args.speed.read_text(encoding="utf-8")), json.loads(args.profile.read_text(encoding="utf-8"))
    if profile["machine"]["cpu_model"] != speed["machine"]["cpu_model"]:
        parser.error(f"{args.profile} and {args.speed} were measured on different CPUs")
    rows = []
    for size in args.sizes:
        work = conv_gflop(size)
        ratio = max(r["conv_fraction_of_bf16_peak"] for r in profile["rows"] if r["size"] == size)
        rows.append(work | {"bound": bounds(work, speed, ratio)})
    record = result_head(SCHEMA, __file__, argv, quick=None, device=None) | {  # no quick mode; no machine (it times nothing)
        "profile_json": {"path": _relative(args.profile), "created": profile["created"]},
        "speed_json": {"path": _relative(args.speed),
                       "created": speed["created"], "cpu_model": speed["machine"]["cpu_model"],
                       "cpu_flags": speed["machine"].get("cpu_flags")},
        "int8_over_bf16_assumed": INT8_OVER_BF16, "target_speedup": TARGET_SPEEDUP, "rows": rows,
    }
    write_results(args.out, record)
    for row in rows:
        g, b = row["gflop"], row["bound"]
        print(f"{row['size']}x{row['size']}: {row['total_gflop']:.1f} GFLOP/frame, int8 {g['int8']:.1f}, kept fp32 {g['kept']:.1f}, "
              f"transposed {g['transposed']:.1f}; goal {b['goal_fps']:.1f} frames/s; bounds: "
              + ", ".join(f"{k} {c['bound_fps']:.1f}-{c['generous_bound_fps']:.1f} ({c['bound_vs_compiled_bf16']:.2f}-"
                          f"{c['generous_bound_vs_compiled_bf16']:.2f}x)" for k, c in b["cases"].items()))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
