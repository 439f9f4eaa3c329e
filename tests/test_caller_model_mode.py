"""Readers of a model's features that are not the streaming scorer (figures' queries, the report's thumbnails) leave
the caller's model in the mode it was in: a caller mid-training keeps training with BatchNorm's batch statistics."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import tiny_config

from mnad.data import split_videos
from mnad.evaluate import evaluate
from mnad.figures import model_queries
from mnad.model import MNAD
from mnad.report import create_report


def training_model() -> tuple[MNAD, object]:
    torch.manual_seed(0)
    config = tiny_config()
    model = MNAD(config.model)
    model.train()
    return model, config


def test_figures_queries_leave_the_callers_model_in_training_mode(synthetic_root: Path) -> None:
    model, _ = training_model()
    videos = split_videos(synthetic_root, "synthetic", "testing")
    queries, frames = model_queries(model, videos, [(0, 10), (1, 20)])
    assert queries.shape[0] == frames.shape[0] == 2
    assert all(m.training for m in model.modules())  # was: left in eval mode


def test_the_report_leaves_the_callers_model_in_training_mode(synthetic_root: Path, tmp_path: Path) -> None:
    model, config = training_model()
    evaluate(model, config, synthetic_root, out_dir=tmp_path / "e", progress=False)
    model.train()  # whatever evaluate did, the report is what is checked here
    create_report(model, config, synthetic_root, tmp_path / "e", tmp_path / "r", top_k=2)
    assert all(m.training for m in model.modules())  # was: left in eval mode by the thumbnails
