"""How long the whole ``mnad report`` takes on a large evaluation (a day of one camera at ~12 frames/s is about 1 M
rows). Writes an evaluation folder (scores.csv, metrics.json, as ``mnad evaluate --out`` does) into a temporary folder
and runs ``mnad report <folder> --out <folder>/page`` ``--repeat`` times, each in a fresh process (the best is printed,
with the process' own wall time, import included). ``--compare PATH`` also runs it, interleaved, so both see the same
load, with another mnad: a folder holding its package (``mkdir /tmp/old && git archive <commit> src | tar -x -C
/tmp/old``, then ``--compare /tmp/old/src``), or only the plots of another copy of report/plots.py (``git show
<commit>:src/mnad/report/plots.py > /tmp/old_plots.py``). Prints; writes nothing to results/.

    .venv/bin/python benchmarks/report_large.py --rows 1000000 [--videos 1] [--repeat 3] [--flicker] [--compare /tmp/old/src]
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
from types import SimpleNamespace

import numpy as np

from mnad import outputs

# run in the child: optionally the plots of another plots.py, then `mnad report`; prints the seconds main() took
CHILD = """
import importlib.util, json, sys, time
compare, folder, out = sys.argv[1:4]
if compare.endswith(".py"):
    import mnad.report.page as page
    spec = importlib.util.spec_from_file_location("compared_plots", compare)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("roc_png", "histogram_png", "timeline_png", "training_png"):
        setattr(page, name, getattr(module, name))
from mnad.cli import main
start = time.perf_counter()
code = main(["report", folder, "--out", out])
print(json.dumps({"seconds": time.perf_counter() - start, "code": code}))
"""


def evaluation_folder(folder: Path, rows: int, videos: int, *, flicker: bool = False) -> Path:
    """Scores as a long camera day looks: noise, a few labelled anomalies scored higher, single-frame spikes; with
    ``flicker``, half the frames labelled abnormal at random (a quarter of a million anomalies per million frames)."""
    rng = np.random.default_rng(0)
    per = rows // videos
    made = []
    for k in range(videos):
        label = np.zeros(per, int)
        for start in rng.integers(0, per - 2000, 20):
            label[start:start + rng.integers(100, 2000)] = 1
        if flicker:
            label = (rng.random(per) < 0.5).astype(int)
        score = np.clip(rng.normal(0.3, 0.1, per) + 0.15 * label, 0, 1)  # overlapping: a ROC of ~10^5 corners
        score[rng.integers(0, per, 10)] = 1.0  # single-frame spikes
        made.append(SimpleNamespace(name=f"camera{k}", frames=np.arange(per) + 4, psnr=40 - 20 * score, patch_psnr=30 - 20 * score,
                                    distance=score * 1e-5, patch_distance=score * 1e-5, regular=score,
                                    updated=rng.random(per) < 0.3, score=score, labels=label))
    metrics = {"micro_auc": 0.9, "macro_auc": 0.9, "per_video_auc": {v.name: 0.9 for v in made}, "frames_scored": per * videos,
               "abnormal_frames": sum(int(v.labels.sum()) for v in made), "videos": videos, "protocol": "published"}
    outputs.write_evaluation(folder, made, metrics, {"name": "bench", "dataset": "camera", "train": {"seed": 0}})
    return folder


def run_once(compare: str, folder: Path, out: Path) -> tuple[float, float]:
    env = dict(os.environ)
    if compare and not compare.endswith(".py"):  # another mnad package, imported in place of this tree's
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [compare, env.get("PYTHONPATH")]))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, compare, str(folder), str(out)], capture_output=True, text=True, check=False,
                          env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"mnad report failed ({done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"], wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--videos", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--flicker", action="store_true", help="half the frames labelled abnormal at random")
    parser.add_argument("--compare", type=Path, help="another mnad (a folder holding its package) or report/plots.py, timed too")
    args = parser.parse_args()
    variants = {"this tree": ""}
    if args.compare:
        variants[str(args.compare)] = str(args.compare.resolve())
    with tempfile.TemporaryDirectory() as tmp:
        folder = evaluation_folder(Path(tmp) / "eval", args.rows, args.videos, flicker=args.flicker)
        size = (folder / outputs.SCORES_FILE).stat().st_size / 1e6
        print(f"scores.csv {size:.0f} MB, {args.rows // args.videos * args.videos} rows, {args.videos} videos")
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        for round_ in range(args.repeat):
            for k, (name, compare) in enumerate(variants.items()):  # a new --out each time: an earlier page is not replaced
                times[name].append(run_once(compare, folder, Path(tmp) / f"page{round_}-{k}"))
        for name, runs in times.items():
            report = [r for r, _ in runs]
            wall = [w for _, w in runs]
            print(f"{name}: mnad report best {min(report):.2f} s of {len(runs)} ({', '.join(f'{s:.2f}' for s in report)}); "
                  f"whole process best {min(wall):.2f} s ({', '.join(f'{s:.2f}' for s in wall)})")


if __name__ == "__main__":
    main()
