"""detect's normalisation is decided by the API: ``DetectOptions.normalization`` is what was asked (None: the model's
own), and 'video' (per-video min-max, which looks at frames not yet arrived) is refused there, from the Python API as
from the command line; the CLI only passes what the user asked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import frames_folder

import mnad.detect
from mnad.calibrate import with_calibration
from mnad.calibration import Calibration
from mnad.checkpoint import load_model, save_model
from mnad.cli import main
from mnad.detect import DetectOptions, detect
from mnad.errors import ConfigError

LOOKS_AHEAD = r"^--normalization video: per-video min-max needs each video's whole footage \(it looks ahead\)"


@pytest.fixture(scope="module")
def calibrated_file(model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The untrained tiny model with a hand-made calibration (1-frame mean)."""
    model, config = load_model(model_file)
    cal = Calibration(psnr_low=0.0, psnr_high=40.0, distance_low=0.0, distance_high=1.0, threshold=0.5,
                      false_alarm_rate=0.05, smoothing=1, frames=100)
    path = tmp_path_factory.mktemp("calibrated") / "calibrated.safetensors"
    save_model(path, model, with_calibration(config, cal))
    return path


@pytest.mark.parametrize("calibrated", [False, True])
def test_the_api_refuses_an_asked_video_normalization(model_file: Path, calibrated_file: Path, tmp_path: Path,
                                                      calibrated: bool) -> None:
    with pytest.raises(ConfigError, match=LOOKS_AHEAD):
        DetectOptions(normalization="video")
    model, config = load_model(calibrated_file if calibrated else model_file)
    out = tmp_path / "o"
    with pytest.raises(ConfigError, match=LOOKS_AHEAD):
        detect(model, config, str(frames_folder(tmp_path / "f", 6)), out, DetectOptions(normalization="video"), progress=False)
    assert not out.exists()


def test_the_api_checks_an_asked_normalization_against_the_model(model_file: Path, calibrated_file: Path,
                                                                  tmp_path: Path) -> None:
    src = str(frames_folder(tmp_path / "f", 6))
    model, config = load_model(model_file)
    assert config.eval.normalization == "video"  # the offline evaluation's default, which no one asked of detect
    for i, asked in enumerate((None, "causal")):
        summary = detect(model, config, src, tmp_path / f"u{i}", DetectOptions(normalization=asked), progress=False)
        assert summary["calibrated"] is False and summary["frames_scored"] > 0
    with pytest.raises(ConfigError, match="eval.normalization = 'calibrated' needs a calibration"):
        detect(model, config, src, tmp_path / "u", DetectOptions(normalization="calibrated"), progress=False)
    model, config = load_model(calibrated_file)
    for i, asked in enumerate((None, "calibrated")):
        summary = detect(model, config, src, tmp_path / f"c{i}", DetectOptions(normalization=asked), progress=False)
        assert summary["calibrated"] is True
    with pytest.raises(ConfigError, match="not on --normalization causal.*drop --normalization"):
        detect(model, config, src, tmp_path / "c", DetectOptions(normalization="causal"), progress=False)
    for bad in ("running", 1, ["causal"]):
        with pytest.raises(ConfigError, match="--normalization must be causal or calibrated"):
            DetectOptions(normalization=bad)  # type: ignore[arg-type]
    assert not (tmp_path / "u").exists() and not (tmp_path / "c").exists()


@pytest.mark.parametrize("calibrated", [False, True])
def test_the_cli_says_the_apis_refusal_once(model_file: Path, calibrated_file: Path, tmp_path: Path, calibrated: bool,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError) as refused:
        DetectOptions(normalization="video")
    src = frames_folder(tmp_path / "f", 6)
    base = ["detect", str(src), "--checkpoint", str(calibrated_file if calibrated else model_file), "--quiet"]
    for asked in (["--normalization", "video"], ["--set", "eval.normalization=video"],
                  ["--normalization", "causal", "--set", "eval.normalization=video"]):  # --set comes last, and wins
        assert main([*base, "--out", str(tmp_path / "v"), *asked]) == 2
        captured = capsys.readouterr()
        assert captured.err.endswith(f"mnad: error: {refused.value}\n") and captured.err.count("mnad: error:") == 1
        assert "Traceback" not in captured.err and captured.out == ""
        assert not (tmp_path / "v").exists()


def test_the_cli_passes_what_was_asked(model_file: Path, calibrated_file: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    passed: list[str | None] = []

    def recording(model: object, config: object, source: object, out: object, options: DetectOptions, **kw: object) -> dict:
        passed.append(options.normalization)
        return {}

    monkeypatch.setattr(mnad.detect, "detect", recording)
    src = str(frames_folder(tmp_path / "f", 6))
    for checkpoint, asked in ((model_file, []), (model_file, ["--normalization", "causal"]),
                              (model_file, ["--set", "eval.normalization=causal"]), (calibrated_file, []),
                              (calibrated_file, ["--normalization", "calibrated"])):
        assert main(["detect", src, "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"), "--quiet", *asked]) == 0
        assert json.loads(capsys.readouterr().out) == {}
    assert passed == [None, "causal", "causal", None, "calibrated"]
