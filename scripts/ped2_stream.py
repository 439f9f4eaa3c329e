"""The stream protocol on UCSD Ped2 (issue #17): what a camera could have done, with a model that never saw its
calibration footage.

    python scripts/ped2_stream.py --run RUN --data-root ../shared/data --out results/ped2_stream

RUN is a training run that held whole training videos out (``train.holdout_videos``; its ``holdout.json``):
1. calibration on the held-out videos with ``mnad calibrate``'s own function (1 % target false-alarm rate; the scoring
   chosen on pseudo-anomalies made from those videos, or with ``--scoring config`` the config's terms and a 5-frame mean);
2. ``mnad evaluate --protocol stream`` with that calibrated model, through the package: the headline numbers;
3. every attempted scoring, recomputed from the raw terms of those two scoring passes (PSNR, patch PSNR, D, patch D)
   with the package's own functions: calibration (``calibrate.fit_calibration``), causal normalisers and trailing
   mean (``scoring``), stream metrics (``evaluate.stream_metrics``). The attempt equal to step 2 must reproduce its
   AUC (checked). Each attempt also gets a label-free check on normal footage only: calibrated on 3 held-out videos,
   the false-alarm rate realised on the 4th (leave one out), which is how settings are compared without test labels.

Writes OUT/metrics.json and OUT/scores.csv (step 2), OUT/attempts.json (step 3) and OUT/commands.txt; the
calibrated model is not kept (rerun step 1 to get it: `mnad calibrate --checkpoint RUN --out FILE`). They are made in a
temporary folder beside OUT and replace OUT's files together (``atomic_write_many``) only once every step succeeded:
a run that fails leaves OUT as it was; one whose reference attempt does not reproduce the package leaves its files in
that folder (named in the error) and exits 1.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import shlex
import shutil
import sys
import tempfile
from collections import deque
from pathlib import Path

import numpy as np

from mnad.atomic import atomic_write_many
from mnad.calibrate import calibrate, describe_scoring, fit_calibration, footage_terms, with_calibration
from mnad.calibration import Calibration
from mnad.checkpoint import load_model, save_model
from mnad.config import Config, mixing_weight
from mnad.data import find_label_file, load_labels, split_videos
from mnad.data.layouts import dataset_dir
from mnad.errors import MNADError
from mnad.evaluate import DATASET_FPS, VideoScores, add_scores, attach_labels, auc_metrics, evaluate, stream_metrics
from mnad.outputs import SCORES_FILE
from mnad.scoring import CausalScore, score_terms
from mnad.train import holdout_videos

RATE, WINDOW = 0.01, 5  # the detector's defaults before the scoring was chosen on pseudo-anomalies, fixed before any run
# (name, PSNR region, D region or None for PSNR only, normalisation, window); windows 1 and 9 bracket the default.
# The rows with patch D were added after the first table (docs/results.md, "Localised memory distance").
ATTEMPTS = [
    (f"{p_region} PSNR{f' + {d_region} D' if d_region else ''}, {norm}, {w}-frame mean", p_region, d_region, norm, w)
    for p_region in ("frame", "patch") for d_region in ("frame", "patch", None) for norm in ("calibrated", "causal")
    for w in (1, WINDOW, 9) if norm == "calibrated" or w == WINDOW
]
ALPHA = 0.6  # S_t's weight of PSNR where D is mixed in (the paper's)
# A running baseline (the rows "..., running baseline, ..."; fixed before they were run): the smoothed calibrated
# score minus the median of the last BASELINE_FRAMES smoothed scores that raised no alert, plus the calibration
# footage's median, so that a slow drift of the scene's normal level is followed while an anomaly (above the threshold)
# does not pull the baseline up. It starts from the calibration footage's last scores. 300 frames: 30 s at Ped2's rate.
BASELINE_FRAMES = 300
ATTEMPTS += [(f"{p_region} PSNR{f' + {d_region} D' if d_region else ''}, calibrated, running baseline, {WINDOW}-frame mean",
              p_region, d_region, "baseline", WINDOW) for p_region in ("frame", "patch") for d_region in ("frame", "patch", None)]


def stream_scores(psnr: list[np.ndarray], distance: list[np.ndarray], alpha: float, window: int,
                  calibration: Calibration | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Causal S_t and its trailing mean over videos played one after another (nothing reset between them), with the
    ``scoring.CausalScore`` that ``StreamScorer`` scores each frame with."""
    causal = CausalScore(alpha, window, calibration)
    raw, smoothed = [], []
    for p_video, d_video in zip(psnr, distance, strict=True):
        pairs = [causal(float(p), float(d)) for p, d in zip(p_video, d_video, strict=True)]
        raw.append(np.array([r for r, _ in pairs]))
        smoothed.append(np.array([s for _, s in pairs]))
    return raw, smoothed


