"""Where a scored frame's time goes: the scoring step profiled by operator; writes JSON.

    python benchmarks/profile_step.py            # about 2 minutes on an idle 2-core CPU
    python benchmarks/profile_step.py --quick    # seconds, for development; the numbers mean nothing
    python benchmarks/make_performance_doc.py    # then render docs/performance.md

Issue #3 measures scoring against "the bf16 limit": the frame's GFLOP at the bf16 matrix-multiply peak. This script
says how far the convolutions themselves are from that peak, and how much of a frame is not convolution at all:

* each configuration (the fast path, and the same with ``eval.compile``) scores synthetic frames in order through
  ``mnad.stream.StreamScorer``, batch 1, memory updated after every frame, as in ``speed.py``;
* the wall time per frame is measured without the profiler; then ``torch.profiler`` records the same step and its
  operators' own CPU time is summed by kind (convolutions, ReLU, concatenation, pooling, the rest);
* the convolutions' GFLOP/s is the frame's GFLOP (``speed.py``'s FlopCounterMode count: convolutions and matrix
  products) over the convolutions' time; at that speed, with everything else free, a frame could not score faster
  than ``1 / conv time``: the "convolution bound".

Compiled code runs inductor's own C++ kernels (pooling, concatenation, pointwise maths; ReLU is fused into the
convolutions) that the profiler does not record as operators: their time is the compiled graph call's own time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from speed import mnad_config, result_head, results_path, start_timing, synthetic_frames, work_flops, work_matmul, write_results  # noqa: E402

ROOT = HERE.parent
DEFAULT_OUT = HERE / "results" / "profile.json"
SCHEMA = "mnad-profile-1"
CONFIGS = {"mnad-fast": False, "mnad-compiled": True}  # name: eval.compile (both bf16 + channels_last)
# operator kinds, by the first pattern found in the operator's name
KINDS = (("convolution", ("conv",)), ("ReLU", ("relu", "clamp_min")), ("concatenation", ("aten::cat",)),
         ("max pooling", ("max_pool",)),
         # a compiled graph's own C++ kernels (pooling, concatenation, pointwise maths) count as the graph call's own time
         ("compiled graph's own kernels", ("compiledfxgraph",)))


def kind_of(name: str) -> str:
    lowered = name.lower()
    return next((kind for kind, patterns in KINDS if any(p in lowered for p in patterns)), "other operators")


def profile_config(job: dict, name: str, size: int, args: argparse.Namespace, gflop: float) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from mnad.model import MNAD
    from mnad.stream import StreamScorer

    config = mnad_config(job, size, bf16=True, channels_last=True, compile_unet=CONFIGS[name])
    torch.manual_seed(0)
    model = MNAD(config.model).eval()
    # one scorer (one scoring step, compiled once) for the three passes; each pass starts a new clip window, the
    # memory carries over from one pass to the next
    scorer = StreamScorer.for_model(model, config, normalization="video")
    t = config.model.t_length
    frames = synthetic_frames(args.warmup + args.frames + t - 1, size)

    def scored_frames(clip_frames):
        scorer.new_video()
        for frame in clip_frames:
            result = scorer.push(frame)
            if result is not None:  # None while the first clip's window fills
                yield result

    list(scored_frames(frames[: args.warmup + t - 1]))  # warm-up (and compiling)

    timed = frames[args.warmup:]
    stamps = [time.perf_counter()]
    for _ in scored_frames(timed):
        stamps.append(time.perf_counter())
    wall_ms = 1000 * statistics.median(b - a for a, b in zip(stamps, stamps[1:], strict=False))

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        scored = sum(1 for _ in scored_frames(timed))
        profiled_ms = 1000 * (time.perf_counter() - start) / scored
    by_kind: dict[str, float] = {}
    for event in prof.key_averages():
        kind = kind_of(event.key)
        by_kind[kind] = by_kind.get(kind, 0.0) + event.self_cpu_time_total / 1000 / scored  # ms per frame
    by_kind["not in an operator"] = max(profiled_ms - sum(by_kind.values()), 0.0)
    conv_ms = by_kind.get("convolution", 0.0)
    return {"config": name, "size": size, "compile": CONFIGS[name], "wall_ms_per_frame": wall_ms, "fps": 1000 / wall_ms,
            "profiled_ms_per_frame": profiled_ms, "ms_per_frame_by_kind": by_kind, "gflop_per_frame": gflop,
            "conv_ms_per_frame": conv_ms, "conv_gflops": gflop / conv_ms * 1000 if conv_ms else None,
            "conv_bound_fps": 1000 / conv_ms if conv_ms else None, "frames": scored}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sizes", type=int, nargs="+", help="frame sizes (default 256 128; quick: 64)")
    p.add_argument("--frames", type=int, help="timed and profiled frames per configuration (default 20; quick: 2)")
    p.add_argument("--warmup", type=int, help="untimed frames first, compiling included (default 5; quick: 1)")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, from {', '.join(CONFIGS)}")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", help=f"JSON to write (default {DEFAULT_OUT.relative_to(ROOT)}; with --quick profile.quick.json beside it)")
    args = p.parse_args(argv)
    args.out = results_path(args.out, DEFAULT_OUT, args.quick)
    args.sizes = args.sizes or ([64] if args.quick else [256, 128])
    args.frames = args.frames or (2 if args.quick else 20)
    args.warmup = max(args.warmup if args.warmup is not None else (1 if args.quick else 5), 1)
    names = [n for n in args.configs.split(",") if n]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        p.error(f"unknown configurations {unknown}; known: {list(CONFIGS)}")

    started, busy = start_timing(args.threads)
    job = {"threads": args.threads, "device": "cpu", "model": {"task": "pred", "t_length": 5, "channels": 3, "memory": True},
           "gamma": 2.0, "sizes": args.sizes, "train_size": min(args.sizes), "batch": 1}
    n = 1024 if args.quick else 4096
    peak = work_matmul(dict(job, n=n, warmup=1, iters=2 if args.quick else 5))
    gflop = work_flops(job)["score_gflop_per_frame"]
    rows = []
    for size in args.sizes:
        for name in names:
            print(f"  profiling {name} at {size}x{size}", file=sys.stderr)
            rows.append(profile_config(job, name, size, args, gflop[str(size)]))
    peak_bf16 = peak["bf16"]["gflops_median"]
    for r in rows:
        limit = peak_bf16 / r["gflop_per_frame"]
        r["fps_limit_bf16"] = limit
        r["fraction_of_bf16_limit"] = r["fps"] / limit
        r["conv_fraction_of_bf16_peak"] = r["conv_gflops"] / peak_bf16 if r["conv_gflops"] else None
    result = result_head(SCHEMA, __file__, argv, quick=args.quick) | {
        "busy_cores_start": busy,
        "settings": {"threads": args.threads, "sizes": args.sizes, "frames": args.frames, "warmup": args.warmup, "gamma": 2.0,
                     "weights": "random initialisation (seed 0)"},
        "peak_gflops": {"fp32": peak["fp32"]["gflops_median"], "bf16": peak_bf16, "n": n},
        "rows": rows,
        "seconds": time.perf_counter() - started,
    }
    out = Path(args.out)
    write_results(out, result)
    for r in rows:
        print(f"  {r['size']:>4} {r['config']:<14} {r['wall_ms_per_frame']:6.1f} ms/frame ({100 * r['fraction_of_bf16_limit']:.0f} % of the "
              f"bf16 limit); convolutions {r['conv_ms_per_frame']:.1f} ms at {r['conv_gflops'] or 0:.0f} GFLOP/s", file=sys.stderr)
    print(f"wrote {out} ({result['seconds']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
