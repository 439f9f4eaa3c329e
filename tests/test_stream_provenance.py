"""What a saved stream state records of its model: every model setting (taken from ModelConfig itself, so a new
field is never left out), pixel_range among them; a state saved before these were all recorded still restores; the
weights' digest of an ahead-of-time compiled step is read through its public property."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import edited_state_metadata, tiny_config
from safetensors import safe_open
from safetensors.torch import save_file

from mnad.aot import AotStep
from mnad.calibration import Calibration
from mnad.checkpoint import weights_digest
from mnad.config import ModelConfig
from mnad.errors import CheckpointError, ConfigError
from mnad.model import MNAD
from mnad.stream import StreamScorer, step_digest


def scorer_of(**model: object) -> StreamScorer:
    torch.manual_seed(0)  # the same weights whatever the settings: only the settings differ
    config = tiny_config(**model)
    return StreamScorer.for_model(MNAD(config.model).eval(), config, normalization="causal")


def pushed(scorer: StreamScorer, n: int = 6) -> StreamScorer:
    rng = np.random.default_rng(0)
    for _ in range(n):
        scorer.push(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    return scorer


def test_a_state_records_every_model_setting() -> None:
    scorer = scorer_of(pixel_range=[0, 4095], update_max_over="assigned")
    recorded = scorer.state().belongs_to
    for f in dataclasses.fields(ModelConfig):
        assert f.name in recorded, f"model.{f.name} is not in the stream state's provenance"
        assert recorded[f.name] == json.loads(json.dumps(getattr(scorer.config.model, f.name))), f.name


def test_a_state_of_a_model_with_another_pixel_range_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.safetensors"
    pushed(scorer_of(pixel_range=[0, 4095])).save_state(path)
    other = scorer_of()  # the same weights, reading 16-bit frames by their high byte
    assert other.model_digest == scorer_of(pixel_range=[0, 4095]).model_digest
    with pytest.raises(CheckpointError, match=r"state\.safetensors: .*pixel_range \[0, 4095\] \(this scorer: \[\]\)"):
        other.load_state(path)
    with pytest.raises(CheckpointError, match=r"update_max_over 'all' \(this scorer: 'assigned'\)"):
        scorer_of(pixel_range=[0, 4095], update_max_over="assigned").load_state(path)
    scorer_of(pixel_range=(0, 4095)).load_state(path)  # its own settings (a tuple is the list it was saved as): taken


def test_a_state_saved_before_every_model_setting_was_recorded_still_restores(tmp_path: Path,
                                                                              caplog: pytest.LogCaptureFixture) -> None:
    """An older mnad recorded task, t_length, image_size, channels, memory, memory_size and feature_dim only: a camera
    restarted after the upgrade continues from its state (the weights, compared, pin the model)."""
    path = tmp_path / "state.safetensors"
    saved = pushed(scorer_of(pixel_range=[0, 4095]))
    saved.save_state(path)
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    info = json.loads(meta["mnad_stream_state"])
    for key in ("width", "update_max_over", "pixel_range"):
        del info["belongs_to"][key]
    save_file(tensors, str(path), metadata=edited_state_metadata(meta, info, older=True))
    restored = scorer_of(pixel_range=[0, 4095])
    with caplog.at_level(logging.WARNING, logger="mnad.stream"):
        restored.load_state(path)
    assert "did not record model.width, model.update_max_over, model.pixel_range" in caplog.text
    frame = np.full((32, 32, 3), 7, np.uint8)
    assert restored.push(frame) == saved.push(frame)  # continues exactly
    del info["belongs_to"]["calibration"]  # what is not a model setting is still required
    save_file(tensors, str(path), metadata=edited_state_metadata(meta, info, older=True))
    with pytest.raises(CheckpointError, match=r"does not record calibration \(written by an older mnad\)"):
        scorer_of(pixel_range=[0, 4095]).load_state(path)


def test_the_digest_of_an_aot_step_is_its_models_weights() -> None:
    config = tiny_config()
    torch.manual_seed(0)
    model = MNAD(config.model).eval()
    step = AotStep(model, config.override(["eval.compile=true"]))  # nothing is compiled before its first call
    assert step.digest == weights_digest(model)
    assert step_digest(step) == weights_digest(model)
    with pytest.raises(AttributeError):
        step.digest = "0" * 64  # read-only: a step scores the weights it was built from


def test_an_aot_step_refuses_to_compile_weights_changed_after_it_was_built(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNAD_CACHE_DIR", str(tmp_path / "cache"))
    config = tiny_config()
    torch.manual_seed(0)
    model = MNAD(config.model).eval()
    step = AotStep(model, config.override(["eval.compile=true"]))
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # a caller training on after building its scorer
    m = config.model
    inputs = torch.zeros(1, m.channels * (m.t_length - 1), m.image_size, m.image_size)
    with pytest.raises(ConfigError, match="changed after its scorer was built"):  # was: compiled the new weights and
        step(inputs, inputs[:, :m.channels], model.memory.items[None])  # filed them under the old weights' digest
    assert not list((tmp_path / "cache").glob("*.pt2"))


# a calibration as mnad wrote it before psnr_peak, regular_score and uncalibrated were recorded, and the digest a stream
# state of it recorded then (computed by that mnad, d903889: SHA-256 of its Calibration.to_dict() as sorted JSON)
OLD_CALIBRATION = {"psnr_low": 5.0, "psnr_high": 40.0, "distance_low": 0.0, "distance_high": 1.0, "threshold": 0.5,
                   "false_alarm_rate": 0.05, "smoothing": 3, "frames": 100, "thresholds": {"0.1": 0.4},
                   "footage": ["a[0:50]", "b[0:50]"], "held_out_false_alarms": {"0.05": 0.06}, "psnr_region": "frame",
                   "distance_region": "frame", "alpha": 0.6, "pseudo_anomaly_auc": {}, "test_update": True, "gamma": 0.01}
OLD_DIGEST = "089ffbeb89c077d66fb4f50d471e4bad9a5adebfdc4ed31ca57c027167f3037f"


def test_a_state_of_a_calibrated_model_saved_before_the_new_calibration_fields_restores(tmp_path: Path) -> None:
    """A camera of a calibrated model restarted after the upgrade continues from its state: the calibration is the same,
    and its digest leaves out the fields added since while they are not recorded (was: refused, 'belongs to another
    model or scorer: calibration ...', since the digest took in psnr_peak, regular_score and uncalibrated)."""
    torch.manual_seed(0)
    config = tiny_config()
    model = MNAD(config.model).eval()

    def scorer(calibration: dict) -> StreamScorer:
        return StreamScorer.for_model(model, config, normalization="calibrated", calibration=calibration)

    path = tmp_path / "state.safetensors"
    saved = pushed(scorer(OLD_CALIBRATION))
    saved.save_state(path)
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    info = json.loads(meta["mnad_stream_state"])
    info["belongs_to"]["calibration"] = OLD_DIGEST  # as the older mnad recorded it
    save_file(tensors, str(path), metadata=edited_state_metadata(meta, info, older=True))
    restored = scorer(OLD_CALIBRATION)
    restored.load_state(path)
    frame = np.full((32, 32, 3), 7, np.uint8)
    assert restored.push(frame) == saved.push(frame)  # continues exactly
    # the settings a scorer uses are still the calibration's identity; the record of the settings it replaced is not
    recorded = {**OLD_CALIBRATION, "psnr_peak": "one", "regular_score": "code"}
    with pytest.raises(CheckpointError, match="belongs to another model or scorer: calibration"):
        scorer(recorded).load_state(path)
    with pytest.raises(CheckpointError, match="belongs to another model or scorer: calibration"):
        scorer({**OLD_CALIBRATION, "threshold": 0.6}).load_state(path)
    pushed(scorer(recorded)).save_state(path)
    scorer({**recorded, "uncalibrated": {"alpha": 0.6}}).load_state(path)
    assert Calibration.from_dict(OLD_CALIBRATION).uncalibrated == {}
