"""The public Python API refuses wrong arguments with one mnad error naming the argument, before anything is written
or scored: save_model / load_model, Calibration built by hand or read, eval.gamma, load_config / Config.override /
Config.from_dict given the wrong types."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import tiny_config

import mnad
from mnad.calibration import Calibration
from mnad.checkpoint import load_model, save_model
from mnad.config import Config, load_config
from mnad.errors import ConfigError
from mnad.model.mnad import MNAD

# -- 1. save_model writes only what load_model reads back --------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> tuple[MNAD, Config]:
    torch.manual_seed(0)
    config = tiny_config()
    return MNAD(config.model), config


@pytest.mark.parametrize("section, change, said", [
    ("model", {"width": 16}, r"model\.width"),  # another model's config
    ("eval", {"alpha": 5.0}, r"eval\.alpha"),  # an invalid config
    ("eval", {"calibration": {"threshold": 0.5}}, r"eval\.calibration.*lacks"),  # a calibration that would not load
], ids=["another-model", "invalid", "calibration"])
def test_save_model_writes_only_what_load_model_reads_back(tmp_path: Path, tiny: tuple[MNAD, Config], section: str,
                                                            change: dict[str, Any], said: str) -> None:
    model, config = tiny
    bad = dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **change)})
    path = tmp_path / "a.safetensors"
    with pytest.raises(ConfigError, match=said):
        save_model(path, model, bad)
    assert not path.exists()


def test_save_model_in_float16_still_loads(tmp_path: Path, tiny: tuple[MNAD, Config]) -> None:
    model, config = tiny
    save_model(tmp_path / "a.safetensors", model, config, dtype=torch.float16)
    loaded, _ = load_model(tmp_path / "a.safetensors")
    weight = next(iter(model.state_dict()))
    assert torch.allclose(loaded.state_dict()[weight], model.state_dict()[weight], atol=1e-2)


@pytest.mark.parametrize("what, value", [("dtype", torch.int8), ("dtype", torch.bool), ("dtype", torch.uint8),
                                         ("dtype", "float16"), ("dtype", 16), ("extra", {"x": object()}),
                                         ("extra", {"x": {1, 2}}), ("extra", ["not", "a", "dict"])])
def test_save_model_refuses_a_dtype_or_extra_it_cannot_store(tmp_path: Path, tiny: tuple[MNAD, Config], what: str,
                                                              value: Any) -> None:
    """Only a floating-point dtype (int8 or bool would read every weight back as 0) and JSON extra."""
    model, config = tiny
    path = tmp_path / "a.safetensors"
    with pytest.raises(ConfigError, match=what):
        save_model(path, model, config, **{what: value})
    assert not path.exists()


def test_save_model_refuses_what_is_not_a_model_or_a_config(tmp_path: Path, tiny: tuple[MNAD, Config]) -> None:
    model, config = tiny
    with pytest.raises(ConfigError, match="config must be"):
        save_model(tmp_path / "a.safetensors", model, config.to_dict())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="model must be"):
        save_model(tmp_path / "a.safetensors", torch.nn.Linear(2, 2), config)  # type: ignore[arg-type]
    assert not (tmp_path / "a.safetensors").exists()


# -- 2. load_model checks its arguments --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, tiny: tuple[MNAD, Config]) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_model(path, *tiny)
    return path


@pytest.mark.parametrize("device", ["gpu", "cuda:99", "tpu", 3.5])
def test_load_model_refuses_a_device_it_cannot_use(saved: Path, device: Any) -> None:
    if device == "cuda:99" and torch.cuda.device_count() > 99:
        pytest.skip("a machine with 100 GPUs")
    with pytest.raises(ConfigError, match="device"):
        load_model(saved, map_location=device)


def test_load_model_refuses_cuda_without_cuda(saved: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        load_model(saved, map_location="cuda")


def test_load_model_takes_a_torch_device(saved: Path) -> None:
    model, _ = load_model(saved, map_location=torch.device("cpu"))
    assert next(model.parameters()).device.type == "cpu"


def test_load_model_refuses_an_expect_that_is_not_a_config(saved: Path) -> None:
    with pytest.raises(ConfigError, match="expect"):
        load_model(saved, expect="synthetic_pred")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", [None, 3, ["model.safetensors"]])
def test_load_model_refuses_what_names_no_model(name: Any) -> None:
    with pytest.raises(ConfigError, match="shipped name"):
        load_model(name)


# -- 3. a Calibration is checked however it is made ---------------------------------------------------------------------

GOOD = dict(psnr_low=10.0, psnr_high=30.0, distance_low=0.0, distance_high=1.0, threshold=0.5, false_alarm_rate=0.05,
            smoothing=1, frames=100)


@pytest.mark.parametrize("change, named", [
    ({"psnr_low": 30, "psnr_high": 10}, "ranges are empty"),
    ({"threshold": float("nan")}, "threshold"),
    ({"smoothing": 0}, "smoothing"),
    ({"smoothing": 2.5}, "smoothing"),
    ({"frames": -5}, "frames"),
    ({"false_alarm_rate": 0.0}, "false_alarm_rate"),
    ({"thresholds": 5}, "thresholds"),
    ({"thresholds": {"0.01": "high"}}, "thresholds"),
    ({"held_out_false_alarms": {"0.05": float("nan")}}, "finite"),
    ({"alpha": 2.0}, "alpha"),
    ({"gamma": -1.0}, "gamma"),
    ({"footage": "a.mp4"}, "footage"),
    ({"distance_region": "everywhere"}, "distance_region"),
    ({"test_update": 1}, "test_update"),
    ({"uncalibrated": {"smoothing": 0}}, "uncalibrated"),
])
def test_a_calibration_is_checked_by_hand_and_from_a_dict_alike(change: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Calibration(**{**GOOD, **change})
    with pytest.raises(ConfigError, match=rf"^stored: .*{named}"):
        Calibration.from_dict({**GOOD, **change}, source="stored")


def test_a_calibration_from_a_dict_is_converted_not_cut() -> None:
    cal = Calibration.from_dict({**GOOD, "smoothing": 5.0, "frames": 100.0, "thresholds": {0.01: 1}, "alpha": 1,
                                 "footage": ("a.mp4[0:10]",)})
    assert (cal.smoothing, cal.frames, cal.thresholds, cal.alpha, cal.footage) == (5, 100, {"0.01": 1.0}, 1.0, ["a.mp4[0:10]"])
    assert Calibration(**GOOD) == Calibration.from_dict(Calibration(**GOOD).to_dict())


@pytest.mark.parametrize("data", [None, [], "threshold=0.5"])
def test_a_calibration_from_what_is_not_a_dict(data: Any) -> None:
    with pytest.raises(ConfigError, match="eval.calibration"):
        Calibration.from_dict(data)


def test_a_calibration_stored_before_its_later_fields_still_reads() -> None:
    """Only the first eight fields, distance_region null: a calibration written by an early mnad."""
    cal = Calibration.from_dict({**GOOD, "distance_region": None})
    assert (cal.distance_region, cal.psnr_region, cal.gamma, cal.alpha) == ("frame", None, None, None)


# -- 4. eval.gamma < 0 is refused by the config, before anything is scored ---------------------------------------------


def test_a_negative_gamma_is_refused_by_the_config() -> None:
    with pytest.raises(ConfigError, match=r"eval\.gamma"):
        load_config("synthetic_pred").override(["eval.gamma=-1"])
    with pytest.raises(ConfigError, match=r"eval\.gamma"):
        Config.from_dict({"eval": {"gamma": -0.01}})
    assert load_config("synthetic_pred").override(["eval.gamma=0"]).eval.gamma == 0.0


def test_mnad_calibrate_refuses_gamma_minus_one_before_reading_footage(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                       saved: Path) -> None:
    from mnad.cli import main

    try:
        code = main(["calibrate", "--checkpoint", str(saved), "--data", str(tmp_path / "nothing-here"), "--gamma=-1",
                     "--out", str(tmp_path / "out.safetensors")])
    except SystemExit as exc:
        code = exc.code
    assert code not in (0, None)
    err = capsys.readouterr().err
    assert "eval.gamma" in err and "Traceback" not in err


# -- 5. wrong types give one ConfigError naming the argument ------------------------------------------------------------


@pytest.mark.parametrize("name", [None, 3])
def test_load_config_refuses_what_names_no_recipe(name: Any) -> None:
    with pytest.raises(ConfigError, match="name_or_path"):
        load_config(name)


@pytest.mark.parametrize("assignments", ["train.epochs=2", [1], None, ("train.epochs=2", 3)])
def test_override_takes_a_list_of_strings(assignments: Any) -> None:
    with pytest.raises(ConfigError, match="assignments"):
        Config().override(assignments)


def test_override_takes_a_tuple_of_strings() -> None:
    assert Config().override(("train.epochs=2",)).train.epochs == 2


@pytest.mark.parametrize("data", [[], None, "train.epochs=2", {1: 2}, {"train": {1: 2}}])
def test_config_from_dict_refuses_what_is_not_a_table(data: Any) -> None:
    with pytest.raises(ConfigError, match="^here: "):
        Config.from_dict(data, source="here")


def test_the_shipped_model_still_loads_and_saves(tmp_path: Path) -> None:
    model, config = mnad.load_model("ped2-pred")
    save_model(tmp_path / "again.safetensors", model, config, dtype=torch.float16)
    assert load_model(tmp_path / "again.safetensors")[1] == config
