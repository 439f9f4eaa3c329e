"""scripts/gpu_paper_recipe.py, the GPU machine's one command, end to end on a CPU (--tiny, gloo), so that it works the
first time a GPU is at hand: pack a tiny synthetic dataset, unpack it, train 2 seeds at once, check DDP with 2 ranks,
score, and write the JSON."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

from mnad.data.synthetic import make_synthetic_dataset

SCRIPT = "scripts/gpu_paper_recipe.py"


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 training and 3 test videos of 24 frames; the pack keeps the first 2 of each, at 32x32."""
    tmp = tmp_path_factory.mktemp("gpu_script")
    data = make_synthetic_dataset(tmp / "data", n_train=3, n_test=3, n_frames=24, size=48, seed=0)
    return load_script(SCRIPT).pack(data, tmp / "pack", size=32, videos=2)


def test_pack_unpacks_into_the_layout_mnad_reads(packed: Path, tmp_path: Path) -> None:
    script = load_script(SCRIPT)
    manifest = json.loads((packed / "manifest.json").read_text())
    assert [len(manifest["videos"][s]) for s in ("training", "testing")] == [2, 2]
    assert all(e["psnr_db"] > 30 for entries in manifest["videos"].values() for e in entries)
    unpacked = script.unpack(packed, tmp_path / "root")
    assert unpacked["frames"] == 96 and unpacked["max_mean_diff"] <= script.MEAN_TOLERANCE

    from mnad.data import split_videos
    from mnad.data.labels import find_label_file, load_labels

    videos = split_videos(tmp_path / "root", "synthetic", "testing")
    assert [v.name for v in videos] == ["01", "02"] and videos[0].frame(0, 32, 3).shape == (32, 32, 3)
    labels = load_labels(find_label_file(tmp_path / "root" / "synthetic", "synthetic"), videos)  # the 2 packed videos' labels
    original = np.load(packed.parent.parent / "data" / "synthetic" / "frame_labels_synthetic.npy").ravel()
    assert np.array_equal(np.concatenate(labels), original[:48])

    # a video that decodes differently here than where it was packed is refused before anything trains
    manifest["videos"]["testing"][1]["mean"] += 5
    (packed / "manifest.json").write_text(json.dumps(manifest))
    try:
        with pytest.raises(script.PackError, match="decodes to a mean"):
            script.unpack(packed, tmp_path / "again")
    finally:
        manifest["videos"]["testing"][1]["mean"] -= 5
        (packed / "manifest.json").write_text(json.dumps(manifest))


def test_tiny_run_trains_the_seeds_checks_ddp_and_writes_the_json(packed: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc = load_script(SCRIPT).main(["run", "--pack", str(packed), "--device", "cpu", "--tiny", "--seeds", "0", "1", "--out", str(out),
                             "--work", str(tmp_path / "work")])
    result = json.loads((out / "gpu_paper_recipe.json").read_text())
    assert rc == 0, result.get("error") or result
    assert result["config"]["dataset"] == "synthetic" and result["config"]["model"]["image_size"] == 32
    seeds = result["seeds"]
    assert [s["seed"] for s in seeds] == [0, 1]
    for s in seeds:
        assert "error" not in s, s["error"]
        assert s["epochs_done"] == s["epochs_planned"] == 1 and not s["stopped_early"]
        assert s["frames_scored"] == 2 * (24 - 4) and 0 <= s["micro_auc"] <= 1
    assert seeds[0]["epoch_s_estimate"] == seeds[1]["epoch_s_estimate"]  # the seeds plan with one shared estimate
    assert seeds[0]["last_epoch"]["loss_total"] != seeds[1]["last_epoch"]["loss_total"]  # different seeds, different runs
    assert result["summary"]["seeds_scored"] == 2
    ddp = result["ddp"]
    assert ddp["ok"] and ddp["backend"] == "gloo"
    (attempt,) = ddp["attempts"]
    assert attempt["world_size"] == 2 and attempt["all_reduce_ok"] and attempt["devices"] == ["cpu", "cpu"]
    assert len(attempt["log"]) == 1 and attempt["log"][0]["loss_total"] > 0
    # the device tool brings at most 8 files back from $OUT: the JSON and one archive of every log
    assert sorted(p.name for p in out.iterdir()) == ["gpu_paper_recipe.json", "logs.tar.gz"] and result["logs"] == "logs.tar.gz"
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"seed0.log", "seed1.log", "seed0_train_log.jsonl", "seed1_config.json", "seed1_metrics.json", "ddp_gloo.log"} <= names


