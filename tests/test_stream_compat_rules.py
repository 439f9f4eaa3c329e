"""Pins of the two rules by which a stream state written by an older mnad still restores, which are different rules:

- provenance (``StreamScorer._state_problem``): a model setting the saved state does not record (the key is absent) is
  not compared, whichever setting it is, since the weights' digest (always compared) pins the model's settings; a
  model setting recorded with its default value is compared like any other; so is the test-time update (test_update,
  gamma, regular_score) and the scoring precision, recorded since after the others: a state saved before restores as it
  did, with a warning; any other scoring setting not recorded is refused;
- the calibration's digest (``calibration_digest``): a field added after the first digested ones is left out while it
  holds its default, since a calibration read from an older file holds the default there; the first fields are
  digested whatever they hold.

The digests are exact strings: a digest recorded by a saved state must never change."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import edited_state_metadata, tiny_config
from safetensors import safe_open
from safetensors.torch import save_file

from mnad.calibration import Calibration
from mnad.errors import CheckpointError
from mnad.model import MNAD
from mnad.stream import StreamScorer, calibration_digest

# as mnad wrote a calibration before psnr_peak, regular_score and uncalibrated were recorded (tests/test_stream_provenance.py
# has the state digest of it that mnad d903889 computed: the first pin below)
OLD = {"psnr_low": 5.0, "psnr_high": 40.0, "distance_low": 0.0, "distance_high": 1.0, "threshold": 0.5,
       "false_alarm_rate": 0.05, "smoothing": 3, "frames": 100, "thresholds": {"0.1": 0.4},
       "footage": ["a[0:50]", "b[0:50]"], "held_out_false_alarms": {"0.05": 0.06}, "psnr_region": "frame",
       "distance_region": "frame", "alpha": 0.6, "pseudo_anomaly_auc": {}, "test_update": True, "gamma": 0.01}
REQUIRED = ("psnr_low", "psnr_high", "distance_low", "distance_high", "threshold", "false_alarm_rate", "smoothing", "frames")
OLDEST = {k: OLD[k] for k in REQUIRED}  # the fields every calibration file has: the others are read as their defaults

DIGESTS = [
    (OLD, "089ffbeb89c077d66fb4f50d471e4bad9a5adebfdc4ed31ca57c027167f3037f"),
    ({**OLD, "psnr_peak": "one", "regular_score": "code"}, "0c5ae1b48e7d63c9fe319c7a1b40a68caa01de0f3e0db0e8384266d28bfb359b"),
    ({**OLD, "psnr_peak": "max"}, "4a209230211e08854735f717596dc8f4049ebf3c18a4ab41cb695ad4d15a8935"),
    ({**OLD, "regular_score": "paper"}, "0c0b0d101659332143f4e157d779c621fe1fbaea910c01d636e5348075ee8035"),
    # uncalibrated (the settings a calibration replaced) is never digested
    ({**OLD, "psnr_peak": "one", "regular_score": "code", "uncalibrated": {"alpha": 0.6, "smoothing": 1}},
     "0c5ae1b48e7d63c9fe319c7a1b40a68caa01de0f3e0db0e8384266d28bfb359b"),
    (OLDEST, "7447761d2992d67727f621424d1c2ca87405009081dd34ac978ac12a712296f9"),
]


@pytest.mark.parametrize(("data", "digest"), DIGESTS, ids=["old", "recorded", "peak", "regular", "uncalibrated", "oldest"])
def test_calibration_digests_are_unchanged(data: dict, digest: str) -> None:
    assert calibration_digest(Calibration.from_dict(data)) == digest


def test_the_first_digested_fields_are_digested_at_their_defaults() -> None:
    """Unlike a later field, a first one holding its default (None, {}, []) is in the digest: the SHA-256 of all 17."""
    first = {**OLDEST, "thresholds": {}, "footage": [], "held_out_false_alarms": {}, "psnr_region": None,
             "distance_region": "frame", "alpha": None, "pseudo_anomaly_auc": {}, "test_update": None, "gamma": None}
    expected = hashlib.sha256(json.dumps(first, sort_keys=True).encode()).hexdigest()
    assert calibration_digest(Calibration.from_dict(OLDEST)) == expected
    later = {**OLD, "psnr_peak": "one", "regular_score": "code"}  # a later field is digested once recorded
    assert calibration_digest(Calibration.from_dict(later)) == hashlib.sha256(json.dumps(later, sort_keys=True).encode()).hexdigest()


def scorer_of(**model: object) -> StreamScorer:
    torch.manual_seed(0)  # the same weights whatever the settings
    config = tiny_config(**model)
    return StreamScorer.for_model(MNAD(config.model).eval(), config, normalization="causal")


def saved_state(tmp_path: Path, scorer: StreamScorer, edit: dict, drop: tuple[str, ...] = ()) -> Path:
    """``scorer``'s state after a few frames, saved with its provenance edited (as a hand-made or older state)."""
    rng = np.random.default_rng(0)
    for _ in range(6):
        scorer.push(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    path = tmp_path / "state.safetensors"
    scorer.save_state(path)
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 (safe_open has no iterator)
    info = json.loads(meta["mnad_stream_state"])
    info["belongs_to"].update(edit)
    for key in drop:
        del info["belongs_to"][key]
    save_file(tensors, str(path), metadata=edited_state_metadata(meta, info))
    return path


def test_a_state_lacking_any_model_setting_restores(tmp_path: Path) -> None:
    """Not only the settings added since: one recorded from the first state on (t_length, image_size) is taken as of
    this model too, when absent, since the weights are compared."""
    path = saved_state(tmp_path, scorer_of(pixel_range=[0, 4095]), {}, drop=("pixel_range", "t_length", "image_size"))
    scorer_of(pixel_range=[0, 4095]).load_state(path)


def test_a_model_setting_recorded_at_its_default_is_compared(tmp_path: Path) -> None:
    """A recorded default is a value, not 'unrecorded' (unlike a later calibration field at its default)."""
    path = saved_state(tmp_path, scorer_of(), {})  # pixel_range [] recorded
    with pytest.raises(CheckpointError, match=r"belongs to another model or scorer: pixel_range \[\] \(this scorer: \[0, 4095\]\)"):
        scorer_of(pixel_range=[0, 4095]).load_state(path)


def test_a_real_mismatch_is_refused(tmp_path: Path) -> None:
    path = saved_state(tmp_path, scorer_of(), {"t_length": 3, "alpha": 0.9})
    with pytest.raises(CheckpointError, match=r"belongs to another model or scorer: t_length 3 \(this scorer: 5\), alpha 0\.9 \(this scorer: 0\.6\)"):
        scorer_of().load_state(path)
    path = saved_state(tmp_path, scorer_of(), {"model": "0" * 64}, drop=("pixel_range",))  # other weights: refused
    with pytest.raises(CheckpointError, match=r"belongs to another model or scorer: model '0000"):
        scorer_of().load_state(path)


def test_a_state_lacking_a_scoring_setting_is_refused(tmp_path: Path) -> None:
    path = saved_state(tmp_path, scorer_of(), {}, drop=("psnr_peak",))
    with pytest.raises(CheckpointError, match=r"does not record psnr_peak \(written by an older mnad\)"):
        scorer_of().load_state(path)


LATER = ("test_update", "gamma", "regular_score", "precision")


def test_a_state_saved_before_the_test_time_update_and_precision_were_recorded_restores(tmp_path: Path,
                                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """States written before these were recorded (their format unchanged) continue as they did, said in one warning."""
    saved = scorer_of()
    path = saved_state(tmp_path, saved, {}, drop=LATER)
    restored = scorer_of()
    with caplog.at_level(logging.WARNING, logger="mnad.stream"):
        restored.load_state(path)
    assert ("did not record eval.test_update, eval.gamma, eval.regular_score, the scoring precision: taken as this "
            "scorer's" in caplog.text)
    assert "model." not in caplog.text  # the model settings are all recorded: no warning of those
    frame = np.full((32, 32, 3), 7, np.uint8)
    assert restored.push(frame) == saved.push(frame)  # continues exactly
    recorded = scorer_of().state().belongs_to  # and a state saved now records them
    assert {k: recorded[k] for k in LATER} == {"test_update": True, "gamma": 0.01, "regular_score": "code", "precision": "fp32"}


def test_a_state_scored_in_another_precision_is_refused(tmp_path: Path) -> None:
    """Its memory items and ranges are of bf16 scores (or int8 ones) that this fp32 scorer would go on from."""
    path = saved_state(tmp_path, scorer_of(), {"precision": "bf16"})
    with pytest.raises(CheckpointError, match=r"belongs to another model or scorer: precision 'bf16' \(this scorer: 'fp32'\)$"):
        scorer_of().load_state(path)


def test_gamma_and_the_regular_score_are_not_recorded_without_the_update(tmp_path: Path) -> None:
    """They act only where the update runs (as a calibration compares them): without it, any gamma restores."""
    def scorer(*overrides: str) -> StreamScorer:
        torch.manual_seed(0)
        config = tiny_config().override(["eval.test_update=false", *overrides])
        return StreamScorer.for_model(MNAD(config.model).eval(), config, normalization="causal")

    path = saved_state(tmp_path, scorer("eval.gamma=0.5"), {})
    scorer("eval.gamma=0.1", "eval.regular_score=paper").load_state(path)
