"""Train a tiny model on the generated scene, evaluate it, resume it: the whole pipeline in a few seconds.

Sizes: 32x32 frames, width 8, 2 training videos of 24 frames (40 clips, 10 steps an epoch). With lr 1e-3 and 2
epochs the micro AUC over seeds 0-23 ranged 0.80-0.99 (macro 0.90-1.00), so the 0.7 bar has a clear margin.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

from mnad.checkpoint import MODEL_FILE, TRAIN_STATE_FILE, load_model, read_checkpoint
from mnad.config import Config
from mnad.errors import CheckpointError
from mnad.evaluate import evaluate
from mnad.model import MNAD
from mnad.train import LOG_FILE, train

EPOCHS = 2
FRAMES, TEST_VIDEOS = 24, 2  # the synthetic_root fixture


def e2e_config(**model: object) -> Config:
    config = tiny_config(**model)
    config.train.epochs = EPOCHS
    config.train.lr = 1e-3
    config.train.batch_size = 4
    config.train.seed = 0
    config.train.bf16 = False
    return config


@pytest.fixture(scope="module")
def trained_run(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted 2-epoch run (pred with memory), shared by the tests below, which copy it to change it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("run")
        path = train(e2e_config(), synthetic_root, out, progress=False)
    finally:
        torch.set_num_threads(before)
    assert path == out / MODEL_FILE
    return out


def state_of(path: Path) -> dict[str, torch.Tensor]:
    model, _ = load_model(path)
    return model.state_dict()


def assert_states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ: {different[:5]}"


def test_training_writes_run_folder(trained_run: Path) -> None:
    assert (trained_run / MODEL_FILE).is_file() and (trained_run / TRAIN_STATE_FILE).is_file()
    log = [json.loads(line) for line in (trained_run / LOG_FILE).read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert all(np.isfinite(r["loss_total"]) for r in log)
    assert log[1]["loss_frame"] < log[0]["loss_frame"]  # it learns
    # each epoch's own rate: cosine annealing from train.lr, stepped once per epoch
    assert log[0]["lr"] == pytest.approx(1e-3) and log[1]["lr"] == pytest.approx(0.5e-3)
    stored = json.loads((trained_run / "config.json").read_text())
    assert stored["model"]["image_size"] == 32 and stored["train"]["epochs"] == EPOCHS
    _, _, extra = read_checkpoint(trained_run / TRAIN_STATE_FILE)
    assert extra["epoch"] == EPOCHS
    # the memory was trained (updated every step), not left at its initialisation
    model, config = load_model(trained_run)
    torch.manual_seed(0)  # train() seeds with train.seed = 0 before building the model
    fresh = MNAD(config.model)
    assert not torch.allclose(model.memory.items, fresh.memory.items, atol=1e-3)
    torch.testing.assert_close(model.memory.items.norm(dim=1), torch.ones(10))


def test_evaluate_detects_injected_anomalies(trained_run: Path, synthetic_root: Path, tmp_path: Path) -> None:
    model, config = load_model(trained_run)
    metrics = evaluate(model, config, synthetic_root, out_dir=tmp_path, progress=False)
    assert metrics["micro_auc"] > 0.7, metrics
    assert metrics["macro_auc"] > 0.7, metrics
    assert metrics["frames_scored"] == TEST_VIDEOS * (FRAMES - 4)
    assert metrics["videos"] == TEST_VIDEOS and metrics["frames_excluded_per_video"] == 4
    with (tmp_path / "scores.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == TEST_VIDEOS * (FRAMES - 4)
    assert [int(r["frame"]) for r in rows if r["video"] == "01"] == list(range(4, FRAMES))
    assert {r["label"] for r in rows} == {"0", "1"}
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["metrics"]["micro_auc"] == pytest.approx(metrics["micro_auc"])
    assert saved["config"]["model"]["width"] == 8
    # the CSV's labels are the label file's, shifted by the 4 context frames
    labels = np.load(synthetic_root / "synthetic" / "frame_labels_synthetic.npy")[0]
    expected = np.concatenate([labels[v * FRAMES + 4 : (v + 1) * FRAMES] for v in range(TEST_VIDEOS)])
    np.testing.assert_array_equal([int(r["label"]) for r in rows], expected)


def test_evaluate_restores_memory_and_gamma_gates_updates(trained_run: Path, synthetic_root: Path) -> None:
    model, config = load_model(trained_run)
    items = model.memory.items.clone()

    config.eval.gamma = 1e9  # every frame's E_t is below: every frame updates the memory
    first = evaluate(model, config, synthetic_root, progress=False)
    assert first["memory_updates"] == TEST_VIDEOS * (FRAMES - 4)
    assert torch.equal(model.memory.items, items)  # restored after the test-time updates
    again = evaluate(model, config, synthetic_root, progress=False)
    assert again["micro_auc"] == first["micro_auc"]  # so a second evaluation starts from the same memory

    config.eval.gamma = 0.0  # E_t >= 0 is never < 0: no update
    frozen = evaluate(model, config, synthetic_root, progress=False)
    assert frozen["memory_updates"] == 0
    assert torch.equal(model.memory.items, items)

    config.eval.gamma = 1e9
    config.eval.test_update = False
    off = evaluate(model, config, synthetic_root, progress=False)
    assert off["memory_updates"] == 0
    assert off["micro_auc"] == frozen["micro_auc"]


def test_test_time_updates_change_later_distances(trained_run: Path, synthetic_root: Path, tmp_path: Path) -> None:
    model, config = load_model(trained_run)

    def distances(gamma: float, out: Path) -> np.ndarray:
        config.eval.gamma = gamma
        evaluate(model, config, synthetic_root, out_dir=out, progress=False)
        with (out / "scores.csv").open(newline="") as handle:
            return np.array([float(r["distance"]) for r in csv.DictReader(handle)])

    frozen, updated = distances(0.0, tmp_path / "a"), distances(1e9, tmp_path / "b")
    assert frozen[0] == pytest.approx(updated[0], rel=1e-6)  # the first frame is scored before any update
    assert not np.allclose(frozen[1:], updated[1:])  # later frames read an updated memory


def test_resume_after_completion_changes_nothing(trained_run: Path, synthetic_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = state_of(run / MODEL_FILE)
    log_before = (run / LOG_FILE).read_text()
    path = train(e2e_config(), synthetic_root, run, resume=True, progress=False)
    assert path == run / MODEL_FILE
    assert_states_equal(state_of(path), before)
    assert (run / LOG_FILE).read_text() == log_before  # no epoch was run again
    assert read_checkpoint(run / TRAIN_STATE_FILE)[2]["epoch"] == EPOCHS


class Interrupt(Exception):
    pass


def test_resume_from_epoch_one_matches_uninterrupted_run(trained_run: Path, synthetic_root: Path, tmp_path: Path) -> None:
    def stop_after_first(epoch: int, record: dict) -> None:
        if epoch == 1:
            raise Interrupt

    run = tmp_path / "run"
    with pytest.raises(Interrupt):
        train(e2e_config(), synthetic_root, run, progress=False, on_epoch=stop_after_first)
    assert not (run / MODEL_FILE).exists()
    assert read_checkpoint(run / TRAIN_STATE_FILE)[2]["epoch"] == 1
    partial = state_of(run / TRAIN_STATE_FILE)
    train(e2e_config(), synthetic_root, run, resume=True, progress=False)
    resumed, uninterrupted = state_of(run / MODEL_FILE), state_of(trained_run / MODEL_FILE)
    assert_states_equal(resumed, uninterrupted)  # bit-identical: weights, BN statistics, memory items
    assert not torch.equal(partial["memory.items"], resumed["memory.items"])  # the second epoch did run
    assert [json.loads(line)["epoch"] for line in (run / LOG_FILE).read_text().splitlines()] == [1, 2]


def test_resume_with_other_model_settings_is_refused(trained_run: Path, synthetic_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    with pytest.raises(CheckpointError):
        train(e2e_config(width=16), synthetic_root, run, resume=True, progress=False)


@pytest.mark.parametrize("model", [{"task": "recon", "t_length": 1}, {"memory": False}, {"task": "recon", "t_length": 4}])
def test_other_variants_train_and_evaluate(model: dict, synthetic_root: Path, tmp_path: Path) -> None:
    config = e2e_config(**model)
    config.train.epochs = 1
    config.train.keep_epochs = True
    path = train(config, synthetic_root, tmp_path / "run", progress=False)
    loaded, stored = load_model(path, expect=config)
    kept, _ = load_model(tmp_path / "run" / "epoch_001.safetensors", expect=config)  # keep_epochs: the same weights
    assert_states_equal(kept.state_dict(), loaded.state_dict())
    metrics = evaluate(loaded, stored, synthetic_root, out_dir=tmp_path / "eval", progress=False)
    skipped = stored.model.t_length - 1  # pred: the first 4; recon with 4 frames: the first 2 and the last 1
    assert metrics["frames_scored"] == TEST_VIDEOS * (FRAMES - skipped)
    assert metrics["micro_auc"] is not None and 0.0 <= metrics["micro_auc"] <= 1.0
    if not stored.model.memory:
        assert metrics["alpha"] == 1.0 and metrics["memory_updates"] == 0  # PSNR only, nothing to update
    with (tmp_path / "eval" / "scores.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == metrics["frames_scored"]
    first = stored.model.target_index  # each clip scores its target frame: the middle one for recon
    assert [int(r["frame"]) for r in rows[: FRAMES - skipped]] == list(range(first, first + FRAMES - skipped))


def test_epoch_curve_script_evaluates_each_kept_epoch(synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import runpy
    import sys

    config = e2e_config(memory=False)
    config.train.keep_epochs = True
    run = tmp_path / "run"
    train(config, synthetic_root, run, progress=False)
    assert sorted(p.name for p in run.glob("epoch_*.safetensors")) == ["epoch_001.safetensors", "epoch_002.safetensors"]
    out = tmp_path / "curve.json"
    script = Path(__file__).resolve().parents[1] / "scripts" / "epoch_curve.py"
    monkeypatch.setattr(sys, "argv", ["epoch_curve.py", str(run), "--data-root", str(synthetic_root), "--out", str(out)])
    runpy.run_path(str(script), run_name="__main__")
    curve = json.loads(out.read_text())
    assert [e["epoch"] for e in curve["epochs"]] == [1, 2]
    model, stored = load_model(run / "epoch_002.safetensors")
    assert curve["epochs"][1]["micro_auc"] == evaluate(model, stored, synthetic_root, progress=False)["micro_auc"]
    log = [json.loads(line) for line in (run / LOG_FILE).read_text().splitlines()]
    assert [e["loss_total"] for e in curve["epochs"]] == [r["loss_total"] for r in log]
    before = out.read_bytes()
    runpy.run_path(str(script), run_name="__main__")  # a rerun finds every epoch done and changes nothing
    assert out.read_bytes() == before
