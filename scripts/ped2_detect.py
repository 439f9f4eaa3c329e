"""`mnad detect` on the Ped2 test videos encoded as .mp4 files, against the labelled abnormal intervals.

    python scripts/ped2_detect.py --checkpoint runs/ped2_pred_fast --ped2 ../shared/data/ped2 --out results/ped2_detect

1. calibrates the model on the Ped2 training videos (normal footage, no labels) for a target false-alarm rate. Those
   are the videos the checkpoint was trained on: the threshold is fitted in-sample, where the model reconstructs
   best, so the target is no honest estimate of the rate on new footage (the test set's normal frames show the
   realised one; scripts/ped2_stream.py calibrates on training videos held out of training instead);
2. writes each test video as an .mp4 with OpenCV at the dataset's recording rate (Ped2: 10 frames/s,
   ``mnad.evaluate.stream_rates``; --fps to choose another) and runs `detect` on it (causal scores, events);
3. compares the events with test_anomalies.csv, and the causal scores with the offline scores of `evaluate`
   (raw PSNR and D of the same frames, scored from the JPEG frames with the memory carried over the test set).
Writes summary.json and each video's detect outputs to --out: made in a temporary folder beside it, they replace
the files there together (``atomic_write_many``) only once every video is done; a failed run leaves --out as it was.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score

from mnad.atomic import atomic_write_many
from mnad.calibrate import calibrate, with_calibration
from mnad.checkpoint import load_model
from mnad.data import find_label_file, load_labels, split_videos
from mnad.detect import DetectOptions, detect
from mnad.errors import MNADError
from mnad.evaluate import score_videos, stream_rates

CALIBRATION_FOOTAGE = ("the dataset's training videos, which the checkpoint was trained on: the threshold is fitted "
                       "in-sample, so the target false-alarm rate is no honest estimate of the rate on new footage")


def write_mp4(video_dir: Path, path: Path, fps: float) -> None:
    files = sorted(video_dir.glob("*.jpg"))
    first = cv2.imread(str(files[0]))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (first.shape[1], first.shape[0]))
    for f in files:
        writer.write(cv2.imread(str(f)))
    writer.release()


def overlap(a: tuple[int, int], b: tuple[int, int]) -> int:
    return max(0, min(a[1], b[1]) - max(a[0], b[0]) + 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ped2_detect.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--ped2", required=True, help="the ped2 dataset folder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--false-alarm-rate", type=float, default=0.01)
    parser.add_argument("--smoothing", type=int, default=5)
    parser.add_argument("--scoring", choices=["choose", "config"], default="config",
                        help="as `mnad calibrate --scoring`; config (the model's own terms) is what results/ped2_detect used")
    parser.add_argument("--fps", type=float, help="the .mp4 files' frame rate (default: the dataset's recording rate, Ped2's 10)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    except OSError as exc:
        return fail(f"{out}: cannot make a folder beside it ({exc.strerror or exc})")
    try:
        result = run(args, work)
        # every file or none: a run stopped half-way leaves the previous run's outputs as they were
        atomic_write_many({out / path.relative_to(work): path.read_bytes() for path in sorted(work.rglob("*")) if path.is_file()})
    except MNADError as exc:
        return fail(str(exc))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({k: v for k, v in result.items() if k != "per_video"}, indent=2))
    return 0


def fail(message: str) -> int:
    print(f"ped2_detect.py: error: {message}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace, out: Path) -> dict:
    """Steps 1-3, the outputs written to ``out`` (the temporary folder); the summary."""
    model, config = load_model(args.checkpoint)
    started = time.perf_counter()
    cal = calibrate(model, config, split_videos(args.ped2, "", "training"), false_alarm_rate=args.false_alarm_rate,
                    smoothing=args.smoothing, scoring=args.scoring, progress=False)
    calibration_seconds = time.perf_counter() - started
    calibrated = with_calibration(config, cal)

    test_videos = split_videos(args.ped2, "", "testing")
    # Ped2's recording rate (frame folders carry none), whatever the folder given as --ped2 is called
    fps, _, fps_source = stream_rates(test_videos, "ped2", args.fps)
    labels = load_labels(find_label_file(Path(args.ped2), "ped2"), test_videos)
    offline = score_videos(model, config, test_videos, progress=False)

    per_video, all_scores, all_labels, all_alerts = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for video, video_labels, off in zip(test_videos, labels, offline, strict=True):
            mp4 = Path(tmp) / f"{video.name}.mp4"
            write_mp4(video.path, mp4, fps)
            summary = detect(model, calibrated, str(mp4), out / video.name, DetectOptions(), progress=False)
            rows = list(csv.DictReader((out / video.name / "scores.csv").open(encoding="utf-8")))
            frames = np.array([int(r["frame"]) for r in rows])
            score = np.array([float(r["smoothed"]) for r in rows])
            alert = np.array([int(r["alert"]) for r in rows])
            psnr_online = np.array([float(r["psnr"]) for r in rows])
            truth = video_labels[frames]
            abnormal = np.flatnonzero(video_labels)
            interval = (int(abnormal[0]), int(abnormal[-1])) if abnormal.size else None
            events = [json.loads(line) for line in (out / video.name / "events.jsonl").read_text(encoding="utf-8").splitlines()]
            hits = [e for e in events if interval and overlap((e["start_frame"], e["end_frame"]), interval) > 0]
            per_video.append({
                "video": video.name,
                "labelled_interval_0based": interval,
                "events": [(e["start_frame"], e["end_frame"]) for e in events],
                "events_overlapping_interval": len(hits),
                "false_events": len(events) - len(hits),
                "alert_frames": int(alert.sum()),
                "alert_frames_on_abnormal": int((alert & truth).sum()),
                "detect_fps": summary["fps"],
                "psnr_corr_with_offline": float(np.corrcoef(psnr_online, off.psnr)[0, 1]),
                "psnr_mean_abs_diff_db": float(np.abs(psnr_online - off.psnr).mean()),
            })
            all_scores.append(score)
            all_labels.append(truth)
            all_alerts.append(alert)

    scores, truth, alerts = np.concatenate(all_scores), np.concatenate(all_labels), np.concatenate(all_alerts)
    result = {
        "command": "python scripts/ped2_detect.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
        "calibration": cal.to_dict(),
        "calibration_footage": CALIBRATION_FOOTAGE,
        "calibration_in_sample": True,
        "fps": fps,
        "fps_source": fps_source,
        "calibration_seconds": round(calibration_seconds, 1),
        "frames": int(truth.size),
        "causal_auc_smoothed": float(roc_auc_score(truth, scores)),
        "alert_precision": float((alerts & truth).sum() / max(alerts.sum(), 1)),
        "alert_recall": float((alerts & truth).sum() / max(truth.sum(), 1)),
        "alert_rate_on_normal_frames": float(alerts[truth == 0].mean()) if (truth == 0).any() else None,
        "videos_with_an_event_on_the_anomaly": sum(v["events_overlapping_interval"] > 0 for v in per_video),
        "false_events": sum(v["false_events"] for v in per_video),
        "per_video": per_video,
    }
    (out / "summary.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


if __name__ == "__main__":
    raise SystemExit(main())
