"""Localised memory distance on the stream protocol (issue #17): is the train->test false-alarm shift of the
calibrated score in D's whole-frame mean?

    python scripts/ped2_stream_regions.py dump --run RUN --data-root ../shared/data --out results/ped2_stream_regions/terms.csv
    python scripts/ped2_stream_regions.py analyse --run RUN --terms results/ped2_stream_regions/terms.csv \
        --data-root ../shared/data --out results/ped2_stream_regions/attempts.json

``dump`` plays RUN's held-out videos, then the Ped2 test videos as one stream (memory carried, test-time update on, as
``mnad evaluate --protocol stream``), through ``StreamScorer``, and records per frame, beside the package's PSNR,
patch PSNR and D, variants computed from the same step: D's per-query map reduced by its worst 2x2 / 4x4 region
(``d_patch2``, ``d_patch4``, stride half the side), its maximum, the mean of its top 10 %, and the PSNR of the worst
1/32-side patch. ``analyse`` calibrates each (PSNR term, D term) pair on the held-out videos exactly as
``scripts/ped2_stream.py`` does (1 % target, windows 1 and 5) and reports the stream metrics on the test videos with
the leave-one-held-out-video false-alarm rates (the label-free check); ``--run`` is the run the terms were dumped from,
whose config (memory update, PSNR peak, E_t) each calibration records as what scored its series. An exploration:
nothing here is a default.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from ped2_stream import leave_one_out, stream_scores  # noqa: E402

from mnad.calibrate import fit_calibration  # noqa: E402
from mnad.checkpoint import load_model  # noqa: E402
from mnad.config import Config  # noqa: E402
from mnad.data import find_label_file, load_labels, split_videos  # noqa: E402
from mnad.data.layouts import dataset_dir  # noqa: E402
from mnad.evaluate import VideoScores, attach_labels, auc_metrics, stream_metrics  # noqa: E402
from mnad.stream import StreamScorer  # noqa: E402
from mnad.train import holdout_videos  # noqa: E402

PSNR_TERMS = ["psnr", "patch_psnr", "p_patch32"]
DISTANCE_TERMS = ["distance", "d_patch2", "d_patch4", "d_max", "d_top10"]


def play(model, config, videos) -> list[dict]:
    """Every scored frame of ``videos`` played in order through one scorer, with the variants of its step."""
    scorer = StreamScorer.for_model(model, config)
    captured: dict = {}
    scorer.step.model.register_forward_hook(lambda m, i, o: captured.__setitem__("q", o.queries))
    inner = scorer.step

    def step(inputs, target, items):
        result = inner(inputs, target, items)
        q = captured["q"][0]  # (K, C) queries of this frame
        nearest = (q @ items.t()).argmax(-1)
        dmap = ((q - items[nearest]) ** 2).mean(-1)  # per-query D, its frame mean is the package's D
        k = dmap.numel()
        side = int(round(k**0.5))
        grid = dmap.reshape(1, 1, side, side)
        extra = {"d_max": float(dmap.max()), "d_top10": float(dmap.topk(max(k // 10, 1)).values.mean())}
        for s in (2, 4):
            extra[f"d_patch{s}"] = float(F.avg_pool2d(grid, s, stride=max(s // 2, 1)).max())
        err = (((result.frame.float() - target.float()) / 2) ** 2).mean(1, keepdim=True)
        extra["p_patch32"] = float(10 * torch.log10(1 / F.avg_pool2d(err, 32, stride=16).max()))
        captured["extra"] = extra
        return result

    scorer.step = step
    rows = []
    size, channels = config.model.image_size, config.model.channels
    for video in videos:
        scorer.new_video()
        for i in range(len(video)):
            r = scorer.push(video.frame(i, size, channels))
            if r is not None:
                rows.append({"video": video.name, "frame": r.index, "psnr": r.psnr, "patch_psnr": r.patch_psnr,
                             "distance": r.distance, "updated": int(r.updated), **captured["extra"]})
        print(video.name, flush=True)
    return rows


def dump(args: argparse.Namespace) -> None:
    torch.set_num_threads(2)
    model, config = load_model(args.run)
    config = config.override(["eval.normalization=causal"])
    rows = [{"part": "held_out", **r} for r in play(model, config, holdout_videos(args.run))]
    rows += [{"part": "test", **r} for r in play(model, config, split_videos(args.data_root, config.dataset, "testing"))]
    with open(args.out, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def scored_with(config: Config, p_term: str, d_term: str | None, alpha: float) -> Config:
    """The config a (PSNR term, D term) pair's series are recorded as scored with: the dump's (the run's memory update,
    PSNR peak, E_t), with the pair's weight and regions. The variants (``p_patch32``, ``d_patch2``, ``d_max``,
    ``d_top10``) are no eval setting: each is recorded as 'patch', a worst-region term (``d_patch4`` is the package's
    patch D at 256 x 256), the whole-frame terms as 'frame'. Only the record: the ranges and thresholds fitted are the
    same whatever it says, and these calibrations never leave the script."""
    p_region = "frame" if p_term == "psnr" else "patch"
    d_region = "frame" if d_term in (None, "distance") else "patch"
    return config.override([f"eval.psnr_region={p_region}", f"eval.distance_region={d_region}", f"eval.alpha={alpha}"])


def analyse(args: argparse.Namespace) -> None:
    _, config = load_model(args.run)  # the config dump scored the terms with (its eval.normalization aside)
    with open(args.terms, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))

    def videos(part: str) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for r in rows:
            if r["part"] == part:
                out.setdefault(r["video"], []).append(r)
        return out

    def col(video_rows: list[dict], key: str) -> np.ndarray:
        return np.array([float(r[key]) for r in video_rows])

    held, test = list(videos("held_out").values()), videos("test")
    tests = split_videos(args.data_root, "ped2", "testing")
    labels = load_labels(find_label_file(dataset_dir(args.data_root, "ped2"), "ped2"), tests)
    base = [VideoScores(name, col(r, "frame").astype(int), col(r, "psnr"), col(r, "patch_psnr"), col(r, "distance"),
                        col(r, "d_patch2"), col(r, "distance") * 0, col(r, "updated") > 0) for name, r in test.items()]
    attach_labels(base, labels)
    attempts = []
    for p_term in PSNR_TERMS:
        for d_term in [*DISTANCE_TERMS, None]:
            alpha, d_key = (1.0, "distance") if d_term is None else (0.6, d_term)
            for window in (1, 5):
                cal_p, cal_d = [col(r, p_term) for r in held], [col(r, d_key) for r in held]
                scoring = scored_with(config, p_term, d_term, alpha)
                fitted = fit_calibration(cal_p, cal_d, alpha=alpha, false_alarm_rate=0.01, smoothing=window, scored_with=scoring)
                raw, smoothed = stream_scores([col(r, p_term) for r in test.values()], [col(r, d_key) for r in test.values()],
                                              alpha, window, fitted)
                scored = [dataclasses.replace(v, score=s, unsmoothed_score=r)
                          for v, r, s in zip(base, raw, smoothed, strict=True)]
                row = {"psnr_term": p_term, "distance_term": d_term, "alpha": alpha, "window": window,
                       "micro_auc": auc_metrics(scored)["micro_auc"], "stream": stream_metrics(scored, fitted, fps=10.0),
                       "held_out_leave_one_out_far": leave_one_out(cal_p, cal_d, alpha, window, scored_with=scoring)}
                attempts.append(row)
                s = row["stream"]
                print(f"{p_term} + {d_term or '-'} w{window}: AUC {100 * row['micro_auc']:.2f}, FAR "
                      f"{100 * s['at_false_alarm_rate']['0.01']['false_alarm_rate']:.1f} / "
                      f"{100 * s['at_false_alarm_rate']['0.05']['false_alarm_rate']:.1f} %, "
                      f"false events/min {s['event_measures']['false_events_per_minute']:.2f}", flush=True)
    Path(args.out).write_text(json.dumps({"terms": str(args.terms), "attempts": attempts}, indent=1), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("dump")
    p.add_argument("--run", required=True)
    p.add_argument("--data-root", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=dump)
    p = sub.add_parser("analyse")
    p.add_argument("--run", required=True, help="the run the terms were dumped from (dump's --run)")
    p.add_argument("--terms", required=True)
    p.add_argument("--data-root", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=analyse)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
