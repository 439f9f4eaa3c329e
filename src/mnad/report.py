"""Evaluation reports: one self-contained HTML page (plots embedded as PNG, no script, no network).

A report folder holds ``report.html``, ``provenance.json`` (how the evaluation was run: command, config, checkpoint
hash, library versions) and ``thumbs/`` (localisation thumbnails of the highest-scoring frames, which need the model
and the frames, so they are made once, by ``mnad evaluate --report``). Everything else on the page is drawn from the
evaluation's saved outputs (``metrics.json``, ``scores.csv``) and the training run's ``train_log.jsonl``, so
``mnad report`` rebuilds the page without scoring anything again.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import os
import platform
import re
import shlex
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mnad.errors import DataError

REPORT_FILE = "report.html"
PROVENANCE_FILE = "provenance.json"
THUMBS_DIR = "thumbs"
THUMBS_INDEX = "thumbs.json"
FIGURES_DIR = "figures"  # `mnad figures --out <report>/figures` puts the memory figures on the page
FIGURES_INDEX = "figures.json"
METRICS_FILE = "metrics.json"
SCORES_FILE = "scores.csv"
TRAIN_LOG = "train_log.jsonl"


# ----------------------------------------------------------------------------------------------- saved outputs


@dataclass
class VideoRows:
    """One video's rows of scores.csv."""

    name: str
    frame: np.ndarray
    score: np.ndarray
    label: np.ndarray | None  # None when the evaluation had no labels
    psnr: np.ndarray
    updated: np.ndarray


def read_scores(path: str | Path) -> list[VideoRows]:
    """scores.csv, split per video in the order the videos appear."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: scores file not found (written by `mnad evaluate --out`)")
    columns: dict[str, dict[str, list[str]]] = {}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"video", "frame", "score"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path}: not an mnad scores file (missing columns {', '.join(sorted(missing))})")
        for row in reader:
            video = columns.setdefault(row["video"], {"frame": [], "score": [], "label": [], "psnr": [], "updated": []})
            video["frame"].append(row["frame"])
            video["score"].append(row["score"])
            video["label"].append(row.get("label") or "")
            video["psnr"].append(row.get("psnr") or "nan")
            video["updated"].append(row.get("memory_updated") or "0")
    result = []
    for name, c in columns.items():
        labelled = all(v != "" for v in c["label"])
        result.append(VideoRows(
            name=name,
            frame=np.array(c["frame"], dtype=np.int64),
            score=np.array(c["score"], dtype=np.float64),
            label=np.array(c["label"], dtype=np.int64) if labelled else None,
            psnr=np.array(c["psnr"], dtype=np.float64),
            updated=np.array(c["updated"], dtype=np.int64).astype(bool),
        ))
    return result


def read_metrics(path: str | Path) -> tuple[dict, dict]:
    """(metrics, config dict) of a metrics.json."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: metrics file not found (written by `mnad evaluate --out`)")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable metrics file ({exc})") from exc
    if "metrics" not in data:
        raise DataError(f"{path}: not an mnad metrics file (no 'metrics' entry)")
    return data["metrics"], data.get("config", {})


