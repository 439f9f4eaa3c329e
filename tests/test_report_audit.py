"""`mnad report` over what users hand it: names that hold HTML or TeX, paths that are not UTF-8, scores that are not
finite, a stream-protocol evaluation, a detect folder, a report folder made again over another evaluation. Each builds
a small evaluation folder with ``mnad.outputs`` (no model is trained): seconds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from mnad import outputs
from mnad.cli import main
from mnad.report import create_report


def scored_video(name: str, n: int = 20, *, score: np.ndarray | None = None, labels: np.ndarray | None = None) -> SimpleNamespace:
    """One video's scores as mnad evaluate keeps them: the second half labelled abnormal and scored higher."""
    label = (np.arange(n) >= n // 2).astype(int) if labels is None else labels
    s = np.linspace(0, 0.5, n) + 0.5 * label if score is None else score
    return SimpleNamespace(name=name, frames=np.arange(4, 4 + n), psnr=30 - s, patch_psnr=20 - s, distance=s / 10, patch_distance=s / 10,
                           regular=s, updated=np.zeros(n, bool), score=s, labels=label)


def evaluation(folder: Path, videos: list[SimpleNamespace], *, config: dict | None = None, **metrics: object) -> Path:
    """An evaluation folder (scores.csv, metrics.json) as `mnad evaluate --out` writes it."""
    record = {"micro_auc": 1.0, "macro_auc": 1.0, "per_video_auc": {v.name: 1.0 for v in videos},
              "frames_scored": sum(len(v.frames) for v in videos), "abnormal_frames": sum(int(v.labels.sum()) for v in videos),
              "videos": len(videos), "protocol": "published", **metrics}
    outputs.write_evaluation(folder, videos, record, config or {"name": "tiny", "dataset": "synthetic", "train": {"seed": 0}})
    return folder


def one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("mnad: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.removeprefix("mnad: error: ").strip()


def page(report_dir: Path) -> str:
    return (report_dir / "report.html").read_text(encoding="utf-8")


def test_names_holding_html_or_tex_are_shown_as_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A video folder or recipe named with markup is text on the page, and a name with two '$' is not TeX to
    matplotlib (was: '$\\frac$' failed the report with a traceback; 'cost $5 and $6' was drawn as math)."""
    names = ["<script>alert(1)</script>", 'a"b&c\'d', "$\\frac$", "cost $5 and $6", "caf\u00e9 \u65e5\u672c #1 %20"]
    eval_dir = evaluation(tmp_path / "eval", [scored_video(n) for n in names],
                          config={"name": "<img src=x onerror=alert(1)>", "dataset": "</title><script>", "train": {}})
    assert main(["report", str(eval_dir)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Warning" not in err, err  # nor matplotlib's missing-glyph warnings
    text = page(eval_dir / "report")
    assert "<script" not in text and "<img src=x" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "a&quot;b&amp;c&#x27;d" in text
    assert "<figcaption>video caf\u00e9 \u65e5\u672c #1 %20</figcaption>" in text  # in HTML, in any script


def test_a_name_that_is_not_utf8_is_shown_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder name whose bytes are not UTF-8 (a surrogate in Python, '\\udcff' in provenance.json) is shown as \\xff
    (was: UnicodeEncodeError while writing the page)."""
    eval_dir = evaluation(tmp_path / "eval", [scored_video("01")])
    report_dir = eval_dir / "report"
    report_dir.mkdir()
    (report_dir / "provenance.json").write_text(json.dumps({"eval_dir": "..", "data_root": "/data/caf\udcff", "command": "mnad x"}))
    assert main(["report", str(report_dir)]) == 0, capsys.readouterr().err
    assert "/data/caf\\xff" in page(report_dir)


@pytest.mark.parametrize(("score", "labels", "what"), [
    (np.r_[np.nan, np.linspace(0, 1, 19)], None, "frame 4: score nan is not a finite number (1 of its 20 frames)"),
    (np.r_[np.linspace(0, 1, 19), np.inf], None, "frame 23: score inf is not a finite number (1 of its 20 frames)"),
    (None, np.r_[np.zeros(10, int), np.full(10, 2)], "frame 14: label 2 is not 0 (normal) or 1 (abnormal)"),
], ids=["nan", "inf", "label-2"])
def test_scores_the_plots_cannot_draw_are_one_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], score: np.ndarray | None,
                                                    labels: np.ndarray | None, what: str) -> None:
    """(was: ValueError from scikit-learn's ROC, a traceback)"""
    eval_dir = evaluation(tmp_path / "eval", [scored_video("01", score=score, labels=labels)])
    assert main(["report", str(eval_dir)]) == 2
    assert one_error(capsys) == f"{eval_dir / 'scores.csv'}: not an mnad scores file (video '01', {what})"
    assert not (eval_dir / "report" / "report.html").exists()


