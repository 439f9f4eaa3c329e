"""checkpoint.weights_digest is hashed once per state of a model's weights: load_model's calibration check, the entry
point's, the scoring step's and metrics.json's provenance read the digest kept on the model (was: SHA-256 of every
weight up to three times per command); a model changed since (trained further, weights loaded or replaced) is hashed
again, never given its old digest."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from conftest import tiny_config

import mnad.checkpoint
from mnad.calibrate import with_calibration
from mnad.calibration import Calibration
from mnad.checkpoint import check_calibrated_weights, load_model, save_model, tensor_digest, weights_digest
from mnad.evaluate import model_provenance
from mnad.model import MNAD
from mnad.stream import ScoringStep, scoring_step, step_digest


def fresh_digest(model: torch.nn.Module) -> str:
    return tensor_digest({k: v.detach().cpu() for k, v in model.state_dict().items()})


def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = mnad.checkpoint.tensor_digest

    def counting(tensors):
        calls.append(len(tensors))
        return real(tensors)

    monkeypatch.setattr(mnad.checkpoint, "tensor_digest", counting)
    return calls


def test_a_loaded_model_is_hashed_once_for_every_check_of_a_command(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    config = tiny_config()
    model = MNAD(config.model).eval()
    calibration = Calibration(psnr_low=5.0, psnr_high=40.0, distance_low=0.0, distance_high=1.0, threshold=0.5,
                              false_alarm_rate=0.05, smoothing=3, frames=100, thresholds={"0.01": 0.7},
                              psnr_region="frame", distance_region="frame", alpha=0.6, test_update=True, gamma=0.01,
                              psnr_peak="one", regular_score="code", weights_sha256=weights_digest(model))
    path = tmp_path / "m.safetensors"
    save_model(path, model, with_calibration(config, calibration))
    calls = counted(monkeypatch)
    loaded, stored = load_model(path)  # its file verified (one digest of the file's tensors), its calibration checked
    assert len(calls) == 2
    check_calibrated_weights(loaded, stored)  # as detect and export do again
    step = ScoringStep(loaded, stored)  # as every scorer does
    record = model_provenance(loaded, path, tmp_path)  # as evaluate does
    assert len(calls) == 2  # was 5: the weights hashed three more times
    assert step.digest == record["weights_sha256"] == step_digest(step) == fresh_digest(loaded)


def test_a_model_changed_after_its_digest_is_hashed_again() -> None:
    torch.manual_seed(0)
    config = tiny_config()
    model = MNAD(config.model)
    first = weights_digest(model)
    assert weights_digest(model) == first

    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)  # trained further in Python
    model.train()
    clip = torch.rand(2, config.model.t_length, 3, 32, 32)
    inputs, target = model.split_clip(clip)
    torch.nn.functional.mse_loss(model(inputs).frame, target).backward()
    optimiser.step()
    trained = weights_digest(model)
    assert trained != first and trained == fresh_digest(model)

    model.train()
    with torch.no_grad():  # a training forward alone changes BatchNorm's statistics (and their count)
        model(inputs)
    forward = weights_digest(model)
    assert forward != trained and forward == fresh_digest(model)

    other = MNAD(config.model)
    model.load_state_dict(other.state_dict())  # weights loaded in place
    assert weights_digest(model) == fresh_digest(other) == fresh_digest(model)

    with torch.no_grad():
        model.memory.items.mul_(-1)  # a buffer changed in place
    assert weights_digest(model) == fresh_digest(model) != fresh_digest(other)

    name, parameter = next(iter(model.named_parameters()))  # a parameter replaced by another tensor
    module, attr = model.get_submodule(name.rpartition(".")[0]), name.rpartition(".")[2]
    setattr(module, attr, torch.nn.Parameter(parameter.detach() + 1))
    assert weights_digest(model) == fresh_digest(model)


def test_a_step_of_a_changed_model_records_the_new_weights() -> None:
    """A scorer built after more training scores (and files its saved states under) the new weights' digest."""
    torch.manual_seed(0)
    config = tiny_config()
    model = MNAD(config.model).eval()
    before = step_digest(scoring_step(model, config))
    with torch.no_grad():
        next(model.parameters()).add_(1)
    after = step_digest(scoring_step(model, config))
    assert before != after == fresh_digest(model)


def test_the_kept_digest_leaves_the_model_as_it_was() -> None:
    """Kept beside the model, not on it: a model whose digest was taken still pickles (a spawned worker, torch.save)
    and its copy, whose tensors are others, is hashed for itself."""
    torch.manual_seed(0)
    model = MNAD(tiny_config().model)
    digest = weights_digest(model)
    assert weights_digest(pickle.loads(pickle.dumps(model))) == digest
    twin = copy.deepcopy(model)
    with torch.no_grad():
        next(twin.parameters()).add_(1)
    assert weights_digest(twin) == fresh_digest(twin) != digest == weights_digest(model)
