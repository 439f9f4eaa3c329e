"""scripts/ped2_detect.py on a tiny generated scene laid out as ped2/ (no real Ped2 scoring here): the videos are
written at the dataset's recording rate, the summary says the calibration footage was training data, and the outputs
replace an earlier run's only once all are done."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from conftest import load_script

from mnad.data.synthetic import make_synthetic_dataset
from mnad.errors import DataError


@pytest.fixture(scope="module")
def ped2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("detect"), name="ped2", n_train=2, n_test=2, n_frames=64, size=32)


def committed(out: Path) -> dict[str, bytes]:
    for name in ("summary.json", "01/scores.csv", "02/events.jsonl"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(f"the committed {name}\n")
    return files(out)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_detect_at_the_datasets_rate_says_the_calibration_is_in_sample(ped2: Path, model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "results" / "ped2_detect"
    committed(out)
    # a Ped2 folder under another name (the rate was looked up by the folder's name: 25 for UCSDped2)
    renamed = Path(shutil.copytree(ped2, tmp_path / "UCSDped2"))
    assert load_script("scripts/ped2_detect.py").main(["--checkpoint", str(model_file), "--ped2", str(renamed), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fps"] == 10.0 and "ped2 dataset's recording rate" in summary["fps_source"]  # was 25
    assert summary["calibration_in_sample"] and "trained on" in summary["calibration_footage"]
    rows = list(csv.DictReader((out / "01" / "scores.csv").open()))
    assert [float(r["time"]) for r in rows] == pytest.approx([int(r["frame"]) / 10 for r in rows], abs=1e-3)
    assert (out / "02" / "events.jsonl").read_text() != "the committed 02/events.jsonl\n"
    assert [p.name for p in out.parent.iterdir()] == ["ped2_detect"]  # no temporary folder left


def test_a_run_that_fails_half_way_leaves_the_earlier_outputs_as_they_were(ped2: Path, model_file: Path, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch,
                                                                           capsys: pytest.CaptureFixture) -> None:
    """The second video fails: the first one's folder used to be replaced already, beside the old summary."""
    script = load_script("scripts/ped2_detect.py")
    out = tmp_path / "results" / "ped2_detect"
    before = committed(out)
    detect = script.detect

    def second_fails(model: object, config: object, source: str, out_dir: Path, *args: object, **kwargs: object) -> dict:
        if Path(out_dir).name == "02":
            raise DataError(f"{source}: cannot be read")
        return detect(model, config, source, out_dir, *args, **kwargs)

    monkeypatch.setattr(script, "detect", second_fails)
    assert script.main(["--checkpoint", str(model_file), "--ped2", str(ped2), "--out", str(out)]) == 1
    said = capsys.readouterr().err.strip().splitlines()
    # one error line; warnings besides it are the calibration's (this tiny model's footage is short for a 1 % check)
    (line,) = [s for s in said if "warning:" not in s]
    assert line.startswith("ped2_detect.py: error: ") and "cannot be read" in line
    assert files(out) == before and [p.name for p in out.parent.iterdir()] == ["ped2_detect"]


def test_a_missing_checkpoint_is_one_error_line(ped2: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    rc = load_script("scripts/ped2_detect.py").main(["--checkpoint", str(tmp_path / "none"), "--ped2", str(ped2), "--out", str(out)])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and line.startswith("ped2_detect.py: error: ") and "not found" in line and list(tmp_path.iterdir()) == []