def test_the_page_is_the_same_from_any_working_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Folders are shown from the report folder, as provenance.json stores them (was: from the folder `mnad report`
    ran in: 'eval' from one, 'work/run/eval' from another, so a rebuild elsewhere changed the page)."""
    run = tmp_path / "work" / "run"
    evaluation(run / "eval", [scored_video("01")])
    (run / "train_log.jsonl").write_text('{"epoch": 1, "loss_total": 0.5, "seconds": 2}\n')
    # the run of the evaluated model: its config is the evaluation's (a folder of another model's is not shown)
    (run / "config.json").write_text(json.dumps(json.loads((run / "eval" / "metrics.json").read_text())["config"]))
    monkeypatch.chdir(run)
    assert main(["report", "eval"]) == 0
    first = page(run / "eval" / "report")
    monkeypatch.chdir(tmp_path)
    assert main(["report", "work/run/eval/report"]) == 0
    assert page(run / "eval" / "report") == first
    assert "<code>..</code>" in first and "<code>../../train_log.jsonl</code>" in first


def test_a_stream_evaluation_shows_its_false_alarm_rates_and_events(tmp_path: Path) -> None:
    """(was: only the AUCs: the realised false-alarm and detection rates and the events, the point of --protocol
    stream, were in metrics.json only)"""
    stream = {"micro_auc_unsmoothed": 0.8814, "event_threshold": 0.8586, "event_false_alarm_rate": 0.01, "hysteresis": 0.05,
              "min_event_frames": 3, "calibration_frames": 224,
              "at_false_alarm_rate": {"0.01": {"threshold": 0.8586, "false_alarm_rate": 0.3043, "detection_rate": 0.8561},
                                      "0.001": {"threshold": None, "false_alarm_rate": None, "detection_rate": None,
                                                "not_estimable": "the calibration's 224 frames are fewer than the 1000 a 0.001 rate needs"}},
              "event_measures": {"events": 6, "false_events": 2, "false_events_per_minute": 32.6, "videos_with_anomaly": 4,
                                 "videos_caught": 4, "anomalies": 4, "anomalies_caught": 3, "mean_delay_frames": 4.75, "fps": 25.0}}
    eval_dir = evaluation(tmp_path / "eval", [scored_video("01")], protocol="stream", stream=stream)
    assert main(["report", str(eval_dir)]) == 0
    text = page(eval_dir / "report")
    assert 'id="stream-rates"' in text and "<td class=\"num\">30.43%</td><td class=\"num\">85.61%</td>" in text
    assert "not estimable: the calibration&#x27;s 224 frames" in text
    assert "6, of which false: 2 (32.6 per minute of normal footage)" in text and "3 of 4" in text and "88.14%" in text
    assert "<th>protocol</th><td><code>stream</code>" in text


def test_a_detect_output_is_named_as_such(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """(was: 'no metrics.json here or in a sub-folder', as if an evaluation had been lost)"""
    one, several = tmp_path / "det", tmp_path / "multi"
    for folder in (one, several / "0_cam"):
        folder.mkdir(parents=True)
        for name in ("scores.csv", "events.jsonl", "events.csv", "summary.json"):
            (folder / name).write_text("{}" if name == "summary.json" else "")
    (several / "summary.json").write_text(json.dumps({"streams": [{"folder": "0_cam"}]}))
    for folder in (one, several, several / "0_cam"):
        assert main(["report", str(folder)]) == 2
        assert one_error(capsys).startswith(f"{folder}: an `mnad detect` output (summary.json, events.jsonl), not an evaluation")


def thumbnail(report_dir: Path, video: str, frame: int, score: float) -> None:
    """One localisation thumbnail and its index, as `mnad evaluate --report` leaves them."""
    thumbs = report_dir / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    name = f"01_{video}_{frame:06d}.png"
    cv2.imwrite(str(thumbs / name), np.full((60, 180, 3), 128, np.uint8))
    (thumbs / "thumbs.json").write_text(json.dumps([{"file": name, "video": video, "frame": frame, "score": score, "label": 1}]))


def test_a_report_made_again_without_thumbnails_drops_the_earlier_ones(tmp_path: Path) -> None:
    """`mnad evaluate --report DIR --top-k 0` over a report folder with thumbnails (was: the earlier evaluation's
    thumbnails stayed on the page)."""
    video = scored_video("01")
    eval_dir = evaluation(tmp_path / "eval", [video])
    report_dir = tmp_path / "report"
    thumbnail(report_dir, "01", int(video.frames[-1]), float(video.score[-1]))
    (report_dir / "thumbs" / "mine.txt").write_text("a user's file")
    create_report(None, {"name": "tiny", "train": {"seed": 0}}, tmp_path, eval_dir, report_dir, top_k=0, overwrite=True)
    assert "figure class=\"thumb\"" not in page(report_dir) and "No localisation thumbnails" in page(report_dir)
    assert sorted(p.name for p in (report_dir / "thumbs").iterdir()) == ["mine.txt"]


def test_thumbnails_and_provenance_of_an_earlier_evaluation_are_left_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The evaluation a report names was run again (without --report): its command, checkpoint and thumbnails are
    of the earlier one (was: shown beside the new scores as theirs)."""
    video = scored_video("01")
    eval_dir = evaluation(tmp_path / "eval", [video])
    report_dir = tmp_path / "report"
    create_report(None, {"name": "tiny", "train": {"seed": 0}}, tmp_path, eval_dir, report_dir, top_k=0,
                  command="mnad evaluate --the-first-one")
    thumbnail(report_dir, "01", int(video.frames[-1]), float(video.score[-1]))
    assert main(["report", str(report_dir)]) == 0
    assert "--the-first-one" in page(report_dir) and page(report_dir).count('figure class="thumb"') == 1
    capsys.readouterr()
    evaluation(eval_dir, [scored_video("01", score=np.linspace(1, 0, 20))])  # evaluated again
    assert main(["report", str(report_dir)]) == 0
    text, err = page(report_dir), capsys.readouterr().err
    assert "--the-first-one" not in text and 'figure class="thumb"' not in text and "was run again after this report was made" in text
    assert err.startswith(f"mnad: warning: {report_dir}: the evaluation in {eval_dir} was run again") and "Traceback" not in err
    # thumbnails that are not rows of the scores shown, whatever the provenance says (a report of an older mnad)
    provenance = json.loads((report_dir / "provenance.json").read_text())
    del provenance["scores_sha256"]
    (report_dir / "provenance.json").write_text(json.dumps(provenance))
    assert main(["report", str(report_dir)]) == 0
    text, err = page(report_dir), capsys.readouterr().err
    assert "--the-first-one" in text and 'figure class="thumb"' not in text and "of an earlier evaluation" in text
    assert "its thumbnails are of another evaluation and are left out" in err