def running_baseline(smoothed: list[np.ndarray], calibration: Calibration, footage: list[np.ndarray]) -> list[np.ndarray]:
    """The smoothed scores of videos played in order, less a causal baseline: the median of the last BASELINE_FRAMES
    scores that stayed at or below the alert threshold (starting with the calibration footage's own smoothed scores,
    ``footage``), plus the calibration footage's median."""
    level = float(np.median(np.concatenate(footage)))
    recent = deque(np.concatenate(footage)[-BASELINE_FRAMES:].tolist(), maxlen=BASELINE_FRAMES)
    adjusted = []
    for video in smoothed:
        out = []
        for score in video:
            out.append(float(score) - float(np.median(recent)) + level)
            if out[-1] <= calibration.threshold:
                recent.append(float(score))
        adjusted.append(np.array(out))
    return adjusted


def calibrated_scores(psnr: list[np.ndarray], distance: list[np.ndarray], alpha: float, window: int, norm: str,
                      fitted: Calibration, cal_psnr: list[np.ndarray], cal_distance: list[np.ndarray]) -> tuple[list, list]:
    """(S_t, smoothed S_t) of the calibrated scorings: as ``stream_scores``, or with the running baseline removed
    from both (``norm`` 'baseline')."""
    raw, smoothed = stream_scores(psnr, distance, alpha, window, fitted)
    if norm == "baseline":
        footage = [stream_scores([p], [d], alpha, window, fitted)[1][0] for p, d in zip(cal_psnr, cal_distance, strict=True)]
        raw, smoothed = running_baseline(raw, fitted, footage), running_baseline(smoothed, fitted, footage)
    return raw, smoothed


def leave_one_out(psnr: list[np.ndarray], distance: list[np.ndarray], alpha: float, window: int,
                  norm: str = "calibrated", *, scored_with: Config) -> dict | None:
    """Label-free: calibrate on all held-out videos but one, realised false-alarm rate on that one, mean over folds.
    ``scored_with``: the config the series were scored with (its eval.alpha is ``alpha``), which each fold records."""
    if len(psnr) < 2:
        return None
    realised: dict[str, list[float]] = {"0.01": [], "0.05": []}
    for i in range(len(psnr)):
        rest = [j for j in range(len(psnr)) if j != i]
        cal_psnr, cal_distance = [psnr[j] for j in rest], [distance[j] for j in rest]
        cal = fit_calibration(cal_psnr, cal_distance, alpha=alpha, false_alarm_rate=RATE, smoothing=window,
                              scored_with=scored_with)
        _, smoothed = calibrated_scores([psnr[i]], [distance[i]], alpha, window, norm, cal, cal_psnr, cal_distance)
        for key in realised:
            realised[key].append(float((smoothed[0] > cal.threshold_for(float(key))).mean()))
    return {key: float(np.mean(values)) for key, values in realised.items()}


