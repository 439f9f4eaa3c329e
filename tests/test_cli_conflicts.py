"""Options that only apply beside another one, empty paths and output names of the wrong kind: refused at once with
one `mnad: error:` line, before any data is read or model scored (they were silently ignored, or wrote elsewhere)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_config

from mnad.cli import main
from mnad.errors import ConfigError
from mnad.export import export_onnx
from mnad.model import MNAD

MISSING = "no-such-model.safetensors"  # each check comes before the checkpoint is read: its error would name this


def refused(args: list[str], capsys: pytest.CaptureFixture[str], *parts: str) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("mnad: error: ") and err.count("\n") == 1, err
    for part in parts:
        assert part in err, (part, err)
    assert MISSING not in err


def test_holdout_sets_train_holdout_for_own_footage_and_benchmarks(synthetic_root: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """--holdout is train.holdout (the tail of each training video kept for calibration) whatever the data; --data
    holds out 10 % by default, a benchmark's split nothing."""
    import mnad.train

    asked = []
    monkeypatch.setattr(mnad.train, "train_run", lambda config, *a, **k: asked.append(config.train.holdout)
                        or mnad.train.TrainedRun(tmp_path / "m", untouched=False))
    for data, holdout, expected in ((["--data-root", str(synthetic_root)], ["--holdout", "0.3"], 0.3),
                                    (["--data-root", str(synthetic_root)], [], 0.0),
                                    (["--data", str(synthetic_root)], [], 0.1), (["--data", str(synthetic_root)], ["--holdout", "0.2"], 0.2)):
        assert main(["train", *data, *holdout, "--out", str(tmp_path / "run"), "--quiet"]) == 0
        assert asked.pop() == expected


@pytest.mark.parametrize("command", [
    ["train", "--data-root", "x"], ["evaluate", "--checkpoint", MISSING, "--data-root", "x"],
    ["detect", "x", "--checkpoint", MISSING], ["export", "--checkpoint", MISSING],
    ["calibrate", "--checkpoint", MISSING], ["figures", "--checkpoint", MISSING, "--data-root", "x"],
], ids=lambda c: c[0])
def test_an_empty_output_path_is_refused(command: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # "" was the current folder: train and detect wrote their outputs here
    refused([*command, "--out", ""], capsys, "--out is empty")
    assert list(tmp_path.iterdir()) == []


def test_report_options_are_checked_before_scoring(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evaluate = ["evaluate", "--checkpoint", MISSING, "--data-root", str(tmp_path)]
    refused([*evaluate, "--top-k", "4"], capsys, "--top-k applies to --report only")
    refused([*evaluate, "--report", str(tmp_path / "r"), "--top-k", "-1"], capsys, "top_k (--top-k) must be a whole number >= 0")
    (tmp_path / "file").write_text("")
    refused([*evaluate, "--report", str(tmp_path / "file" / "report")], capsys, f"{tmp_path / 'file' / 'report'}: cannot write there")


def test_an_export_is_named_onnx(tmp_path: Path) -> None:
    config = tiny_config()
    model = MNAD(config.model)
    calibrated = tmp_path / "calibrated.safetensors"
    calibrated.write_bytes(b"a model the export must not replace")
    with pytest.raises(ConfigError, match=r"calibrated.safetensors: an ONNX export is written as a .onnx file"):
        export_onnx(model, config, calibrated)
    assert calibrated.read_bytes() == b"a model the export must not replace"
    assert export_onnx(model, config, tmp_path / "m.onnx").exists()


def test_fps_applies_to_the_stream_protocol_only(tmp_path: Path) -> None:
    from mnad.evaluate import evaluate

    config = tiny_config()
    with pytest.raises(ConfigError, match=r"--fps applies to --protocol stream only"):
        evaluate(MNAD(config.model), config, tmp_path, fps=10.0)  # refused before the data root is read


def test_a_model_is_named_safetensors_and_an_export_is_not_a_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mnad.checkpoint import load_model, save_model
    from mnad.errors import CheckpointError

    config = tiny_config()
    with pytest.raises(CheckpointError, match=r"c.onnx: a model is written as a .safetensors file"):
        save_model(tmp_path / "c.onnx", MNAD(config.model), config)
    assert not (tmp_path / "c.onnx").exists()
    refused(["calibrate", "--checkpoint", MISSING, "--out", str(tmp_path / "c.onnx")], capsys, "c.onnx: a model is written as")
    export = export_onnx(MNAD(config.model), config, tmp_path / "m.onnx")
    with pytest.raises(CheckpointError, match=r"m.onnx: an ONNX export \(mnad export\), which only scores"):
        load_model(export)


def test_the_api_refuses_an_empty_output_path_too(model_file: Path, synthetic_root: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Path('') is the current folder: the Python API refuses it as the CLI does, before any work."""
    from mnad.checkpoint import load_model
    from mnad.detect import detect
    from mnad.evaluate import evaluate
    from mnad.report import create_report

    monkeypatch.chdir(tmp_path)
    model, config = load_model(model_file)
    for call in (lambda: detect(model, config, str(synthetic_root), ""),
                 lambda: evaluate(model, config, synthetic_root, out_dir="", progress=False),
                 lambda: export_onnx(model, config, ""),
                 lambda: create_report(model, config, synthetic_root, tmp_path, "")):
        with pytest.raises(ConfigError, match="is empty: name a folder or file"):
            call()
    assert list(tmp_path.iterdir()) == []