def test_a_report_folder_moved_with_its_evaluation_rebuilds(tmp_path: Path) -> None:
    """Everything on the page is embedded, and provenance.json names the evaluation from the report folder."""
    video = scored_video("01 #% \u65e5")
    eval_dir = evaluation(tmp_path / "a b#%" / "eval", [video])
    create_report(None, {"name": "tiny", "train": {"seed": 0}}, tmp_path, eval_dir, eval_dir / "report", top_k=0)
    moved = tmp_path / "elsewhere \u00e9"
    shutil.move(tmp_path / "a b#%", moved)
    assert main(["report", str(moved / "eval" / "report")]) == 0
    text = page(moved / "eval" / "report")
    assert 'href="#timeline-0"' in text and not [s for s in text.split('src="')[1:] if not s.startswith("data:image/png;base64,")]


def test_a_report_folder_moved_without_its_evaluation_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """(was: 'DIR/eval/metrics.json: metrics file not found (written by `mnad evaluate --out`)', a path the user never
    named, as if the evaluation had not been run)"""
    eval_dir = evaluation(tmp_path / "eval", [scored_video("01")])
    create_report(None, {"name": "tiny", "train": {"seed": 0}}, tmp_path, eval_dir, tmp_path / "report", top_k=0)
    moved = tmp_path / "shared" / "report"
    moved.parent.mkdir()
    shutil.move(tmp_path / "report", moved)
    assert main(["report", str(moved)]) == 2
    assert one_error(capsys) == (f"{moved / 'provenance.json'}: names the evaluation folder '../eval' (from the report "
                                 f"folder), and {tmp_path / 'shared' / 'eval' / 'metrics.json'} is not there: move the report folder "
                                 "together with its evaluation, or run `mnad report` on the evaluation folder")


def test_a_report_written_elsewhere_leaves_the_evaluation_folder_alone(tmp_path: Path) -> None:
    """`mnad report EVAL --out DIR` (was: also created EVAL/report/provenance.json, and failed on a read-only EVAL)."""
    eval_dir = evaluation(tmp_path / "eval", [scored_video("01")])
    before = sorted(p.name for p in eval_dir.iterdir())
    assert main(["report", str(eval_dir), "--out", str(tmp_path / "page")]) == 0
    assert sorted(p.name for p in eval_dir.iterdir()) == before
    # the evaluation, from the page's own folder (was: `..`, from EVAL/report, a folder that is not there)
    assert "<code>../eval</code>" in page(tmp_path / "page") and "<code>..</code>" not in page(tmp_path / "page")