def test_terms(path: Path) -> list[VideoScores]:
    """Per-video raw terms of the test stream from the scores.csv the stream protocol wrote."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    videos = []
    for name in dict.fromkeys(r["video"] for r in rows):
        mine = [r for r in rows if r["video"] == name]

        def column(key: str, mine: list[dict] = mine) -> np.ndarray:
            return np.array([float(r[key]) for r in mine])

        videos.append(VideoScores(name, column("frame").astype(int), column("psnr"), column("patch_psnr"), column("distance"),
                                  column("patch_distance"), column("regular_score"), column("memory_updated") > 0))
    return videos


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="training run folder with holdout.json (whole held-out videos)")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--fps", type=float, default=DATASET_FPS["ped2"], help="Ped2 was recorded at 10 frames/s")
    parser.add_argument("--psnr-region", choices=["frame", "patch"], default="frame",
                        help="eval.psnr_region of the package's run (steps 1-2); the attempts cover both")
    parser.add_argument("--distance-region", choices=["frame", "patch"], default="frame",
                        help="eval.distance_region of the package's run (steps 1-2); the attempts cover both")
    parser.add_argument("--scoring", choices=["choose", "config"], default="choose",
                        help="step 1 as `mnad calibrate --scoring`: choose the terms and trailing mean on pseudo-anomalies, "
                        "or the regions above with a 5-frame mean")
    parser.add_argument("--no-test-update", action="store_true", help="eval.test_update = false: the memory never changes at test time")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))  # beside OUT: the same relative paths
    except OSError as exc:
        return fail(f"{out}: cannot make a folder beside it ({exc.strerror or exc})")
    keep = False  # a run that does not reproduce the package keeps its files aside, to be looked at
    try:
        agree, message = run(args, argv, work)
        if not agree:
            keep = True
            return fail(f"{message}; {out} is unchanged, this run's files are in {work}")
        atomic_write_many({out / p.name: p.read_bytes() for p in sorted(work.iterdir())})  # all, or none
    except MNADError as exc:  # a user's mistake (a run without held-out videos, a missing data root): one line
        return fail(str(exc))
    except OSError as exc:
        return fail(f"{out}: cannot write the results ({exc.strerror or exc}); {out} is unchanged")
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def fail(message: str) -> int:
    print(f"ped2_stream.py: error: {message}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace, argv: list[str] | None, out: Path) -> tuple[bool, str]:
    """Steps 1-3 with their files written to ``out`` (the temporary folder); whether the reference attempt reproduces
    the package, and what to say if not."""
    model, config = load_model(args.run)
    config = config.override([f"eval.psnr_region={args.psnr_region}", f"eval.distance_region={args.distance_region}",
                              f"eval.test_update={str(not args.no_test_update).lower()}"])
    held = holdout_videos(args.run, config.model.pixel_range)
    print(f"held-out videos: {', '.join(v.name for v in held)}", flush=True)

    # 1. calibration on the held-out videos with `mnad calibrate`'s function
    cal = calibrate(model, config, held, false_alarm_rate=RATE, smoothing=None if args.scoring == "choose" else WINDOW,
                    scoring=args.scoring, progress=False)
    print(f"calibrated: {describe_scoring(cal)}", flush=True)
    # 2. the stream protocol through the package, with the model as `mnad calibrate` writes it
    with tempfile.TemporaryDirectory() as tmp:
        save_model(Path(tmp) / "calibrated.safetensors", model, with_calibration(config, cal))
        model_c, config_c = load_model(Path(tmp) / "calibrated.safetensors")
    headline = evaluate(model_c, config_c, args.data_root, out_dir=out, protocol="stream", fps=args.fps, overwrite=True)
    print(f"stream protocol: micro AUC {headline['micro_auc']:.4f}", flush=True)

    # 3. every attempt from the raw terms of those two scoring passes (the test terms as evaluate wrote them: the
    # memory updates do not depend on the normalisation)
    tests = split_videos(args.data_root, config.dataset, "testing", config.model.pixel_range)
    labels = load_labels(find_label_file(dataset_dir(args.data_root, config.dataset), config.dataset), tests)
    test_scores = test_terms(out / SCORES_FILE)
    attach_labels(test_scores, labels)
    terms = footage_terms(model, config, held, progress=False)  # the calibration footage's raw terms, as step 1 scored them
    cal_scores = [VideoScores(v.name, np.arange(len(p)), p, q, d, dq, d * 0, d * 0 > 0) for v, p, q, d, dq in
                  zip(held, terms["psnr"], terms["patch_psnr"], terms["distance"], terms["patch_distance"], strict=True)]
    # the published protocol of the same model, for comparison (per-video min-max: not causal), as evaluate computes it
    published = {}
    for label, alpha in (("S_t (alpha 0.6)", 0.6), ("PSNR only", 1.0)):
        add_scores(test_scores, config.override([f"eval.alpha={alpha}", "eval.normalization=video", "eval.smoothing=1",
                                                 "eval.psnr_region=frame", "eval.distance_region=frame"]))  # the paper's scoring
        published[label] = auc_metrics(test_scores)["micro_auc"]
    attempts = []
    for name, p_region, d_region, norm, window in ATTEMPTS:
        alpha = ALPHA if d_region else 1.0
        # the config this attempt's series are of: the terms it picks and its weight, the run's memory update, peak and
        # E_t (steps 1-2 scored both footages with `config`); what its calibration records, not what it fits
        attempt = config.override([f"eval.psnr_region={p_region}", f"eval.distance_region={d_region or 'frame'}",
                                   f"eval.alpha={alpha}"])

        def series(videos: list[VideoScores], attempt: Config = attempt) -> tuple[list[np.ndarray], list[np.ndarray]]:
            pairs = [score_terms(attempt, v.psnr, v.patch_psnr, v.distance, v.patch_distance) for v in videos]
            return [p for p, _ in pairs], [d for _, d in pairs]

        fitted = None
        if norm == "causal":
            raw, smoothed = stream_scores(*series(test_scores), alpha, window, None)
        else:
            fitted = fit_calibration(*series(cal_scores), alpha=alpha, false_alarm_rate=RATE, smoothing=window,
                                     scored_with=attempt)
            raw, smoothed = calibrated_scores(*series(test_scores), alpha, window, norm, fitted, *series(cal_scores))
        videos = [dataclasses.replace(v, score=s, unsmoothed_score=r) for v, r, s in zip(test_scores, raw, smoothed, strict=True)]
        row = {"name": name, "psnr_term": p_region, "distance_term": d_region, "alpha": alpha, "normalization": norm,
               "window": window, "micro_auc": auc_metrics(videos)["micro_auc"]}
        if fitted is not None:
            row["stream"] = stream_metrics(videos, fitted, fps=args.fps)
            row["held_out_leave_one_out_far"] = leave_one_out(*series(cal_scores), alpha, window, norm, scored_with=attempt)
        attempts.append(row)
        print(f"{name}: micro AUC {row['micro_auc']:.4f}", flush=True)
    e = config_c.eval
    package = (e.psnr_region, e.distance_region if mixing_weight(config_c) < 1 else None)
    reference = next(a for a in attempts if (a["psnr_term"], a["distance_term"], a["normalization"], a["window"])
                     == (*package, "calibrated", e.smoothing))
    # the attempts read the test terms as written (PSNR to 1e-6 dB): a near-tie may flip, nothing more
    agree = abs(reference["micro_auc"] - headline["micro_auc"]) < 5e-4
    record = {"run": str(args.run), "held_out": [v.name for v in held], "fps": args.fps, "target_rate": RATE,
              "window": e.smoothing, "scoring": args.scoring, "pseudo_anomaly_auc": cal.pseudo_anomaly_auc,
              "reference_attempt": reference["name"], "reproduces_the_package": agree,
              "package_micro_auc": headline["micro_auc"], "published_micro_auc": published, "attempts": attempts}
    (out / "attempts.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    command = "python scripts/ped2_stream.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    (out / "commands.txt").write_text(f"# the stream protocol on UCSD Ped2 (issue #17), scripts/ped2_stream.py\n{command}\n", encoding="utf-8")
    return agree, (f"the recomputed reference attempt ({reference['micro_auc']}) differs from the package's stream protocol "
                   f"({headline['micro_auc']})")


if __name__ == "__main__":
    raise SystemExit(main())
