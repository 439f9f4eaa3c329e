"""The HTML report, the memory figures and TensorBoard logging, on a tiny model trained on the synthetic scene."""

from __future__ import annotations

import base64
import builtins
import csv
import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from conftest import tiny_config

from mnad import outputs, report
from mnad.cli import main
from mnad.errors import ConfigError, DataError
from mnad.events import anomalies
from mnad.model import MNAD
from mnad.train import tensorboard_writer, train

HAVE_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None
SECTIONS = ["summary", "videos", "roc", "timelines", "localisation", "training", "memory", "provenance"]


class Page(HTMLParser):
    """What the tests look at in a report: element ids, data-value attributes, images, table rows."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids: dict[str, dict[str, str | None]] = {}
        self.images: list[str] = []
        self.per_video_auc: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if "id" in found:
            self.ids[str(found["id"])] = found
        if tag == "img":
            self.images.append(str(found.get("src")))
        if tag == "td" and "auc" in (found.get("class") or "").split():
            self.per_video_auc.append(str(found.get("data-value")))


@pytest.fixture(scope="module")
def evaluated(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny model trained one epoch (TensorBoard on, when installed), evaluated with --report."""
    base = tmp_path_factory.mktemp("report")
    config = tiny_config()
    config.train.tensorboard = HAVE_TENSORBOARD
    model_path = train(config, synthetic_root, base / "run", progress=False)
    eval_dir, report_dir = base / "run" / "eval", base / "report"
    argv = ["evaluate", "--checkpoint", str(model_path), "--data-root", str(synthetic_root), "--out", str(eval_dir),
            "--report", str(report_dir), "--top-k", "4", "--quiet"]
    assert main(argv) == 0
    return {"base": base, "model": model_path, "eval": eval_dir, "report": report_dir, "root": synthetic_root, "argv": argv}


def test_report_shows_the_saved_metrics(evaluated: dict) -> None:
    text = (evaluated["report"] / "report.html").read_text()
    metrics = json.loads((evaluated["eval"] / "metrics.json").read_text())["metrics"]
    page = Page(text)
    for section in SECTIONS:
        assert section in page.ids, f"section {section} missing"
    assert page.ids["micro-auc"]["data-value"] == repr(metrics["micro_auc"])
    assert page.ids["macro-auc"]["data-value"] == repr(metrics["macro_auc"])
    assert f"{100 * metrics['micro_auc']:.2f}%" in text and f"{100 * metrics['macro_auc']:.2f}%" in text
    assert page.per_video_auc == [repr(metrics["per_video_auc"][name]) for name in ("01", "02")]
    assert "video-0" in page.ids and "video-1" in page.ids and "timeline-1" in page.ids


def test_report_images_are_embedded_pngs(evaluated: dict) -> None:
    text = (evaluated["report"] / "report.html").read_text()
    page = Page(text)
    thumbs = json.loads((evaluated["report"] / "thumbs" / "thumbs.json").read_text())
    # ROC, histogram, 2 timelines, the thumbnails, the training curves
    assert len(thumbs) == 4
    assert len(page.images) == 2 + 2 + len(thumbs) + 1
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[0] > 50 and image.shape[1] > 50 and image.std() > 5
    # self-contained: no link or source outside the page
    assert not re.findall(r'(?:src|href)="(?!data:|#)', text)
    assert "<script" not in text.lower()
    # thumbnails: the top scores of scores.csv, one per frame, three panels (frame, heatmap, regions)
    scores = outputs.read_scores(evaluated["eval"] / "scores.csv")
    best = max(float(v.score.max()) for v in scores)
    assert thumbs[0]["score"] == pytest.approx(best, abs=1e-6)
    for entry in thumbs:
        png = cv2.imread(str(evaluated["report"] / "thumbs" / entry["file"]))
        assert png.shape[1] > 2.5 * png.shape[0]
        assert 0 < entry["region_fraction"] < 1


