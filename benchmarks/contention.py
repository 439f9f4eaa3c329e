"""Scoring speed on a shared machine: frames/s idle against frames/s with one competing CPU-busy process.

    python benchmarks/contention.py              # about 15 minutes on a 2-core CPU; stop other work first
    python benchmarks/contention.py --quick      # a minute: tiny frames, two settings, checks that everything runs
    python benchmarks/make_performance_doc.py    # renders the table into docs/performance.md

What it measures: the real scoring step (``mnad.stream.StreamScorer`` on a randomly initialised model, fp32, batch 1,
the memory updated after every frame: gamma 2), frames/s at each of ``--sizes``, for every setting of

* torch's intra-op threads (``--threads``; 0 is torch's default, one per physical core: skipped where it equals
  one of the others, and said so),
* the OpenMP wait policy of torch's OpenMP runtime (``--policies``: ``unset``, ``active``, ``passive``, ``spin<N>``): how
  a thread that has finished its share of a parallel operation waits for the others. GNU OpenMP (the runtime torch's
  wheels bundle) spins 300,000 times before sleeping when it is unset, practically forever when ACTIVE, not at all when
  PASSIVE, N times with ``spin<N>`` (its own GOMP_SPINCOUNT, the policy unset),
* the memory layout (``-cl`` rows: ``eval.channels_last`` at fp32), and, when asked (``--extra t0-passive-compiled``),
  the compiled step (``eval.compile``: compiled during the warm-up, not timed; a minute or more per configuration),

under each load of ``--loads``: ``idle`` (no competitor), ``busy`` (a plain Python busy loop: one thread, no OpenMP),
``torch1`` and ``torch2`` (another torch process multiplying 512x512 matrices in a loop with 1 or 2 threads and the
OpenMP defaults, like a second mnad or training job started by someone else). The competitor starts first, scoring
starts when it is running, and it is stopped when scoring ends; its CPU use during the run is recorded.

Every configuration runs in a fresh Python process: OMP_WAIT_POLICY is read once, when torch loads its OpenMP
runtime, so it must be in the environment before ``import torch``. The slowdown of a setting under a load is its
idle frames/s over its loaded frames/s, both measured in the same round, next to each other.

Writes benchmarks/results/contention.json (``--out``). A machine that was not idle at the start is reported
(``busy_cores_start``): the "idle" rows then share the cores with that other work too.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from speed import _pythonpath, busy_cores, finish, loadavg, machine_info, peak_rss_mib, result_head, results_path, synthetic_frames  # noqa: E402

DEFAULT_OUT = HERE / "results" / "contention.json"
SCHEMA = "mnad-contention-1"
# The competitors: a command each, printing "ready" once it is running flat out; each stops when its parent is gone.
_LOOP = ("import os\nparent = os.getppid()\n{setup}print('ready', flush=True)\n"
         "while os.getppid() == parent:\n    for _ in range(100):\n        {work}\n")
COMPETITORS = {
    "busy": _LOOP.format(setup="", work="sum(range(1000))"),
    "torch1": _LOOP.format(setup="import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\n", work="a @ a"),
    "torch2": _LOOP.format(setup="import torch\ntorch.set_num_threads(2)\na = torch.randn(512, 512)\n", work="a @ a"),
}
LOAD_HELP = {"idle": "no competitor", "busy": "a Python busy loop (1 thread)",
             "torch1": "torch 512x512 matmuls in a loop, 1 thread", "torch2": "torch 512x512 matmuls in a loop, 2 threads, OpenMP defaults"}


def valid_policy(policy: str) -> bool:
    """unset, active, passive (OMP_WAIT_POLICY), or spin<N>: GNU OpenMP's GOMP_SPINCOUNT=N (spin N times, then sleep)."""
    return policy in ("unset", "active", "passive") or (policy.startswith("spin") and policy[4:].isdigit())


def parse_setting(name: str) -> dict:
    """``t<threads>-<policy>[-cl][-compiled]``, e.g. ``t0-unset``, ``t1-passive``, ``t2-active-cl``, ``t0-passive-compiled``."""
    parts = name.split("-")
    if len(parts) < 2 or not parts[0].startswith("t") or not parts[0][1:].isdigit() or not valid_policy(parts[1]) \
            or not set(parts[2:]) <= {"cl", "compiled"}:
        raise SystemExit(f"contention.py: bad setting {name!r} (expected t<threads>-<unset|active|passive|spin<N>>[-cl][-compiled])")
    return {"name": name, "threads": int(parts[0][1:]), "policy": parts[1], "channels_last": "cl" in parts[2:],
            "compile": "compiled" in parts[2:]}


# ---- the worker: one configuration, in its own process --------------------------------------------------------


