"""int8 scoring (issue #18) against the fp32 paths, side by side in one run; writes benchmarks/results/int8.json.

    python benchmarks/int8.py                          # about 10 minutes on an idle 2-core CPU
    python benchmarks/int8.py --quick                  # a minute: 128x128 only, few frames (checks that it runs)
    python benchmarks/int8.py --data-root ../shared/data --compiled   # calibrate on Ped2's training frames; add compiled fp32
    python benchmarks/int8.py --compiled --pt2e        # on the AMX Xeon: every candidate against compiled bf16

Rows, each at ``--sizes`` (batch 1, frames scored one after the other through ``mnad.stream.StreamScorer``, each
reading the memory the previous one left, as ``mnad detect`` scores them):

* ``onnx-int8``: ONNX Runtime, the export with its convolutions quantised (``mnad export --int8``, ``mnad.quantize``);
* ``onnx-fp32``: ONNX Runtime, the plain fp32 export (``mnad export``);
* ``mnad-fp32``: PyTorch eager in fp32 as ``mnad evaluate`` and ``mnad detect`` score where bf16 is not native
  (``precision.scoring_path(fp32=True)``: BatchNorm folded, channels_last), with the CLI's ``OMP_WAIT_POLICY=PASSIVE``;
* ``mnad-compiled`` (``--compiled``): the same, the step compiled with inductor (``eval.compile``; compiling at the
  first warm-up frame takes minutes on 2 cores and is not timed); where bf16 is native also ``mnad-bf16-compiled``
  (bf16 + channels_last compiled: what the commands choose there, and the issue's reference);
* ``pt2e-int8`` (``--pt2e``, needs ``pip install torchao==0.18.0``): a candidate path, not in the package: the same
  scoring step quantised by PyTorch 2 export quantisation (torchao's ``X86InductorQuantizer``, static, calibrated on the
  same clips, the same convolutions kept fp32 as ``mnad.quantize``) and compiled by inductor with frozen weights; where
  bf16 is native also ``pt2e-int8-bf16``, the same under bf16 autocast, so the convolutions int8 leaves alone run in
  bf16 rather than fp32 (``int8_bound.py``: without that the goal is out of reach on AMX).

The weights are the shipped model's (``--checkpoint``, default ``ped2-pred``, trained at 128x128; the network is fully
convolutional, so the same weights run at 256x256). The int8 export is calibrated on ``--calibration-clips`` clips of
Ped2's training frames under ``--data-root`` or, without it, of synthetic frames (speed does not depend on which).
Every row runs in its own fresh process, so its peak resident memory (VmHWM) is its own; ``--rounds`` repeats every
row, interleaved, to even out drift in the machine's load; frames/s is the median over the timed frames and rounds.

The issue's goals (written for an Intel Xeon with AMX, where the reference is the compiled bf16 path): int8 >= 1.7x the
fastest frame rate at 256x256 and 128x128, peak RSS <= 0.6 GiB. On a CPU without native bf16 (AVX2 only, say) the
reference here is the fastest fp32 row, and the JSON says which CPU features were there. The Ped2 AUC of the shipped
model through int8 is not scored here (it takes tens of minutes): the JSON copies it from the committed
``results/ped2-pred-shipped-int8/metrics.json`` next to the fp32 figure in ``results/ped2-pred-shipped/``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = HERE / "results" / "int8.json"
SCHEMA = "mnad-int8-1"
ROWS = ["onnx-int8", "onnx-fp32", "mnad-fp32"]
INT8_ROWS = ["onnx-int8", "pt2e-int8", "pt2e-int8-bf16"]
FP32_ROWS = ["onnx-fp32", "mnad-fp32", "mnad-compiled"]
TARGET_SPEEDUP, TARGET_RSS_GIB, TARGET_AUC_POINTS = 1.7, 0.6, 0.3

sys.path.insert(0, str(HERE))
from speed import CPU_FEATURES, busy_cores, finish, loadavg, peak_rss_mib, result_head, results_path, synthetic_frames  # noqa: E402  (the same helpers as speed.py)


class ArrayVideo:
    """Frames already in memory, as ``mnad.data.Video`` gives them: synthetic calibration footage."""

    def __init__(self, frames: list, name: str = "synthetic") -> None:
        self.frames, self.name, self.path = frames, name, Path(f"<{name}>")

    def __len__(self) -> int:
        return len(self.frames)

    def frame(self, index: int, size: int, channels: int):
        return self.frames[index]


# ---- setup (parent) and workers (each in its own process) -----------------------------------------------------


def export_models(args: argparse.Namespace, size: int, folder: Path) -> dict:
    """The fp32 and int8 exports of the checkpoint's weights at ``size``; returns where they are and how long int8 took."""
    from mnad.checkpoint import load_model, save_model
    from mnad.export import export_onnx

    model, config = load_model(args.checkpoint)
    config = config.override([f"model.image_size={size}", f"eval.gamma={args.gamma}"])
    normal = calibration_videos(args.data_root, args.calibration_clips, size)
    paths = {"weights": folder / f"model{size}.safetensors", "fp32": folder / f"fp32_{size}.onnx", "int8": folder / f"int8_{size}.onnx"}
    save_model(paths["weights"], model, config)
    export_onnx(model, config, paths["fp32"])
    start = time.perf_counter()
    export_onnx(model, config, paths["int8"], int8=True, calibration=normal, calibration_clips=args.calibration_clips)
    return {"paths": {k: str(v) for k, v in paths.items()}, "int8_export_s": time.perf_counter() - start,
            "calibration": "Ped2 training frames" if args.data_root else "synthetic frames"}


