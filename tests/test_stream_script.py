"""scripts/ped2_stream.py, which makes the stream-protocol table of docs/results.md, on a tiny generated scene."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from conftest import tiny_config

from mnad.data.synthetic import make_synthetic_dataset
from mnad.train import train

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ped2_stream.py"


def test_stream_script_reproduces_the_package_and_scores_every_attempt(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_synthetic_dataset(root, n_train=3, n_test=2, n_frames=120, size=32, seed=0)
    config = tiny_config()
    config.train.holdout_videos = ["02", "03"]
    train(config, root, tmp_path / "run", progress=False)
    spec = importlib.util.spec_from_file_location("ped2_stream", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--run", str(tmp_path / "run"), "--data-root", str(root), "--out", str(tmp_path / "local"), "--fps", "25",
                 "--psnr-region", "patch", "--distance-region", "patch", "--scoring", "config"])
    local = json.loads((tmp_path / "local" / "attempts.json").read_text())
    assert local["reproduces_the_package"] and local["reference_attempt"] == "patch PSNR + patch D, calibrated, 5-frame mean"
    calibration = json.loads((tmp_path / "local" / "metrics.json").read_text())["config"]["eval"]["calibration"]
    assert (calibration["psnr_region"], calibration["distance_region"]) == ("patch", "patch")
    module.main(["--run", str(tmp_path / "run"), "--data-root", str(root), "--out", str(tmp_path / "out"), "--fps", "25"])
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
