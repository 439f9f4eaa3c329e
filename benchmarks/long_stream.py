"""Long run: score an hour of streamed frames and check that memory use stays flat.

Frames are generated on the fly (a textured scene with a few moving blobs and sensor noise), never stored, and pushed
one at a time to ``mnad.stream.StreamScorer``, the causal scorer behind ``mnad detect``. The resident set size
(VmRSS from /proc/self/status) is sampled every ``--sample-every`` frames. Only running sums of the scores are kept,
so any growth is the scorer's own. ``--normalization causal`` also runs the scorer's running min-max and trailing
mean, as ``mnad detect`` does without a calibration; the default, ``video``, scores the raw terms only (PSNR, D, E_t).

    python benchmarks/long_stream.py                 # 3600 s at 25 fps = 90,000 frames (a few minutes on CPU)
    python benchmarks/long_stream.py --seconds 60    # a quick check

Writes benchmarks/results/long_stream.json: frames, wall seconds, RSS samples, and the growth from the first to the
last quartile of the samples.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch

from mnad.config import Config
from mnad.model import MNAD
from mnad.stream import StreamScorer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import write_results  # noqa: E402  (the benchmarks' atomic results writer)

RESULTS = Path(__file__).resolve().parent / "results" / "long_stream.json"


def rss_mib() -> float:
    """Resident set size of this process, from /proc/self/status (Linux)."""
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def generated_frames(n: int, size: int, seed: int = 0) -> Iterator[np.ndarray]:
    """``n`` uint8 (size, size, 3) frames of a fixed background with three blobs walking across it, plus noise."""
    rng = np.random.default_rng(seed)
    background = cv2.GaussianBlur(rng.integers(60, 200, (size, size, 3), dtype=np.uint8), (0, 0), size / 16)
    blobs = [(rng.uniform(0, size), rng.uniform(0.3, 0.9) * size, rng.uniform(0.2, 0.6) * rng.choice([-1, 1])) for _ in range(3)]
    radius = max(1, size // 12)
    for t in range(n):
        frame = background.copy()
        for x0, y, speed in blobs:
            x = (x0 + speed * t) % (size + 2 * radius) - radius
            cv2.circle(frame, (int(x), int(y)), radius, (30, 30, 30), -1)
        noise = rng.integers(-3, 4, frame.shape, dtype=np.int16)
        yield np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def quartile_means(values: list[float]) -> tuple[float, float]:
    q = max(1, len(values) // 4)
    return float(np.mean(values[:q])), float(np.mean(values[-q:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3600.0, help="length of the stream in seconds of footage")
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--size", type=int, default=32, help="frame and model image size")
    parser.add_argument("--width", type=int, default=8, help="model width (8 = a tiny U-Net; the paper's is 64)")
    parser.add_argument("--gamma", type=float, default=1.0,
                        help="test-time update threshold; 1.0 updates the memory on (nearly) every frame, the worst case")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--normalization", choices=("video", "causal"), default="video",
                        help="video: the raw terms only (default); causal: also the running min-max and trailing mean of mnad detect")
    parser.add_argument("--sample-every", type=int, default=500, help="frames between RSS samples")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = Config(name="long-stream")
    config.model.image_size, config.model.width = args.size, args.width
    config.eval.gamma = args.gamma
    config.validate()
    model = MNAD(config.model)
    scorer = StreamScorer.for_model(model, config, normalization=args.normalization)
    n_frames = int(round(args.seconds * args.fps))

    samples: list[dict] = []
    scored = updates = 0
    psnr_sum = 0.0
    started = time.perf_counter()
    samples.append({"frame": 0, "seconds": 0.0, "rss_mib": round(rss_mib(), 2)})
    for frame in generated_frames(n_frames, args.size):
        row = scorer.push(frame)
        if row is None:  # the first clip's window filling
            continue
        scored += 1
        updates += row.updated
        psnr_sum += row.psnr
        if (row.index + 1) % args.sample_every == 0:
            samples.append({"frame": row.index + 1, "seconds": round(time.perf_counter() - started, 2), "rss_mib": round(rss_mib(), 2)})
    seconds = time.perf_counter() - started
    samples.append({"frame": n_frames, "seconds": round(seconds, 2), "rss_mib": round(rss_mib(), 2)})

    steady = [s["rss_mib"] for s in samples[1:]]  # from the first sample after start-up (model and buffers allocated)
    first, last = quartile_means(steady)
    result = {
        "frames": n_frames,
        "footage_seconds": args.seconds,
        "fps_of_footage": args.fps,
        "frames_scored": scored,
        "memory_updates": int(updates),
        "mean_psnr": psnr_sum / max(scored, 1),
        "wall_seconds": round(seconds, 2),
        "frames_per_second": round(n_frames / seconds, 1),
        "rss_first_quartile_mib": round(first, 2),
        "rss_last_quartile_mib": round(last, 2),
        "rss_growth_mib": round(last - first, 2),
        "rss_growth_percent": round(100 * (last - first) / first, 2),
        "rss_peak_mib": max(s["rss_mib"] for s in samples),
        "rss_samples": samples,
        "setup": {"image_size": args.size, "width": args.width, "gamma": args.gamma, "threads": args.threads,
                  "normalization": args.normalization,
                  "sample_every": args.sample_every, "torch": torch.__version__, "python": platform.python_version(),
                  "machine": platform.machine()},
    }
    write_results(args.out, result)
    print(f"{n_frames} frames ({args.seconds:g} s at {args.fps:g} fps) in {seconds:.1f} s ({n_frames / seconds:.0f} frames/s), "
          f"{updates} memory updates; RSS {first:.1f} -> {last:.1f} MiB (first -> last quartile, {last - first:+.2f} MiB), "
          f"peak {result['rss_peak_mib']:.1f} MiB; written to {args.out}")


if __name__ == "__main__":
    main()
