"""Why mnad's int8 weights keep a 7-bit range (``mnad.quantize``, ``reduce_range``); writes results/int8_range.json.

    python benchmarks/int8_range.py --data-root ../shared/data      # a few minutes on 2 cores
    python benchmarks/int8_range.py --data-root ../shared/data --split testing --out benchmarks/results/repeats/int8_range_testing.json

The shipped model's scoring graph (``mnad export``) is quantised twice exactly as ``mnad export --int8`` does it, on
the same calibration clips of Ped2's training frames: with 7-bit weights (what mnad ships) and with full 8-bit
weights. The three graphs (fp32 and both int8) then score the same Ped2 clips (``--split``: training frames, normal
footage, by default; no labels are read either way) through ONNX Runtime, each clip
reading the trained memory (no test-time update: every clip is scored on its own), and the PSNR and E_t of each int8
graph are compared with fp32's. Where the CPU has no VNNI (AVX2 only), ONNX Runtime multiplies uint8 activations by
int8 weights in pairs summed into int16, which can saturate with full-range weights; with VNNI or AMX it does not, so
the JSON records which of them this CPU has.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "int8_range.json"
SCHEMA = "mnad-int8-range-1"

sys.path.insert(0, str(HERE))
from int8 import cpu_info  # noqa: E402  (the same CPU record as int8.py)
from speed import result_head, write_results  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", required=True, help="folder holding ped2/training and ped2/testing")
    p.add_argument("--checkpoint", default="ped2-pred", help="model to quantise (default: the shipped model)")
    p.add_argument("--calibration-clips", type=int, default=64)
    p.add_argument("--split", choices=["training", "testing"], default="training", help="which Ped2 frames are scored")
    p.add_argument("--clips", type=int, default=100, help="clips scored, spread over every video of the split")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)

    import torch

    from mnad.checkpoint import load_model
    from mnad.data import split_videos
    from mnad.export import OnnxStep, export_onnx
    from mnad.quantize import calibration_feeds, pick_clips, quantize_graph

    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    model, config = load_model(args.checkpoint)
    items = model.memory.items.detach().float()
    training = split_videos(args.data_root, "ped2", "training")
    scored_videos = split_videos(args.data_root, "ped2", args.split)
    with tempfile.TemporaryDirectory(prefix="mnad-int8-range-") as tmp:
        fp32 = export_onnx(model, config, Path(tmp) / "fp32.onnx").read_bytes()
    graphs = {"fp32": fp32}
    for bits in (7, 8):
        print(f"quantising with {bits}-bit weights ...", file=sys.stderr)
        graphs[f"int8-{bits}bit"], _ = quantize_graph(fp32, config, items, training, clips=args.calibration_clips,
                                                       reduce_range=bits == 7)
    steps = {name: OnnxStep(graph, Path(f"<{name}>"), threads=args.threads) for name, graph in graphs.items()}
    picks = pick_clips(scored_videos, config, args.clips)
    scored: dict[str, list[tuple[float, float]]] = {name: [] for name in steps}
    for feed in calibration_feeds(scored_videos, config, items, picks):
        tensors = [torch.from_numpy(feed[k]) for k in ("inputs", "target", "items")]
        for name, step in steps.items():
            result = step(*tensors)
            scored[name].append((float(result.psnr[0]), float(result.regular[0])))
    rows = []
    for name in ("int8-7bit", "int8-8bit"):
        psnr_diff = [abs(a[0] - b[0]) for a, b in zip(scored[name], scored["fp32"], strict=True)]
        e_ratio = [a[1] / b[1] for a, b in zip(scored[name], scored["fp32"], strict=True) if b[1] > 0]
        rows.append({"graph": name, "reduce_range": name == "int8-7bit",
                     "psnr_abs_diff_db": {"mean": statistics.fmean(psnr_diff), "median": statistics.median(psnr_diff),
                                          "max": max(psnr_diff)},
                     "regular_ratio_median": statistics.median(e_ratio)})
    record = result_head(SCHEMA, __file__, argv, quick=None, device=None) | {  # no quick mode
        "machine": cpu_info(), "checkpoint": args.checkpoint, "calibration_clips": args.calibration_clips,
        "split": args.split, "clips": len(picks), "rows": rows, "fp32_mean_psnr_db": statistics.fmean(s[0] for s in scored["fp32"]),
        "seconds": time.perf_counter() - started,
    }
    write_results(args.out, record)
    for r in rows:
        d = r["psnr_abs_diff_db"]
        print(f"{r['graph']}: PSNR |int8 - fp32| mean {d['mean']:.3f} dB, median {d['median']:.3f}, max {d['max']:.3f}; "
              f"E_t ratio (median) {r['regular_ratio_median']:.3f}")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
