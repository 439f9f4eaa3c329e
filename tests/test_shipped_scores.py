"""The scoring redesign changed no number: the shipped model scores Ped2's first test video through the streaming
scorer as the committed evaluation (results/ped2-pred-shipped/scores.csv, made before the redesign) did.

On one machine the old and the new code give bit-identical PSNR, D and E_t (checked when the redesign landed); across
CPUs the convolution kernels round differently (an AVX2 AMD EPYC against the AVX-512 Xeon that wrote the file: up to
5e-5 dB of PSNR), hence the tolerances."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from mnad.checkpoint import load_model
from mnad.data import split_videos
from mnad.evaluate import score_videos

COMMITTED = Path(__file__).resolve().parents[1] / "results" / "ped2-pred-shipped" / "scores.csv"


def test_shipped_model_scores_the_first_ped2_video_as_committed(ped2_root: Path) -> None:
    model, config = load_model("ped2-pred")
    video = split_videos(ped2_root.parent, "ped2", "testing")[0]  # the memory starts from the trained items: a prefix
    got = score_videos(model, config, [video], progress=False)[0]
    with COMMITTED.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["video"] == video.name]
    assert [int(r["frame"]) for r in rows] == got.frames.tolist()
    np.testing.assert_allclose(got.psnr, [float(r["psnr"]) for r in rows], atol=5e-4)
    np.testing.assert_allclose(got.distance, [float(r["distance"]) for r in rows], rtol=1e-3, atol=1e-8)
    np.testing.assert_allclose(got.regular, [float(r["regular_score"]) for r in rows], rtol=1e-3, atol=1e-8)
    assert got.updated.tolist() == [r["memory_updated"] == "1" for r in rows]