def read_train_log(path: str | Path) -> list[dict]:
    """The per-epoch records of a training run; lines that do not parse (a crash mid-write) are skipped."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "epoch" in record:
            records.append(record)
    return records


def abnormal_runs(frames: np.ndarray, labels: np.ndarray) -> list[tuple[int, int]]:
    """Labelled abnormal intervals as (first, last) frame positions, inclusive; a gap in the frames splits a run."""
    runs: list[tuple[int, int]] = []
    start = previous = None
    for frame, label in zip(frames.tolist(), labels.tolist(), strict=True):
        if label and start is not None and frame == previous + 1:
            previous = frame
            continue
        if start is not None:
            runs.append((start, previous))
            start = None
        if label:
            start = previous = frame
    if start is not None:
        runs.append((start, previous))
    return runs


# ----------------------------------------------------------------------------------------------- provenance


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_metadata(path: str | Path) -> dict:
    """The JSON metadata of a safetensors checkpoint (its stored tensor SHA-256 and extras), without loading tensors."""
    try:
        with Path(path).open("rb") as handle:
            header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
        return header.get("__metadata__") or {}
    except (OSError, ValueError):
        return {}


def library_versions() -> dict[str, str]:
    import cv2
    import matplotlib
    import sklearn
    import torch

    try:
        from importlib.metadata import version

        mnad_version = version("mnad")
    except Exception:  # noqa: BLE001 - running from a source tree without metadata
        mnad_version = "unknown"
    return {
        "mnad": mnad_version,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "scikit-learn": sklearn.__version__,
        "matplotlib": matplotlib.__version__,
        "platform": platform.platform(),
    }


def _relative(path: Path, start: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), start.resolve())
    except ValueError:  # another drive
        return str(path.resolve())


def collect_provenance(
    config: Any,
    report_dir: str | Path,
    eval_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    data_root: str | Path | None = None,
    labels: str | Path | None = None,
    command: str | None = None,
) -> dict:
    """What a report needs to say how its numbers were made. Paths to other folders are stored relative to the
    report folder, so the report, the evaluation and the run can move together."""
    report_dir, eval_dir = Path(report_dir), Path(eval_dir)
    config_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    record: dict[str, Any] = {
        "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": command or "python " + shlex.join(sys.argv),
        "working_dir": os.getcwd(),
        "seed": config_dict.get("train", {}).get("seed"),
        "data_root": str(Path(data_root).resolve()) if data_root else None,
        "labels": str(Path(labels).resolve()) if labels else None,
        "eval_dir": _relative(eval_dir, report_dir),
        "run_dir": None,
        "checkpoint": None,
        "versions": library_versions(),
        "config": config_dict,
    }
    if checkpoint is not None:
        from mnad.checkpoint import resolve_checkpoint

        path = resolve_checkpoint(checkpoint)
        meta = checkpoint_metadata(path)
        try:
            extra = json.loads(meta.get("extra", "{}"))
        except json.JSONDecodeError:
            extra = {}
        record["checkpoint"] = {
            "path": str(path.resolve()),
            "file_sha256": file_sha256(path),
            "tensor_sha256": meta.get("sha256"),
            "epochs": extra.get("epochs", extra.get("epoch")),
        }
        run_dir = path.resolve().parent
        if (run_dir / TRAIN_LOG).is_file() or (run_dir / "config.json").is_file():
            record["run_dir"] = _relative(run_dir, report_dir)
    return record


# ----------------------------------------------------------------------------------------------- localisation


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:60] or "video"


def pick_top_frames(videos: list[VideoRows], k: int, *, gap: int = 5) -> list[tuple[int, int]]:
    """(video index, row index) of the k highest scores, at least ``gap`` frames apart within a video, so the
    thumbnails show different moments rather than one event's neighbouring frames."""
    candidates = [(-float(v.score[i]), vi, int(v.frame[i]), i) for vi, v in enumerate(videos) for i in range(len(v.frame))]
    candidates.sort()
    chosen: list[tuple[int, int, int]] = []
    for _, vi, frame, i in candidates:
        if len(chosen) >= k:
            break
        if any(cv == vi and abs(cf - frame) < gap for cv, cf, _ in chosen):
            continue
        chosen.append((vi, frame, i))
    return [(vi, i) for vi, _, i in chosen]


