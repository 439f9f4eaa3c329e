"""A model output that is not finite (NaN or infinite PSNR, D, E_t or updated memory: bf16/int8 overflow on unusual
footage, diverged weights) is flagged on its frame and changes nothing the later frames are scored with."""

from __future__ import annotations

import json
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


def spoiling_step(monkeypatch: pytest.MonkeyPatch, bad: int) -> None:
    """Scorers built from now on get a step whose ``bad``-th result has a NaN PSNR."""
    import mnad.stream

    build = mnad.stream.scoring_step
    monkeypatch.setattr(mnad.stream, "scoring_step", lambda model, config, device=None: Faulty(build(model, config, device), bad, nan_psnr))


def test_detect_writes_a_nonfinite_frame_as_nan_says_so_and_fails_the_run(model_file: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    from conftest import frames_folder

    from mnad.calibrate import with_calibration
    from mnad.calibration import Calibration
    from mnad.checkpoint import load_model
    from mnad.detect import DetectOptions, detect
    from mnad.errors import DataError
    from mnad.outputs import read_detect_scores

    model, config = load_model(model_file)
    cal = Calibration(psnr_low=0.0, psnr_high=40.0, distance_low=0.0, distance_high=1.0, threshold=-1.0,
                      false_alarm_rate=0.05, smoothing=1, frames=100)  # every scored frame above it: one event
    spoiling_step(monkeypatch, 3)
    out = tmp_path / "o"
    with pytest.raises(DataError, match="1 of the 8 frames scored have no score: the model's output is not finite"):
        detect(model, with_calibration(config, cal), str(frames_folder(tmp_path / "f", 8 + config.model.t_length - 1)),
               out, DetectOptions(min_event_frames=1, hysteresis=0.0), progress=False)
    assert "frame 6: the model's output is not finite" in caplog.text  # said when it happens, once
    rows = read_detect_scores(out / "scores.csv")
    assert len(rows) == 8 and [r["smoothed"] for r in rows].count("nan") == 1 and rows[2]["smoothed"] == "nan"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["not_finite_frames"] == 1 and summary["frames_scored"] == 8
    # the open event is neither ended nor cut by the unscored frame: one event over all the frames (was: cut in two)
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert len(events) == 1 and events[0]["start_frame"] == int(rows[0]["frame"]) and events[0]["end_frame"] == int(rows[-1]["frame"])


def nan_map(result: StepResult) -> StepResult:
    return result._replace(psnr=torch.full_like(result.psnr, math.nan), error_map=torch.full_like(result.error_map, math.nan))


@pytest.mark.parametrize("kind", ["png", "npy"])
def test_a_nonfinite_frames_map_is_no_black_picture(kind: str, model_file: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import frames_folder

    import mnad.stream
    from mnad.checkpoint import load_model
    from mnad.detect import DetectOptions, detect
    from mnad.errors import DataError
    from mnad.outputs import map_name

    build = mnad.stream.scoring_step
    monkeypatch.setattr(mnad.stream, "scoring_step", lambda model, config, device=None: Faulty(build(model, config, device), 2, nan_map))
    model, config = load_model(model_file)
    out = tmp_path / "o"
    with pytest.raises(DataError, match="not finite"):
        detect(model, config, str(frames_folder(tmp_path / "f", 3 + config.model.t_length)), out,
               DetectOptions(save_maps=kind), progress=False)
    bad = config.model.t_length  # the second frame scored
    written = sorted(p.name for p in (out / "maps").rglob(f"*.{kind}"))
    if kind == "png":  # was: an all-black picture, read as no error anywhere
        assert Path(map_name(bad, kind)).name not in written and len(written) == 3
    else:  # the npy holds what was computed
        assert len(written) == 4 and np.isnan(np.load(out / map_name(bad, kind))).all()
