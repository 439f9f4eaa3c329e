"""`mnad report` shows the training of the evaluated model only: the run folder evaluate records, or the one the
evaluation sits in, taken only when it trained that model; else the training run is said to be unknown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_config

from mnad.checkpoint import MODEL_FILE, load_model
from mnad.evaluate import evaluate
from mnad.outputs import METRICS_FILE
from mnad.report.build import rebuild_report
from mnad.train import train

UNKNOWN = "The training run of the evaluated model is unknown"


@pytest.fixture(scope="module")
def runs(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    for name, seed in (("a", 0), ("b", 7)):
        config = tiny_config().override(["train.epochs=1", "train.threads=1", "train.bf16=false", f"train.seed={seed}"])
        train(config, synthetic_root, root / name, progress=False)
    return root


def evaluated(run: Path, out: Path, synthetic_root: Path) -> Path:
    model, config = load_model(run / MODEL_FILE)
    evaluate(model, config, synthetic_root, out_dir=out, progress=False, checkpoint=run, overwrite=True)
    return out


def page_and_run_dir(eval_dir: Path) -> tuple[str, object]:
    page = rebuild_report(eval_dir).read_text()
    return page, json.loads((eval_dir / "report" / "provenance.json").read_text())["run_dir"]


def test_an_evaluation_in_another_runs_folder_shows_no_training(runs: Path, synthetic_root: Path) -> None:
    out = evaluated(runs / "b", runs / "a" / "evalB", synthetic_root)
    record = json.loads((out / METRICS_FILE).read_text())["metrics"]["model"]
    assert record["run_dir"] == "../../b" and len(record["weights_sha256"]) == 64
    page, run_dir = page_and_run_dir(out)
    assert run_dir == "../../../b" and "epochs logged in <code>../../../b/train_log.jsonl" in page


def test_without_a_recorded_run_folder_the_folder_above_must_hold_the_model(runs: Path, synthetic_root: Path) -> None:
    model, config = load_model(runs / "b" / MODEL_FILE)
    out = runs / "a" / "evalB2"  # no checkpoint given (the API): the weights digest tells runs/a is not its run
    evaluate(model, config, synthetic_root, out_dir=out, progress=False, overwrite=True)
    page, run_dir = page_and_run_dir(out)
    assert run_dir is None and UNKNOWN in page and "epochs logged" not in page


def test_an_older_evaluation_is_given_the_folder_above_only_if_its_config_matches(runs: Path, synthetic_root: Path) -> None:
    for run, shown in (("b", False), ("a", True)):
        out = evaluated(runs / run, runs / "a" / f"old_{run}", synthetic_root)
        data = json.loads((out / METRICS_FILE).read_text())
        del data["metrics"]["model"]  # as written before evaluate recorded its model
        (out / METRICS_FILE).write_text(json.dumps(data))
        page, run_dir = page_and_run_dir(out)
        assert (run_dir == "../..") is shown and ("epochs logged" in page) is shown and (UNKNOWN in page) is not shown


def test_an_evaluation_of_the_runs_own_model_shows_its_training(runs: Path, synthetic_root: Path) -> None:
    model, config = load_model(runs / "a" / MODEL_FILE)
    out = runs / "a" / "evalA"
    evaluate(model, config, synthetic_root, out_dir=out, progress=False, overwrite=True)  # the digest alone is enough
    page, run_dir = page_and_run_dir(out)
    assert run_dir == "../.." and "epochs logged" in page


def test_the_command_records_the_run_folder_of_its_checkpoint(runs: Path, synthetic_root: Path) -> None:
    """`mnad evaluate --checkpoint RUN` records RUN in metrics.json as the API does (was: the command left it out)."""
    from mnad.cli import main

    out = runs / "a" / "evalB_cli"
    assert main(["evaluate", "--checkpoint", str(runs / "b"), "--data-root", str(synthetic_root), "--out", str(out),
                 "--quiet"]) == 0
    assert json.loads((out / METRICS_FILE).read_text())["metrics"]["model"]["run_dir"] == "../../b"