def localisation_image(frame: np.ndarray, error: np.ndarray, *, display: int = 176) -> np.ndarray:
    """Three panels as in the paper's Fig. 4: the frame, its prediction-error heatmap, and the regions whose error
    is above the frame's mean. ``frame``: uint8 (H, W, C) BGR or gray; ``error``: (H, W). Returns BGR uint8."""
    import cv2

    bgr = frame if frame.ndim == 3 and frame.shape[2] == 3 else cv2.cvtColor(frame.reshape(frame.shape[:2]), cv2.COLOR_GRAY2BGR)
    size = (display, display)
    interpolation = cv2.INTER_LINEAR if display >= max(bgr.shape[:2]) else cv2.INTER_AREA
    base = cv2.resize(bgr, size, interpolation=interpolation)
    err = cv2.resize(error.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    top = float(err.max())
    heat = cv2.applyColorMap(np.clip(err / top * 255 if top > 0 else err * 0, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    blend = cv2.addWeighted(base, 0.45, heat, 0.55, 0)
    mask = err > float(error.mean())
    regions = (base * 0.35).astype(np.uint8)
    tint = cv2.addWeighted(base, 0.4, np.full_like(base, (0, 0, 255)), 0.6, 0)
    regions[mask] = tint[mask]
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(regions, contours, -1, (255, 255, 255), 1)
    sep = np.full((display, 4, 3), 255, np.uint8)
    return np.hstack([base, sep, blend, sep, regions])


def write_thumbnails(
    model: Any,
    config: Any,
    data_root: str | Path,
    eval_dir: str | Path,
    report_dir: str | Path,
    *,
    top_k: int = 8,
    device: str = "cpu",
) -> list[dict]:
    """Localisation thumbnails of the top-k scoring test frames (PNG files in ``report_dir/thumbs``) and their index.

    Each frame's clip is run through the model again with the trained memory items (the evaluation's test-time
    updates are not replayed), and ``scoring.error_map`` is drawn over it.
    """
    import cv2
    import torch

    from mnad.data import split_videos, to_tensor
    from mnad.scoring import error_map

    rows = read_scores(Path(eval_dir) / SCORES_FILE)
    out = Path(report_dir) / THUMBS_DIR
    out.mkdir(parents=True, exist_ok=True)
    old_index = out / THUMBS_INDEX
    if old_index.is_file():  # drop the thumbnails of an earlier report in this folder
        try:
            for entry in json.loads(old_index.read_text()):
                (out / Path(entry["file"]).name).unlink(missing_ok=True)
        except (OSError, ValueError, KeyError, TypeError):
            pass
    videos = {v.name: v for v in split_videos(data_root, config.dataset, "testing")}
    m = config.model
    entries = []
    model = model.to(device).eval()
    for rank, (vi, i) in enumerate(pick_top_frames(rows, top_k, gap=max(5, m.t_length)), start=1):
        video_rows, frame_index = rows[vi], int(rows[vi].frame[i])
        video = videos.get(video_rows.name)
        if video is None:
            raise DataError(f"{data_root}: test video {video_rows.name!r} of {eval_dir} not found; pass the data root that was evaluated")
        first = frame_index - m.target_index  # the clip whose target is this frame
        frames = np.stack([video.frame(j, m.image_size, m.channels) for j in range(first, first + m.t_length)])
        with torch.inference_mode():
            inputs, target = model.split_clip(to_tensor(frames)[None].to(device))
            output = model(inputs)
            error = error_map(output.frame, target)[0].float().cpu().numpy()
        name = f"{rank:02d}_{_safe_name(video_rows.name)}_{frame_index:06d}.png"
        ok, png = cv2.imencode(".png", localisation_image(frames[m.target_index], error))
        if not ok:
            raise DataError(f"{out / name}: could not encode the thumbnail")
        (out / name).write_bytes(png.tobytes())
        label = None if video_rows.label is None else int(video_rows.label[i])
        entries.append({
            "file": name, "video": video_rows.name, "frame": frame_index, "score": float(video_rows.score[i]), "label": label,
            "error_mean": float(error.mean()), "error_max": float(error.max()),
            "above_mean_fraction": float((error > error.mean()).mean()),
        })
    old_index.write_text(json.dumps(entries, indent=2))
    return entries


# ----------------------------------------------------------------------------------------------- plots


def _figure(width: float, height: float, **kwargs: Any) -> Any:
    from matplotlib.figure import Figure  # no pyplot: no global backend or state, Agg is used for PNG

    return Figure(figsize=(width, height), layout="constrained", **kwargs)


def _png(fig: Any, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def roc_png(videos: list[VideoRows]) -> bytes | None:
    from sklearn.metrics import roc_auc_score, roc_curve

    labelled = [v for v in videos if v.label is not None]
    if not labelled:
        return None
    labels = np.concatenate([v.label for v in labelled])
    scores = np.concatenate([v.score for v in labelled])
    if len(np.unique(labels)) < 2:
        return None
    fig = _figure(5.2, 4.6)
    ax = fig.subplots()
    drawn = 0
    for v in labelled:
        if 0 < v.label.sum() < v.label.size:
            fpr, tpr, _ = roc_curve(v.label, v.score)
            ax.plot(fpr, tpr, color="0.75", lw=0.8, label=None if drawn else "per video")
            drawn += 1
    fpr, tpr, _ = roc_curve(labels, scores)
    ax.plot(fpr, tpr, color="C0", lw=2, label=f"all frames pooled (AUC {100 * roc_auc_score(labels, scores):.2f}%)")
    ax.plot([0, 1], [0, 1], ls="--", color="0.5", lw=0.8, label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01), title="ROC, frame level")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def histogram_png(videos: list[VideoRows]) -> bytes | None:
    labelled = [v for v in videos if v.label is not None]
    if not labelled:
        return None
    labels = np.concatenate([v.label for v in labelled])
    scores = np.concatenate([v.score for v in labelled])
    fig = _figure(5.2, 4.6)
    ax = fig.subplots()
    bins = np.linspace(min(0.0, scores.min()), max(1.0, scores.max()), 41)
    for value, name, color in ((0, "normal", "C0"), (1, "abnormal", "C3")):
        chosen = scores[labels == value]
        if chosen.size:
            ax.hist(chosen, bins=bins, density=True, alpha=0.55, color=color, label=f"{name} ({chosen.size} frames)")
    ax.set(xlabel="anomaly score S_t", ylabel="density", title="Score distribution by label")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def timeline_png(video: VideoRows, auc: float | None) -> bytes:
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    fig = _figure(10, 2.1)
    ax = fig.subplots()
    if video.label is not None:
        for first, last in abnormal_runs(video.frame, video.label):
            ax.axvspan(first - 0.5, last + 0.5, color="C3", alpha=0.18, lw=0)
    ax.plot(video.frame, video.score, color="C0", lw=1.1)
    updated = video.frame[video.updated]
    low = min(0.0, float(video.score.min()))
    high = max(1.0, float(video.score.max()))
    if updated.size:
        ax.plot(updated, np.full(updated.size, low - 0.03 * (high - low)), "|", color="0.55", ms=4)
    ax.set_xlim(video.frame.min() - 0.5, video.frame.max() + 0.5)
    ax.set_ylim(low - 0.06 * (high - low), high + 0.05 * (high - low))
    title = f"video {video.name}" + (f": AUC {100 * auc:.2f}%" if auc is not None else "")
    ax.set_title(title, fontsize=10, loc="left")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("frame", fontsize=8)
    ax.set_ylabel("score", fontsize=8)
    ax.tick_params(labelsize=8)
    handles = [Patch(color="C3", alpha=0.3, label="labelled abnormal")] if video.label is not None else []
    if updated.size:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], marker="|", ls="", color="0.55", label="memory updated"))
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0), frameon=False)  # beside, not over
    ax.grid(alpha=0.25)
    return _png(fig)


