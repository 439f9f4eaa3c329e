"""Where a training step's time goes: ``mnad.train.train_step`` profiled by operator; writes JSON.

    python benchmarks/profile_train.py            # about 3 minutes on an idle 2-core CPU (pause long runs first)
    python benchmarks/profile_train.py --quick    # seconds, for development; the numbers mean nothing
    python benchmarks/make_performance_doc.py     # then render docs/performance.md

Issue #19 asks for a training step (256x256, batch 4) at 80 % of the bf16 matrix-multiply peak. This script says what
stands between the step and that peak:

* each configuration (bf16 autocast + channels_last, eagerly and with ``train.compile``) runs ``train_step`` on a
  fixed synthetic batch, as ``speed.py`` times it; the wall time per step is measured without the profiler;
* ``torch.profiler`` then records the same steps and sums the operators' own CPU time by kind: the convolutions'
  forward and backward apart, BatchNorm, ReLU, concatenation, pooling, Adam (everything under ``Optimizer.step``), the
  rest (losses, the memory read and update, autocast's casts);
* the step's FLOPs are counted by operator (``flops.train_gflop_by_operator``: forward convolutions, their backward,
  matrix products), so the forward and the backward convolutions each get a GFLOP/s against the peak, and the
  "convolution bound" is the step time if everything but the convolutions took no time;
* every fraction is of the bf16 matmul peak measured just before and just after that configuration (their mean): on
  a shared machine the speed drifts by a factor of 2 or more over minutes (seen on the AMX Xeon of 2026-12-01), so a
  peak measured once at the start would not be the peak the row ran under.

Compiled code runs inductor's own C++ kernels (BatchNorm, ReLU, concatenation, pooling, the losses) that the profiler
does not record as operators: their time is the compiled graph calls' own time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from speed import mnad_config, result_head, results_path, start_timing, train_batch, work_matmul, write_results  # noqa: E402

ROOT = HERE.parent
DEFAULT_OUT = HERE / "results" / "profile_train.json"
SCHEMA = "mnad-profile-train-1"
CONFIGS = {"mnad-fast": False, "mnad-fast-compiled": True}  # name: train.compile (both bf16 autocast + channels_last)
# operator kinds by the first pattern found in the operator's lower-cased name; Adam is found by its caller instead
KINDS = (("convolution backward", ("convolution_backward",)),
         ("convolution forward", ("conv",)),
         ("BatchNorm", ("batch_norm",)),
         ("ReLU", ("relu", "clamp_min", "threshold_backward")),
         ("concatenation", ("aten::cat",)),
         ("max pooling", ("max_pool",)),
         ("compiled graph's own kernels", ("compiledfxgraph",)))
OPTIMIZER = "Adam (Optimizer.step, zero_grad)"
OTHER = "other operators"


def kind_of(name: str, callers: list[str] = ()) -> str:
    """The kind of an operator named ``name`` whose callers (outermost first) are ``callers``."""
    if any(c.startswith("Optimizer.") for c in callers):
        return OPTIMIZER
    lowered = name.lower()
    return next((kind for kind, patterns in KINDS if any(p in lowered for p in patterns)), OTHER)


def callers_of(event) -> list[str]:
    names = []
    parent = event.cpu_parent
    while parent is not None:
        names.append(parent.name)
        parent = parent.cpu_parent
    return names[::-1]


def ms_by_kind(events, steps: int) -> dict[str, float]:
    """The profiled events' own CPU time by kind, in ms per step."""
    out: dict[str, float] = {}
    for event in events:
        kind = kind_of(event.name, callers_of(event))
        out[kind] = out.get(kind, 0.0) + event.self_cpu_time_total / 1000 / steps
    return out


def profile_config(job: dict, name: str, args: argparse.Namespace) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from mnad.model import MNAD
    from mnad.train import prepared_for_training, train_step

    config = mnad_config(job, args.size, bf16=True, channels_last=True, compile_train=CONFIGS[name])
    torch.manual_seed(0)
    model = prepared_for_training(MNAD(config.model), config.train)  # as train() prepares it
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    clip = train_batch(job, args.batch, args.size)

    def step() -> None:
        train_step(model, optimizer, clip, config.train).as_floats()  # reading the losses syncs, as train()'s log does

    started = time.perf_counter()
    for _ in range(args.warmup):  # compiling included
        step()
    warmup_s = time.perf_counter() - started
    # this row's own peak, measured just before and just after it: a shared machine's speed drifts over minutes
    peak_before = work_matmul(dict(job, n=args.matmul_n, warmup=1, iters=3))["bf16"]["gflops_median"]
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        profiled_s = (time.perf_counter() - start) / args.steps
    peak_after = work_matmul(dict(job, n=args.matmul_n, warmup=1, iters=3))["bf16"]["gflops_median"]
    by_kind = ms_by_kind(prof.events(), args.steps)
    by_kind["not in an operator"] = max(1000 * profiled_s - sum(by_kind.values()), 0.0)
    return {"config": name, "compile": CONFIGS[name], "size": args.size, "batch": args.batch, "steps": args.steps,
            "warmup_s": warmup_s, "step_s": statistics.median(times), "step_s_min": min(times), "step_s_max": max(times),
            "profiled_step_s": profiled_s, "ms_per_step_by_kind": by_kind,
            "bf16_peak_gflops": {"before": peak_before, "after": peak_after}}


