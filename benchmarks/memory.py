"""Peak resident memory of each scoring path, each in a fresh process, as ``mnad detect`` runs it.

    python benchmarks/memory.py                  # a few minutes on a 2-core CPU (compiling takes most of it)
    python benchmarks/memory.py --quick          # 64x64, no compiled path: checks that it runs

A model (random initialisation, the default recipe's shape at ``--size``, 256 by default) is saved as a checkpoint and
exported to ONNX once; then each path runs in its own process: load the checkpoint with ``mnad.load_model`` (the ONNX
file with ``mnad.export.load_onnx``), build a ``mnad.stream.StreamScorer`` and push ``--frames`` frames, as
``mnad detect`` does (the memory updated after every frame). The resident set (VmRSS) is read after each stage and
the peak (VmHWM) at the end: the issue's target is at most 0.6 GiB for every path (issue #18, item 5).

Paths: ``fp32`` (eager, NCHW), ``fp32-cl`` (channels_last: what evaluate, calibrate and detect choose where bf16 is
not native), ``compiled`` and ``compiled-cl`` (``eval.compile``, fp32: at the first frame, a child process compiles
the step ahead of time, ``mnad.aot``, a minute or more; the scoring process loads the package), ``onnx`` (ONNX Runtime,
fp32), and where this CPU runs bf16 natively ``bf16-cl`` (the commands' choice there) and ``bf16-cl-compiled``. Each
run starts with an empty package cache (``MNAD_CACHE_DIR``, a temporary folder), so every compiled path builds its
package, and the compiling child's own peak is reported beside the scoring process's.

Writes benchmarks/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from speed import _pythonpath, busy_cores, finish, result_head, results_path, synthetic_frames  # noqa: E402

DEFAULT_OUT = HERE / "results" / "memory.json"
SCHEMA = "mnad-memory-1"
PATHS = {  # the config of each path; bf16 ones only where bf16 is native
    "fp32": ["eval.bf16=false", "eval.channels_last=false"],
    "fp32-cl": ["eval.bf16=false", "eval.channels_last=true"],  # the commands' default where bf16 is not native
    "compiled": ["eval.bf16=false", "eval.channels_last=false", "eval.compile=true"],
    "compiled-cl": ["eval.bf16=false", "eval.channels_last=true", "eval.compile=true"],  # --compile there
    "onnx": [],
    "bf16-cl": ["eval.bf16=true", "eval.channels_last=true"],  # the commands' default where bf16 is native
    "bf16-cl-compiled": ["eval.bf16=true", "eval.channels_last=true", "eval.compile=true"],
}
TARGET_MIB = 0.6 * 1024


def status_mib(key: str) -> float:
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def work(job: dict) -> dict:
    stages: dict[str, list[float]] = {}

    def stage(name: str) -> None:  # the resident set after the stage, and the peak so far
        stages[name] = [status_mib("VmRSS"), status_mib("VmHWM")]

    stage("python")
    import torch

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    from mnad.checkpoint import load_model
    from mnad.export import load_onnx
    from mnad.stream import StreamScorer

    stage("imports")
    if job["path"] == "onnx":
        model = load_onnx(job["onnx"], threads=job["threads"])
        config = model.config
    else:
        model, config = load_model(job["checkpoint"])
        config = config.override(PATHS[job["path"]] + ["eval.gamma=2.0"])
    stage("model loaded")
    scorer = StreamScorer.for_model(model, config, normalization="causal")
    stage("scorer built")
    frames = synthetic_frames(8, config.model.image_size)
    start, scored = time.perf_counter(), 0
    for i in range(job["frames"] + config.model.t_length - 1):
        if scorer.push(frames[i % len(frames)]) is not None:
            scored += 1
            if scored == 1:
                stage("first frame")
                first = time.perf_counter() - start
    stage("last frame")
    import resource

    builds = getattr(scorer.step, "builds", None)  # mnad.aot.AotStep: packages compiled by a child process
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if builds else None  # KiB on Linux
    return {"stages_rss_peak_mib": stages, "peak_rss_mib": status_mib("VmHWM"), "frames": scored, "first_frame_s": first,
            "seconds": time.perf_counter() - start, "packages_built": builds, "compile_process_peak_rss_mib": child_peak}


def run_worker(job: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=_pythonpath())
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        print(f"  {job['path']} failed:\n{tail}", file=sys.stderr)
        return {"error": tail or f"exit status {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def prepare(folder: Path, size: int) -> tuple[Path, Path | str]:
    """A random-initialisation checkpoint at ``size`` and its ONNX export (in this process: the workers only load);
    the export's error instead of its path where it fails."""
    import torch

    from mnad.checkpoint import save_model
    from mnad.config import Config
    from mnad.export import export_onnx
    from mnad.model import MNAD

    torch.manual_seed(0)
    config = Config.from_dict({"model": {"image_size": size}})
    model = MNAD(config.model)
    save_model(folder / "model.safetensors", model, config)
    try:
        export_onnx(model, config, folder / "model.onnx")
    except Exception as exc:  # reported in the onnx row; the other paths still run
        return folder / "model.safetensors", f"export failed: {type(exc).__name__}: {exc}"
    return folder / "model.safetensors", folder / "model.onnx"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="64x64, fewer frames, no compiled path")
    p.add_argument("--size", type=int, help="frame size (default 256)")
    p.add_argument("--frames", type=int, help="frames scored per path (default 20)")
    p.add_argument("--paths", nargs="+", choices=list(PATHS), help="default: all (bf16-cl only where bf16 is native)")
    p.add_argument("--threads", type=int, default=0, help="torch / ONNX Runtime threads (0: their default)")
    p.add_argument("--out", type=Path, help="JSON to write (default benchmarks/results/memory.json; with --quick memory.quick.json beside it)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.out = results_path(args.out, DEFAULT_OUT, args.quick)
    if args.worker:
        print(json.dumps(work(json.loads(args.worker))))
        return 0
    from mnad.precision import bf16_is_native

    size = args.size or (64 if args.quick else 256)
    frames = args.frames or (4 if args.quick else 20)
    paths = args.paths or [name for name in PATHS if (not name.startswith("bf16") or bf16_is_native("cpu"))
                           and not (args.quick and "compiled" in name)]
    busy, started = busy_cores(), time.time()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mnad-memory-") as tmp:
        os.environ["MNAD_CACHE_DIR"] = str(Path(tmp) / "cache")  # the workers inherit it: every compiled path builds
        checkpoint, onnx = prepare(Path(tmp), size)
        for name in paths:
            if name == "onnx" and isinstance(onnx, str):
                rows.append({"path": name, "error": onnx, "within_target": False})
                print(f"{name:<9} {onnx}", file=sys.stderr)
                continue
            result = run_worker({"path": name, "checkpoint": str(checkpoint), "onnx": str(onnx), "frames": frames, "threads": args.threads})
            rows.append({"path": name, **result, "within_target": result.get("peak_rss_mib", float("inf")) <= TARGET_MIB})
            if "peak_rss_mib" in result:
                print(f"{name:<9} peak {result['peak_rss_mib']:6.0f} MiB  "
                      + "  ".join(f"{k} {v:.0f}/{peak:.0f}" for k, (v, peak) in result["stages_rss_peak_mib"].items()), file=sys.stderr)
    result = result_head(SCHEMA, __file__, argv, quick=None) | {  # its quick is in "settings"
              "busy_cores_start": busy, "seconds": time.time() - started,
              "settings": {"size": size, "frames": frames, "threads": args.threads, "target_mib": TARGET_MIB, "quick": args.quick},
              "rows": rows}
    return finish("memory.py", args.out, result, [f"path {r['path']}" for r in rows if "error" in r])


if __name__ == "__main__":
    sys.exit(main())
