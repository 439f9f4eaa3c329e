"""scripts/ped2_stream.py, which makes the stream-protocol table of docs/results.md, on a tiny generated scene."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
from conftest import tiny_config

from mnad.data.synthetic import make_synthetic_dataset
from mnad.train import train

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ped2_stream.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ped2_stream", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data root, run folder): a tiny model trained with two whole training videos held out."""
    tmp = tmp_path_factory.mktemp("stream_script")
    root = tmp / "data"
    make_synthetic_dataset(root, n_train=3, n_test=2, n_frames=120, size=32, seed=0)
    config = tiny_config()
    config.train.holdout_videos = ["02", "03"]
    train(config, root, tmp / "run", progress=False)
    return root, tmp / "run"


def test_stream_script_reproduces_the_package_and_scores_every_attempt(trained: tuple[Path, Path], tmp_path: Path) -> None:
    root, run = trained
    module = load()
    module.main(["--run", str(run), "--data-root", str(root), "--out", str(tmp_path / "local"), "--fps", "25",
                 "--psnr-region", "patch", "--distance-region", "patch", "--scoring", "config"])
    local = json.loads((tmp_path / "local" / "attempts.json").read_text())
    assert local["reproduces_the_package"] and local["reference_attempt"] == "patch PSNR + patch D, calibrated, 5-frame mean"
    calibration = json.loads((tmp_path / "local" / "metrics.json").read_text())["config"]["eval"]["calibration"]
    assert (calibration["psnr_region"], calibration["distance_region"]) == ("patch", "patch")
    module.main(["--run", str(run), "--data-root", str(root), "--out", str(tmp_path / "out"), "--fps", "25"])
    record = json.loads((tmp_path / "out" / "attempts.json").read_text())
    assert record["reproduces_the_package"] and record["held_out"] == ["02[0:120]", "03[0:120]"]
    # the default: the scoring chosen on pseudo-anomalies of the held-out videos, and the package scores with it
    chosen = max(record["pseudo_anomaly_auc"], key=record["pseudo_anomaly_auc"].get)
    assert record["reference_attempt"] == chosen.replace(", ", ", calibrated, ", 1) and record["scoring"] == "choose"
    assert len(record["attempts"]) == len(module.ATTEMPTS)
    calibrated = [a for a in record["attempts"] if a["normalization"] == "calibrated"]
    assert all(0 <= a["held_out_leave_one_out_far"]["0.01"] <= 1 for a in calibrated)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]
    assert metrics["protocol"] == "stream" and metrics["stream"]["event_measures"]["videos_with_anomaly"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local", "out"]  # no temporary folder left beside them


def committed(folder: Path) -> dict[str, bytes]:
    folder.mkdir(parents=True)
    for name in ("metrics.json", "scores.csv", "attempts.json", "commands.txt"):
        (folder / name).write_text(f"the committed {name}\n")
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_run_that_fails_late_leaves_the_committed_folder_as_it_was(trained: tuple[Path, Path], tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Step 3 fails after step 2 scored the test set: metrics.json and scores.csv used to be new by then, beside the
    previous run's attempts.json (a README row from the two)."""
    root, run = trained
    out = tmp_path / "results" / "ped2_stream"
    before = committed(out)
    module = load()

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("step 3 failed")

    monkeypatch.setattr(module, "leave_one_out", fail)
    with pytest.raises(RuntimeError, match="step 3 failed"):
        module.main(["--run", str(run), "--data-root", str(root), "--out", str(out), "--fps", "25", "--scoring", "config"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in out.parent.iterdir()] == ["ped2_stream"]  # the temporary folder is gone


def test_a_run_that_does_not_reproduce_the_package_keeps_its_files_aside(trained: tuple[Path, Path], tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    root, run = trained
    out = tmp_path / "results" / "ped2_stream"
    before = committed(out)
    module = load()
    evaluate = module.evaluate

    def off(*args: object, **kwargs: object) -> dict:
        return {**evaluate(*args, **kwargs), "micro_auc": -1.0}

    monkeypatch.setattr(module, "evaluate", off)
    assert module.main(["--run", str(run), "--data-root", str(root), "--out", str(out), "--fps", "25", "--scoring", "config"]) == 1
    said = capsys.readouterr().err.splitlines()[-1]  # after the progress bars
    assert said.startswith("ped2_stream.py: error:") and "differs from the package's stream protocol" in said
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    (aside,) = [p for p in out.parent.iterdir() if p != out]
    assert str(aside) in said and (aside / "attempts.json").is_file()
    assert not json.loads((aside / "attempts.json").read_text())["reproduces_the_package"]


def test_a_run_folder_without_held_out_videos_is_one_error_line(trained: tuple[Path, Path], tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A user's mistake (the run has no holdout.json) was a traceback, and its temporary folder stayed beside --out."""
    import shutil

    root, trained_run = trained
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))  # the fixture's run is shared with the other tests
    (run / "holdout.json").unlink()
    out = tmp_path / "results" / "ped2_stream"
    assert load().main(["--run", str(run), "--data-root", str(root), "--out", str(out), "--fps", "25"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ped2_stream.py: error:") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