def with_bounds(row: dict, gflop: dict[str, float]) -> dict:
    """``row`` with its GFLOP/s: the whole step's, and the forward and backward convolutions' on their own time, each
    against the mean of the bf16 peaks measured just before and after the row."""
    peak_bf16 = statistics.mean(row["bf16_peak_gflops"].values())
    total = sum(gflop.values())
    kinds = row["ms_per_step_by_kind"]
    fwd_ms, bwd_ms = kinds.get("convolution forward", 0.0), kinds.get("convolution backward", 0.0)
    row = dict(row, gflop_per_step=total, gflops=total / row["step_s"], fraction_of_bf16_peak=total / row["step_s"] / peak_bf16,
               step_s_at_80_percent=total / (0.8 * peak_bf16))
    if fwd_ms:
        row["conv_forward_gflops"] = gflop.get("convolution", 0.0) / fwd_ms * 1000
        row["conv_forward_fraction_of_bf16_peak"] = row["conv_forward_gflops"] / peak_bf16
    if bwd_ms:
        row["conv_backward_gflops"] = gflop.get("convolution_backward", 0.0) / bwd_ms * 1000
        row["conv_backward_fraction_of_bf16_peak"] = row["conv_backward_gflops"] / peak_bf16
    if fwd_ms and bwd_ms:  # the step if everything but the convolutions were free
        row["conv_bound_step_s"] = (fwd_ms + bwd_ms) / 1000
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", type=int, help="frame size (default 256; quick: 32)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, help="timed and then profiled steps per configuration (default 5; quick: 1)")
    p.add_argument("--warmup", type=int, help="untimed steps first, compiling included (default 2; quick: 1)")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, from {', '.join(CONFIGS)}")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", help=f"JSON to write (default {DEFAULT_OUT.relative_to(ROOT)}; with --quick profile_train.quick.json beside it)")
    args = p.parse_args(argv)
    args.out = results_path(args.out, DEFAULT_OUT, args.quick)
    args.size = args.size or (32 if args.quick else 256)
    args.steps = max(args.steps or (1 if args.quick else 5), 1)
    args.warmup = max(args.warmup if args.warmup is not None else (1 if args.quick else 2), 1)
    names = [n for n in args.configs.split(",") if n]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown or not names:
        p.error(f"--configs: unknown or none {unknown}; known: {list(CONFIGS)}")

    from flops import train_gflop_by_operator

    started, busy = start_timing(args.threads)
    job = {"threads": args.threads, "device": "cpu", "model": {"task": "pred", "t_length": 5, "channels": 3, "memory": True},
           "gamma": 0.01}
    args.matmul_n = n = 1024 if args.quick else 4096
    peak = work_matmul(dict(job, n=n, warmup=1, iters=2 if args.quick else 5))
    gflop = train_gflop_by_operator(mnad_config(job, args.size), args.batch)
    rows = []
    for name in names:
        print(f"  profiling {name}: training step {args.size}x{args.size} batch {args.batch}", file=sys.stderr)
        rows.append(with_bounds(profile_config(job, name, args), gflop))
    result = result_head(SCHEMA, __file__, argv, quick=args.quick) | {
        "busy_cores_start": busy,
        "settings": {"threads": args.threads, "size": args.size, "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
                     "weights": "random initialisation (seed 0)", "batch_data": "synthetic frames, fixed, in memory"},
        "peak_gflops": {"fp32": peak["fp32"]["gflops_median"], "bf16": peak["bf16"]["gflops_median"], "n": n},
        "gflop_by_operator": gflop,
        "rows": rows,
        "seconds": time.perf_counter() - started,
    }
    out = Path(args.out)
    write_results(out, result)
    for r in rows:
        print(f"  {r['config']:<20} {r['step_s']:.2f} s/step ({100 * r['fraction_of_bf16_peak']:.0f} % of the bf16 peak); "
              f"convolutions forward {100 * r.get('conv_forward_fraction_of_bf16_peak', 0):.0f} %, backward "
              f"{100 * r.get('conv_backward_fraction_of_bf16_peak', 0):.0f} % of it", file=sys.stderr)
    print(f"wrote {out} ({result['seconds']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
