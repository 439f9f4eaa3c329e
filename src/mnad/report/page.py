"""The report page: one self-contained HTML string (plots embedded as PNG, no script, no network), drawn from the
evaluation's saved outputs, the run's training log and what the report folder holds (provenance, thumbnails,
memory figures)."""

from __future__ import annotations

import base64
import html
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from mnad.errors import DataError, printable
from mnad.outputs import FIGURES_DIR, FIGURES_INDEX, SCORES_FILE, TRAIN_LOG, read_evaluation, read_json_if_present, shown_score
from mnad.report.inputs import figures_problem, scores_problem, training_records
from mnad.report.plots import histogram_png, roc_png, timeline_png, training_png
from mnad.report.provenance import epochs_trained, file_sha256, relative_path
from mnad.report.thumbnails import THUMBS_DIR, THUMBS_INDEX, read_thumbnail_index

log = logging.getLogger(__name__)

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
    # printable: a path or name holding bytes that are not UTF-8 (surrogates in Python) would make the page unencodable
    return html.escape(printable(str(value)), quote=True)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _img(png: bytes, alt: str) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{_e(alt)}">'


def _kv_table(rows: list[tuple[str, Any]], table_id: str = "") -> str:
    ident = f' id="{_e(table_id)}"' if table_id else ""
    body = "".join(f"<tr><th>{_e(k)}</th><td><code>{_e('' if v is None else v)}</code></td></tr>" for k, v in rows)
    return f"<table{ident}>{body}</table>"


def _rate(value: Any) -> str:
    """A fraction of metrics.json as a percentage; n/a for null or anything that is not a number."""
    return _pct(value) if isinstance(value, int | float) and not isinstance(value, bool) else "n/a"


def _num(value: Any) -> str:
    """A number of metrics.json as the page shows it; n/a for null, as written for anything else (never a traceback)."""
    if value is None:
        return "n/a"
    return shown_score(value) if isinstance(value, float) else str(value)  # counts (ints) in full


def _stream_html(stream: dict) -> str:
    """The stream protocol's measures (``evaluate.stream_metrics``): what an operator would see at each false-alarm
    rate, and the events at the calibrated threshold; without them a stream evaluation's page showed only its AUCs."""
    rates = stream.get("at_false_alarm_rate")
    rows = []
    for target, entry in (rates.items() if isinstance(rates, dict) else []):
        entry = entry if isinstance(entry, dict) else {}
        if entry.get("not_estimable"):
            rows.append(f"<tr><td class=\"num\">{_e(target)}</td><td colspan=\"3\">not estimable: {_e(entry['not_estimable'])}</td></tr>")
            continue
        rows.append(f'<tr><td class="num">{_e(target)}</td><td class="num">{_e(_num(entry.get("threshold")))}</td>'
                    f'<td class="num">{_e(_rate(entry.get("false_alarm_rate")))}</td>'
                    f'<td class="num">{_e(_rate(entry.get("detection_rate")))}</td></tr>')
    table = ('<table id="stream-rates"><thead><tr><th>false-alarm rate asked for</th><th>threshold</th><th>realised false-alarm rate'
             "</th><th>detection rate</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>") if rows else ""
    events = stream.get("event_measures") if isinstance(stream.get("event_measures"), dict) else {}
    measures = [
        ("event threshold", f"{_num(stream.get('event_threshold'))} (false-alarm rate {_num(stream.get('event_false_alarm_rate'))} "
                            f"on {_num(stream.get('calibration_frames'))} calibration frames)"),
        ("events", f"{_num(events.get('events'))}, of which false: {_num(events.get('false_events'))} "
                   f"({_num(events.get('false_events_per_minute'))} per minute of normal footage)"),
        ("anomalies caught", f"{_num(events.get('anomalies_caught'))} of {_num(events.get('anomalies'))}; videos caught: "
                             f"{_num(events.get('videos_caught'))} of {_num(events.get('videos_with_anomaly'))}"),
        # from an anomaly's first frame; to the alert: older metrics.json do not have it (n/a)
        ("mean delay to the alert", f"{_num(events.get('mean_alert_delay_frames'))} frames (at {_num(events.get('fps'))} fps"
                                    f"{', ' + str(stream['fps_source']) if stream.get('fps_source') else ''})"),
        ("mean delay to the event's start", f"{_num(events.get('mean_delay_frames'))} frames (its first frame above the "
                                            "threshold; the alert waits for --min-event-frames)"),
        ("events rule", f"hysteresis {_num(stream.get('hysteresis'))}, at least {_num(stream.get('min_event_frames'))} frames"),
        ("micro AUC before smoothing", _rate(stream.get("micro_auc_unsmoothed"))),
    ]
    return ('<h3>Stream protocol</h3><p class="note">The test videos scored as one causal stream by the calibrated model: '
            "the thresholds come from its calibration, not from these labels.</p>"
            f"{table}{_kv_table(measures, 'stream-events')}")


