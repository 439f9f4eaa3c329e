"""How long ``mnad.outputs.read_scores`` takes on a large scores.csv (a day of one camera at ~12 frames/s is about
1 M rows, as ``mnad report`` reads it). Writes the file with ``scores_csv_bytes`` into a temporary folder and times
the reader ``--repeat`` times (the best is printed); ``--compare FILE`` also times the ``read_scores`` of another
copy of the module that holds it (``git show <commit>:src/mnad/outputs/evaluation.py > /tmp/old.py``; before the
outputs package, ``src/mnad/outputs.py``), interleaved, so both see the
same load. Prints; writes nothing to results/.

    .venv/bin/python benchmarks/read_scores.py --rows 1000000 [--videos 4] [--repeat 3] [--compare /tmp/old.py]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from mnad import outputs


def scores_file(folder: Path, rows: int, videos: int) -> Path:
    rng = np.random.default_rng(0)
    per = rows // videos
    made = [SimpleNamespace(name=f"camera{k}", frames=np.arange(per) + 4, psnr=rng.uniform(20, 40, per),
                            patch_psnr=rng.uniform(20, 40, per), distance=rng.uniform(0, 1e-5, per),
                            patch_distance=rng.uniform(0, 1e-5, per), regular=rng.uniform(0, 1, per),
                            updated=rng.integers(0, 2, per), score=rng.uniform(0, 1, per), labels=rng.integers(0, 2, per))
            for k in range(videos)]
    path = folder / outputs.SCORES_FILE
    path.write_bytes(outputs.scores_csv_bytes(made))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compare", type=Path, help="another copy of outputs/evaluation.py (or an older outputs.py) timed too")
    args = parser.parse_args()
    readers = {"read_scores": outputs.read_scores}
    if args.compare:
        spec = importlib.util.spec_from_file_location("compared_outputs", args.compare)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
        readers[f"read_scores of {args.compare}"] = module.read_scores
    with tempfile.TemporaryDirectory() as folder:
        path = scores_file(Path(folder), args.rows, args.videos)
        print(f"{path.stat().st_size / 1e6:.0f} MB, {args.rows} rows, {args.videos} videos")
        times: dict[str, list[float]] = {name: [] for name in readers}
        for _ in range(args.repeat):
            for name, read in readers.items():
                start = time.perf_counter()
                videos = read(path)
                times[name].append(time.perf_counter() - start)
                assert sum(v.frames.size for v in videos) == args.rows // args.videos * args.videos
        for name, seconds in times.items():
            print(f"{name}: best {min(seconds):.2f} s of {len(seconds)} ({', '.join(f'{s:.2f}' for s in seconds)})")


if __name__ == "__main__":
    main()
