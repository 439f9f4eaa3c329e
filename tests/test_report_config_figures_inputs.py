"""Damaged inputs of `mnad train --recipe`, `mnad report` and `mnad figures`: one clear error naming the file or
option (exit 2), never a traceback and never a run that ignores what was asked."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import tiny_config

from mnad.cli import main
from mnad.config import load_config
from mnad.errors import ConfigError, DataError
from mnad.train import train


@pytest.fixture(scope="module")
def run(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny model trained one epoch, evaluated into run/eval, its report built (run/eval/report)."""
    base = tmp_path_factory.mktemp("inputs")
    model = train(tiny_config(), synthetic_root, base / "run", progress=False)
    assert main(["evaluate", "--checkpoint", str(model), "--data-root", str(synthetic_root), "--out", str(base / "run" / "eval"),
                 "--quiet"]) == 0
    assert main(["report", str(base / "run" / "eval")]) == 0
    return {"base": base, "model": model, "root": synthetic_root}


def one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("mnad: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err.removeprefix("mnad: error: ").strip()


# ------------------------------------------------------------------------------------------------ recipes


@pytest.mark.parametrize(("name", "data"), [("bin.toml", b"\xff\xfe"), ("clip.avi", b"\x00\x00\x00\x18ftypmp42\xff\xd8")])
def test_a_recipe_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, data: bytes) -> None:
    recipe = tmp_path / name
    recipe.write_bytes(data)
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(recipe)
    assert main(["train", "--recipe", str(recipe), "--data-root", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert one_error(capsys).startswith(f"{recipe}: not UTF-8 text (")
    assert not (tmp_path / "run").exists()


def test_a_recipe_with_a_byte_order_mark_reads(tmp_path: Path) -> None:
    recipe = tmp_path / "bom.toml"
    recipe.write_bytes('name = "bom"\ndataset = "synthetic"\n[model]\nwidth = 8\n'.encode("utf-8-sig"))
    config = load_config(recipe)
    assert (config.name, config.model.width) == ("bom", 8)


# ------------------------------------------------------------------------------------------------ report


def copy_run(run: dict, tmp_path: Path) -> Path:
    """A copy of the run (with eval/ and eval/report/), to damage; returns the copy's eval folder."""
    shutil.copytree(run["base"] / "run", tmp_path / "run")
    return tmp_path / "run" / "eval"


def edit_json(path: Path, edit: object) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)  # type: ignore[operator]
    path.write_text(json.dumps(data), encoding="utf-8")


@pytest.mark.parametrize(("edit", "what"), [
    (lambda d: d.update(metrics=5), "metrics must be an object, got 5"),
    (lambda d: d["metrics"].update(micro_auc="x"), "metrics.micro_auc must be a number or null, got 'x'"),
    (lambda d: d.update(config="x"), "config must be an object, got 'x'"),
    (lambda d: d["metrics"].update(per_video_auc=[1, 2]), "metrics.per_video_auc must map video names to numbers"),
    (lambda d: d["config"].update(train=3), "config.train must be an object, got 3"),
    (lambda d: d["metrics"].update(stream={"event_threshold": "high"}), "metrics.stream must be an object with a numeric"),
], ids=["metrics-5", "micro-auc-x", "config-x", "per-video-list", "config-train-3", "threshold-x"])
def test_report_of_a_metrics_file_of_wrong_types(run: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: object,
                                                 what: str) -> None:
    eval_dir = copy_run(run, tmp_path)
    edit_json(eval_dir / "metrics.json", edit)
    assert main(["report", str(eval_dir)]) == 2
    assert one_error(capsys).startswith(f"{eval_dir / 'metrics.json'}: not an mnad metrics file ({what}")
    with pytest.raises(DataError, match="not an mnad metrics file"):  # the Python API too
        __import__("mnad.report", fromlist=["rebuild_report"]).rebuild_report(eval_dir)


@pytest.mark.parametrize("name", ["metrics.json", "scores.csv", "report/provenance.json"])
def test_report_of_a_file_that_is_not_utf8(run: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    eval_dir = copy_run(run, tmp_path)
    (eval_dir / name).write_bytes(b"\xff\xfe\x00")
    assert main(["report", str(eval_dir)]) == 2
    assert one_error(capsys) == f"{os.path.normpath(eval_dir / name)}: not UTF-8 text (invalid start byte at byte 0)"


def test_report_skips_a_damaged_line_of_the_training_log_as_resume_does(run: dict, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """One rule for a training log (outputs.read_train_log): a line a kill cut short or a damaged byte spoilt is
    skipped by the report, by long_runs status and by resume (which rewrites the log); a file with no epoch record
    at all is not a training log."""
    eval_dir = copy_run(run, tmp_path)
    log = eval_dir.parent / "train_log.jsonl"
    log.write_bytes(log.read_bytes() + b"\xff\xfe damaged\n" + b'{"epoch": 2, "lo')
    assert main(["report", str(eval_dir)]) == 0, capsys.readouterr().err
    assert "1 epochs logged in" in (eval_dir / "report" / "report.html").read_text()
    log.write_bytes(b"\xff\xfe\x00")
    assert main(["report", str(eval_dir)]) == 2
    assert one_error(capsys) == f"{log}: not an mnad training log (no line of it is an epoch record)"


def test_report_of_damaged_report_files(run: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    eval_dir = copy_run(run, tmp_path)
    report_dir = eval_dir / "report"
    edit_json(report_dir / "provenance.json", lambda d: d.update(config="x"))
    assert main(["report", str(report_dir)]) == 2
    assert one_error(capsys) == f"{report_dir / 'provenance.json'}: not an mnad provenance file (config must be an object, got 'x')"
    shutil.copy(run["base"] / "run" / "eval" / "report" / "provenance.json", report_dir)

    (report_dir / "thumbs").mkdir()
    cv2.imwrite(str(report_dir / "thumbs" / "a.png"), np.zeros((4, 4), np.uint8))
    (report_dir / "thumbs" / "thumbs.json").write_text(json.dumps([{"file": "a.png", "score": "high", "label": 1}]))
    assert main(["report", str(report_dir)]) == 2
    assert one_error(capsys).startswith(f"{report_dir / 'thumbs' / 'thumbs.json'}: not an mnad thumbnails index file (")
    shutil.rmtree(report_dir / "thumbs")

    (report_dir / "figures").mkdir()
    (report_dir / "figures" / "figures.json").write_text(json.dumps({"files": "matching.png"}))
    assert main(["report", str(report_dir)]) == 2
    assert one_error(capsys) == (f"{report_dir / 'figures' / 'figures.json'}: not an mnad figures index file "
                                 "(files must be an object, got 'matching.png')")
    shutil.rmtree(report_dir / "figures")

    (eval_dir.parent / "train_log.jsonl").write_text(json.dumps({"epoch": 1, "seconds": "long"}) + "\n")
    assert main(["report", str(report_dir)]) == 2
    assert one_error(capsys).startswith(f"{eval_dir.parent / 'train_log.jsonl'}: not an mnad training log (")

    (eval_dir / "scores.csv").write_text("video,frame,score\n01,x,0.5\n")
    edit_json(eval_dir / "metrics.json", lambda d: d.pop("scores_sha256"))
    assert main(["report", str(report_dir)]) == 2
    assert one_error(capsys).startswith(f"{eval_dir / 'scores.csv'}: not an mnad scores file (")


# ------------------------------------------------------------------------------------------------ figures


@pytest.mark.parametrize(("option", "value", "keyword"), [
    ("--frames", "0", "frames"), ("--frames", "-1", "frames"), ("--clips", "0", "clips"), ("--clips", "-1", "clips"),
    ("--queries", "-5", "max_queries"),
])
def test_figures_count_options_below_one(run: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str,
                                         keyword: str) -> None:
    from mnad.checkpoint import load_model
    from mnad.figures import memory_figures

    out = tmp_path / "figures"
    assert main(["figures", "--checkpoint", str(run["model"]), "--data-root", str(run["root"]), "--out", str(out), option, value]) == 2
    assert one_error(capsys) == f"{option} must be a whole number >= 1, got {value}"
    assert not out.exists()
    model, config = load_model(run["model"])
    with pytest.raises(ConfigError, match=f"^{option} must be"):
        memory_figures(model, config, run["root"], out, **{keyword: int(value)})


def test_figures_seed_out_of_range(run: dict, tmp_path: Path) -> None:
    from mnad.checkpoint import load_model
    from mnad.figures import memory_figures

    model, config = load_model(run["model"])
    with pytest.raises(ConfigError, match=r"^--seed must be a whole number in \[0, 2\*\*32\), got -1"):
        memory_figures(model, config, run["root"], tmp_path / "f", seed=-1)


def test_figures_out_that_cannot_be_a_folder(run: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["figures", "--checkpoint", str(run["model"]), "--data-root", str(run["root"]), "--clips", "2", "--queries", "20"]
    existing = tmp_path / "v.avi"
    existing.write_bytes(b"video")
    assert main([*common, "--out", str(existing)]) == 2
    assert one_error(capsys) == f"{existing}: --out must be a folder, and this is a file"
    assert existing.read_bytes() == b"video"
    below_a_file = existing / "figures"
    assert main([*common, "--out", str(below_a_file)]) == 2
    assert one_error(capsys) == f"{below_a_file}: cannot write there ({existing} is a file, not a folder)"  # before any work


def test_figures_refuse_a_change_to_the_models_settings(run: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "figures"
    assert main(["figures", "--checkpoint", str(run["model"]), "--data-root", str(run["root"]), "--out", str(out),
                 "--set", "model.width=4"]) == 2
    assert one_error(capsys).startswith("the config's model settings differ from the model's: model.width=4 (the model has 8)")
    assert not out.exists()


def test_the_readers_of_mnad_files_name_a_damaged_one(tmp_path: Path) -> None:
    """mnad.outputs owns the formats: its readers check them for every caller (report, scripts, resume)."""
    from mnad.outputs import read_scores, read_train_log

    log = tmp_path / "train_log.jsonl"
    log.write_bytes(b'{"epoch": 1, "seconds": 2.0}\n\xff\xfe garbage\n{"epoch": 2, "seconds": 2.0}\n')
    assert [r["epoch"] for r in read_train_log(log)] == [1, 2]  # a damaged line is skipped, as a cut one is (resume repairs it)
    scores = tmp_path / "scores.csv"
    scores.write_text("video,frame,score\n01,4,0.5\n01,5,high\n")
    with pytest.raises(DataError, match=r"scores.csv: not an mnad scores file \(line 3: score 'high' is not a number\)"):
        read_scores(scores)
    scores.write_bytes(b"video,frame,score\n\xff\n")
    with pytest.raises(DataError, match=r"scores.csv: not UTF-8 text"):
        read_scores(scores)