def provenance_of_another_evaluation(provenance: dict, eval_dir: Path) -> str | None:
    """Why the provenance is not of the evaluation in ``eval_dir`` (evaluated again since, without --report, into the
    folder the report names), said after 'the evaluation in X'; or None. It records the SHA-256 of the scores.csv it
    was made with (one written by an older mnad does not: it is taken as it is)."""
    recorded = provenance.get("scores_sha256")
    if not isinstance(recorded, str):
        return None
    try:
        current = file_sha256(eval_dir / SCORES_FILE)
    except OSError as exc:
        raise DataError(f"{eval_dir / SCORES_FILE}: cannot read it ({exc.strerror or exc})") from exc
    if current == recorded:
        return None
    return f"was run again after this report was made (its {SCORES_FILE} is not the one the report recorded)"


def thumbnail_of_another_evaluation(thumbs: list[dict], videos: list[Any]) -> str | None:
    """The first thumbnail entry that is not a row of the scores shown (its video, frame and score), said; or None. A
    report folder's thumbnails are made with one evaluation; shown beside another one's scores they would mislead."""
    by_name = {v.name: v for v in videos}
    for entry in thumbs:
        video = by_name.get(entry.get("video"))
        rows = np.flatnonzero(video.frames == entry.get("frame")) if video is not None and isinstance(entry.get("frame"), int) else []
        if not len(rows) or abs(float(video.score[rows[0]]) - float(entry["score"])) > 1e-6:
            return (f"{THUMBS_INDEX} names video {printable(str(entry.get('video')))!r}, frame {entry.get('frame')!r} with score "
                    f"{entry.get('score')!r}, which is not a row of the scores shown")
    return None


def _png_file(path: Path, index: Path) -> bytes:
    """A picture a report folder's index names: its bytes; one that is gone is a DataError naming it and the index
    (was: left out silently, the page saying there were none)."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: named in {index}, and cannot be read ({exc.strerror or exc}): make the report's "
                        "pictures again, or remove the index") from exc


def figures_of_other_weights(memory: dict, metrics: dict) -> str | None:
    """Why the memory figures (figures.json, ``mnad.figures.memory_figures``) are not of the evaluated model, or None:
    the weights digest they record differs from the one metrics.json records of the evaluated model. Either one
    missing (written by an older mnad, or an ONNX evaluation) is not compared."""
    drawn = memory.get("weights_sha256")
    model = metrics.get("model") if isinstance(metrics.get("model"), dict) else {}
    evaluated = model.get("weights_sha256")
    if not (isinstance(drawn, str) and isinstance(evaluated, str)) or drawn == evaluated:
        return None
    return (f"they were drawn from other weights (SHA-256 {drawn[:16]}...) than the evaluated model's "
            f"({evaluated[:16]}...)")


def _header_counts(metrics: dict) -> str:
    """The header's '&middot; N frames of V videos', each part only where metrics.json has it."""
    parts = [f"{metrics[k]} {word}" for k, word in (("frames_scored", "frames"), ("videos", "videos")) if metrics.get(k) is not None]
    return f" &middot; {_e(' of '.join(parts))}" if parts else ""


