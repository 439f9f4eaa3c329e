"""scripts/make_results_doc.py: the generated sections compute what they say."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def doc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_results_doc", ROOT / "scripts" / "make_results_doc.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_results_doc", module)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RESULTS", tmp_path)
    return module


def write_run(root: Path, name: str, *, seed: int, bf16: bool, micro: float, macro: float) -> None:
    (root / name).mkdir()
    config = {"train": {"seed": seed, "bf16": bf16}, "eval": {"bf16": False},
              "model": {"task": "pred", "memory": True, "t_length": 5}}
    (root / name / "metrics.json").write_text(json.dumps({"config": config, "metrics": {"micro_auc": micro, "macro_auc": macro}}))


def test_training_precision_pairs_each_seed_with_its_fp32_run(doc: ModuleType, tmp_path: Path) -> None:
    assert doc.training_precision() == ""  # no fp32 run yet: no section
    write_run(tmp_path, "ped2_pred_fast", seed=0, bf16=True, micro=0.9370, macro=0.9827)
    write_run(tmp_path, "ped2_pred_fast_seed1", seed=1, bf16=True, micro=0.9335, macro=0.9750)
    write_run(tmp_path, "ped2_pred_fast_fp32_seed0", seed=0, bf16=False, micro=0.9420, macro=0.9800)
    write_run(tmp_path, "ped2_pred_fast_fp32_seed1", seed=2, bf16=False, micro=0.9000, macro=0.9000)  # another seed: not paired
    section = doc.training_precision()
    assert "| 0 | 93.70 | **94.20** | +0.50 | 98.27 | 98.00 | -0.27 |" in section
    assert "| 1 |" not in section and "over 1 seed(s): +0.50 points micro, -0.27 macro" in section
    assert "span 93.35–93.70 micro" in section and "scored in fp32" in section


def test_the_paper_figure_of_each_table_1_model(doc: ModuleType) -> None:
    model = lambda task, memory, t: {"model": {"task": task, "memory": memory, "t_length": t}}  # noqa: E731
    assert doc.paper_auc(model("pred", True, 5)) == 97.0
    assert doc.paper_auc(model("recon", True, 1)) == 90.2
    assert doc.paper_auc(model("recon", False, 1)) == 86.4
    assert doc.paper_auc(model("recon", True, 16)) == 91.0  # motion cues


def test_a_curve_scored_while_its_run_trains_says_how_far_it_had_trained(doc: ModuleType, tmp_path: Path) -> None:
    folder = tmp_path / "ped2_pred"
    folder.mkdir()
    assert doc.training_so_far(folder, "ped2_pred") == ""  # no train log beside the curve: nothing to say
    (folder / "train_log.jsonl").write_text("".join(json.dumps({"epoch": e}) + "\n" for e in range(1, 11)))
    said = doc.training_so_far(folder, "ped2_pred")
    assert "10 of its 60 epochs trained" in said and f"`{tmp_path.name}/ped2_pred/commands.txt`" in said
    (folder / "metrics.json").write_text("{}")  # evaluated: the run has ended
    assert doc.training_so_far(folder, "ped2_pred") == ""


def test_a_curve_whose_run_was_lost_says_it_stopped_for_good(doc: ModuleType, tmp_path: Path) -> None:
    """A run folder lost with its machine: the curve beside a LOST_RUN file says why, not that the run goes on."""
    folder = tmp_path / "ped2_pred_run1"
    folder.mkdir()
    (folder / "train_log.jsonl").write_text("".join(json.dumps({"epoch": e}) + "\n" for e in range(1, 21)))
    (folder / doc.LOST_RUN).write_text(json.dumps({"why": "the machine was replaced", "moved_from": "results/ped2_pred"}))
    said = doc.training_so_far(folder, "ped2_pred")
    assert "stopped for good: the machine was replaced" in said and "20 of its 60 epochs" in said
    assert "goes on" not in said and "`results/ped2_pred`" in said


def test_the_committed_lost_run_says_why() -> None:
    """results/ped2_pred_run1 is the paper run's first attempt, lost with its machine: its lost.json has both fields."""
    said = json.loads((Path(__file__).resolve().parents[1] / "results" / "ped2_pred_run1" / "lost.json").read_text(encoding="utf-8"))
    assert said["why"] and said["moved_from"] == "results/ped2_pred"


