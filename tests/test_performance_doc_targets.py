"""docs/performance.md does not count issue #3's target as met on an offline AUC or on a scoring chosen on test labels."""

from __future__ import annotations

from pathlib import Path

from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


def frame_rate_section() -> str:
    """The "Frame rate of the CPU recipes" section rendered from the committed benchmark results."""
    text = load_script("benchmarks/make_performance_doc.py").render(ROOT / "benchmarks" / "results")
    start = text.index("## Frame rate of the CPU recipes")
    return text[start:text.index("\n## ", start + 1)]


def test_the_smoothed_recipe_is_not_called_a_met_target() -> None:
    section = frame_rate_section()
    rows = [line for line in section.splitlines() if line.startswith("| `smoothed128`")]
    assert len(rows) == 1
    # the committed numbers reach 25 frames/s and 96 %, but the AUC is offline and its scoring was chosen on Ped2 test
    assert "**yes**" not in section and "not met" in rows[0]
    assert "offline" in rows[0] and "chosen on Ped2 test" in rows[0]


def test_the_section_says_why_no_row_meets_issue_3() -> None:
    section = frame_rate_section()
    assert "No row meets issue #3's target" in section
    assert "picked on Ped2 test results" in section and "per-video min-max" in section


def test_every_row_scored_by_psnr_only_says_its_scoring_was_chosen_on_test() -> None:
    """Decided from the alpha each result folder was scored with, as frame_rate.json records it."""
    import json
    rows = json.loads((ROOT / "benchmarks" / "results" / "frame_rate.json").read_text())["candidates"]
    section = frame_rate_section()
    make_doc = load_script("benchmarks/make_performance_doc.py")
    alpha_one = [r for r in rows if r["accuracy"]["runs"] and all(x["alpha"] == 1 for x in r["accuracy"]["runs"])]
    assert len(alpha_one) == 6
    for r in rows:
        name = make_doc.RENAMED_CANDIDATES.get(r["candidate"], r["candidate"])
        line = next(x for x in section.splitlines() if x.startswith(f"| `{name}`"))
        assert ("scoring chosen on Ped2 test" in line) == (r in alpha_one), name


def test_fast_enough_is_read_under_its_old_name_too() -> None:
    make_doc = load_script("benchmarks/make_performance_doc.py")
    row = {"accuracy": {"runs": [{"alpha": 0.6}]}}
    assert make_doc.target_cell(row | {"fast_enough": True}) == "fast enough"
    assert make_doc.target_cell(row | {"real_time": True}) == "fast enough"  # committed runs before the rename
    assert make_doc.target_cell(row | {"fast_enough": False}) == "no"
    assert "`fast_enough` in the JSON (`real_time` in runs before" in frame_rate_section()