def training_png(records: list[dict]) -> bytes | None:
    from matplotlib.ticker import MaxNLocator

    keys = [k for k in records[0] if k not in ("epoch", "seconds") and isinstance(records[0][k], int | float)] if records else []
    keys = [k for k in keys if all(isinstance(r.get(k), int | float) for r in records)][:8]
    if not keys:
        return None
    epochs = [r["epoch"] for r in records]
    fig = _figure(min(3.0 * len(keys), 15), 2.8)
    axes = np.atleast_1d(fig.subplots(1, len(keys)))
    for ax, key in zip(axes, keys, strict=True):
        values = np.array([r[key] for r in records], dtype=np.float64)
        ax.plot(epochs, values, marker="o" if len(records) < 30 else None, ms=3, lw=1.2, color="C2" if key == "lr" else "C0")
        if (values > 0).all() and values.max() / values.min() > 20:
            ax.set_yscale("log")
        ax.set_title(key.removeprefix("loss_") + (" loss" if key.startswith("loss_") else ""), fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    return _png(fig)


# ----------------------------------------------------------------------------------------------- HTML

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;background:#f5f6f8;color:#1d2330}
main{max-width:1120px;margin:0 auto;padding:24px}
header{background:#1d2330;color:#fff;padding:20px 24px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;color:#c5cad6;font-size:13px}
section{background:#fff;border-radius:8px;padding:16px 20px;margin:0 0 18px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
h2{font-size:18px;margin:0 0 12px}h3{font-size:14px;margin:14px 0 6px}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{background:#f0f3f8;border-radius:6px;padding:10px 14px;min-width:120px}
.card .v{font-size:24px;font-weight:600}.card .k{font-size:12px;color:#5b6475}
table{border-collapse:collapse;font-size:13px}td,th{padding:4px 10px;border-bottom:1px solid #e3e6ec;text-align:left}
th{background:#f0f3f8}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;display:block}.row{display:flex;flex-wrap:wrap;gap:12px}.row img{max-width:520px}
.thumbs{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:14px}
figure{margin:0}figcaption{font-size:12px;color:#5b6475;margin-top:4px}
.note{font-size:12px;color:#5b6475}pre{background:#f0f3f8;padding:10px;overflow:auto;font-size:12px}
code{font-size:12px;word-break:break-all}nav a{color:#c5cad6;margin-right:12px;font-size:13px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _img(png: bytes, alt: str) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{_e(alt)}">'


def _kv_table(rows: list[tuple[str, Any]], table_id: str = "") -> str:
    ident = f' id="{_e(table_id)}"' if table_id else ""
    body = "".join(f"<tr><th>{_e(k)}</th><td><code>{_e('' if v is None else v)}</code></td></tr>" for k, v in rows)
    return f"<table{ident}>{body}</table>"


def render_report(report_dir: Path, eval_dir: Path, run_dir: Path | None, provenance: dict) -> str:
    """The report page as one HTML string (deterministic: the same inputs give the same bytes)."""
    metrics, stored_config = read_metrics(eval_dir / METRICS_FILE)
    videos = read_scores(eval_dir / SCORES_FILE)
    config = provenance.get("config") or stored_config
    per_video = metrics.get("per_video_auc", {})
    title = f"MNAD evaluation: {config.get('name', '?')} on {config.get('dataset') or 'own footage'}"
    nav = "".join(f'<a href="#{k}">{v}</a>' for k, v in [
        ("summary", "Summary"), ("videos", "Per video"), ("roc", "ROC"), ("timelines", "Timelines"),
        ("localisation", "Localisation"), ("training", "Training"), ("memory", "Memory"), ("provenance", "Provenance")])
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>{_e(title)}</h1><p>evaluated {_e(provenance.get('created', 'at an unrecorded time'))}"
        f" &middot; {_e(metrics.get('frames_scored'))} frames of {_e(metrics.get('videos'))} videos</p><nav>{nav}</nav></header><main>",
    ]

    # summary
    cards = [
        ("micro-auc", "micro AUC (all frames pooled)", metrics.get("micro_auc"), True),
        ("macro-auc", "macro AUC (mean over videos)", metrics.get("macro_auc"), True),
        ("frames", "frames scored", metrics.get("frames_scored"), False),
        ("abnormal", "abnormal frames", metrics.get("abnormal_frames"), False),
        ("nvideos", "videos", metrics.get("videos"), False),
        ("updates", "test-time memory updates", metrics.get("memory_updates"), False),
    ]
    card_html = "".join(
        f'<div class="card" id="{key}" data-value="{_e("" if value is None else repr(value))}">'
        f'<div class="v">{_e(_pct(value) if is_auc else ("n/a" if value is None else value))}</div><div class="k">{_e(label)}</div></div>'
        for key, label, value, is_auc in cards
    )
    settings = [("score", f"alpha={metrics.get('alpha')} (PSNR weight), normalisation={metrics.get('normalization')}, "
                          f"trailing mean over {metrics.get('smoothing', 1)} frame(s)"),
                ("test-time update", f"{metrics.get('test_update')} (gamma={metrics.get('gamma')})"),
                ("labels", metrics.get("labels")), ("note", metrics.get("note"))]
    parts.append(f'<section id="summary"><h2>Summary</h2><div class="cards">{card_html}</div>'
                 f'<h3>Scoring</h3>{_kv_table(settings)}'
                 '<p class="note">Micro AUC pools the frames of all videos (the paper\'s metric); macro AUC averages the '
                 'per-video AUCs of the videos that have both normal and abnormal frames.</p></section>')

    # per-video table
    rows_html = []
    for i, v in enumerate(videos):
        auc = per_video.get(v.name)
        abnormal = "n/a" if v.label is None else int(v.label.sum())
        peak = int(np.argmax(v.score))
        rows_html.append(
            f'<tr id="video-{i}"><td><a href="#timeline-{i}">{_e(v.name)}</a></td><td class="num">{v.frame.size}</td>'
            f'<td class="num">{_e(abnormal)}</td><td class="num auc" data-value="{_e("" if auc is None else repr(auc))}">{_e(_pct(auc))}</td>'
            f'<td class="num">{v.score[peak]:.3f} (frame {int(v.frame[peak])})</td><td class="num">{int(v.updated.sum())}</td></tr>'
        )
    parts.append('<section id="videos"><h2>Per-video AUC</h2><table id="per-video"><thead><tr><th>video</th><th>frames scored</th>'
                 "<th>abnormal</th><th>AUC</th><th>peak score</th><th>memory updates</th></tr></thead><tbody>"
                 + "".join(rows_html) + "</tbody></table>"
                 '<p class="note">AUC is n/a for a video whose scored frames are all of one class.</p></section>')

    # ROC and histogram
    roc, hist = roc_png(videos), histogram_png(videos)
    body = "".join(_img(png, alt) for png, alt in ((roc, "ROC curve"), (hist, "score histogram")) if png is not None)
    if not body:
        body = '<p class="note">No ROC: the scored frames are all of one class (or unlabelled).</p>'
    parts.append(f'<section id="roc"><h2>ROC curve</h2><div class="row">{body}</div></section>')

    # timelines
    timeline_html = "".join(f'<figure id="timeline-{i}">{_img(timeline_png(v, per_video.get(v.name)), f"score timeline of video {v.name}")}</figure>'
                            for i, v in enumerate(videos))
    parts.append('<section id="timelines"><h2>Score timelines</h2><p class="note">Anomaly score S_t per frame (high = abnormal); '
                 f"labelled abnormal intervals shaded red; ticks at the bottom mark frames that updated the memory.</p>{timeline_html}</section>")

    # localisation thumbnails
    thumbs = _read_json_list(report_dir / THUMBS_DIR / THUMBS_INDEX)
    figures = []
    for entry in thumbs:
        path = report_dir / THUMBS_DIR / Path(str(entry.get("file", ""))).name
        if not path.is_file():
            continue
        label = {None: "unlabelled", 0: "labelled normal", 1: "labelled abnormal"}.get(entry.get("label"), "?")
        caption = f"video {entry.get('video')}, frame {entry.get('frame')}: score {float(entry.get('score', 0)):.3f} ({label})"
        figures.append(f'<figure class="thumb">{_img(path.read_bytes(), caption)}<figcaption>{_e(caption)}</figcaption></figure>')
    if figures:
        loc = ('<p class="note">The highest-scoring frames (at least a clip apart). Left: the frame; middle: its prediction error '
               "(<code>scoring.error_map</code>) as a heatmap; right: regions whose error is above the frame's mean, as in the "
               "paper's Fig. 4. Errors come from re-running the model with its trained memory items.</p>"
               f'<div class="thumbs">{"".join(figures)}</div>')
    else:
        loc = ('<p class="note">No localisation thumbnails: they need the model and the frames, and are made by '
               "<code>mnad evaluate --report DIR</code>.</p>")
    parts.append(f'<section id="localisation"><h2>Localisation: top-scoring frames</h2>{loc}</section>')

    # training curves
    log_path = run_dir / TRAIN_LOG if run_dir is not None else None
    records = read_train_log(log_path) if log_path is not None and log_path.is_file() else []
    train_png = training_png(records) if records else None
    if train_png is not None:
        last = records[-1]
        total_s = sum(float(r.get("seconds", 0)) for r in records)
        train_html = (f"{_img(train_png, 'training curves')}<p class=\"note\">{len(records)} epochs logged in "
                      f"<code>{_e(log_path)}</code>; last epoch: "
                      + ", ".join(f"{_e(k)}={_e(f'{v:.5g}' if isinstance(v, float) else v)}" for k, v in last.items())
                      + f"; {total_s:.0f} s of training in all.</p>")
    else:
        looked = f" (looked in <code>{_e(run_dir)}</code>)" if run_dir is not None else ""
        train_html = f'<p class="note">No training log found{looked}.</p>'
    parts.append(f'<section id="training"><h2>Training</h2>{train_html}</section>')

    # memory figures, when `mnad figures --out <report>/figures` was run
    memory = _read_json_dict(report_dir / FIGURES_DIR / FIGURES_INDEX)
    memory_html = []
    for key, caption in (("matching", "Matching probabilities of queries to memory items (paper Fig. 5)"),
                         ("tsne", "t-SNE of query features and memory items, coloured by nearest item (paper Figs. 1 and 6)")):
        path = report_dir / FIGURES_DIR / Path(str(memory.get("files", {}).get(key, ""))).name
        if memory and path.is_file() and path.suffix == ".png":
            memory_html.append(f"<figure>{_img(path.read_bytes(), caption)}<figcaption>{_e(caption)}</figcaption></figure>")
    if not memory_html:
        memory_html.append('<p class="note">No memory figures in this report folder: '
                           f"<code>mnad figures --checkpoint CKPT --data-root ROOT --out {_e(report_dir / FIGURES_DIR)}</code> "
                           "then <code>mnad report</code> adds them.</p>")
    parts.append(f'<section id="memory"><h2>Memory</h2>{"".join(memory_html)}</section>')

    # provenance
    checkpoint = provenance.get("checkpoint") or {}
    versions = provenance.get("versions") or {}
    prov_rows = [
        ("command", provenance.get("command", "not recorded")),
        ("evaluated", provenance.get("created", "not recorded")),
        ("working folder", provenance.get("working_dir")),
        ("seed (train.seed)", (config.get("train") or {}).get("seed")),
        ("checkpoint", checkpoint.get("path", "not recorded")),
        ("checkpoint file SHA-256", checkpoint.get("file_sha256")),
        ("checkpoint tensor SHA-256", checkpoint.get("tensor_sha256")),
        ("epochs trained", checkpoint.get("epochs")),
        ("data root", provenance.get("data_root")),
        ("labels", provenance.get("labels") or metrics.get("labels")),
        ("evaluation folder", eval_dir),
        ("run folder", run_dir),
    ]
    note = "" if provenance.get("command") else ('<p class="note">This evaluation was run without <code>--report</code>: only the config '
                                  "stored in metrics.json is known.</p>")
    parts.append(f'<section id="provenance"><h2>Provenance</h2>{note}{_kv_table(prov_rows, "provenance-table")}'
                 f'<h3>Versions</h3>{_kv_table(list(versions.items()), "versions")}'
                 f"<h3>Config</h3><pre id=\"config\">{_e(json.dumps(config, indent=2))}</pre></section>")
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def _read_json_list(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []


def _read_json_dict(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# ----------------------------------------------------------------------------------------------- entry points


def _resolve(base: Path, stored: str | None) -> Path | None:
    if not stored:
        return None
    path = Path(stored)
    return Path(os.path.normpath(path if path.is_absolute() else base / path))


def _guess_run_dir(eval_dir: Path) -> Path | None:
    for folder in (eval_dir, eval_dir.parent):
        if (folder / TRAIN_LOG).is_file() or (folder / "config.json").is_file():
            return folder
    return None


def _sources(report_dir: Path, eval_dir: Path | None, run_dir: Path | None) -> tuple[dict, Path, Path | None]:
    provenance = _read_json_dict(report_dir / PROVENANCE_FILE)
    eval_path = eval_dir or _resolve(report_dir, provenance.get("eval_dir")) or report_dir
    run_path = run_dir or _resolve(report_dir, provenance.get("run_dir")) or _guess_run_dir(eval_path)
    return provenance, eval_path, run_path


def build_report(
    report_dir: str | Path, *, eval_dir: str | Path | None = None, run_dir: str | Path | None = None, out: str | Path | None = None
) -> Path:
    """Write ``report.html`` (into ``out``, default the report folder) from saved outputs; returns its path.

    The evaluation and run folders come from the arguments, else from ``provenance.json`` in the report folder,
    else the evaluation folder is the report folder and the run folder the one holding a train_log.jsonl beside it.
    """
    from mnad.checkpoint import atomic_write

    report_dir = Path(report_dir)
    provenance, eval_path, run_path = _sources(report_dir, Path(eval_dir) if eval_dir else None, Path(run_dir) if run_dir else None)
    text = render_report(report_dir, eval_path, run_path, provenance)
    target = (Path(out) if out is not None else report_dir) / REPORT_FILE
    try:
        atomic_write(target, text.encode("utf-8"))
        target.chmod(0o644)  # a page to share, not a private temporary file
    except OSError as exc:
        raise DataError(f"{target}: cannot write the report ({exc.strerror or exc})") from exc
    return target


def create_report(
    model: Any,
    config: Any,
    data_root: str | Path,
    eval_dir: str | Path,
    report_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    labels: str | Path | None = None,
    command: str | None = None,
    top_k: int = 8,
    device: str = "cpu",
) -> Path:
    """After an evaluation that wrote ``eval_dir``: thumbnails, provenance and the page. Returns the page's path."""
    report_dir = Path(report_dir)
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{report_dir}: cannot create the report folder ({exc.strerror or exc})") from exc
    if top_k > 0:
        write_thumbnails(model, config, data_root, eval_dir, report_dir, top_k=top_k, device=device)
    provenance = collect_provenance(config, report_dir, eval_dir, checkpoint=checkpoint, data_root=data_root, labels=labels,
                                    command=command)
    (report_dir / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2))
    return build_report(report_dir)


def find_report_sources(path: str | Path) -> tuple[Path, Path | None]:
    """For ``mnad report PATH``: (report folder, evaluation folder, or None when the report folder records it).

    PATH may be a report folder (with provenance.json), an evaluation folder (metrics.json; its report goes to its
    ``report/`` sub-folder), or a run folder holding one of these one or two levels down.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: folder not found")
    if (path / PROVENANCE_FILE).is_file():
        return path, None
    if (path / METRICS_FILE).is_file():
        return path / "report", path
    reports = sorted({p.parent for pattern in ("*/", "*/*/") for p in path.glob(pattern + PROVENANCE_FILE)})
    evals = sorted({p.parent for pattern in ("*/", "*/*/") for p in path.glob(pattern + METRICS_FILE)})
    bare = [e for e in evals if e not in reports and e / "report" not in reports]  # evaluations without a report yet
    found = [(r, None) for r in reports] + [(e / "report", e) for e in bare]
    if len(found) == 1:
        return found[0]
    if found:
        names = ", ".join(str(p.relative_to(path)) for p in reports + bare)
        raise DataError(f"{path}: several reports or evaluations ({names}); name one")
    raise DataError(f"{path}: no {METRICS_FILE} here or in a sub-folder (run `mnad evaluate --out DIR` first)")


def rebuild_report(path: str | Path, *, out: str | Path | None = None) -> Path:
    """``mnad report``: the page rebuilt from saved outputs, without the model. Returns the page's path."""
    report_dir, eval_dir = find_report_sources(path)
    if eval_dir is not None and not (report_dir / PROVENANCE_FILE).is_file():
        # A report of an evaluation run without --report: record where its sources are, so this folder can be rebuilt.
        try:
            report_dir.mkdir(parents=True, exist_ok=True)
            run_dir = _guess_run_dir(eval_dir)
            stub = {"eval_dir": _relative(eval_dir, report_dir), "run_dir": _relative(run_dir, report_dir) if run_dir else None}
            (report_dir / PROVENANCE_FILE).write_text(json.dumps(stub, indent=2))
        except OSError as exc:
            raise DataError(f"{report_dir}: cannot write the report folder ({exc.strerror or exc})") from exc
    return build_report(report_dir, eval_dir=eval_dir, out=out)
