"""scripts/epoch_curve.py's bookkeeping, with the model loading and scoring faked (the real scoring is in
test_end_to_end.py): which epochs a rerun scores again, which it keeps, and the losses it fills in later."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import load_script

SCRIPT = "scripts/epoch_curve.py"


@pytest.fixture
def curve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The script with a fake model: an epoch file's bytes are its AUC ('0.5'); ``scored`` lists the files scored."""
    script = load_script(SCRIPT)
    scored: list[str] = []
    monkeypatch.setattr(script, "load_model", lambda path: (Path(path), SimpleNamespace(name="tiny", eval=SimpleNamespace())))

    def evaluate(model: Path, config: object, data_root: str, *, progress: bool) -> dict:
        scored.append(model.name)
        auc = float(model.read_text(encoding="utf-8"))
        return {"micro_auc": auc, "macro_auc": auc}

    monkeypatch.setattr(script, "evaluate", evaluate)
    run, out = tmp_path / "run", tmp_path / "curve.json"
    run.mkdir()

    def main(*epochs: int) -> dict:
        argv = ["epoch_curve.py", str(run), "--data-root", "data", "--out", str(out)]
        monkeypatch.setattr(sys, "argv", argv + (["--epochs", ",".join(map(str, epochs))] if epochs else []))
        script.main()
        return json.loads(out.read_text())

    return SimpleNamespace(script=script, run=run, out=out, scored=scored, main=main)


def log(run: Path, *losses: float) -> None:
    (run / "train_log.jsonl").write_text("".join(json.dumps({"epoch": e, "loss_total": x}) + "\n"
                                                 for e, x in enumerate(losses, 1)))


def test_a_file_not_named_for_an_epoch_is_ignored(curve: SimpleNamespace) -> None:
    (curve.run / "epoch_001.safetensors").write_text("0.5")
    (curve.run / "epoch_best.safetensors").write_text("0.9")  # put there by hand: no epoch of its own
    assert [r["epoch"] for r in curve.main()["epochs"]] == [1] and curve.scored == ["epoch_001.safetensors"]


def test_a_retrained_epoch_is_scored_again_an_unchanged_one_is_not(curve: SimpleNamespace) -> None:
    for epoch in (1, 2):
        (curve.run / f"epoch_{epoch:03d}.safetensors").write_text("0.5")
    log(curve.run, 0.3, 0.2)
    first = curve.main(1, 2)
    assert first["epochs"][0]["model_sha256"] == hashlib.sha256(b"0.5").hexdigest()
    before = curve.out.read_bytes()
    curve.scored.clear()
    curve.main(1, 2)  # nothing changed: nothing scored or written
    assert curve.scored == [] and curve.out.read_bytes() == before

    (curve.run / "epoch_002.safetensors").write_text("0.75")  # the run trained again: epoch 2 is another model
    log(curve.run, 0.3, 0.1)
    records = curve.main(1, 2)["epochs"]
    assert curve.scored == ["epoch_002.safetensors"]
    assert [(r["epoch"], r["micro_auc"], r["loss_total"]) for r in records] == [(1, 0.5, 0.3), (2, 0.75, 0.1)]
    assert records[1]["model_sha256"] == hashlib.sha256(b"0.75").hexdigest()


def test_a_record_that_names_no_file_is_kept(curve: SimpleNamespace) -> None:
    """A curve written before records named their file (results/ped2_pred_run1/epoch_curve.json): kept, not scored again."""
    (curve.run / "epoch_001.safetensors").write_text("0.75")
    old = {"run": "run", "recipe": "tiny", "scoring": {"bf16": False, "channels_last": False},
           "epochs": [{"epoch": 1, "micro_auc": 0.5, "macro_auc": 0.5, "loss_total": 0.3}]}
    curve.out.write_text(json.dumps(old, indent=2))
    before = curve.out.read_bytes()
    curve.main(1)
    assert curve.scored == [] and curve.out.read_bytes() == before