def render_report(report_dir: Path, eval_dir: Path, run_dir: Path | None, provenance: dict, *, page_dir: Path | None = None) -> str:
    """The report page as one HTML string (deterministic: the same inputs give the same bytes, wherever it is built).
    Folders are shown from ``page_dir``, the folder the page is written into (default the report folder), so that a
    page written elsewhere (``mnad report --out``) names folders that are there from it."""
    page_dir = report_dir if page_dir is None else page_dir
    metrics, stored_config, videos = read_evaluation(eval_dir)
    if problem := scores_problem(videos):
        raise DataError(f"{eval_dir / SCORES_FILE}: not an mnad scores file ({problem})")
    stale = provenance_of_another_evaluation(provenance, eval_dir)
    if stale:  # only where the sources are is still true; the rest would be put beside numbers it did not make
        log.warning(f"{report_dir}: the evaluation in {eval_dir} {stale}: how it was run is not known, and the report's "
                    "thumbnails are left out")
        provenance = {key: provenance[key] for key in ("eval_dir", "run_dir") if key in provenance}
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
        f"{_header_counts(metrics)}</p><nav>{nav}</nav></header><main>",
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
    stream = metrics.get("stream") or {}
    settings = [("protocol", metrics.get("protocol") or ("stream" if stream else "published")),
                ("score", f"alpha={metrics.get('alpha')} (PSNR weight), normalisation={metrics.get('normalization')}, "
                          f"trailing mean over {metrics.get('smoothing', 1)} frame(s)"),
                ("test-time update", f"{metrics.get('test_update')} (gamma={metrics.get('gamma')})"),
                ("labels", metrics.get("labels")), ("note", metrics.get("note"))]
    parts.append(f'<section id="summary"><h2>Summary</h2><div class="cards">{card_html}</div>'
                 f'<h3>Scoring</h3>{_kv_table(settings)}{_stream_html(stream) if stream else ""}'
                 '<p class="note">Micro AUC pools the frames of all videos (the paper\'s metric); macro AUC averages the '
                 'per-video AUCs of the videos that have both normal and abnormal frames.</p></section>')

    # per-video table
    rows_html = []
    for i, v in enumerate(videos):
        auc = per_video.get(v.name)
        abnormal = "n/a" if v.labels is None else int(v.labels.sum())
        peak = int(np.argmax(v.score))
        rows_html.append(
            f'<tr id="video-{i}"><td><a href="#timeline-{i}">{_e(v.name)}</a></td><td class="num">{v.frames.size}</td>'
            f'<td class="num">{_e(abnormal)}</td><td class="num auc" data-value="{_e("" if auc is None else repr(auc))}">{_e(_pct(auc))}</td>'
            f'<td class="num">{shown_score(float(v.score[peak]))} (frame {int(v.frames[peak])})</td><td class="num">{int(v.updated.sum())}</td></tr>'
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
    threshold = stream.get("event_threshold")  # stream protocol: causal scores and their threshold
    pictures = [timeline_png(v, per_video.get(v.name), threshold) for v in videos]
    timeline_html = "".join(f'<figure id="timeline-{i}">{_img(png, f"score timeline of video {v.name}")}'
                            f"<figcaption>video {_e(v.name)}</figcaption></figure>"  # in HTML: in any script, copyable
                            for i, (v, png) in enumerate(zip(videos, pictures, strict=True)))
    parts.append('<section id="timelines"><h2>Score timelines</h2><p class="note">Anomaly score S_t per frame (high = abnormal); '
                 f"labelled abnormal intervals shaded red; ticks at the bottom mark frames that updated the memory.</p>{timeline_html}</section>")

    # localisation thumbnails
    thumbs = read_thumbnail_index(report_dir)
    unmatched = None if stale or not thumbs else thumbnail_of_another_evaluation(thumbs, videos)
    if unmatched:
        log.warning(f"{report_dir / THUMBS_DIR}: {unmatched}: its thumbnails are of another evaluation and are left out")
    if stale or unmatched:
        thumbs = []
    figures = []
    for entry in thumbs:
        path = report_dir / THUMBS_DIR / Path(str(entry.get("file", ""))).name
        label = {None: "unlabelled", 0: "labelled normal", 1: "labelled abnormal"}.get(entry.get("label"), "?")
        caption = f"video {entry.get('video')}, frame {entry.get('frame')}: score {shown_score(float(entry.get('score', 0)))} ({label})"
        png = _png_file(path, report_dir / THUMBS_DIR / THUMBS_INDEX)
        figures.append(f'<figure class="thumb">{_img(png, caption)}<figcaption>{_e(caption)}</figcaption></figure>')
    if figures:
        loc = ('<p class="note">The highest-scoring frames (at least a clip apart). Left: the frame; middle: its prediction error '
               "(<code>scoring.error_map</code>) as a heatmap; right: regions whose error is above the frame's mean, as in the "
               "paper's Fig. 4. Errors come from re-running the model with its trained memory items.</p>"
               f'<div class="thumbs">{"".join(figures)}</div>')
    elif stale or unmatched:
        loc = ('<p class="note">The localisation thumbnails in this report folder are of an earlier evaluation, not of the '
               "scores shown here, and are left out; <code>mnad evaluate --report DIR</code> makes them again.</p>")
    else:
        loc = ('<p class="note">No localisation thumbnails: they need the model and the frames, and are made by '
               "<code>mnad evaluate --report DIR</code>.</p>")
    parts.append(f'<section id="localisation"><h2>Localisation: top-scoring frames</h2>{loc}</section>')

    # training curves
    log_path = run_dir / TRAIN_LOG if run_dir is not None else None
    records = training_records(log_path) if log_path is not None and log_path.is_file() else []
    train_png = training_png(records) if records else None
    if train_png is not None:
        last = records[-1]
        total_s = sum(float(r.get("seconds", 0)) for r in records)
        train_html = (f"{_img(train_png, 'training curves')}<p class=\"note\">{len(records)} epochs logged in "
                      f"<code>{_e(relative_path(log_path, page_dir))}</code>; last epoch: "
                      + ", ".join(f"{_e(k)}={_e(f'{v:.5g}' if isinstance(v, float) else v)}" for k, v in last.items())
                      + f"; {total_s:.0f} s of training in all.</p>")
    else:
        if run_dir is not None:
            train_html = f'<p class="note">No training log found (looked in <code>{_e(relative_path(run_dir, page_dir))}</code>).</p>'
        else:  # none recorded, or the folder beside the evaluation trained another model: its curves would not be this one's
            train_html = ('<p class="note">The training run of the evaluated model is unknown: no run folder is recorded that '
                          "trained it, so no training is shown.</p>")
    parts.append(f'<section id="training"><h2>Training</h2>{train_html}</section>')

    # memory figures, when `mnad figures --out <report>/figures` was run
    index = report_dir / FIGURES_DIR / FIGURES_INDEX
    memory = read_json_if_present(index, "figures index", figures_problem, {})
    memory_html = []
    if other_weights := figures_of_other_weights(memory, metrics):
        log.warning(f"{index}: {other_weights}: the memory figures are of another model and are left out")
        memory_html.append(f'<p class="note">The memory figures in this report folder are left out: {_e(other_weights)}. '
                           "<code>mnad figures --overwrite</code> with the evaluated checkpoint draws them again.</p>")
        memory = {}
    elif memory and not isinstance(memory.get("weights_sha256"), str):
        memory_html.append('<p class="note">These figures were drawn by an older mnad, which did not record the weights '
                           "they were drawn from: that they are of the evaluated model is not checked.</p>")
    for key, caption in (("matching", "Matching probabilities of queries to memory items (paper Fig. 5)"),
                         ("tsne", "t-SNE of query features and memory items, coloured by nearest item (paper Figs. 1 and 6)")):
        name = memory.get("files", {}).get(key)
        if not memory or not isinstance(name, str):
            continue
        path = report_dir / FIGURES_DIR / Path(name).name
        if path.suffix != ".png":
            raise DataError(f"{index}: names {name!r} as its {key} figure, not a .png file")
        memory_html.append(f"<figure>{_img(_png_file(path, index), caption)}<figcaption>{_e(caption)}</figcaption></figure>")
    if not memory_html:
        memory_html.append('<p class="note">No memory figures in this report folder: '
                           f"<code>mnad figures --checkpoint CKPT --data-root ROOT --out REPORT/{FIGURES_DIR}</code> (REPORT: this "
                           "report folder) then <code>mnad report REPORT</code> adds them.</p>")
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
        ("epochs trained", epochs_trained(checkpoint)),
        ("data root", provenance.get("data_root")),
        ("labels", provenance.get("labels") or metrics.get("labels")),
        # from the page's folder (the report folder, unless --out): the page says the same wherever it is rebuilt from,
        # and names folders that are there from where it lies
        ("evaluation folder (from this page's folder)", relative_path(eval_dir, page_dir)),
        ("run folder (from this page's folder)", relative_path(run_dir, page_dir) if run_dir is not None else None),
    ]
    if stale:
        note = (f'<p class="note">The evaluation in <code>{_e(relative_path(eval_dir, page_dir))}</code> {_e(stale)}: how it '
                "was run is not known; only the config stored in metrics.json is shown.</p>")
    elif not provenance.get("command"):
        note = ('<p class="note">This evaluation was run without <code>--report</code>: only the config stored in '
                "metrics.json is known.</p>")
    else:
        note = ""
    parts.append(f'<section id="provenance"><h2>Provenance</h2>{note}{_kv_table(prov_rows, "provenance-table")}'
                 f'<h3>Versions</h3>{_kv_table(list(versions.items()), "versions")}'
                 f"<h3>Config</h3><pre id=\"config\">{_e(json.dumps(config, indent=2))}</pre></section>")
    parts.append("</main></body></html>\n")
    return "\n".join(parts)

