"""Several cameras in one process (issue #18): total frames/s of N streams scored one at a time or batched; writes JSON.

    python benchmarks/multistream.py              # about 5 minutes on an idle 2-core CPU
    python benchmarks/multistream.py --quick      # seconds: checks that it runs; the numbers mean nothing

Each of N streams (``--streams``, 1 2 4 8) has its own synthetic camera (a square moving over a background, its own
noise) and its own ``mnad.stream.StreamScorer`` (memory, clip window, running min-max, trailing mean); every round,
every stream has a new frame. Three ways to score them:

* ``one-at-a-time``: each stream's ``push(frame)`` in turn, N batch-1 steps per round (N separate processes would do
  the same work, and fight for the cores besides);
* ``batched``: ``mnad.stream.score_streams``: the N clips in one batch, each with its own memory items (B, M, C);
* ``detect``: ``mnad.detect.detect`` on N frame folders (PNG files): reader threads, decoding, the batched step,
  events and every output file written; end to end, as ``mnad detect SRC1 ... SRCN`` runs.

The first two time the scoring alone: frames are already uint8 at the model's size, in memory (decoding and resizing
are the same work either way); the timed rounds follow ``--warmup`` rounds (the clip windows filled). ``detect``'s
frames/s is frames scored over the run's wall time, the window filling included (``--detect-frames`` per source).
The model is ped2_pred_fast's (128 px, width 64; ``--widths`` adds narrower U-Nets of the same shape) with a random
initialisation (speed does not depend on the weights), scored in fp32 NCHW (``eval.bf16 = false``) with ``--threads``
(2) intra-op threads and ``--gamma 2.0``: the memory updates after every frame, the costliest case. The
configurations run interleaved, ``--repeats`` times each; the median is reported.

Batching shares the per-operation overheads, not the arithmetic: a frame's convolutions cost the same in a batch.
So the JSON records each width's GFLOP per frame (convolutions and matrix products of the scoring step, benchmarks/flops.py) and
the fp32 matrix-multiply rate measured in the same run: their ratio is the most frames/s any batching can reach.

OMP_WAIT_POLICY=PASSIVE, as ``mnad`` sets it (unless already set): on shared cores spinning OpenMP threads slow
scoring down many times.

The JSON also records, per N, the largest PSNR difference between a stream scored batched and the same stream scored
one at a time (the same frames from the same start): the batch changes rounding, not the scores.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads (see the docstring)

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from flops import score_gflop_per_frame  # noqa: E402  (the step's own count, as speed.py's)
from speed import busy_cores, loadavg, result_head, results_path, synthetic_frames, write_results  # noqa: E402  (the speed benchmark's helpers)

DEFAULT_OUT = HERE / "results" / "multistream.json"
SCHEMA = "mnad-multistream-1"
TARGET = {"streams": 8, "fps_total": 150.0, "image_size": 128, "cores": 2}  # issue #18
MODES = ("one-at-a-time", "batched", "detect")


def model_and_config(args: argparse.Namespace, width: int):
    import torch

    from mnad.config import load_config
    from mnad.model import MNAD

    config = load_config("ped2_pred_fast").override([f"model.image_size={args.size}", f"model.width={width}", f"eval.gamma={args.gamma}",
                                                     "eval.bf16=false", "eval.channels_last=false", "eval.compile=false",
                                                     "eval.smoothing=1"])
    torch.manual_seed(0)
    return MNAD(config.model).eval(), config


def matmul_gflops(n: int = 1024, iters: int = 5) -> float:
    """fp32 GFLOP/s of a square torch.matmul with this process's threads (the median of ``iters``), now."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def cameras(n: int, frames: int, size: int) -> list[list]:
    """Per stream, ``frames`` uint8 (size, size, 3) frames; each stream its own noise and square position."""
    import numpy as np

    videos = []
    for k in range(n):
        video = synthetic_frames(frames, size, seed=k)
        videos.append([np.roll(f, 7 * k, axis=0) for f in video])
    return videos


def time_scoring(model, config, videos: list[list], mode: str, warmup: int) -> tuple[float, list[list[float]]]:
    """Total frames/s over the timed rounds, and each stream's PSNRs (all rounds)."""
    from mnad.stream import StreamScorer, score_streams

    n = len(videos)
    if mode == "batched":
        scorers = StreamScorer.for_streams(model, config, n, normalization="causal")
    else:  # one step per stream, as separate detectors would have
        scorers = [StreamScorer.for_model(model, config, normalization="causal") for _ in range(n)]
    psnr: list[list[float]] = [[] for _ in range(n)]
    fill = config.model.t_length - 1
    rounds = len(videos[0])
    started, scored = 0.0, 0
    for t in range(rounds):
        if t == fill + warmup:
            started, scored = time.perf_counter(), 0
        frames = [v[t] for v in videos]
        rows = score_streams(scorers, frames) if mode == "batched" else [s.push(f) for s, f in zip(scorers, frames, strict=True)]
        for k, row in enumerate(rows):
            if row is not None:
                psnr[k].append(row.psnr)
                scored += 1
    return scored / (time.perf_counter() - started), psnr


