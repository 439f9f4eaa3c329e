"""Render docs/results.md and the results block of README.md from the committed outputs in results/.

    python scripts/make_results_doc.py

Each results/<name>/ holds what a run wrote: metrics.json (`mnad evaluate --out`), train_log.jsonl (the run's
log), commands.txt (the commands that made them) and, for detection, summary.json (scripts/ped2_detect.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
PAPER = {("pred", True): 97.0, ("pred", False): 94.3, ("recon", True): 90.2, ("recon", False): 86.4}


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def evaluation_rows() -> list[dict]:
    rows = []
    for metrics_path in sorted(RESULTS.glob("*/metrics.json")):
        folder = metrics_path.parent
        data = json.loads(metrics_path.read_text())
        metrics, config = data["metrics"], data["config"]
        log = folder / "train_log.jsonl"
        epochs = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        rows.append({
            "name": folder.name,
            "metrics": metrics,
            "config": config,
            "epochs": epochs,
            "commands": (folder / "commands.txt").read_text().strip() if (folder / "commands.txt").exists() else "",
        })
    return rows


def summary_table(rows: list[dict]) -> str:
    lines = [
        "| run | task | memory | size | epochs | training time | micro AUC % | macro AUC % | paper (micro) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m, c = r["metrics"], r["config"]
        minutes = sum(e["seconds"] for e in r["epochs"]) / 60
        paper = PAPER.get((c["model"]["task"], c["model"]["memory"]))
        lines.append(
            f"| `{r['name']}` | {c['model']['task']} | {'yes' if c['model']['memory'] else 'no'} | {c['model']['image_size']} "
            f"| {c['train']['epochs']} | {minutes:.0f} min | **{pct(m['micro_auc'])}** | {pct(m['macro_auc'])} | {paper} (256 px, 60 ep) |"
        )
    return "\n".join(lines)


def detail(r: dict) -> str:
    m, c = r["metrics"], r["config"]
    out = [f"## `{r['name']}`", "", "Commands:", "", "```bash", r["commands"], "```", ""]
    out += [f"Micro AUC {pct(m['micro_auc'])} %, macro AUC {pct(m['macro_auc'])} % over {m['frames_scored']} frames "
            f"({m['abnormal_frames']} abnormal) of {m['videos']} videos; {m['memory_updates']} test-time memory updates. "
            f"Note: {m['note']}.", ""]
    out += ["| video | AUC % |", "|---|---|"] + [f"| {k} | {pct(v)} |" for k, v in m["per_video_auc"].items()]
    if r["epochs"]:
        out += ["", "| epoch | lr | frame loss | compactness | separateness | seconds |", "|---|---|---|---|---|---|"]
        out += [f"| {e['epoch']} | {e['lr']:.2e} | {e['loss_frame']:.5f} | {e['loss_compact']:.2e} | {e['loss_separate']:.4f} "
                f"| {e['seconds']:.0f} |" for e in r["epochs"]]
    out += ["", "<details><summary>config</summary>", "", "```json", json.dumps(c, indent=2), "```", "", "</details>", ""]
    return "\n".join(out)


def detection_section() -> str:
    path = RESULTS / "ped2_detect" / "summary.json"
    if not path.exists():
        return ""
    s = json.loads(path.read_text())
    out = ["## `mnad detect` on the Ped2 test videos as .mp4", "", "```bash", s["command"], "```", "",
           f"Calibrated on the 16 Ped2 training videos (no labels) for a {s['calibration']['false_alarm_rate']:.0%} false-alarm rate: "
           f"threshold {s['calibration']['threshold']:.3f} on the score smoothed over {s['calibration']['smoothing']} frames. "
           f"Causal scoring (no per-video min-max) of {s['frames']} frames: frame-level AUC of the smoothed causal score "
           f"{pct(s['causal_auc_smoothed'])} %; alerts: precision {pct(s['alert_precision'])} %, recall {pct(s['alert_recall'])} %, "
           f"alert rate on normal frames {pct(s['alert_rate_on_normal_frames'])} %. "
           f"{s['videos_with_an_event_on_the_anomaly']} of {len(s['per_video'])} videos have an event on their labelled anomaly; "
           f"{s['false_events']} events fall outside the labelled intervals.", "",
           "| video | labelled (0-based) | events (frames) | alert frames (on abnormal) | PSNR corr. with offline | mean abs PSNR diff (dB) |",
           "|---|---|---|---|---|---|"]
    for v in s["per_video"]:
        out.append(f"| {v['video']} | {v['labelled_interval_0based']} | {v['events']} | {v['alert_frames']} ({v['alert_frames_on_abnormal']}) "
                   f"| {v['psnr_corr_with_offline']:.4f} | {v['psnr_mean_abs_diff_db']:.3f} |")
    out += ["", "The offline scores come from the JPEG frames with the memory carried over the whole test set; `detect` reads the "
            "re-encoded .mp4 and starts each video from the trained memory, so the two differ by the compression and the memory state.", ""]
    return "\n".join(out)


def main() -> None:
    rows = evaluation_rows()
    doc = ["# Results", "", "Generated by `python scripts/make_results_doc.py` from the files in `results/`; do not edit by hand.", "",
           "Frame-level AUC on UCSD Ped2 (12 test videos, 2,010 frames, 1,648 abnormal). Micro AUC pools all frames after per-video "
           "min-max normalisation (the paper's metric); macro AUC is the mean over videos that contain both classes.", "",
           summary_table(rows), "",
           "Training time is the sum of the logged epoch times (see each run's table); runs may have shared the machine "
           "with other work, which shows as slower epochs.", ""]
    doc += [detail(r) for r in rows]
    doc.append(detection_section())
    (ROOT / "docs" / "results.md").write_text("\n".join(doc).rstrip() + "\n")

    readme = ROOT / "README.md"
    block = summary_table(rows) if rows else "(no results yet)"
    text = re.sub(r"(<!-- results:start -->\n).*?(\n<!-- results:end -->)", lambda m: m.group(1) + block + m.group(2),
                  readme.read_text(), flags=re.S)
    readme.write_text(text)


if __name__ == "__main__":
    main()