def work(job: dict) -> dict:
    import torch

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    from mnad.config import Config
    from mnad.model import MNAD
    from mnad.stream import StreamScorer

    torch.manual_seed(0)
    config = Config.from_dict({"model": {"image_size": job["size"]},
                               "eval": {"gamma": 2.0, "channels_last": job["channels_last"], "compile": job["compile"]}})
    scorer = StreamScorer.for_model(MNAD(config.model).eval(), config, normalization="video")
    frames = synthetic_frames(16, job["size"])
    times, cpu = [], []
    started, scored = time.perf_counter(), 0
    for frame in itertools.cycle(frames):
        t0, c0 = time.perf_counter(), time.process_time()
        if scorer.push(frame) is None:
            continue
        scored += 1
        if scored <= job["warmup"]:
            continue
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        done = len(times) >= job["frames"] or time.perf_counter() - started > job["seconds"]
        if done and len(times) >= job["min_frames"]:
            break
    median = statistics.median(times)
    return {"fps": 1 / median, "frame_ms": 1000 * median, "cpu_per_frame": statistics.median(cpu) / median,
            "frames_timed": len(times), "torch_threads": torch.get_num_threads(), "peak_rss_mib": peak_rss_mib()}


# ---- the parent ------------------------------------------------------------------------------------------------