def work(job: dict) -> dict:
    """Score ``warmup + frames`` synthetic frames with one row; per-frame wall times, PSNRs and the peak RSS."""
    import torch

    torch.set_num_threads(job["threads"])
    from mnad.stream import StreamScorer

    if job["row"].startswith("pt2e"):
        step, config, items = pt2e_step(job)
        scorer = StreamScorer(step, config, items, normalization="video")
    elif job["row"].startswith("onnx"):
        from mnad.export import load_onnx

        model = load_onnx(job["paths"]["int8" if job["row"] == "onnx-int8" else "fp32"], threads=job["threads"])
        config = model.config
        scorer = StreamScorer.for_model(model, config, normalization="video")
    else:
        from mnad.checkpoint import load_model
        from mnad.precision import scoring_path

        model, config = load_model(job["paths"]["weights"])
        config = scoring_path(config, "cpu", fp32=job["row"] != "mnad-bf16-compiled").apply(config)  # the commands' paths
        config = config.override([f"eval.compile={str(job['row'].endswith('compiled')).lower()}"])
        scorer = StreamScorer.for_model(model, config, normalization="video")
    frames = synthetic_frames(job["warmup"] + job["frames"] + config.model.t_length - 1, job["size"])
    stamps, psnrs, updates = [(time.perf_counter(), time.process_time())], [], 0
    for frame in frames:
        scored = scorer.push(frame)
        if scored is not None:
            stamps.append((time.perf_counter(), time.process_time()))
            psnrs.append(scored.psnr)
            updates += int(scored.updated)
    times = [b[0] - a[0] for a, b in zip(stamps, stamps[1:], strict=False)][job["warmup"]:]
    cpu = [b[1] - a[1] for a, b in zip(stamps, stamps[1:], strict=False)][job["warmup"]:]
    return {"times_s": times, "cpu_s": cpu, "psnr": psnrs, "updates": updates, "peak_rss_mib": peak_rss_mib()}


def calibration_videos(data_root: str | None, clips: int, size: int) -> list:
    """The normal footage int8 is calibrated on: Ped2's training videos under ``data_root``, else synthetic frames."""
    from mnad.data import split_videos

    return split_videos(data_root, "ped2", "training") if data_root else [ArrayVideo(synthetic_frames(clips + 4, size, seed=1))]


