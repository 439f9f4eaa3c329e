"""A calibration records the precision its footage was scored in (``Calibration.precision``: 'fp32', 'bf16', 'int8'),
and a calibrated model scored in another one (``mnad detect --fp32`` on a model calibrated in bf16, a machine without
native bf16, an ONNX or int8 export) still scores, with one warning naming both precisions and how to score as
calibrated: the StreamScorer (once for several streams), evaluate under calibrated normalisation (either protocol)
and detect. The same precision, or a calibration written before the precision was recorded, says nothing."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
import torch
from conftest import frames_folder, tiny_config

import mnad.precision
import mnad.stream
from mnad.calibrate import calibrate, with_calibration
from mnad.calibration import Calibration
from mnad.checkpoint import load_model, save_model, weights_digest
from mnad.cli import main
from mnad.data import split_videos
from mnad.detect import detect
from mnad.errors import ConfigError
from mnad.evaluate import evaluate
from mnad.model import MNAD
from mnad.stream import StreamScorer, scoring_precision, scoring_step, step_precision

LOGGERS = "mnad"


def tiny_model() -> MNAD:
    torch.manual_seed(0)
    return MNAD(tiny_config().model).eval()


@pytest.fixture(scope="module")
def model() -> MNAD:
    return tiny_model()


def calibration_of(model: MNAD, precision: str | None) -> Calibration:
    """A calibration as ``mnad calibrate`` writes one for ``model``, fitted in ``precision`` (None: written before
    the precision was recorded)."""
    return Calibration(psnr_low=5.0, psnr_high=40.0, distance_low=0.0, distance_high=1.0, threshold=0.5,
                       false_alarm_rate=0.05, smoothing=3, frames=100, thresholds={"0.01": 0.7}, psnr_region="frame",
                       distance_region="frame", alpha=0.6, test_update=True, gamma=0.01, psnr_peak="one",
                       regular_score="code", weights_sha256=weights_digest(model), precision=precision)


def precision_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "calibration was fitted on scores" in r.getMessage()]


# -- what calibrate records ---------------------------------------------------------------------------------------------

def test_calibrate_records_fp32_and_the_record_survives_the_model_file(model: MNAD, synthetic_root: Path,
                                                                        tmp_path: Path) -> None:
    config = tiny_config()
    fitted = calibrate(model, config, split_videos(synthetic_root, "synthetic", "training"), false_alarm_rate=0.05,
                       scoring="config", progress=False)
    assert fitted.precision == "fp32"
    save_model(tmp_path / "c.safetensors", model, with_calibration(config, fitted))
    _, loaded = load_model(tmp_path / "c.safetensors")
    assert loaded.calibration().precision == "fp32"


@pytest.mark.skipif(not mnad.precision.bf16_is_native("cpu"), reason="this CPU has no native bf16")
def test_calibrate_in_bf16_records_bf16(model: MNAD, synthetic_root: Path) -> None:
    config = tiny_config().override(["eval.bf16=true"])
    fitted = calibrate(model, config, split_videos(synthetic_root, "synthetic", "training"), false_alarm_rate=0.05,
                       scoring="config", progress=False)
    assert fitted.precision == "bf16"


def test_bf16_where_it_is_not_native_is_recorded_as_the_fp32_it_ran_in(model: MNAD, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_config().override(["eval.bf16=true"])
    for native in (True, False):
        monkeypatch.setattr(mnad.precision, "bf16_is_native", lambda device, native=native: native)  # both rest on it
        expected = "bf16" if native else "fp32"
        # what calibrate records is what the step it scores with computes in
        assert scoring_precision(model, config, "cpu") == step_precision(scoring_step(model, config, "cpu")) == expected
    assert scoring_precision(model, tiny_config(), "cpu") == "fp32"


def test_a_step_whose_precision_cannot_be_told_is_not_compared(model: MNAD) -> None:
    class Onnx:  # as export.OnnxStep says its own
        precision = "int8"

    assert step_precision(Onnx()) == "int8"
    assert step_precision(lambda inputs, target, items: None) is None
    assert calibration_of(model, "bf16").check_precision(None) is False


# -- the warning ---------------------------------------------------------------------------------------------------------

def test_a_scorer_in_another_precision_warns_once_naming_both(model: MNAD, caplog: pytest.LogCaptureFixture) -> None:
    config = tiny_config()  # fp32
    with caplog.at_level(logging.WARNING, logger=LOGGERS):
        scorer = StreamScorer.for_model(model, config, normalization="calibrated", calibration=calibration_of(model, "bf16"))
    assert scorer.precision == "fp32"
    (message,) = precision_warnings(caplog)
    assert "computed in bf16" in message and "computes them in fp32" in message and "--bf16" in message
    assert "mnad calibrate --fp32" in message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGERS):  # several streams: one warning, not one per stream
        scorers = StreamScorer.for_streams(model, config, 3, normalization="calibrated",
                                           calibration=calibration_of(model, "bf16"))
    assert len(scorers) == 3 and len(precision_warnings(caplog)) == 1
    # scoring goes on: a calibrated model moved to a machine without native bf16 still scores
    frame = torch.zeros(32, 32, 3, dtype=torch.uint8).numpy()
    rows = [scorer.push(frame) for _ in range(6)]
    assert rows[-1] is not None and rows[-1].smoothed is not None


def test_the_advice_fits_the_two_precisions(model: MNAD, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGERS):
        assert calibration_of(model, "fp32").check_precision("bf16")
        assert calibration_of(model, "bf16").check_precision("int8")
        assert calibration_of(model, "int8").check_precision("fp32")
    to_bf16, to_int8, from_int8 = precision_warnings(caplog)
    assert "--fp32" in to_bf16 and "computes them in bf16" in to_bf16
    assert "exported from in bf16" in to_int8
    assert "int8 export the calibration was fitted on" in from_int8


def test_the_same_precision_or_an_unrecorded_one_says_nothing(model: MNAD, caplog: pytest.LogCaptureFixture) -> None:
    config = tiny_config()
    with caplog.at_level(logging.WARNING, logger=LOGGERS):
        StreamScorer.for_model(model, config, normalization="calibrated", calibration=calibration_of(model, "fp32"))
        StreamScorer.for_model(model, config, normalization="calibrated", calibration=calibration_of(model, None))
        StreamScorer.for_model(model, with_calibration(config, calibration_of(model, "fp32")))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_evaluate_and_detect_warn_and_score(model: MNAD, synthetic_root: Path, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    calibrated = with_calibration(tiny_config(), calibration_of(model, "bf16"))
    for protocol in ("published", "stream"):  # published: calibrated normalisation, the terms scaled afterwards
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=LOGGERS):
            metrics = evaluate(model, calibrated, synthetic_root, protocol=protocol, progress=False,
                               out_dir=tmp_path / protocol)
        assert metrics["normalization"] == "calibrated"
        assert len(precision_warnings(caplog)) == 1, protocol
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGERS):
        summary = detect(model, calibrated, frames := str(frames_folder(tmp_path / "v", 12)), tmp_path / "d", progress=False)
    assert len(precision_warnings(caplog)) == 1
    assert (tmp_path / "d" / "summary.json").is_file()
    # summary.json says both precisions (was: neither: the warning alone said the thresholds were of other scores)
    assert summary["scoring_precision"] == "fp32" and summary["calibration_precision"] == "bf16"
    several = detect(model, calibrated, [str(frames_folder(tmp_path / f"c{i}", 8)) for i in range(2)], tmp_path / "s",
                     progress=False)
    assert several["scoring_precision"] == "fp32" and several["calibration_precision"] == "bf16"
    unrecorded = detect(model, with_calibration(tiny_config(), calibration_of(model, None)),
                        frames, tmp_path / "u", progress=False)
    assert unrecorded["scoring_precision"] == "fp32" and unrecorded["calibration_precision"] is None


def test_an_onnx_export_says_fp32_and_warns_against_a_bf16_calibration(model: MNAD, tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from mnad.export import export_onnx, load_onnx

    config = tiny_config()
    save_model(tmp_path / "m.safetensors", model, with_calibration(config, calibration_of(model, "bf16")))
    loaded, loaded_config = load_model(tmp_path / "m.safetensors")
    export_onnx(loaded, loaded_config, tmp_path / "m.onnx")
    exported = load_onnx(tmp_path / "m.onnx")
    assert exported.step.precision == "fp32" and exported.config.calibration().precision == "bf16"
    with caplog.at_level(logging.WARNING, logger=LOGGERS):
        scorer = StreamScorer.for_model(exported, exported.config)
    assert scorer.precision == "fp32" and len(precision_warnings(caplog)) == 1
    # the advice is one an export can follow: --bf16 is refused with an export (detect, evaluate), so it is not given;
    # the model it was exported from in bf16, or a calibration in fp32 exported again
    (message,) = precision_warnings(caplog)
    assert "--bf16" not in message and "(--bf16" not in message, message
    assert "exported from in bf16" in message and "mnad calibrate --fp32` and export the calibrated model again" in message


# -- calibrations written before the precision was recorded ---------------------------------------------------------------

def test_a_calibration_without_the_field_loads_and_a_bad_one_is_refused(model: MNAD, tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    old = calibration_of(model, "bf16").to_dict()
    del old["precision"]
    read = Calibration.from_dict(old)
    assert read.precision is None and read == dataclasses.replace(calibration_of(model, "bf16"), precision=None)
    config = tiny_config()
    save_model(tmp_path / "old.safetensors", model, with_calibration(config, read))
    with caplog.at_level(logging.WARNING, logger=LOGGERS):
        _, loaded = load_model(tmp_path / "old.safetensors")
        StreamScorer.for_model(model, loaded)
    assert loaded.calibration().precision is None and not precision_warnings(caplog)
    with pytest.raises(ConfigError, match="precision must be 'fp32' or 'bf16' or 'int8'"):
        Calibration.from_dict({**old, "precision": "fp16"})


# -- the CLI ------------------------------------------------------------------------------------------------------------

def test_the_cli_says_it_once_and_fp32_or_bf16_chooses_the_calibrated_precision(model: MNAD, synthetic_root: Path,
                                                                               tmp_path: Path,
                                                                               capsys: pytest.CaptureFixture[str]) -> None:
    save_model(tmp_path / "c.safetensors", model, with_calibration(tiny_config(), calibration_of(model, "fp32")))
    runs = [("--fp32", 0)]
    if mnad.precision.bf16_is_native("cpu"):
        runs.append(("--bf16", 1))
    for flag, warnings in runs:
        code = main(["evaluate", "--checkpoint", str(tmp_path / "c.safetensors"), "--data-root", str(synthetic_root),
                     "--protocol", "stream", flag, "--out", str(tmp_path / flag), "--quiet"])
        err = capsys.readouterr().err
        assert code == 0, err
        said = [line for line in err.splitlines() if "calibration was fitted on scores computed in fp32" in line]
        assert len(said) == warnings, err
        if warnings:
            assert "computes them in bf16" in said[0] and "--fp32" in said[0]
