"""A calibration records the SHA-256 of the weights it was fitted on (``Calibration.weights_sha256``), and every place a
model meets a calibration refuses another model's with one ConfigError saying to run `mnad calibrate` again: the rule
(``scoring_calibration``), StreamScorer, evaluate, detect, save_model / load_model, and the CLI. A calibration written
before the digest was recorded is accepted as before; a calibrated model stored in float16 (shipping) carries the
digest of the weights as they load."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from conftest import frames_folder, tiny_config

from mnad.calibrate import with_calibration
from mnad.calibration import Calibration, scoring_calibration
from mnad.checkpoint import load_model, save_checkpoint, save_model, weights_digest
from mnad.cli import main
from mnad.detect import detect
from mnad.errors import ConfigError
from mnad.evaluate import evaluate
from mnad.model import MNAD
from mnad.stream import StreamScorer

REFUSED = r"fitted on other weights .*run `mnad calibrate` again"


def tiny_model(seed: int) -> MNAD:
    torch.manual_seed(seed)
    return MNAD(tiny_config().model).eval()


def calibration_of(model: MNAD | None) -> Calibration:
    """A calibration as ``mnad calibrate`` writes one, fitted on ``model``'s weights (None: written before the digest
    was recorded)."""
    return Calibration(psnr_low=5.0, psnr_high=40.0, distance_low=0.0, distance_high=1.0, threshold=0.5,
                       false_alarm_rate=0.05, smoothing=3, frames=100, thresholds={"0.01": 0.7}, psnr_region="frame",
                       distance_region="frame", alpha=0.6, test_update=True, gamma=0.01, psnr_peak="one",
                       regular_score="code", weights_sha256=weights_digest(model) if model is not None else None)


@pytest.fixture(scope="module")
def models() -> tuple[MNAD, MNAD]:
    return tiny_model(0), tiny_model(1)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items() if v is not None) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


# -- the rule and the Python API --------------------------------------------------------------------------------------

def test_the_rule_and_the_stream_scorer_refuse_another_models_calibration(models: tuple[MNAD, MNAD]) -> None:
    a, b = models
    config = tiny_config()
    calibrated_a = with_calibration(config, calibration_of(a))
    assert scoring_calibration(calibrated_a, weights=weights_digest(a)).weights_sha256 == weights_digest(a)
    with pytest.raises(ConfigError, match=REFUSED):
        scoring_calibration(calibrated_a, weights=weights_digest(b))
    with pytest.raises(ConfigError, match=REFUSED):  # A's calibration passed for B
        StreamScorer.for_model(b, config, normalization="calibrated", calibration=calibration_of(a))
    with pytest.raises(ConfigError, match=REFUSED):  # and as its dict
        StreamScorer.for_model(b, config, normalization="calibrated", calibration=calibration_of(a).to_dict())
    with pytest.raises(ConfigError, match=REFUSED):  # A's calibrated config given with B
        StreamScorer.for_model(b, calibrated_a)
    assert StreamScorer.for_model(a, calibrated_a).calibration == calibrated_a.calibration()


def test_save_model_and_load_model_refuse_another_models_calibration(models: tuple[MNAD, MNAD], tmp_path: Path) -> None:
    a, b = models
    calibrated_a = with_calibration(tiny_config(), calibration_of(a))
    with pytest.raises(ConfigError, match=REFUSED):
        save_model(tmp_path / "b.safetensors", b, calibrated_a)
    assert not (tmp_path / "b.safetensors").exists()
    # a file written around save_model (or by an older mnad's save_model) is refused on load
    save_checkpoint(tmp_path / "crafted.safetensors", b.state_dict(), calibrated_a)
    with pytest.raises(ConfigError, match=REFUSED):
        load_model(tmp_path / "crafted.safetensors")
    model, _ = load_model(tmp_path / "crafted.safetensors", check_calibration=False)  # for `mnad calibrate` to replace it
    assert weights_digest(model) == weights_digest(b)
    save_model(tmp_path / "a.safetensors", a, calibrated_a)
    _, loaded = load_model(tmp_path / "a.safetensors")
    assert loaded.calibration().weights_sha256 == weights_digest(a)


def test_evaluate_and_detect_refuse_another_models_calibration(models: tuple[MNAD, MNAD], synthetic_root: Path,
                                                               tmp_path: Path) -> None:
    a, b = models
    calibrated_a = with_calibration(tiny_config(), calibration_of(a))
    with pytest.raises(ConfigError, match=REFUSED):
        evaluate(b, calibrated_a, synthetic_root, protocol="stream", progress=False, out_dir=tmp_path / "e")
    assert not (tmp_path / "e").exists()
    with pytest.raises(ConfigError, match=REFUSED):
        detect(b, calibrated_a, str(frames_folder(tmp_path / "v", 12)), tmp_path / "d", progress=False)
    assert not (tmp_path / "d").exists()


# -- the CLI ------------------------------------------------------------------------------------------------------------

def test_the_cli_refuses_another_models_calibration_in_one_line(models: tuple[MNAD, MNAD], synthetic_root: Path,
                                                                tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = models
    config = tiny_config()
    save_model(tmp_path / "b.safetensors", b, config)
    table = toml_value(calibration_of(a).to_dict())
    code = main(["evaluate", "--checkpoint", str(tmp_path / "b.safetensors"), "--data-root", str(synthetic_root),
                 "--protocol", "stream", "--set", f"eval.calibration={table}", "--set", "eval.normalization=calibrated",
                 "--out", str(tmp_path / "e"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "e").exists()
    errors = [line for line in err.splitlines() if line.startswith("mnad: error:")]
    assert len(errors) == 1 and "fitted on other weights" in errors[0]
    assert "fitted on other weights" in err and "run `mnad calibrate` again" in err and "Traceback" not in err
    save_checkpoint(tmp_path / "crafted.safetensors", b.state_dict(), with_calibration(config, calibration_of(a)))
    source = str(frames_folder(tmp_path / "v", 12))
    code = main(["detect", source, "--checkpoint", str(tmp_path / "crafted.safetensors"), "--out", str(tmp_path / "d"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "d").exists()
    errors = [line for line in err.splitlines() if line.startswith("mnad: error:")]
    assert len(errors) == 1 and "fitted on other weights" in errors[0] and "Traceback" not in err


# -- what still loads ---------------------------------------------------------------------------------------------------

def test_a_calibration_without_a_digest_is_accepted_as_before(models: tuple[MNAD, MNAD], tmp_path: Path) -> None:
    a, b = models
    config = tiny_config()
    legacy = calibration_of(None).to_dict()
    del legacy["weights_sha256"]  # as an older mnad wrote it
    old = Calibration.from_dict(legacy)
    assert old.weights_sha256 is None and Calibration.from_dict(old.to_dict()) == old
    calibrated = with_calibration(config, old)
    save_model(tmp_path / "b.safetensors", b, calibrated)
    model, loaded = load_model(tmp_path / "b.safetensors")
    assert StreamScorer.for_model(model, loaded).calibration == loaded.calibration()
    assert scoring_calibration(loaded, weights=weights_digest(b)) == loaded.calibration()
    assert loaded.calibration().weights_sha256 is None
    # the same calibration recording A's weights is refused for B
    with pytest.raises(ConfigError, match=REFUSED):
        StreamScorer.for_model(b, config, normalization="calibrated", calibration=dataclasses.replace(old, weights_sha256=weights_digest(a)))
    for bad in ("abc", 5, "G" * 64):
        with pytest.raises(ConfigError, match="weights_sha256"):
            Calibration.from_dict({**legacy, "weights_sha256": bad})


def test_mnad_calibrate_records_the_digest_of_the_weights_it_scored(model_file: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    a, b = frames_folder(tmp_path / "a", 30), frames_folder(tmp_path / "b", 30)
    out = tmp_path / "cal.safetensors"
    assert main(["calibrate", "--checkpoint", str(model_file), "--data", str(a), str(b), "--out", str(out),
                 "--false-alarm-rate", "0.05", "--scoring", "config", "--quiet"]) == 0
    capsys.readouterr()
    model, _ = load_model(model_file)
    calibrated, config = load_model(out)
    assert config.calibration().weights_sha256 == weights_digest(model) == weights_digest(calibrated)
    assert StreamScorer.for_model(calibrated, config).calibration == config.calibration()
    # recalibrating a model whose calibration is another model's replaces it (the refusal's advice works)
    other = tiny_model(1)
    save_checkpoint(tmp_path / "crafted.safetensors", other.state_dict(), config)
    assert main(["calibrate", "--checkpoint", str(tmp_path / "crafted.safetensors"), "--data", str(a), str(b), "--out",
                 str(tmp_path / "again.safetensors"), "--false-alarm-rate", "0.05", "--scoring", "config", "--quiet"]) == 0
    capsys.readouterr()
    _, again = load_model(tmp_path / "again.safetensors")
    assert again.calibration().weights_sha256 == weights_digest(other)


def test_a_calibrated_model_stored_in_float16_and_the_shipped_model_load_calibrated(models: tuple[MNAD, MNAD],
                                                                                    tmp_path: Path) -> None:
    a, _ = models
    calibrated = with_calibration(tiny_config(), calibration_of(a))
    save_model(tmp_path / "a16.safetensors", a, calibrated, dtype=torch.float16)  # as scripts/ship_model.py ships one
    model, config = load_model(tmp_path / "a16.safetensors")
    assert weights_digest(model) != weights_digest(a)  # float16 rounded the weights ...
    assert config.calibration().weights_sha256 == weights_digest(model)  # ... and the digest is of them, as they load
    assert StreamScorer.for_model(model, config).calibration is not None
    save_model(tmp_path / "again16.safetensors", model, config, dtype=torch.float16)  # shipped again: unchanged
    assert load_model(tmp_path / "again16.safetensors")[1].calibration() == config.calibration()
    # the shipped model (float16) loads, and calibrated on its weights it saves, ships and loads calibrated
    shipped, shipped_config = load_model("ped2-pred")
    own = dataclasses.replace(calibration_of(None), weights_sha256=weights_digest(shipped))
    shipped_calibrated = with_calibration(shipped_config, own)
    for dtype in (None, torch.float16):
        path = tmp_path / f"shipped_{dtype}.safetensors"
        save_model(path, shipped, shipped_calibrated, dtype=dtype)
        loaded, loaded_config = load_model(path)
        assert loaded_config.calibration().weights_sha256 == weights_digest(shipped) == weights_digest(loaded)
        assert StreamScorer.for_model(loaded, loaded_config).calibration == loaded_config.calibration()


def test_an_onnx_export_int8_too_keeps_the_digest_of_the_model_it_was_exported_from(models: tuple[MNAD, MNAD],
                                                                                     tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from mnad.export import export_onnx, load_onnx

    a, b = models
    calibrated_a = with_calibration(tiny_config(), calibration_of(a))
    with pytest.raises(ConfigError, match=REFUSED):
        export_onnx(b, calibrated_a, tmp_path / "b.onnx")
    assert not (tmp_path / "b.onnx").exists()
    noise = frames_folder(tmp_path / "noise", 12)
    for name, options in (("a.onnx", {}), ("a.int8.onnx", {"int8": True, "calibration": [noise], "calibration_clips": 3})):
        exported = load_onnx(export_onnx(a, calibrated_a, tmp_path / name, **options))
        assert exported.weights_sha256 == weights_digest(a)  # the int8 graph's weights differ; the calibration's model does not
        assert StreamScorer.for_model(exported, exported.config).calibration == exported.config.calibration()
        with pytest.raises(ConfigError, match=REFUSED):
            StreamScorer.for_model(exported, tiny_config(), normalization="calibrated", calibration=calibration_of(b))