def pt2e_step(job: dict):
    """The ``pt2e-int8`` rows' step: ``ScoringStep`` exported, quantised by torchao's X86InductorQuantizer (static,
    calibrated on the clips the ONNX int8 export is calibrated on, the convolutions ``mnad.quantize.kept_fp32`` names
    kept fp32) and compiled by inductor with frozen weights at its first call; ``pt2e-int8-bf16`` runs it under bf16
    autocast. Returns the step, its config and the memory items."""
    import onnx
    import torch
    from torch._inductor import config as inductor_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    from mnad.checkpoint import load_model
    from mnad.quantize import calibration_feeds, kept_fp32, pick_clips
    from mnad.stream import ScoringStep, StepResult

    model, config = load_model(job["paths"]["weights"])
    config = config.override(["eval.bf16=false", "eval.channels_last=false", "eval.compile=false"])
    items = model.memory.items.detach().float()
    videos = calibration_videos(job["data_root"], job["calibration_clips"], job["size"])
    feeds = [tuple(torch.from_numpy(f[k]) for k in ("inputs", "target", "items"))
             for f in calibration_feeds(videos, config, items, pick_clips(videos, config, job["calibration_clips"]))]
    with torch.no_grad():
        graph = torch.export.export(ScoringStep(model.eval(), config).eval(), feeds[0]).module()
    for node in list(graph.graph.nodes):  # the dtype checks of .float() would fail under an outer bf16 autocast
        if node.op == "call_function" and "assert_tensor_metadata" in str(node.target):
            graph.graph.erase_node(node)
    graph.recompile()
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    for name in kept_fp32(onnx.load(job["paths"]["fp32"])):  # "/model/encoder/stage1/stage1.0/Conv" -> model.encoder.stage1.0
        parts = name.strip("/").split("/")
        quantizer.set_module_name_qconfig(".".join(parts[:-2] + [parts[-2].rsplit(".", 1)[-1]]), None)
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for feed in feeds:
            prepared(*feed)
    compiled = torch.compile(convert_pt2e(prepared))
    mixed = job["row"] == "pt2e-int8-bf16"

    def step(inputs, target, memory):
        with torch.no_grad(), inductor_config.patch(freezing=True), torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed):
            return StepResult(*compiled(inputs, target, memory))

    return step, config, items


def run_worker(job: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(job["threads"]), PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p))
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the mnad command sets it (mnad/cli.py): torch's threads sleep when idle
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)],
                          capture_output=True, text=True, env=env, cwd=str(ROOT))
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-5:]
        print("    worker failed:\n      " + "\n      ".join(tail), file=sys.stderr)
        return {"error": "\n".join(tail) or f"exit status {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- the parent ------------------------------------------------------------------------------------------------


def cpu_info() -> dict:
    info = {"cpu_model": "unknown", "logical_cpus": os.cpu_count(), "features": []}
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        info["cpu_model"] = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "unknown")
        flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
        info["features"] = [f for f in CPU_FEATURES if f in flags]
    except OSError:
        pass
    return info


def bf16_native() -> bool:
    from mnad.precision import bf16_is_native

    return bf16_is_native("cpu")