def time_detect(model, config, folders: list[Path], out: Path) -> float:
    import logging

    from mnad.detect import DetectOptions, detect

    quiet = logging.getLogger("mnad.detect")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its "no calibration" warning, once per row
    try:
        summary = detect(model, config, [str(f) for f in folders], out, DetectOptions(overwrite=True), progress=False)
    finally:
        quiet.setLevel(level)
    assert len(folders) == 1 or summary["failed"] == 0, summary  # one source returns its own summary
    return summary["fps"]


def write_folders(videos: list[list], root: Path) -> list[Path]:
    import cv2

    folders = []
    for k, video in enumerate(videos):
        folder = root / f"cam{k}"
        folder.mkdir()
        for i, frame in enumerate(video):
            cv2.imwrite(str(folder / f"{i:05d}.png"), frame)
        folders.append(folder)
    return folders


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 32, 16], help="U-Net widths (the recipe's is 64)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gamma", type=float, default=2.0, help="2.0: a memory update after every frame")
    parser.add_argument("--rounds", type=int, default=40, help="timed rounds (a frame for every stream each)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--detect-frames", type=int, default=120, help="frames per source in the detect rows")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and counts: checks that it runs")
    parser.add_argument("--out", type=Path, help="JSON to write (default benchmarks/results/multistream.json; with --quick "
                                                  "multistream.quick.json beside it)")
    args = parser.parse_args(argv)
    args.out = results_path(args.out, DEFAULT_OUT, args.quick)
    if args.quick:
        args.size, args.widths, args.rounds, args.warmup, args.detect_frames, args.repeats = 32, [8], 4, 1, 12, 1
        args.streams = [s for s in args.streams if s <= 4] or [1]

    import torch

    torch.set_num_threads(args.threads)
    begun = time.perf_counter()
    load_start, busy_start = loadavg(), busy_cores()
    models = {w: model_and_config(args, w) for w in args.widths}
    fill = models[args.widths[0]][1].model.t_length - 1
    top = max(args.streams)
    videos = cameras(top, fill + args.warmup + args.rounds, args.size)
    runs: dict[tuple[int, int, str], list[float]] = {}
    psnr: dict[tuple[int, int, str], list[list[float]]] = {}
    peaks: list[float] = []
    with tempfile.TemporaryDirectory(prefix="mnad-multistream-") as tmp:
        folders = write_folders(cameras(top, args.detect_frames, args.size), Path(tmp)) if "detect" in args.modes else []
        for _ in range(args.repeats):  # interleaved, so a change in the background load falls on every row alike
            peaks.append(matmul_gflops())
            for width, (model, config) in models.items():
                for n in args.streams:
                    for mode in args.modes:
                        if mode == "detect":
                            fps = time_detect(model, config, folders[:n], Path(tmp) / "out")
                        else:
                            fps, psnr[width, n, mode] = time_scoring(model, config, videos[:n], mode, args.warmup)
                        runs.setdefault((width, n, mode), []).append(fps)
                        print(f"width {width}, {n} stream(s), {mode}: {fps:.1f} frames/s in total", flush=True)
    peak = statistics.median(peaks)
    gflop = {w: score_gflop_per_frame(config) for w, (_, config) in models.items()}
    rows = []
    for (width, n, mode), values in runs.items():
        fps = statistics.median(values)
        row = {"width": width, "streams": n, "mode": mode, "fps_total": round(fps, 2), "fps_per_stream": round(fps / n, 2),
               "fps_runs": [round(v, 2) for v in values], "gflops": round(fps * gflop[width], 1),
               "of_matmul_rate": round(fps * gflop[width] / peak, 3)}
        if mode == "batched" and (width, n, "one-at-a-time") in psnr:
            pairs = zip(psnr[width, n, mode], psnr[width, n, "one-at-a-time"], strict=True)
            row["max_psnr_difference_db"] = max(abs(a - b) for got, want in pairs for a, b in zip(got, want, strict=True))
        rows.append(row)
    best = {r["mode"]: r["fps_total"] for r in rows if r["streams"] == TARGET["streams"] and r["width"] == 64}
    result = result_head(SCHEMA, __file__, argv, quick=args.quick) | {
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "loadavg_start": load_start, "busy_cores_start": busy_start, "loadavg_end": loadavg(),
        "gflop_per_frame": {str(w): round(g, 3) for w, g in gflop.items()},
        "matmul_fp32_gflops": {"median": round(peak, 1), "runs": [round(p, 1) for p in peaks]},
        "fps_ceiling": {str(w): round(peak / g, 1) for w, g in gflop.items()},  # matmul rate / GFLOP per frame
        "settings": {"image_size": args.size, "widths": args.widths, "t_length": 5, "threads": args.threads,
                     "gamma": args.gamma, "dtype": "fp32", "rounds": args.rounds, "warmup": args.warmup,
                     "detect_frames": args.detect_frames, "repeats": args.repeats},
        "target": TARGET,
        "target_met_width64": {mode: fps >= TARGET["fps_total"] for mode, fps in best.items()} if not args.quick else None,
        "rows": rows,
        "seconds": round(time.perf_counter() - begun, 1),
    }
    write_results(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
