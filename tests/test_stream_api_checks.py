"""The streaming scorer's public API checks what it is given: the config against the model, the order of clip() and
consume(), every frame of a round before any window moves; and it leaves the caller's model as it was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

from mnad.calibrate import uncalibrated, with_calibration
from mnad.calibration import Calibration
from mnad.data import split_videos
from mnad.errors import ConfigError, DataError
from mnad.evaluate import score_videos
from mnad.model import MNAD
from mnad.stream import StreamScorer, score_streams


def model_and_config(**model: object) -> tuple[MNAD, object]:
    torch.manual_seed(0)
    config = tiny_config(**model)
    return MNAD(config.model), config


def frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(n)]


# ------------------------------------------------------------------------------------- the config against the model


@pytest.mark.parametrize("override", ["model.image_size=64", "model.memory=false", "model.t_length=3"])
@pytest.mark.parametrize("streams", [1, 2])
def test_a_config_of_other_model_settings_is_refused_at_construction(override: str, streams: int) -> None:
    model, config = model_and_config()
    other = config.override([override])
    with pytest.raises(ConfigError, match="the config's model settings differ from the model's"):
        StreamScorer.for_model(model, other, normalization="causal")
    with pytest.raises(ConfigError, match="the config's model settings differ from the model's"):
        StreamScorer.for_streams(model, other, streams, normalization="causal")


# ------------------------------------------------------------------------------------- the caller's model untouched


@pytest.mark.parametrize("streams", [1, 2])
def test_scoring_leaves_the_callers_model_in_training_mode(streams: int) -> None:
    model, config = model_and_config()
    model.train()
    scorers = StreamScorer.for_streams(model, config, streams, normalization="causal")
    assert all(m.training for m in model.modules())
    for f in frames(config.model.t_length + 1):
        score_streams(scorers, [f] * streams)
    assert all(m.training for m in model.modules())
    # and an eval-mode model stays in eval mode, scoring as before
    model.eval()
    StreamScorer.for_model(model, config)
    assert not any(m.training for m in model.modules())


def test_evaluation_leaves_the_callers_model_in_training_mode(synthetic_root: Path) -> None:
    model, config = model_and_config()
    model.train()
    score_videos(model, config, split_videos(synthetic_root, "synthetic", "testing")[:1], progress=False)
    assert all(m.training for m in model.modules())  # was: switched to eval mode by the scorer it built


def test_a_model_in_training_mode_scores_as_in_eval_mode() -> None:
    model, config = model_and_config()
    video = frames(config.model.t_length + 2)
    model.train()
    scorer = StreamScorer.for_model(model, config)
    trained = [scorer.push(f) for f in video][-1]
    model.eval()
    scorer = StreamScorer.for_model(model, config)
    evaluated = [scorer.push(f) for f in video][-1]
    assert trained is not None and evaluated is not None and trained.psnr == evaluated.psnr


# ------------------------------------------------------------------------------------- score_streams checks first


def test_a_bad_frame_in_a_round_moves_no_window() -> None:
    model, config = model_and_config()
    scorers = StreamScorer.for_streams(model, config, 2, normalization="causal")
    good = frames(1)[0]
    with pytest.raises(DataError, match="frame: expected"):
        score_streams(scorers, [good, np.zeros((5, 5, 3), np.uint8)])
    assert [s.state().frames_seen for s in scorers] == [0, 0] and all(len(s.state().window) == 0 for s in scorers)


@pytest.mark.parametrize("given", [1, 3])
def test_frames_for_another_number_of_streams_are_one_config_error(given: int) -> None:
    model, config = model_and_config()
    scorers = StreamScorer.for_streams(model, config, 2)
    with pytest.raises(ConfigError, match=f"{given} frames for 2 streams"):
        score_streams(scorers, frames(given))
    assert [s.state().frames_seen for s in scorers] == [0, 0]


def test_a_failed_step_takes_no_frame_and_a_retry_scores_as_if_it_had_not_failed() -> None:
    model, config = model_and_config()
    video = frames(config.model.t_length + 2)
    twin = StreamScorer.for_model(model, config, normalization="causal")
    want = [twin.push(f) for f in video]
    scorers = StreamScorer.for_streams(model, config, 2, normalization="causal")
    step = scorers[0].step
    for f in video[:-1]:
        score_streams(scorers, [f, f])
    before = [s.state() for s in scorers]

    class Failing:
        def __call__(self, *args: torch.Tensor) -> None:
            raise RuntimeError("out of memory")

    failing = Failing()
    for s in scorers:
        s.step = failing
    with pytest.raises(RuntimeError, match="out of memory"):
        score_streams(scorers, [video[-1], video[-1]])
    for s, b in zip(scorers, before, strict=True):
        assert s.state().frames_seen == b.frames_seen and all(np.array_equal(x, y) for x, y in zip(s.state().window, b.window, strict=True))
        s.step = step
    got = score_streams(scorers, [video[-1], video[-1]])
    for row in got:
        assert row is not None and row.index == want[-1].index
        assert row.psnr == pytest.approx(want[-1].psnr, rel=1e-5)


def test_a_failed_step_in_push_takes_no_frame() -> None:
    model, config = model_and_config()
    video = frames(config.model.t_length + 1)
    scorer = StreamScorer.for_model(model, config, normalization="causal")
    for f in video[:-1]:
        scorer.push(f)
    step = scorer.step

    def failing(*args: torch.Tensor) -> None:
        raise RuntimeError("out of memory")

    scorer.step = failing
    with pytest.raises(RuntimeError, match="out of memory"):
        scorer.push(video[-1])
    scorer.step = step
    row = scorer.push(video[-1])  # the retry is taken, once
    assert row is not None and row.index == len(video) - 1 - config.model.lag and scorer.state().frames_seen == len(video)


# ------------------------------------------------------------------------------------- clip() then consume(), in order


def primed(config: object, model: MNAD) -> tuple[StreamScorer, list[np.ndarray]]:
    scorer = StreamScorer.for_model(model, config, normalization="causal")
    video = frames(config.model.t_length + 2)
    for f in video[:config.model.t_length - 1]:
        assert scorer.push(f) is None
    return scorer, video[config.model.t_length - 1:]


def test_a_second_clip_before_the_first_is_consumed_is_refused() -> None:
    model, config = model_and_config()
    scorer, rest = primed(config, model)
    clip = scorer.clip(rest[0])
    assert clip is not None
    with pytest.raises(ConfigError, match=r"consume\(\)"):
        scorer.clip(rest[1])  # was: taken, and the first clip's result then labelled with this frame's index
    with torch.inference_mode():
        result = scorer.step(*clip, scorer._items)
    row = scorer.consume(result)
    assert scorer.state().frames_seen == config.model.t_length  # the refused frame was not taken
    assert row.index == config.model.t_length - 1 - config.model.lag
    assert scorer.push(rest[1]).index == row.index + 1  # the normal order goes on


def test_consume_without_a_pending_clip_is_a_config_error() -> None:
    model, config = model_and_config()
    scorer, rest = primed(config, model)
    clip = scorer.clip(rest[0])
    with torch.inference_mode():
        result = scorer.step(*clip, scorer._items)
    scorer.consume(result)
    with pytest.raises(ConfigError, match=r"clip\(\)"):
        scorer.consume(result)  # twice (was: RuntimeError)
    fresh = StreamScorer.for_model(model, config)
    with pytest.raises(ConfigError, match=r"clip\(\)"):
        fresh.consume(result)  # before any clip


@pytest.mark.parametrize(("sample", "match"), [(3, "sample 3"), (-1, "sample -1"), (True, "sample True"), ("0", "sample '0'")])
def test_consume_of_a_sample_the_result_lacks_is_a_config_error(sample: object, match: str) -> None:
    model, config = model_and_config()
    scorer, rest = primed(config, model)
    clip = scorer.clip(rest[0])
    with torch.inference_mode():
        result = scorer.step(*clip, scorer._items)
    with pytest.raises(ConfigError, match=match):
        scorer.consume(result, sample=sample)  # was: an IndexError
    assert scorer.consume(result).index == config.model.t_length - 1 - config.model.lag  # still pending: taken now


def test_consume_of_something_else_than_a_step_result_is_a_config_error() -> None:
    model, config = model_and_config()
    scorer, rest = primed(config, model)
    scorer.clip(rest[0])
    with pytest.raises(ConfigError, match="StepResult"):
        scorer.consume("x")  # was: an AttributeError


# ------------------------------------------------------------------------------------- a calibrated model's scoring


def calibrated_config(config: object) -> object:
    cal = Calibration(psnr_low=0.0, psnr_high=40.0, distance_low=0.0, distance_high=1.0, threshold=0.5,
                      false_alarm_rate=0.05, smoothing=1, frames=100)
    return with_calibration(config, cal)


def test_a_calibrated_model_is_not_scored_causally_behind_the_callers_back() -> None:
    model, config = model_and_config()
    calibrated = calibrated_config(config)
    with pytest.raises(ConfigError, match="drop normalization"):
        StreamScorer.for_model(model, calibrated, normalization="causal")  # was: its calibration silently dropped
    with pytest.raises(ConfigError, match="drop normalization"):
        StreamScorer.for_streams(model, calibrated, 2, normalization="causal")
    with pytest.raises(ConfigError, match="drop normalization"):
        StreamScorer.for_model(model, calibrated.override(["eval.normalization=causal"]))
    # the legitimate ways: its own calibration; the raw terms ('video': no S_t, the caller normalises, as the published
    # protocol does); the model as trained, without its calibration (as recalibrating scores it)
    assert StreamScorer.for_model(model, calibrated).normalization == "calibrated"
    assert StreamScorer.for_model(model, calibrated, normalization="video").normalization == "video"
    assert StreamScorer.for_model(model, uncalibrated(calibrated), normalization="causal").calibration is None


def test_a_scorer_given_twice_in_a_round_is_refused() -> None:
    model, config = model_and_config()
    a, b = StreamScorer.for_streams(model, config, 2)
    video = frames(config.model.t_length)
    for f in video[:-1]:
        score_streams([a, b], [f, f])
    with pytest.raises(ConfigError, match="given twice"):
        score_streams([a, a], [video[-1], video[-1]])  # was: its second clip refused after the first took its frame
    assert a.state().frames_seen == b.state().frames_seen == len(video) - 1


@pytest.mark.parametrize("streams", [1, 2])
def test_the_step_scores_on_the_scorers_device_and_the_callers_model_stays(streams: int,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The step was built on the model's device whatever the scorer's: `mnad detect --device cuda` (and calibrate)
    loads the model on the CPU and put frames and memory on the GPU, a device mismatch at the first clip. 'meta'
    stands in for a second device on a CPU-only machine."""
    import mnad.precision
    import mnad.stream

    monkeypatch.setattr(mnad.precision, "checked_device", lambda device, said=None: torch.device(device))
    monkeypatch.setattr(mnad.stream, "checked_device", lambda device, said=None: torch.device(device))
    model, config = model_and_config()
    scorers = StreamScorer.for_streams(model, config, streams, device="meta")
    for scorer in scorers:
        assert {p.device.type for p in scorer.step.model.parameters()} == {"meta"}
        assert scorer._items.device.type == "meta"
    assert {p.device.type for p in model.parameters()} == {"cpu"}  # the caller's model is not moved


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cpu_model_scores_on_cuda() -> None:
    model, config = model_and_config()
    scorer = StreamScorer.for_model(model, config, device="cuda")
    results = [scorer.push(frame) for frame in frames(6)]
    assert results[-1] is not None and np.isfinite(results[-1].psnr)