def accuracy() -> dict | None:
    """The committed Ped2 evaluations of the shipped model, fp32 and int8 (scored by the commands in their folders)."""
    fp32, int8 = ROOT / "results" / "ped2-pred-shipped" / "metrics.json", ROOT / "results" / "ped2-pred-shipped-int8" / "metrics.json"
    if not (fp32.is_file() and int8.is_file()):
        return None
    a, b = (json.loads(p.read_text(encoding="utf-8"))["metrics"] for p in (fp32, int8))
    points = 100 * (b["micro_auc"] - a["micro_auc"])
    return {"fp32_micro_auc": a["micro_auc"], "int8_micro_auc": b["micro_auc"], "difference_points": points,
            "fp32_macro_auc": a["macro_auc"], "int8_macro_auc": b["macro_auc"],
            "target": f"|difference| <= {TARGET_AUC_POINTS} points", "met": abs(points) <= TARGET_AUC_POINTS,
            "sources": [str(fp32.relative_to(ROOT)), str(int8.relative_to(ROOT))]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="128x128 only, few frames, one round")
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--frames", type=int, default=40, help="timed frames per row and round")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2, help="every row runs this many times, interleaved")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads of torch and of ONNX Runtime")
    p.add_argument("--compiled", action="store_true", help="also the compiled fp32 row (compiles for minutes in each process)")
    p.add_argument("--pt2e", action="store_true", help="also the candidate PT2E int8 rows (torchao; compiles in each process)")
    p.add_argument("--checkpoint", default="ped2-pred", help="weights to time (default: the shipped model)")
    p.add_argument("--data-root", help="calibrate the int8 export on Ped2's training frames under this folder (else synthetic)")
    p.add_argument("--calibration-clips", type=int, default=64, help="clips the int8 export is calibrated on")
    p.add_argument("--gamma", type=float, default=2.0, help="test-time update threshold: 2.0 updates the memory at every frame (the costliest)")
    p.add_argument("--out", type=Path, help="JSON to write (default benchmarks/results/int8.json; with --quick int8.quick.json beside it)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.out = results_path(args.out, DEFAULT_OUT, args.quick)
    if args.pt2e and importlib.util.find_spec("torchao") is None:
        p.error("--pt2e needs torchao: pip install torchao==0.18.0")
    if args.quick:
        args.sizes, args.frames, args.warmup, args.rounds, args.calibration_clips = [128], 8, 2, 1, 16
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(work(json.loads(args.worker))))
        return 0
    started = time.perf_counter()
    native = bf16_native()
    rows = ROWS + (["mnad-compiled"] + (["mnad-bf16-compiled"] if native else []) if args.compiled else [])
    rows += (["pt2e-int8"] + (["pt2e-int8-bf16"] if native else []) if args.pt2e else [])
    busy, load_start = busy_cores(), loadavg()
    notes = []
    if (args.compiled or args.pt2e) and not native:
        notes.append("bf16 is not native on this CPU: the bf16 rows (mnad-bf16-compiled, pt2e-int8-bf16) were left out.")
    if busy is not None and busy > 0.2:
        notes.append(f"WARNING: {busy:.2f} cores were busy with other processes at the start: the rows shared the cores with them, "
                     "so only the ratios between rows of this run mean something, and even those are noisy.")
    results, setup = [], {}
    with tempfile.TemporaryDirectory(prefix="mnad-int8-bench-") as tmp:
        for size in args.sizes:
            print(f"exporting fp32 and int8 at {size}x{size} ...", file=sys.stderr)
            setup[size] = export_models(args, size, Path(tmp))
        runs: dict[tuple[int, str], list[dict]] = {}
        for r in range(args.rounds):
            for size in args.sizes:
                for row in rows:
                    print(f"round {r + 1}/{args.rounds}: {row} at {size}x{size}", file=sys.stderr)
                    job = {"row": row, "size": size, "threads": args.threads, "warmup": args.warmup, "frames": args.frames,
                           "paths": setup[size]["paths"], "data_root": args.data_root, "calibration_clips": args.calibration_clips}
                    runs.setdefault((size, row), []).append(run_worker(job))
    for (size, row), done in runs.items():
        ok = [d for d in done if "error" not in d]
        if not ok:
            results.append({"size": size, "row": row, "error": done[0]["error"]})
            continue
        median = statistics.median(t for d in ok for t in d["times_s"])
        cpu = statistics.median(t for d in ok for t in d["cpu_s"])
        failed_rounds = {"rounds_failed": len(done) - len(ok)} if len(ok) < len(done) else {}  # the run failed in part
        results.append({"size": size, "row": row, **failed_rounds, "fps": 1 / median, "ms_per_frame": 1000 * median, "cpu_ms_per_frame": 1000 * cpu,
                        "round_fps": [1 / statistics.median(d["times_s"]) for d in ok],
                        "peak_rss_mib": max(d["peak_rss_mib"] for d in ok), "memory_updates": ok[0]["updates"],
                        "mean_psnr": statistics.fmean(ok[0]["psnr"]), "psnr": ok[0]["psnr"]})
    summary = []
    for size in args.sizes:
        by_row = {r["row"]: r for r in results if r["size"] == size and "fps" in r}
        fp32 = {k: v for k, v in by_row.items() if k in FP32_ROWS}
        if not fp32:
            continue
        best_name, best = max(fp32.items(), key=lambda kv: kv[1]["fps"])
        reference = "mnad-bf16-compiled" if "mnad-bf16-compiled" in by_row else best_name  # the issue's, where there is one
        for name in (r for r in INT8_ROWS if r in by_row):
            int8 = by_row[name]
            speedup = int8["fps"] / by_row[reference]["fps"]
            onnx_fp32 = by_row.get("onnx-fp32")  # without it (its row failed) the gap is not measured: None, not 0
            psnr_diff = [abs(a - b) for a, b in zip(int8["psnr"], onnx_fp32["psnr"], strict=False)] if onnx_fp32 else []
            summary.append({
                "size": size, "row": name, "int8_fps": int8["fps"], "reference": reference, "reference_fps": by_row[reference]["fps"],
                "speedup_vs_reference": speedup, "fastest_fp32": best_name, "fastest_fp32_fps": best["fps"],
                "speedup_vs_fastest_fp32": int8["fps"] / best["fps"],
                "speedup_vs_onnx_fp32": int8["fps"] / by_row["onnx-fp32"]["fps"] if "onnx-fp32" in by_row else None,
                "speedup_vs_mnad_fp32": int8["fps"] / by_row["mnad-fp32"]["fps"] if "mnad-fp32" in by_row else None,
                "speed_target_met": speedup >= TARGET_SPEEDUP,
                # CPU time per frame: less disturbed by other processes than the wall clock (with --threads 1 it is the work done)
                "cpu_time_ratio_vs_least_cpu_fp32": min(r["cpu_ms_per_frame"] for r in fp32.values()) / int8["cpu_ms_per_frame"],
                "int8_peak_rss_gib": int8["peak_rss_mib"] / 1024,
                "rss_target_met": int8["peak_rss_mib"] / 1024 <= TARGET_RSS_GIB,
                "psnr_abs_diff_vs_onnx_fp32_db": {"mean": statistics.fmean(psnr_diff), "max": max(psnr_diff)} if psnr_diff else None,
            })
    for r in results:
        r.pop("psnr", None)
    cpu = cpu_info()
    if not {"amx_int8", "avx512_vnni", "avx_vnni"} & set(cpu["features"]):
        notes.append("This CPU has no int8 dot-product instructions (no VNNI, no AMX): ONNX Runtime's int8 convolutions run on AVX2's "
                     "multiply-add of bytes. No native bf16 either, so the issue's reference (compiled bf16 on AMX) cannot be measured "
                     "here; int8 is compared with the fastest fp32 row.")
    record = result_head(SCHEMA, __file__, argv, quick=args.quick, device=None) | {
        "machine": cpu | {"python": platform.python_version(), "onnxruntime": _version("onnxruntime"), "torch": _version("torch"),
                          "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")},
        "busy_cores_start": busy, "loadavg_start": load_start, "loadavg_end": loadavg(),
        "settings": {k: getattr(args, k) for k in ("sizes", "frames", "warmup", "rounds", "threads", "checkpoint", "calibration_clips", "gamma")},
        "setup": {str(size): {k: v for k, v in s.items() if k != "paths"} for size, s in setup.items()},
        "targets": {"speedup": f">= {TARGET_SPEEDUP}x compiled bf16 where bf16 is native and --compiled, else the fastest fp32 row",
                    "peak_rss": f"<= {TARGET_RSS_GIB} GiB"},
        "scoring": results, "summary": summary, "accuracy": accuracy(), "notes": notes,
        "seconds": time.perf_counter() - started,
    }
    for s in summary:
        print(f"{s['size']}x{s['size']}: {s['row']} {s['int8_fps']:.1f} frames/s, {s['speedup_vs_reference']:.2f}x {s['reference']} "
              f"({s['reference_fps']:.1f}); CPU time {s['cpu_time_ratio_vs_least_cpu_fp32']:.2f}x less than the least fp32; "
              f"peak RSS {s['int8_peak_rss_gib']:.2f} GiB")
    return finish("int8.py", args.out, record, [f"{r['row']} at {r['size']}" for r in results if "error" in r or r.get("rounds_failed")])


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