def test_report_provenance(evaluated: dict) -> None:
    prov = json.loads((evaluated["report"] / "provenance.json").read_text())
    text = (evaluated["report"] / "report.html").read_text()
    assert prov["command"] == "mnad " + " ".join(evaluated["argv"])
    assert prov["checkpoint"]["file_sha256"] == hashlib.sha256(evaluated["model"].read_bytes()).hexdigest()
    assert prov["checkpoint"]["tensor_sha256"] and prov["checkpoint"]["tensor_sha256"] in text
    assert prov["versions"]["torch"] == torch.__version__ and prov["versions"]["mnad"]
    assert prov["seed"] == 0 and prov["config"]["model"]["width"] == 8
    for value in (prov["checkpoint"]["file_sha256"], torch.__version__, np.__version__, cv2.__version__, "--top-k 4"):
        assert value in text
    assert "epochs logged" in text  # the run's train_log.jsonl was found


def test_report_command_rebuilds_identically_without_the_model(evaluated: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    page = evaluated["report"] / "report.html"
    before = page.read_bytes()
    page.unlink()

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("mnad report must not load or run a model")

    monkeypatch.setattr("mnad.checkpoint.load_model", refuse)
    monkeypatch.setattr(MNAD, "forward", refuse)
    assert main(["report", str(evaluated["report"])]) == 0
    assert page.read_bytes() == before
    other = evaluated["base"] / "elsewhere"
    assert main(["report", str(evaluated["report"]), "--out", str(other)]) == 0
    assert (other / "report.html").read_bytes() == before


def test_report_of_an_evaluation_without_report(evaluated: dict, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(evaluated["eval"], run / "eval")
    for name in ("train_log.jsonl", "config.json", "model.safetensors"):  # the run that trained the evaluated model
        shutil.copy(evaluated["base"] / "run" / name, run)
    assert main(["report", str(run)]) == 0  # a run folder: its one evaluation is found
    text = (run / "eval" / "report" / "report.html").read_text()
    assert "No localisation thumbnails" in text and "run without <code>--report</code>" in text
    assert "epochs logged" in text
    assert main(["report", str(run / "eval" / "report")]) == 0  # and the report folder rebuilds by itself
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no metrics.json"):
        report.rebuild_report(empty)
    assert main(["report", str(empty)]) == 2


def test_outputs_write_what_the_evaluation_wrote(evaluated: dict) -> None:
    """mnad.outputs' writers give the evaluation's own scores.csv and metrics.json byte for byte; its readers read them."""
    scores_path, metrics_path = evaluated["eval"] / outputs.SCORES_FILE, evaluated["eval"] / outputs.METRICS_FILE
    with scores_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    videos = []
    for name in dict.fromkeys(r["video"] for r in rows):
        mine = [r for r in rows if r["video"] == name]

        def column(key: str, kind: type = float, mine: list[dict] = mine) -> np.ndarray:
            return np.array([kind(r[key]) for r in mine])

        videos.append(SimpleNamespace(name=name, frames=column("frame", int), psnr=column("psnr"), patch_psnr=column("patch_psnr"),
                                      distance=column("distance"), patch_distance=column("patch_distance"),
                                      regular=column("regular_score"), updated=column("memory_updated", int), score=column("score"),
                                      labels=column("label", int)))
    assert outputs.scores_csv_bytes(videos) == scores_path.read_bytes()
    read = outputs.read_scores(scores_path)
    assert [v.name for v in read] == [v.name for v in videos] == ["01", "02"]
    for got, want in zip(read, videos, strict=True):
        assert np.array_equal(got.frames, want.frames) and np.array_equal(got.score, want.score)
        assert np.array_equal(got.labels, want.labels) and np.array_equal(got.updated, want.updated.astype(bool))
    metrics, config = outputs.read_metrics(metrics_path)
    assert outputs.metrics_json_bytes(metrics, config, scores_path.read_bytes()) == metrics_path.read_bytes()
    assert config["model"]["width"] == 8 and metrics["videos"] == 2


def test_outputs_round_trip_without_labels(tmp_path: Path) -> None:
    video = SimpleNamespace(name="a b", frames=np.array([4, 5]), psnr=np.array([30.0, 31.5]), patch_psnr=np.array([20.0, 21.5]),
                            distance=np.array([0.1, 0.2]), patch_distance=np.array([0.3, 0.4]),
                            regular=np.array([0.5, 0.25]), updated=np.array([True, False]), score=np.array([0.0, 1.0]), labels=None)
    assert outputs.scores_csv_bytes([video]) == (b"video,frame,psnr,distance,regular_score,memory_updated,score,label,patch_psnr,patch_distance\r\n"
                                                 b"a b,4,30.000000,0.1,0.50000000,1,0.000000,,20.000000,0.3\r\n"
                                                 b"a b,5,31.500000,0.2,0.25000000,0,1.000000,,21.500000,0.4\r\n")
    # D is ~1e-6 on real footage: written to 9 significant digits, not to a fixed number of decimals
    small = SimpleNamespace(**{**vars(video), "distance": np.array([3.75123456e-06, 1e-9])})
    assert b",3.75123456e-06," in outputs.scores_csv_bytes([small]) and b",1e-09," in outputs.scores_csv_bytes([small])
    outputs.write_evaluation(tmp_path / "eval", [video], {"micro_auc": None, "videos": 1}, {"name": "x"})
    (got,) = outputs.read_scores(tmp_path / "eval" / outputs.SCORES_FILE)
    assert got.name == "a b" and got.labels is None and got.updated.tolist() == [True, False] and got.psnr.tolist() == [30.0, 31.5]
    assert outputs.read_metrics(tmp_path / "eval" / outputs.METRICS_FILE) == ({"micro_auc": None, "videos": 1}, {"name": "x"})
    (tmp_path / "bad.json").write_text('{"config": {}}')
    with pytest.raises(DataError, match="no 'metrics' entry"):
        outputs.read_metrics(tmp_path / "bad.json")
    with pytest.raises(DataError, match="scores file not found"):
        outputs.read_scores(tmp_path / "missing.csv")
    log = tmp_path / outputs.TRAIN_LOG
    log.write_text('{"epoch": 1, "loss_total": 0.5}\n{"note": "no epoch"}\n{"epoch": 2, "loss_to')  # the last line cut mid-write
    assert outputs.read_train_log(log) == [{"epoch": 1, "loss_total": 0.5}]


def test_anomalies_are_runs_of_abnormal_scored_frames_and_a_gap_does_not_split_one() -> None:
    """The one rule for an anomaly, which the report shades and the stream protocol counts (was: the report's own
    abnormal_runs split a run at a gap in the frame numbers, so it shaded two anomalies where the metrics counted one)."""
    frames = np.array([4, 5, 6, 7, 8, 10, 11, 12])
    labels = np.array([0, 1, 1, 0, 1, 1, 1, 0])
    assert anomalies(frames, labels) == [(5, 6), (8, 11)]  # frame 9 not scored: 8 and 10 are of one anomaly
    assert anomalies(frames, np.zeros(8, int)) == []
    assert anomalies(np.array([3, 4]), np.array([1, 1])) == [(3, 4)]
    stride = np.arange(0, 100, 3)  # every third frame scored (--fps): one anomaly, not one per scored frame
    assert anomalies(stride, ((stride >= 30) & (stride < 60)).astype(int)) == [(30, 57)]
    assert anomalies(np.array([4, 5, 9, 10]), np.array([1, 0, 0, 1])) == [(4, 4), (10, 10)]  # a scored normal frame ends one
    assert anomalies(np.array([4, 5, 9]), np.array([1, 1, 1])) == [(4, 9)]  # the first frames (0..3) unscored: nothing before
    with pytest.raises(DataError, match="anomalies: 3 scored frames but 2 labels"):
        anomalies(np.array([4, 5, 6]), np.array([1, 1]))


def test_the_timeline_shades_the_anomalies_the_metrics_count(monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.axes import Axes

    from mnad.report.plots import timeline_png

    shaded: list[tuple[float, float]] = []
    monkeypatch.setattr(Axes, "axvspan", lambda self, low, high, **kwargs: shaded.append((low, high)))
    frames = np.array([4, 5, 6, 7, 8, 10, 11, 12])
    video = outputs.VideoRows(name="01", frames=frames, score=np.linspace(0, 1, 8), labels=np.array([0, 1, 1, 0, 1, 1, 1, 0]),
                              psnr=np.full(8, 30.0), updated=np.zeros(8, bool))
    timeline_png(video, None)
    assert shaded == [(4.5, 6.5), (7.5, 11.5)]


def test_memory_figures_side_by_side(evaluated: dict) -> None:
    from mnad.checkpoint import load_model
    from mnad.figures import memory_figures

    model, config = load_model(evaluated["model"])
    torch.manual_seed(1)
    untrained = MNAD(tiny_config().model)  # stands in for a model trained without the separateness loss
    folder = evaluated["base"] / "report-with-figures"  # a copy, so the other tests see the report as evaluate wrote it
    shutil.copytree(evaluated["report"], folder)
    out = folder / "figures"
    record = memory_figures(model, config, evaluated["root"], out, untrained, labels=("trained", "untrained"), frames=2, clips=8,
                            max_queries=100)
    assert [m["label"] for m in record["models"]] == ["trained", "untrained"]
    for entry in record["models"]:
        assert 1 / 10 <= entry["mean_max_probability"] <= 1
        assert sum(entry["item_usage"]) == pytest.approx(1, abs=1e-3) and entry["queries_in_tsne"] == 100
    for name in ("matching.png", "tsne.png"):
        image = cv2.imread(str(out / name))
        assert image is not None and image.std() > 5 and image.shape[1] > image.shape[0]
    assert len(record["shown_frames"]) == 2
    # the report picks the figures up from <report>/figures
    assert main(["report", str(folder)]) == 0
    text = (folder / "report.html").read_text()
    assert "paper Fig. 5" in text and len(Page(text).images) == 2 + 2 + 4 + 1 + 2


def test_figures_command_refuses_a_model_without_memory(evaluated: dict, tmp_path: Path) -> None:
    from mnad.checkpoint import save_model

    config = tiny_config(memory=False)
    save_model(tmp_path / "nomem.safetensors", MNAD(config.model), config)
    assert main(["figures", "--checkpoint", str(tmp_path / "nomem.safetensors"), "--data-root", str(evaluated["root"]),
                 "--out", str(tmp_path / "f")]) == 2


@pytest.mark.skipif(not HAVE_TENSORBOARD, reason="tensorboard is not installed (pip install tensorboard)")
def test_tensorboard_log(evaluated: dict) -> None:
    events = list((evaluated["base"] / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(events[0].parent))
    board.Reload()
    assert {"loss_total", "loss_frame", "lr"} <= set(board.Tags()["scalars"])


def test_tensorboard_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_import = builtins.__import__

    def no_tensorboard(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("no tensorboard")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        tensorboard_writer(tmp_path)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    return None


CHECK = """<script>window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0 && i.naturalHeight > 0); });
  var b = document.body;
  b.setAttribute('data-images', images.length);
  b.setAttribute('data-broken', broken.length);
  b.setAttribute('data-sections', Array.prototype.map.call(document.querySelectorAll('section'), function (s) { return s.id; }).join(','));
  b.setAttribute('data-height', document.documentElement.scrollHeight);
});</script>"""


def test_report_renders_in_headless_chromium(evaluated: dict, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium found: install the Debian package 'chromium' (apt-get install chromium) to run the browser test")
    text = (evaluated["report"] / "report.html").read_text()
    n_images = len(Page(text).images)
    checked = tmp_path / "checked.html"  # a copy with a check that runs after load; the report itself has no script
    checked.write_text(text.replace("</body>", CHECK + "</body>"))
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]
    dom = subprocess.run([*flags, "--dump-dom", checked.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body, dom.stdout[:500]
    attrs = dict(re.findall(r'(data-[a-z]+)="([^"]*)"', body.group(1)))
    assert attrs.get("data-images") == str(n_images) and attrs.get("data-broken") == "0", attrs
    assert attrs["data-sections"].split(",") == SECTIONS
    assert int(attrs["data-height"]) > 2000  # plots laid out, not collapsed
    # and a screenshot of the report as it is: not blank, with the colours of the plots in it
    shot = tmp_path / "shot.png"
    run = subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,2000", (evaluated["report"] / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    image = cv2.imread(str(shot))
    assert image.shape[:2] == (2000, 1200)
    assert image.std() > 20
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    assert (hsv[..., 1] > 100).mean() > 0.005  # coloured pixels: the ROC curve, the shading, the heatmaps


def test_scores_and_metrics_of_different_runs_are_refused(tmp_path: Path) -> None:
    """A kill between two writes, or a copied file, must not pair one run's scores with another's metrics silently."""
    from types import SimpleNamespace

    def video(score: float) -> SimpleNamespace:
        return SimpleNamespace(name="01", frames=np.array([4, 5]), psnr=np.array([30.0, 31.0]), patch_psnr=np.array([20.0, 21.0]),
                               distance=np.array([0.1, 0.2]), patch_distance=np.array([0.3, 0.4]), regular=np.array([0.5, 0.2]),
                               updated=np.array([True, False]),
                               score=np.array([score, 1.0]), labels=np.array([0, 1]))

    outputs.write_evaluation(tmp_path / "a", [video(0.0)], {"micro_auc": 1.0}, {"name": "x"})
    outputs.write_evaluation(tmp_path / "b", [video(0.5)], {"micro_auc": 1.0}, {"name": "x"})
    assert outputs.read_evaluation(tmp_path / "a")[0] == {"micro_auc": 1.0}
    (tmp_path / "a" / outputs.SCORES_FILE).write_bytes((tmp_path / "b" / outputs.SCORES_FILE).read_bytes())
    with pytest.raises(DataError, match="does not belong"):
        outputs.read_evaluation(tmp_path / "a")


def test_a_full_disk_while_writing_the_report_is_one_clear_error(evaluated: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    import errno

    import mnad.report.build as build

    def full(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(build, "write_provenance", full)
    argv = ["evaluate", "--checkpoint", str(evaluated["model"]), "--data-root", str(evaluated["root"]), "--out", str(tmp_path / "e"),
            "--report", str(tmp_path / "r"), "--top-k", "1", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot write the report (disk full)" in err and "Traceback" not in err


def test_a_failed_rebuild_keeps_the_earlier_thumbnails(evaluated: dict, tmp_path: Path) -> None:
    from mnad.checkpoint import load_model
    from mnad.report.thumbnails import write_thumbnails

    report_dir = tmp_path / "report"
    shutil.copytree(evaluated["report"] / "thumbs", report_dir / "thumbs")
    before = {p.name: p.read_bytes() for p in (report_dir / "thumbs").iterdir()}
    model, config = load_model(evaluated["model"])
    empty_root = tmp_path / "no videos"
    shutil.copytree(evaluated["root"], empty_root, ignore=shutil.ignore_patterns("*.jpg", "*.png"))
    with pytest.raises(DataError):  # fails part way: the earlier thumbnails and their index stay as they were
        write_thumbnails(model, config, empty_root, evaluated["eval"], report_dir, top_k=2)
    assert {p.name: p.read_bytes() for p in (report_dir / "thumbs").iterdir()} == before
    entries = write_thumbnails(model, config, evaluated["root"], evaluated["eval"], report_dir, top_k=2)
    # once the new ones are written, the earlier ones that are not among them go
    assert sorted(p.name for p in (report_dir / "thumbs").iterdir()) == sorted([e["file"] for e in entries] + ["thumbs.json"])