def test_pack_replaces_an_earlier_pack_only_with_one_that_fits(packed: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    script = load_script(SCRIPT)
    data, out = packed.parent.parent / "data" / "synthetic", tmp_path / "pack"
    dest = script.pack(data, out, size=32, videos=1)
    first = (dest / "manifest.json").read_bytes()
    # the working tree and the pack do not fit in the limit: refused, one error line, the earlier pack as it was
    rc = script.main(["pack", "--data", str(data), "--out", str(out), "--size", "32", "--videos", "2", "--limit-mib", "0.01"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and err[0].startswith("gpu_paper_recipe.py: error: ") and "over the 0.01 MiB" in err[0]
    assert (dest / "manifest.json").read_bytes() == first and [p.name for p in out.iterdir()] == [dest.name]
    # one that fits replaces it whole
    assert script.main(["pack", "--data", str(data), "--out", str(out), "--size", "32", "--videos", "2"]) == 0
    assert "MiB of the 64 MiB" in capsys.readouterr().out
    assert [len(v) for v in json.loads((dest / "manifest.json").read_text())["videos"].values()] == [2, 2]
    assert [p.name for p in out.iterdir()] == [dest.name]


def test_pack_of_a_folder_that_is_no_dataset_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = load_script(SCRIPT).main(["pack", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "pack")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and err[0].startswith("gpu_paper_recipe.py: error: ") and "no dataset" in err[0]
    assert list((tmp_path / "pack").iterdir()) == []  # no half-made pack left


def test_a_seed_out_of_time_stops_after_an_epoch_and_scores_that_epoch(packed: Path, tmp_path: Path) -> None:
    """The deadline (less the time kept for scoring) is already past after the first of 3 epochs: the seed stops
    there and scores the model of its training checkpoint (mnad.checkpoint.load_model)."""
    out = tmp_path / "out"
    rc = load_script(SCRIPT).main(["run", "--pack", str(packed), "--device", "cpu", "--tiny", "--seeds", "0", "--no-ddp",
                                   "--epochs", "3", "--budget-seconds", "120", "--eval-reserve", "119.9", "--out", str(out),
                                   "--work", str(tmp_path / "work")])
    result = json.loads((out / "gpu_paper_recipe.json").read_text())
    assert rc == 0, result.get("error") or result
    (seed,) = result["seeds"]
    assert seed["stopped_early"] and seed["epochs_planned"] == 3 and seed["epochs_done"] == 1
    assert seed["frames_scored"] == 2 * (24 - 4) and 0 <= seed["micro_auc"] <= 1


def test_training_clips_are_counted_as_train_counts_them(packed: Path, tmp_path: Path) -> None:
    script = load_script(SCRIPT)
    unpacked = script.unpack(packed, tmp_path / "root")
    config = script.build_config(argparse.Namespace(device="cpu", tiny=True, recipe="synthetic_pred", overrides=[]), unpacked)
    root = Path(unpacked["root"])
    assert script.training_clips(config, root) == 2 * (24 - config.model.t_length + 1)
    assert script.training_clips(config, root, stride=4) == 2 * len(range(0, 24 - config.model.t_length + 1, 4))
    held = config.override(["train.holdout=0.5"])  # train leaves the held-out frames out of its clips: so does the count
    assert script.training_clips(held, root) < script.training_clips(config, root)


def test_gpu_run_without_torch_answers_with_one_json_and_one_error_line(tmp_path: Path) -> None:
    python = tmp_path / 'no "torch" here'  # a quote in the message: the JSON still parses
    python.write_text("#!/bin/sh\nexit 1\n")
    python.chmod(0o755)
    out = tmp_path / "out"
    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_run.sh"
    done = subprocess.run(["bash", str(script)], env={**os.environ, "OUT": str(out), "PYTHON": str(python)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == f"gpu_run.sh: error: torch cannot be imported by {python}"
    assert [p.name for p in out.iterdir()] == ["gpu_paper_recipe.json"]  # no temporary file left
    assert json.loads((out / "gpu_paper_recipe.json").read_text())["error"] == f"torch cannot be imported by {python}"