def test_the_paper_recipe_s_curve_says_what_differs_from_the_paper(doc: ModuleType) -> None:
    """The paragraph is keyed to the recipe the paper run trains (scripts/long_runs.py's paper job)."""
    long_runs = load_script("scripts/long_runs.py")
    assert long_runs.JOBS["paper"].recipe == doc.PAPER_RECIPE
    assert "train.compile=true" in long_runs.JOBS["paper"].overrides  # the paragraph's point (2)
    assert "`train.compile=true`" in doc.PAPER_RECIPE_DIFFERENCES and "PyTorch 2.13" in doc.PAPER_RECIPE_DIFFERENCES


def test_the_paper_figures_not_printed_in_the_paper_carry_a_mark_and_say_where_they_come_from(doc: ModuleType) -> None:
    model = lambda task, memory, t: {"model": {"task": task, "memory": memory, "t_length": t}}  # noqa: E731
    assert doc.paper_cell(model("pred", True, 5)) == "97.0" and doc.paper_cell(model("recon", True, 16)) == "91.0"
    assert doc.paper_cell(model("pred", False, 5)) == "94.3†" and doc.paper_cell(model("recon", False, 1)) == "86.4‡"
    table = doc.table1()  # no runs in tmp_path: every row "not run", the paper column and its footnote still shown
    assert "| 94.3† |" in table and "| 86.4‡ |" in table and "| 97.0 |" in table
    note = doc.paper_footnote()
    assert note in table and "† 94.3" in note and "derived" in note and "‡ 86.4" in note and "from memory" in note
    assert "docs/method.md 7.1" in note
    assert note in doc.summary_table([])