def worker_env(policy: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if policy.startswith("spin"):
        env["GOMP_SPINCOUNT"] = policy[4:]
    elif policy != "unset":
        env["OMP_WAIT_POLICY"] = policy.upper()
    return dict(env, PYTHONPATH=_pythonpath())


def start_competitor(load: str) -> subprocess.Popen | None:
    if load == "idle":
        return None
    proc = subprocess.Popen([sys.executable, "-c", COMPETITORS[load]], stdout=subprocess.PIPE, text=True, env=worker_env("unset"))
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise SystemExit(f"contention.py: the {load} competitor did not start")
    time.sleep(0.5)
    return proc


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def run_one(job: dict, load: str) -> dict:
    competitor = start_competitor(load)
    try:
        start, c0 = time.perf_counter(), cpu_seconds(competitor.pid) if competitor else 0.0
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)],
                              capture_output=True, text=True, env=worker_env(job["policy"]))
        competitor_cores = (cpu_seconds(competitor.pid) - c0) / (time.perf_counter() - start) if competitor else None
    finally:
        if competitor:
            competitor.kill()
            competitor.wait()
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        print(f"    worker failed:\n{tail}", file=sys.stderr)
        return {"error": tail or f"exit status {proc.returncode}"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["competitor_cores"] = competitor_cores  # cores the competitor used while this configuration ran (start-up included)
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny frames, two settings, two loads: checks that it runs")
    p.add_argument("--sizes", type=int, nargs="+", help="frame sizes (default 128 256)")
    p.add_argument("--threads", type=int, nargs="*", help="torch intra-op threads to try; 0 = torch's default (default 0 1 2; none: only --extra)")
    p.add_argument("--policies", nargs="+", help="OMP_WAIT_POLICY values unset, active, passive, or spin<N> for GOMP_SPINCOUNT=N "
                                                 "(default unset active passive spin10000)")
    p.add_argument("--extra", nargs="*", help="more settings t<threads>-<policy>[-cl] (default: t0-passive-cl t1-passive-cl, the "
                                              "channels_last rows)")
    p.add_argument("--loads", nargs="+", choices=list(LOAD_HELP), help="competing loads (default all)")
    p.add_argument("--frames", type=int, help="timed frames per configuration, at most (default 20)")
    p.add_argument("--seconds", type=float, help="time budget of a configuration's timed frames (default 10; at least 3 frames)")
    p.add_argument("--rounds", type=int, default=1, help="repeat everything, interleaved; medians reported")
    p.add_argument("--out", type=Path, help="JSON to write (default benchmarks/results/contention.json; with --quick "
                                             "contention.quick.json beside it)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.out = results_path(args.out, DEFAULT_OUT, args.quick)
    quick = args.quick
    args.sizes = args.sizes or ([64] if quick else [128, 256])
    args.threads = args.threads if args.threads is not None else ([0] if quick else [0, 1, 2])
    args.policies = args.policies or (["unset", "passive"] if quick else ["unset", "active", "passive", "spin10000"])
    if bad := [x for x in args.policies if not valid_policy(x)]:
        p.error(f"--policies: {bad}: expected unset, active, passive or spin<N>")
    args.extra = args.extra if args.extra is not None else ([] if quick else ["t0-passive-cl", "t1-passive-cl"])
    args.loads = args.loads or (["idle", "busy"] if quick else list(LOAD_HELP))
    args.frames = args.frames or (4 if quick else 20)
    args.seconds = args.seconds or (2.0 if quick else 10.0)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(work(json.loads(args.worker))))
        return 0
    import torch

    default_threads = torch.get_num_threads()
    notes = []
    threads = []
    for t in args.threads:
        resolved = t or default_threads
        if resolved in [x or default_threads for x in threads]:
            notes.append(f"threads {t} skipped: torch's default here is {default_threads} thread(s), a setting already measured")
            continue
        threads.append(t)
    settings = [parse_setting(f"t{t}-{p}") for t in threads for p in args.policies] + [parse_setting(s) for s in args.extra]
    busy, load_start, started = busy_cores(), loadavg(), time.time()
    if busy is not None and busy > 0.2:
        notes.append(f"the machine was not idle at the start ({busy:.2f} cores busy with other processes): the 'idle' rows shared "
                     "the cores with that work; rerun on an idle machine for absolute figures")
        print(f"WARNING: {busy:.2f} cores busy with other processes: the machine is not idle", file=sys.stderr)
    raw: dict[tuple, list[dict]] = {}
    total = args.rounds * len(args.sizes) * len(settings) * len(args.loads)
    done = 0
    for _round in range(args.rounds):
        for size, setting, load in itertools.product(args.sizes, settings, args.loads):
            job = dict(setting, size=size, warmup=1 if args.quick else 2, frames=args.frames, min_frames=3, seconds=args.seconds)
            result = run_one(job, load)
            raw.setdefault((size, setting["name"], load), []).append(result)
            done += 1
            print(f"[{done}/{total}] {size}px {setting['name']:<22} {load:<7} "
                  + (f"{result['fps']:6.2f} frames/s  cpu/wall {result['cpu_per_frame']:.2f}" if "fps" in result else "failed"),
                  file=sys.stderr)
    rows = []
    for size, setting in itertools.product(args.sizes, settings):
        idle = [r for r in raw.get((size, setting["name"], "idle"), []) if "fps" in r]
        for load in args.loads:
            tried = raw[(size, setting["name"], load)]
            runs = [r for r in tried if "fps" in r]
            if not runs:
                rows.append({"size": size, **setting, "load": load, "error": tried[0].get("error")})
                continue
            fps = statistics.median(r["fps"] for r in runs)
            row = {"size": size, **setting, "load": load, "fps": fps, "frame_ms": 1000 / fps,
                   "cpu_per_frame": statistics.median(r["cpu_per_frame"] for r in runs),
                   "torch_threads": runs[0]["torch_threads"], "frames_timed": sum(r["frames_timed"] for r in runs),
                   "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
                   "competitor_cores": statistics.median(r["competitor_cores"] for r in runs) if load != "idle" else None}
            if len(runs) < len(tried):  # a round that errored: the row stands on the others, the run failed in part
                row["rounds_failed"] = len(tried) - len(runs)
            if idle and load != "idle":
                # per round, the loaded run against the idle run next to it
                ratios = [i["fps"] / r["fps"] for i, r in zip(idle, runs, strict=False)]
                row["slowdown"] = statistics.median(ratios)
            rows.append(row)
    result = result_head(SCHEMA, __file__, argv, quick=None, device=None) | {  # its quick is in "settings"
        "seconds": time.time() - started,
        "machine": machine_info("cpu"),  # after "seconds", as before
        "torch_default_threads": default_threads,
        "loadavg_start": load_start,
        "busy_cores_start": busy,
        "loadavg_end": loadavg(),
        "settings": {"sizes": args.sizes, "frames": args.frames, "seconds": args.seconds, "rounds": args.rounds, "quick": args.quick,
                     "loads": {name: LOAD_HELP[name] for name in args.loads}},
        "notes": notes,
        "rows": rows,
    }
    print_summary(result)
    failures = [f"{r['name']} at {r['size']} {r['load']}" for r in rows if "error" in r or r.get("rounds_failed")]
    return finish("contention.py", args.out, result, failures)


def print_summary(result: dict) -> None:
    for size in result["settings"]["sizes"]:
        print(f"\n{size}x{size}: frames/s (slowdown against idle)")
        rows = [r for r in result["rows"] if r["size"] == size]
        loads = list(result["settings"]["loads"])
        print(f"{'setting':<24}" + "".join(f"{load:>16}" for load in loads))
        for name in dict.fromkeys(r["name"] for r in rows):
            cells = []
            for load in loads:
                r = next(r for r in rows if r["name"] == name and r["load"] == load)
                cell = "failed" if "fps" not in r else f"{r['fps']:.2f}" + (f" ({r['slowdown']:.1f}x)" if "slowdown" in r else "")
                cells.append(f"{cell:>16}")
            print(f"{name:<24}" + "".join(cells))


if __name__ == "__main__":
    sys.exit(main())
