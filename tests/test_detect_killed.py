"""summary.json written while a detect run goes on: a run killed outright (SIGKILL, the OOM killer, a power cut) leaves
its last one, which says that the run never ended and how far it got; a run that ends writes the final one as before;
and the summaries are rewritten at a bounded interval, never once a frame."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest
from conftest import frames_folder, kill_when

import mnad.detect
from mnad.checkpoint import load_model
from mnad.detect import DetectOptions, detect, stream_folder
from mnad.outputs import SUMMARY_FILE, detect_run_entries, read_detect_scores

FAST = 0.2  # seconds between the summaries of the killed runs: a test's wait

# The keys of a source's summary.json before it was written during the run; those added with it
BEFORE = {"source", "frames_scored", "seconds", "fps", "source_fps", "latency_frames", "latency_seconds", "behind_seconds",
          "reconnections", "clock_start", "calibrated", "threshold", "false_alarm_rate", "above_threshold_rate",
          "alert_frames", "calibration_held_out_false_alarm_rate", "smoothing", "events", "ended_by", "annotated_video",
          "annotated_video_files", "note"}
ADDED = {"map_shards_deleted", "complete", "updated_at", "update_seconds", "annotated_video_deleted", "annotated_video_open", "row_segments",
         "row_segments_open", "row_segments_deleted", "not_finite_frames", "resumed", "scoring_precision",
         "calibration_precision", "calibration_overlaps_training"}

RUN = """
import sys
import mnad.detect
from mnad.checkpoint import load_model
from mnad.detect import DetectOptions, detect
mnad.detect.SUMMARY_SECONDS = float(sys.argv[1])
model, config = load_model(sys.argv[2])
detect(model, config, sys.argv[4:] if len(sys.argv) > 5 else sys.argv[4], sys.argv[3], DetectOptions(), progress=False)
"""


def read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def test_sigkill_leaves_summaries_that_say_the_run_never_ended(model_file: Path, tmp_path: Path) -> None:
    """Two sources: each source's summary.json and the run's (one source's layout, with its annotated segments:
    tests/test_video_segments.py::test_sigkill_loses_only_the_open_segment)."""
    sources = 2
    folders = [str(frames_folder(tmp_path / f"cam{i}", 800, size=16)) for i in range(sources)]
    out = tmp_path / "o"
    places = [out / stream_folder(i, f, sources) for i, f in enumerate(folders)] if sources > 1 else [out]
    kill_when(RUN, [str(FAST), str(model_file), str(out), *folders],
              lambda: all((s := read(p / SUMMARY_FILE)) is not None and s["frames_scored"] >= 20 for p in places))
    total = 0
    for place in places:
        summary = read(place / SUMMARY_FILE)
        assert summary is not None and summary.keys() == BEFORE | ADDED
        assert summary["complete"] is False and summary["ended_by"] is None  # never reads as a run that ended
        assert summary["update_seconds"] == FAST and datetime.fromisoformat(summary["updated_at"]).tzinfo is not None
        rows = len(read_detect_scores(place / "scores.csv"))
        total += rows
        # as far as it got, up to the rows scored in the last interval (and while it was being killed)
        assert 20 <= summary["frames_scored"] <= rows <= summary["frames_scored"] + summary["fps"] * (FAST + 2) + 5
        # atomic: a write cut short by the kill leaves at most a hidden .summary.json.*.tmp, never a half summary.json
        assert all(p.name.startswith(".summary.json.") for p in place.glob(".*.tmp"))
    if sources > 1:
        run = read(out / SUMMARY_FILE)
        assert run is not None and run["complete"] is False and run["updated_at"] and run["failed"] == 0
        assert [s["folder"] for s in run["streams"]] == [p.name for p in places]  # so an --overwrite run moves them
        assert [s["ended_by"] for s in run["streams"]] == [None, None]
        assert 0 < run["frames_scored"] <= total
        assert sorted(detect_run_entries(out)) == sorted([out / SUMMARY_FILE, *places])


def test_a_run_that_ends_writes_its_final_summary_as_before(model_file: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    model, config = load_model(model_file)
    writes: list[dict] = []
    write = mnad.detect.write_detect_summary
    monkeypatch.setattr(mnad.detect, "write_detect_summary", lambda d, s: (writes.append(s), write(d, s))[1])
    out = tmp_path / "o"
    summary = detect(model, config, str(frames_folder(tmp_path / "f", 12)), out, DetectOptions(), progress=False)
    assert json.loads((out / SUMMARY_FILE).read_text()) == summary and summary.keys() == BEFORE | ADDED
    assert summary["complete"] is True and summary["ended_by"] == "end of source"
    assert summary["frames_scored"] == len(read_detect_scores(out / "scores.csv")) == 12 - config.model.t_length + 1
    assert [w["complete"] for w in writes] == [False]  # the one at its first frame; the final one with events.csv


def test_summaries_are_rewritten_at_the_interval_not_once_a_frame(model_file: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    model, config = load_model(model_file)
    writes: list[tuple[float, Path, dict]] = []
    monkeypatch.setattr(mnad.detect, "write_detect_summary", lambda d, s: writes.append((time.monotonic(), Path(d), s)))
    folders = [str(frames_folder(tmp_path / f"cam{i}", 60)) for i in range(2)]
    detect(model, config, folders, tmp_path / "a", DetectOptions(), progress=False)  # 60 s: none of it
    # the run's at its start; each source's at its first frame and, for one that ends before the other, when it ends,
    # each time with the run's; the run's at its end: a few writes for ~110 frames scored
    names = [p.name for _, p, _ in writes]
    assert 1 <= names.count("0_cam0") <= 2 and 1 <= names.count("1_cam1") <= 2 and len(names) <= 9
    assert [s["complete"] for _, p, s in writes if p.name == "a"] == [False] * (names.count("a") - 1) + [True]

    writes.clear()
    interval = 0.05
    monkeypatch.setattr(mnad.detect, "SUMMARY_SECONDS", interval)
    started = time.monotonic()
    summary = detect(model, config, folders[0], tmp_path / "b", DetectOptions(), progress=False)
    seconds = time.monotonic() - started
    assert all(s["complete"] is False and s["ended_by"] is None and s["update_seconds"] == interval for _, _, s in writes)
    # besides the one at the first frame, one an interval after the other (a batch may make one late, never early)
    times = [t for t, _, s in writes if s["frames_scored"] != 1]
    assert all(b - a >= interval - 1e-3 for a, b in zip(times, times[1:], strict=False))
    assert 2 <= len(writes) <= seconds / interval + 2 and len(writes) < summary["frames_scored"]


def test_mnad_report_on_a_detect_run_that_never_ended_says_so(tmp_path: Path) -> None:
    from mnad.errors import DataError
    from mnad.report.build import find_report_sources

    for complete, said in ((False, True), (True, False)):
        folder = tmp_path / f"run_{complete}"
        folder.mkdir()
        (folder / SUMMARY_FILE).write_text(json.dumps({"complete": complete, "ended_by": None if not complete else "end of source"}))
        with pytest.raises(DataError, match="not an evaluation") as caught:
            find_report_sources(folder)
        assert ("never ended" in str(caught.value)) is said
