"""Design review items 2 and 3: calibration scores its footage with evaluate's one per-video loop
(``evaluate.score_frames``), and ``mnad calibrate``'s workflow (the shipped-model refusal, the held-out default, the
record, the save) is the API's ``calibrate.calibrate_checkpoint``, the CLI only parsing and printing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

import mnad.calibrate
from mnad.calibrate import TERMS, calibrate_checkpoint, footage_terms
from mnad.checkpoint import load_model
from mnad.data import Video, split_videos
from mnad.errors import ConfigError, DataError
from mnad.evaluate import score_frames
from mnad.model import MNAD


def test_footage_terms_are_the_terms_of_evaluates_loop(model_file: Path, synthetic_root: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    model, config = load_model(model_file)
    videos = split_videos(synthetic_root, "synthetic", "training", config.model.pixel_range)
    seen: list[tuple[str, int, bool]] = []
    scored = score_frames(model, config, videos, progress=False,
                          watch=lambda video, index, frame, row: seen.append((video.name, index, row is not None)))
    # the watch sees every frame, in order, each with the row it made (none before a clip is full)
    assert [(name, index) for name, index, _ in seen] == [(v.name, i) for v in videos for i in range(len(v))]
    assert sum(made for _, _, made in seen) == sum(v.frames.size for v in scored)
    calls = []
    monkeypatch.setattr(mnad.calibrate, "score_frames", lambda *a, **k: calls.append(k["desc"]) or score_frames(*a, **k))
    terms = footage_terms(model, config, videos, progress=False)
    assert calls == ["calibrating"]  # the one loop (was: a copy of it in footage_terms)
    for name in TERMS:
        assert all(np.array_equal(got, getattr(v, name)) for got, v in zip(terms[name], scored, strict=True))


class Still(Video):
    """A video of one picture, ``level`` everywhere."""

    def __init__(self, name: str, n: int, level: int) -> None:
        self.name, self.path, self.n, self.level, self.pixel_range = name, Path(name), n, level, ()

    def __len__(self) -> int:
        return self.n

    def frame(self, index: int, size: int, channels: int) -> np.ndarray:
        return np.full((size, size, channels), self.level, dtype=np.uint8)


def test_footage_that_changes_only_between_videos_does_not_change() -> None:
    """Each video is its own recording: a still video's first frame is not compared with the last of the one before."""
    torch.manual_seed(0)
    config = tiny_config()
    model = MNAD(config.model).eval()
    with pytest.raises(DataError, match="calibration footage does not change"):
        footage_terms(model, config, [Still("a", 8, 10), Still("b", 8, 200)], progress=False)


def test_calibrate_checkpoint_refuses_before_any_footage(model_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ped2-pred: a shipped model keeps no held-out footage; pass --data"):
        calibrate_checkpoint("ped2-pred", tmp_path / "c.safetensors", progress=False)
    with pytest.raises(ConfigError, match="--data names no footage"):
        calibrate_checkpoint(model_file, tmp_path / "c.safetensors", data=[], progress=False)
    with pytest.raises(DataError, match="the run kept no held-out footage"):  # a model file outside a run
        calibrate_checkpoint(model_file, tmp_path / "c.safetensors", progress=False)
    assert not (tmp_path / "c.safetensors").exists()


def test_calibrate_checkpoint_writes_the_calibrated_model(model_file: Path, synthetic_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.safetensors"
    videos = sorted(str(p) for p in (synthetic_root / "synthetic" / "training" / "frames").iterdir())
    configured = []

    def configure(model: MNAD, own: object) -> object:
        configured.append(own)
        return own.override(["eval.smoothing=3"])

    result = calibrate_checkpoint(model_file, out, data=videos, configure=configure, keep_smoothing=True,
                                  false_alarm_rate=0.05, scoring="config", progress=False)
    assert result.path == out and out.is_file() and len(configured) == 1
    assert result.calibration.smoothing == 3  # the configured window, not chosen
    _, saved = load_model(out)
    assert saved.calibration() == result.calibration and saved.to_dict() == result.config.to_dict()
    with pytest.raises(DataError, match="holds the output of an earlier run"):  # kept unless overwrite
        calibrate_checkpoint(model_file, out, data=videos, scoring="config", progress=False)


def test_calibrates_defaults_are_written_once() -> None:
    """calibrate and calibrate_checkpoint (what `mnad calibrate` runs, whose --help reads its defaults) share one
    default false-alarm rate and scoring (were two literal copies)."""
    import inspect

    from mnad.calibrate import FALSE_ALARM_RATE, SCORING, calibrate, calibrate_checkpoint

    for function in (calibrate, calibrate_checkpoint):
        parameters = inspect.signature(function).parameters
        assert (parameters["false_alarm_rate"].default, parameters["scoring"].default) == (FALSE_ALARM_RATE, SCORING)