def test_table_1_s_marks_follow_their_rows_in_any_order(doc: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each row's mark comes from its own paper figure's key (was: TABLE1_MARKS by row index, which a reordering or a
    new row would put on another row's figure)."""
    by_label = {row.label: f"{row.paper}{row.mark}" for row in doc.TABLE1}
    assert by_label["Prediction, without memory"] == "94.3†" and by_label["Reconstruction, without memory"] == "86.4‡"
    assert [row.mark for row in doc.TABLE1].count("") == 3
    monkeypatch.setattr(doc, "TABLE1", doc.TABLE1[::-1])
    for line in doc.table1().splitlines():
        label = line.split(" | ")[0].removeprefix("| ")
        if label in by_label:
            assert line.endswith(f"| {by_label[label]} |"), line
    for label, paper in [("Prediction, without memory", "94.3†"), ("Reconstruction, with memory", "90.2")]:
        assert f"| {label} | not run | | | | {paper} |" in doc.table1()


def test_the_pseudo_anomaly_length_is_what_mnad_pseudo_plays() -> None:
    from types import SimpleNamespace

    from mnad import pseudo
    doc = load_script("scripts/make_results_doc.py")
    region = pseudo.SpedUpRegion(SimpleNamespace(name="v", path=None, pixel_range=None), 0, (0.5, 0.5))
    fast = int(region.labels(len(region)).sum())
    said = doc.pseudo_anomaly_length()
    assert f"too fast for {fast} frames, after {len(region) - fast} shown as they are" in said
    assert (fast, len(region) - fast) == (19, 21)  # docs/method.md 9.2 and docs/detect.md state these counts
    for path in ("docs/method.md", "docs/detect.md"):
        assert "20 frames" not in (ROOT / path).read_text().split("too fast", 1)[1][:200], path


def test_the_frame_counts_are_read_from_the_committed_metrics() -> None:
    doc = load_script("scripts/make_results_doc.py")
    said = doc.frame_counts()
    pred = json.loads((ROOT / "results" / "ped2_pred_fast" / "metrics.json").read_text())["metrics"]
    assert "the dataset's totals are 2,010 frames, 1,648 abnormal" in said
    assert f"score {pred['frames_scored']:,} frames, {pred['abnormal_frames']:,} abnormal" in said


def test_the_smoothed_recipe_says_its_scoring_was_picked_on_test_results() -> None:
    section = load_script("scripts/make_results_doc.py").smoothed_recipe()
    assert "PSNR only (alpha 1) was picked on Ped2's test results" in section and "not a label-free figure" in section


def test_the_readme_stream_row_says_what_was_seen_before_calibrate_was_written(doc: ModuleType) -> None:
    said = doc.calibrate_history("ped2_stream_8ep", 8)
    assert "after this run's epoch-3 test columns had been seen" in said and "epochs 4 to 8" in said and "epoch 8" in said
    assert "had been seen" in doc.calibrate_history("ped2_stream", 2)


def _readme_copy(tmp_path: Path, broken: str) -> tuple[Path, str]:
    text = (ROOT / "README.md").read_text()
    text = {"missing": text.replace("<!-- stream:start -->\n", ""),
            "twice": text + "\n<!-- results:end -->\n",
            "reversed": text.replace("<!-- stream:start -->", "<!-- swap -->").replace("<!-- stream:end -->", "<!-- stream:start -->")
                            .replace("<!-- swap -->", "<!-- stream:end -->")}[broken]
    readme = tmp_path / "README.md"
    readme.write_text(text)
    return readme, text


@pytest.mark.parametrize(("broken", "marker"), [("missing", "stream"), ("twice", "results"), ("reversed", "stream")])
def test_a_readme_whose_markers_are_broken_is_refused_and_nothing_is_written(
        doc: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], broken: str, marker: str) -> None:
    """A README without a block's markers (or with two) was left as it was, silently, and the script exited 0."""
    readme, text = _readme_copy(tmp_path, broken)
    out = tmp_path / "docs" / "results.md"
    monkeypatch.setattr(doc, "results_doc", lambda: pytest.fail("rendered before the README was checked"))
    assert doc.main(["--readme", str(readme), "--out", str(out)]) == 1
    assert readme.read_text() == text and not out.exists()
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("make_results_doc.py: error: ") and str(readme) in line and f"<!-- {marker}:start -->" in line


def test_the_readme_blocks_are_replaced_between_their_markers_and_both_files_written(
        doc: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- results:start -->\nold table\n<!-- results:end -->\nmiddle\n<!-- stream:start -->\n"
                      "old\nstream\n<!-- stream:end -->\nend\n")
    monkeypatch.setattr(doc, "table1", lambda: "new table")
    monkeypatch.setattr(doc, "stream_readme_block", lambda: "new stream")
    monkeypatch.setattr(doc, "results_doc", lambda: "# Results\n")
    out = tmp_path / "results.md"
    assert doc.main(["--readme", str(readme), "--out", str(out)]) == 0
    assert readme.read_text() == ("# x\n<!-- results:start -->\nnew table\n<!-- results:end -->\nmiddle\n<!-- stream:start -->\n"
                                  "new stream\n<!-- stream:end -->\nend\n")
    assert out.read_text() == "# Results\n"


def test_the_smoothing_windows_table_takes_its_auc_from_the_package(doc: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """The window table's micro AUCs are mnad.evaluate.auc_metrics's (what `mnad evaluate` reports), not a second
    computation of the same quantity; the committed document holds the same figures."""
    import mnad.evaluate

    monkeypatch.setattr(doc, "RESULTS", ROOT / "results")
    folders = doc.SMOOTHED[-1][1]
    if not all((ROOT / "results" / f / "scores.csv").is_file() for f in folders):
        pytest.skip("the smoothed recipe's scores are not committed")
    calls = []
    real = mnad.evaluate.auc_metrics
    monkeypatch.setattr(mnad.evaluate, "auc_metrics", lambda videos: calls.append(len(videos)) or real(videos))
    lines = doc.smoothing_windows()
    assert len(calls) == len(folders) * len(doc.SMOOTHING_WINDOWS)
    committed = (ROOT / "docs" / "results.md").read_text()
    rows = [line for line in lines if line.startswith("| `")]
    assert len(rows) == len(folders) and all(row in committed for row in rows)
