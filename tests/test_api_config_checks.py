"""The public entry points check a Config changed by hand after it was made as a config file is checked (one
ConfigError, before any folder is made or footage read); a stream's state is not taken while a clip waits for its
result (save_state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FakeVideo, tiny_config

from mnad.calibrate import calibrate
from mnad.config import Config
from mnad.detect import detect
from mnad.errors import ConfigError
from mnad.evaluate import evaluate, score_videos
from mnad.export import export_onnx
from mnad.model import MNAD
from mnad.stream import StreamScorer, scoring_step

# what a config file with each change gets from Config.validate
CHANGES = {
    "gamma": (lambda c: setattr(c.eval, "gamma", -1.0), r"eval\.gamma \(--gamma\) must be >= 0"),
    "alpha": (lambda c: setattr(c.eval, "alpha", 5.0), r"eval\.alpha must lie in \[0, 1\]"),
    "image_size": (lambda c: setattr(c.model, "image_size", 0), r"model\.image_size must be a multiple of 8"),
}


@pytest.fixture
def bf16_native(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine where bf16 is native (AMX CPUs, GPUs): there the scoring step keeps the config as given; elsewhere
    ``scoring_step`` replaces it by an fp32 copy (``Config.override``), which happened to validate it."""
    monkeypatch.setattr("mnad.precision.bf16_is_native", lambda device: True)


def model_and_changed(change: str) -> tuple[MNAD, Config, str]:
    """A tiny model and its config (bf16 scoring), then changed by hand (as a Python user may) after it was validated."""
    torch.manual_seed(0)
    config = tiny_config()
    config.eval.bf16 = True
    model = MNAD(config.model)
    edit, message = CHANGES[change]
    edit(config)
    return model, config, message


@pytest.mark.parametrize("change", list(CHANGES))
def test_stream_scorer_checks_a_config_changed_by_hand(change: str, bf16_native: None) -> None:
    model, config, message = model_and_changed(change)
    with pytest.raises(ConfigError, match=message):
        StreamScorer.for_model(model, config, normalization="causal")
    with pytest.raises(ConfigError, match=message):
        StreamScorer.for_streams(model, config, 2, normalization="causal")


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_stream_scorer_built_directly_checks_its_config(change: str) -> None:
    torch.manual_seed(0)
    config = tiny_config()
    model = MNAD(config.model)
    step = scoring_step(model, config)
    CHANGES[change][0](config)
    with pytest.raises(ConfigError, match=CHANGES[change][1]):
        StreamScorer(step, config, model.memory.items, normalization="causal")


@pytest.mark.parametrize("change", list(CHANGES))
def test_score_videos_checks_a_config_changed_by_hand(change: str, bf16_native: None) -> None:
    model, config, message = model_and_changed(change)
    with pytest.raises(ConfigError, match=message):
        score_videos(model, config, [FakeVideo("a", 8)], progress=False)


@pytest.mark.parametrize("change", list(CHANGES))
def test_evaluate_checks_a_config_changed_by_hand_before_out_is_made(change: str, tmp_path: Path) -> None:
    model, config, message = model_and_changed(change)
    with pytest.raises(ConfigError, match=message):
        evaluate(model, config, tmp_path / "no-data", out_dir=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change", list(CHANGES))
def test_detect_checks_a_config_changed_by_hand_before_out_is_made(change: str, tmp_path: Path) -> None:
    model, config, message = model_and_changed(change)
    with pytest.raises(ConfigError, match=message):
        detect(model, config, str(tmp_path / "no-source"), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change", list(CHANGES))
def test_calibrate_checks_a_config_changed_by_hand_before_reading_footage(change: str, bf16_native: None) -> None:
    model, config, message = model_and_changed(change)
    with pytest.raises(ConfigError, match=message):
        calibrate(model, config, [FakeVideo("a", 12), FakeVideo("b", 12)], progress=False)


@pytest.mark.parametrize("change", list(CHANGES))
def test_export_onnx_checks_a_config_changed_by_hand_before_reading_footage(change: str, tmp_path: Path) -> None:
    model, config, message = model_and_changed(change)
    with pytest.raises(ConfigError, match=message):
        export_onnx(model, config, tmp_path / "m.onnx", int8=True, calibration=[FakeVideo("a", 12)], calibration_clips=2)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("entry", ["for_model", "score_videos", "detect"])
def test_what_is_not_a_config_is_one_config_error(entry: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MNAD(tiny_config().model)
    data = tiny_config().to_dict()
    with pytest.raises(ConfigError, match="config must be a mnad Config"):
        if entry == "for_model":
            StreamScorer.for_model(model, data, normalization="causal")
        elif entry == "score_videos":
            score_videos(model, data, [FakeVideo("a", 8)], progress=False)
        else:
            detect(model, data, str(tmp_path / "no-source"), tmp_path / "out", progress=False)


# ------------------------------------------------------------------------------------- state with a clip pending


def test_the_state_is_refused_while_a_clip_waits_for_its_result(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = tiny_config()
    model = MNAD(config.model)
    scorer = StreamScorer.for_model(model, config, normalization="causal")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(config.model.t_length + 1)]
    for f in frames[:-2]:
        scorer.push(f)
    clip = scorer.clip(frames[-2])
    assert clip is not None
    path = tmp_path / "state.safetensors"
    with pytest.raises(ConfigError, match=r"consume\(\)"):
        scorer.save_state(path)
    assert not path.exists()
    with pytest.raises(ConfigError, match=r"consume\(\)"):
        scorer.state()  # the same rule: restored elsewhere, the pending frame would never be scored (was: answered)
    # its result taken, the state saves, and a restored scorer goes on as this one does
    with torch.inference_mode():
        result = scorer.step(*clip, scorer._items)
    scorer.consume(result)
    scorer.save_state(path)
    other = StreamScorer.for_model(model, config, normalization="causal")
    other.load_state(path)
    a, b = scorer.push(frames[-1]), other.push(frames[-1])
    assert a is not None and b is not None and a.index == b.index and a.score == pytest.approx(b.score)
