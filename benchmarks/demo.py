"""How long the README's first command takes: ``mnad demo`` end to end (generate the scene, train, score); writes JSON.

    python benchmarks/demo.py                 # runs `mnad demo` --rounds times (default 1), each in its own process
    python benchmarks/demo.py --rounds 3

Each round runs ``python -m mnad demo --out <fresh temporary folder> --quiet`` as a user would (the `mnad` command's
own start-up included) and times it from launch to exit; the frame-level AUC the demo prints is kept beside the time,
so a slower demo that trained less would show. The machine, its load at the start and the command are recorded.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from speed import _pythonpath, busy_cores, loadavg, result_head, write_results  # noqa: E402  (the speed benchmark's helpers)

DEFAULT_OUT = HERE / "results" / "demo.json"
SCHEMA = "mnad-demo-1"
AUC_LINE = re.compile(r"frame-level AUC: micro ([0-9.]+)%")


def run_demo() -> dict:
    """One ``mnad demo`` in its own process: wall seconds and the micro AUC it printed."""
    with tempfile.TemporaryDirectory(prefix="mnad-demo-bench-") as tmp:
        command = [sys.executable, "-m", "mnad", "demo", "--out", str(Path(tmp) / "demo"), "--quiet"]
        env = dict(os.environ, PYTHONPATH=_pythonpath())
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"mnad demo failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    match = AUC_LINE.search(done.stdout + done.stderr)
    if match is None:  # a demo that printed no AUC did not do its job, however fast
        raise SystemExit(f"mnad demo printed no frame-level AUC:\n{(done.stdout + done.stderr)[-2000:]}")
    return {"seconds": round(seconds, 2), "micro_auc_percent": float(match.group(1))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="demo runs, one after the other")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="JSON results file")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    busy, load_start = busy_cores(), loadavg()
    rounds = [run_demo() for _ in range(args.rounds)]
    seconds = [r["seconds"] for r in rounds]
    result = result_head(SCHEMA, __file__, argv, quick=None) | {  # no quick mode
        "busy_cores_start": busy,
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "rounds": rounds,
        "seconds_median": round(statistics.median(seconds), 2),
        "seconds_max": max(seconds),
    }
    path = write_results(args.out, result)
    print(f"mnad demo: median {result['seconds_median']} s, max {result['seconds_max']} s over {args.rounds} round(s) -> {path}")


if __name__ == "__main__":
    main()
