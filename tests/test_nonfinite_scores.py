"""A model output that is not finite (NaN or infinite PSNR, D, E_t or updated memory: bf16/int8 overflow on unusual
footage, diverged weights) is flagged on its frame and changes nothing the later frames are scored with."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

from mnad.model import MNAD
from mnad.stream import StepResult, StreamScorer


def model_and_config(**eval_settings: object):
    torch.manual_seed(0)
    config = tiny_config().override([f"eval.{k}={v}" for k, v in eval_settings.items()])
    return MNAD(config.model), config


def frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(n)]


class Faulty:
    """The scorer's step, whose result for the ``bad``-th clip is broken by ``spoil``."""

    def __init__(self, step, bad: int, spoil) -> None:
        self.step, self.bad, self.spoil, self.calls = step, bad, spoil, 0

    def __call__(self, *args) -> StepResult:
        result = self.step(*args)
        self.calls += 1
        return self.spoil(result) if self.calls == self.bad else result


def nan_psnr(result: StepResult) -> StepResult:
    return result._replace(psnr=torch.full_like(result.psnr, math.nan))


def nan_items(result: StepResult) -> StepResult:
    # a memory update gone wrong, the frame's own terms finite
    return result._replace(items=torch.full_like(result.items, math.nan))


@pytest.mark.parametrize("spoil", [nan_psnr, nan_items])
def test_a_nonfinite_frame_is_flagged_and_changes_nothing_later_frames_see(spoil, tmp_path: Path) -> None:
    model, config = model_and_config(smoothing=3, gamma=1.0)  # gamma 1: every frame updates the memory
    video = frames(config.model.t_length + 6)
    clean = StreamScorer.for_model(model, config, normalization="causal")
    faulty = StreamScorer.for_model(model, config, normalization="causal")
    faulty.step = Faulty(faulty.step, 3, spoil)
    rows = [r for r in (faulty.push(f) for f in video) if r is not None]
    bad = rows[2]
    assert not bad.finite and not bad.updated
    assert math.isnan(bad.score) and math.isnan(bad.smoothed)
    assert all(r.finite for i, r in enumerate(rows) if i != 2)
    # every later score finite: the bad frame is not in the trailing mean nor the running ranges (was: NaN for the
    # next 2 frames' smoothed scores; with NaN items, every later D and score NaN for good)
    assert all(math.isfinite(r.smoothed) and math.isfinite(r.distance) for r in rows[3:])
    assert bool(torch.isfinite(faulty.state().items).all())
    # the state saves and loads (was: a NaN in its recent scores, refused on load)
    faulty.save_state(tmp_path / "state.safetensors")
    restored = StreamScorer.for_model(model, config, normalization="causal")
    restored.load_state(tmp_path / "state.safetensors")
    assert restored.state().recent == faulty.state().recent
    # the frames before the bad one score as a clean scorer's
    clean_rows = [r for r in (clean.push(f) for f in video) if r is not None]
    assert [r.smoothed for r in rows[:2]] == [r.smoothed for r in clean_rows[:2]]
