"""docs/performance.md does not count issue #3's target as met on an offline AUC or on a scoring chosen on test labels."""

from __future__ import annotations

from pathlib import Path

from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


def realtime_section() -> str:
    """The "Frame rate of the CPU recipes" section rendered from the committed benchmark results."""
    text = load_script("benchmarks/make_performance_doc.py").render(ROOT / "benchmarks" / "results")
    start = text.index("## Frame rate of the CPU recipes")
    return text[start:text.index("\n## ", start + 1)]


def test_the_smoothed_recipe_is_not_called_a_met_target() -> None:
    section = realtime_section()
    rows = [line for line in section.splitlines() if line.startswith("| `smoothed128`")]
    assert len(rows) == 1
    # the committed numbers reach 25 frames/s and 96 %, but the AUC is offline and its scoring was chosen on Ped2 test
    assert "**yes**" not in section and "not met" in rows[0]
    assert "offline" in rows[0] and "chosen on Ped2 test" in rows[0]


def test_the_section_says_why_no_row_meets_issue_3() -> None:
    section = realtime_section()
    assert "No row meets issue #3's target" in section
    assert "picked on Ped2 test results" in section and "per-video min-max" in section