def test_a_loss_the_log_did_not_have_yet_is_filled_in_later(curve: SimpleNamespace) -> None:
    """The curve ran between epoch 2's model file and its log line: its loss is null until a rerun finds the line."""
    for epoch in (1, 2):
        (curve.run / f"epoch_{epoch:03d}.safetensors").write_text("0.5")
    log(curve.run, 0.3)
    assert [r["loss_total"] for r in curve.main()["epochs"]] == [0.3, None]
    log(curve.run, 0.3, 0.2)
    curve.scored.clear()
    assert [r["loss_total"] for r in curve.main()["epochs"]] == [0.3, 0.2] and curve.scored == []


def run_curve(curve: SimpleNamespace, *flags: str) -> int:
    return curve.script.main([str(curve.run), "--data-root", "data", "--out", str(curve.out), *flags])


def test_each_record_says_how_it_was_scored_and_a_curve_is_one_scoring(curve: SimpleNamespace,
                                                                        capsys: pytest.CaptureFixture) -> None:
    for epoch in (1, 2):
        (curve.run / f"epoch_{epoch:03d}.safetensors").write_text("0.5")
    assert run_curve(curve, "--epochs", "1", "--bf16", "--channels-last") == 0
    (record,) = json.loads(curve.out.read_text())["epochs"]
    assert record["scoring"] == {"bf16": True, "channels_last": True}
    assert record["command"].startswith("python scripts/epoch_curve.py ") and record["command"].endswith("--epochs 1 --bf16 --channels-last")
    before = curve.out.read_bytes()
    # continued with other flags: refused, one error line, nothing scored or written (was: relabelled as fp32)
    assert run_curve(curve, "--epochs", "1,2") == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("epoch_curve.py: error: ") and "one curve is one scoring" in line
    assert curve.out.read_bytes() == before and curve.scored == ["epoch_001.safetensors"]
    assert run_curve(curve, "--epochs", "1,2", "--bf16", "--channels-last") == 0  # the same flags: continued
    data = json.loads(curve.out.read_text())
    assert data["scoring"] == {"bf16": True, "channels_last": True} and [r["scoring"]["bf16"] for r in data["epochs"]] == [True, True]


def test_a_record_from_before_records_said_their_scoring_is_of_the_files(curve: SimpleNamespace,
                                                                         capsys: pytest.CaptureFixture) -> None:
    """A record written before records said their scoring (results/ped2_pred_run1/epoch_curve.json's first, until the
    script rewrote it with its scoring) has none of its own: it is the file's (fp32)."""
    committed = json.loads((Path(__file__).resolve().parents[1] / "results" / "ped2_pred_run1" / "epoch_curve.json").read_text())
    old = {k: v for k, v in committed["epochs"][0].items() if k not in ("scoring", "command", "model_sha256")}
    assert curve.script.record_scoring(old, committed["scoring"]) == {"bf16": False, "channels_last": False}
    curve.out.write_text(json.dumps({**committed, "run": "run", "epochs": [{**old, "epoch": 1}]}))
    for epoch in (1, 2):
        (curve.run / f"epoch_{epoch:03d}.safetensors").write_text("0.5")
    assert run_curve(curve, "--epochs", "1,2", "--bf16") == 1  # fp32 record, bf16 asked: refused
    assert "one curve is one scoring" in capsys.readouterr().err
    assert run_curve(curve, "--epochs", "1,2") == 0 and curve.scored == ["epoch_002.safetensors"]
    records = json.loads(curve.out.read_text())["epochs"]
    assert [r["scoring"] for r in records] == [{"bf16": False, "channels_last": False}] * 2
    assert "command" not in records[0] and records[0]["micro_auc"] == committed["epochs"][0]["micro_auc"]


@pytest.mark.parametrize("epochs", ["3,,x", "0", "2,-1", ""])
def test_epochs_that_are_not_numbers_are_one_error_line(curve: SimpleNamespace, capsys: pytest.CaptureFixture, epochs: str) -> None:
    (curve.run / "epoch_001.safetensors").write_text("0.5")
    if not epochs:  # an empty --epochs means all kept: no error
        assert run_curve(curve, "--epochs", epochs) == 0
        return
    assert run_curve(curve, "--epochs", epochs) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("epoch_curve.py: error: --epochs") and curve.scored == [] and not curve.out.exists()
