"""Each piece of stream state has one owner: the window's frames are held once (``stream.ClipWindow``, the uint8
frame a state saves paired with the tensor a clip scores), the scoring step names its eval settings for what they are,
and a Config is checked where Configs live (``config.checked_config``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_config

from mnad.config import EvalConfig, checked_config
from mnad.data import to_tensor
from mnad.errors import ConfigError
from mnad.model import MNAD
from mnad.stream import ClipWindow, ScoringStep, StreamScorer


def frame(value: int) -> np.ndarray:
    return np.full((4, 4, 3), value, dtype=np.uint8)


def test_a_clip_window_keeps_each_frame_with_its_tensor() -> None:
    window = ClipWindow(3)
    assert (window.size, len(window), window.full, window.frames()) == (3, 0, False, [])
    frames = [frame(v) for v in (10, 20, 30, 40)]
    for f in frames[:3]:
        window.append(f, to_tensor(f))
    assert window.full and [f[0, 0, 0] for f in window.frames()] == [10, 20, 30]
    mark = window.mark()
    window.append(frames[3], to_tensor(frames[3]))  # the oldest falls out of both at once
    assert [f is g for f, g in zip(window.frames(), frames[1:], strict=True)] == [True] * 3
    assert torch.equal(window.clip(), to_tensor(np.stack(frames[1:]))[None])  # (1, T, C, H, W), oldest first
    window.replace(mark)  # back as marked: the frames and their tensors together
    assert window.frames() == frames[:3] and torch.equal(window.clip(), to_tensor(np.stack(frames[:3]))[None])
    window.replace()
    assert (len(window), window.full, window.frames()) == (0, False, [])


def test_a_scorer_saves_the_frames_its_clips_score() -> None:
    torch.manual_seed(0)
    config = tiny_config()
    scorer = StreamScorer.for_model(MNAD(config.model), config, normalization="causal")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(config.model.t_length + 2)]
    for f in frames:
        scorer.push(f)
    saved = scorer.state().window
    assert len(saved) == config.model.t_length  # the frames pushed, as copies of the window's own (not the caller's arrays)
    assert all(np.array_equal(a, b) and not np.shares_memory(a, b) for a, b in zip(saved, frames[-len(saved):], strict=True))
    assert torch.equal(scorer._window.clip(), to_tensor(np.stack(saved))[None])
    scorer.new_video()
    assert scorer.state().window == [] and len(scorer._window) == 0


def test_the_scoring_step_names_its_eval_settings() -> None:
    torch.manual_seed(0)
    config = tiny_config()
    step = ScoringStep(MNAD(config.model), config)
    assert isinstance(step.eval_config, EvalConfig) and step.eval_config == config.eval
    assert not hasattr(step, "cfg")


def test_checked_config_lives_with_the_config() -> None:
    config = tiny_config()
    assert checked_config(config) is config
    with pytest.raises(ConfigError, match="must be a mnad Config"):
        checked_config({"eval": {}})
    config.eval.gamma = -1  # changed by hand after it was validated
    with pytest.raises(ConfigError, match="eval.gamma"):
        checked_config(config)
