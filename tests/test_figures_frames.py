"""The memory figures (review, 2026-12-02): each model's shown frame named (was: the clip's last frame, 7 frames off for
a reconstruction model of 16), and the weights they were drawn from recorded in figures.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_config


def test_memory_figures_label_each_models_shown_frame_and_record_its_weights(synthetic_root: Path, tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A reconstruction model of 16 frames shows and queries the clip's 9th frame, 7 before its last: its title and
    figures.json say that frame, and a prediction model compared on the same clips its own, the last (was: both
    'frame <last>')."""
    from matplotlib.axes import Axes

    from mnad.checkpoint import weights_digest
    from mnad.figures import memory_figures
    from mnad.model import MNAD

    titles: list[str] = []
    original = Axes.set_title
    monkeypatch.setattr(Axes, "set_title", lambda self, label, *a, **k: (titles.append(str(label)), original(self, label, *a, **k))[1])
    torch.manual_seed(0)
    config = tiny_config(task="recon", t_length=16)
    recon, pred = MNAD(config.model), MNAD(tiny_config().model)
    record = memory_figures(recon, config, synthetic_root, tmp_path / "f", pred, labels=("recon", "pred"), frames=2, clips=4,
                            max_queries=50)
    assert record["weights_sha256"] == weights_digest(recon)
    assert [m["weights_sha256"] for m in record["models"]] == [weights_digest(recon), weights_digest(pred)]
    for shown in record["shown_frames"]:
        last = shown["clip_last_frame"]
        assert shown["frames"] == [last - 7, last]
        assert f"recon\nvideo {shown['video']}, frame {last - 7}: nearest item" in titles
        assert f"pred\nvideo {shown['video']}, frame {last}: nearest item" in titles
    assert json.loads((tmp_path / "f" / "figures.json").read_text()) == record

