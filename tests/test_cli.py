"""The ``mnad`` command, called in-process through mnad.cli.main."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from mnad.cli import main
from mnad.config import load_config, recipe_names

TINY = ["--set", "model.image_size=32", "--set", "model.width=8", "--epochs", "1",
        "--set", "train.bf16=false", "--set", "train.channels_last=false", "--quiet"]


def test_train_then_evaluate(synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    code = main(["train", "--recipe", "synthetic_pred", "--data-root", str(synthetic_root), "--out", str(run), *TINY])
    assert code == 0
    out = capsys.readouterr().out
    assert "model written to" in out and str(run / "model.safetensors") in out
    stored = json.loads((run / "config.json").read_text())
    assert stored["name"] == "synthetic_pred" and stored["dataset"] == "synthetic"
    assert stored["model"]["image_size"] == 32 and stored["model"]["width"] == 8
    assert stored["train"]["epochs"] == 1 and stored["train"]["bf16"] is False
    assert len((run / "train_log.jsonl").read_text().splitlines()) == 1

    evaluation = tmp_path / "eval"
    code = main(["evaluate", "--checkpoint", str(run), "--data-root", str(synthetic_root), "--out", str(evaluation),
                 "--alpha", "0.5", "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "frame-level AUC" in out and "micro" in out
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert metrics["metrics"]["alpha"] == 0.5  # the option reached the config
    assert metrics["metrics"]["frames_scored"] == 2 * (24 - 4)
    with (evaluation / "scores.csv").open(newline="") as handle:
        assert sum(1 for _ in csv.DictReader(handle)) == 2 * (24 - 4)


def test_missing_data_root_returns_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no" / "such" / "root"
    code = main(["train", "--recipe", "synthetic_pred", "--data-root", str(missing), "--out", str(tmp_path / "run"), *TINY])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("mnad: error:")
    assert str(missing) in err
    assert "Traceback" not in err


def test_evaluate_missing_checkpoint_returns_2(synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nothing.safetensors"
    code = main(["evaluate", "--checkpoint", str(missing), "--data-root", str(synthetic_root), "--quiet"])
    assert code == 2
    assert str(missing) in capsys.readouterr().err


def test_unknown_override_and_recipe_return_2(synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--recipe", "synthetic_pred", "--data-root", str(synthetic_root), "--out", str(tmp_path / "r"),
                 "--set", "model.colour=3"])
    assert code == 2
    assert "colour" in capsys.readouterr().err
    code = main(["train", "--recipe", "no_such_recipe", "--data-root", str(synthetic_root), "--out", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert "no_such_recipe" in err and "ped2_pred" in err  # lists the known ones
    assert not (tmp_path / "r").exists()


def test_recipes_lists_the_shipped_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes"]) == 0
    names = capsys.readouterr().out.split()
    for name in ("ped2_pred", "ped2_recon", "ped2_pred_fast", "synthetic_pred"):
        assert name in names


def test_recipes_show_prints_full_configs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes", "--show"]) == 0
    out = capsys.readouterr().out
    blocks = {}
    for chunk in out.split("# ")[1:]:
        name, _, body = chunk.partition("\n")
        blocks[name.strip()] = json.loads(body)
    assert blocks["ped2_pred"]["model"]["image_size"] == 256 and blocks["ped2_pred"]["train"]["epochs"] == 60
    assert blocks["ped2_recon"]["model"]["task"] == "recon" and blocks["ped2_recon"]["eval"]["alpha"] == 0.7
    assert blocks["ped2_recon"]["train"]["lambda_compact"] == 0.01
    assert blocks["ped2_pred_fast"]["model"]["image_size"] == 128
    # ped2_pred_fast_smoothed's results are the ped2_pred_fast runs rescored: it must train exactly the same model
    smoothed, fast = blocks["ped2_pred_fast_smoothed"], blocks["ped2_pred_fast"]
    assert smoothed["model"] == fast["model"] and smoothed["train"] == fast["train"]
    assert smoothed["eval"] | {"alpha": 0.6, "smoothing": 1, "bf16": False, "channels_last": False} == fast["eval"]
    assert "ped2_pred_realtime" not in blocks  # renamed by issue #17: its per-video normalisation is not causal


def test_no_recipe_name_promises_causal_scores_it_does_not_give() -> None:
    # issue #17: "real-time", "causal", "live" or "stream" may name only a recipe whose scores use no later frame
    # and no statistic of the test set, i.e. not the published per-video min-max normalisation
    for name in recipe_names():
        if re.search(r"real.?time|causal|live|stream", name):
            assert load_config(name).eval.normalization != "video", name


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


@pytest.mark.parametrize(("command", "args", "said"), [
    ("evaluate", ["--checkpoint", "m", "--data-root", "d"], "nothing was written"),
    ("calibrate", ["--checkpoint", "m", "--out", "c.safetensors"], "nothing was written"),
    ("train", ["--data-root", "d", "--out", "run"], "the last finished epoch is kept: continue with --resume"),
    ("detect", ["src", "--checkpoint", "m", "--out", "o"], "the outputs of the frames scored so far are written"),
])
def test_a_stopped_command_says_what_it_leaves(command: str, args: list[str], said: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C or SIGTERM: the last line says what is left (was: "what was done so far is written" for every command,
    though evaluate, calibrate, export, figures and report write their outputs whole at their end: nothing is)."""
    import mnad.cli
    from mnad.errors import Terminated

    monkeypatch.chdir(tmp_path)
    for stop, code, word in ((KeyboardInterrupt(), 130, "interrupted"), (Terminated(), 143, "terminated")):
        def stopped(_: object, stop: BaseException = stop) -> None:
            if command == "train":  # stopped after an epoch: train() records the epochs its checkpoint holds
                stop.epochs_kept = 1  # type: ignore[attr-defined]
            raise stop

        monkeypatch.setattr(mnad.cli, f"cmd_{command}", stopped)
        assert main([command, *args]) == code
        assert capsys.readouterr().err == f"mnad: {word} ({said})\n"
