"""One formatter of a scored frame's terms (``outputs.columns.frame_columns``) for both scores.csv files: an
evaluation's and a detect run's wrote PSNR to 6 and 5 decimals. The evaluation's format is kept (its committed
results/ files are reproduced byte for byte); detect's PSNR and patch PSNR gained their sixth decimal. And
``DetectWriter`` takes the types detect gives it (``stream.FrameResult``, ``events.Event``), not ``Any``."""

from __future__ import annotations

import csv
import inspect
import math
import typing
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mnad.events import Event
from mnad.outputs import FRAME_COLUMNS, SCORES_FILE, DetectWriter, frame_columns, read_detect_scores, read_scores, scores_csv_bytes
from mnad.stream import FrameResult

RESULTS = Path(__file__).resolve().parents[1] / "results"
# evaluation columns -> frame_columns' keywords
KEYWORDS = {"psnr": "psnr", "patch_psnr": "patch_psnr", "distance": "distance", "patch_distance": "patch_distance",
            "regular_score": "regular", "memory_updated": "updated", "score": "score"}


def terms(**values: float) -> dict[str, str]:
    return dict(zip(FRAME_COLUMNS, frame_columns(**values), strict=True))


def test_each_term_is_written_to_its_digits() -> None:
    got = terms(psnr=30.1234567, patch_psnr=12.0, distance=3.75123456789e-06, patch_distance=1e-9, regular=0.123456789, updated=True,
                score=-0.5)
    assert got == {"psnr": "30.123457", "patch_psnr": "12.000000", "distance": "3.75123457e-06", "patch_distance": "1e-09",
                   "regular_score": "0.12345679", "memory_updated": "1", "score": "-0.500000"}
    nan = terms(psnr=math.nan, patch_psnr=-math.inf, distance=math.nan, patch_distance=math.inf, regular=math.nan, updated=np.False_,
                score=math.nan)
    assert nan == {"psnr": "nan", "patch_psnr": "-inf", "distance": "nan", "patch_distance": "inf", "regular_score": "nan",
                   "memory_updated": "0", "score": "nan"}


def test_detect_and_an_evaluation_write_a_frames_terms_alike(tmp_path: Path) -> None:
    """The same frame in both files reads the same, column by column (detect wrote psnr and patch_psnr to 5 decimals)."""
    frame = FrameResult(index=7, psnr=31.1234567, patch_psnr=24.9876543, distance=2.5e-4, patch_distance=1.23456789e-3,
                        regular=0.87654321, updated=True, score=0.4567891, smoothed=0.1234567)
    writer = DetectWriter(tmp_path / "d")
    writer.score(frame, 0.28, True)
    writer.close({})
    (detected,) = read_detect_scores(tmp_path / "d")
    video = SimpleNamespace(name="v", frames=[7], psnr=[frame.psnr], patch_psnr=[frame.patch_psnr], distance=[frame.distance],
                            patch_distance=[frame.patch_distance], regular=[frame.regular], updated=[frame.updated],
                            score=[frame.score], labels=None)
    (path := tmp_path / SCORES_FILE).write_bytes(scores_csv_bytes([video]))
    with path.open(newline="") as handle:
        (evaluated,) = csv.DictReader(handle)
    assert {c: detected[c] for c in FRAME_COLUMNS} == {c: evaluated[c] for c in FRAME_COLUMNS}
    assert detected["psnr"] == "31.123457" and detected["patch_psnr"] == "24.987654"
    # the smoothed score with every digit the alerts compared (``smoothed_text``: a resumed camera's tracker reads it back)
    assert detected["smoothed"] == "0.1234567" and detected["time"] == "0.280" and detected["alert"] == "1"


def committed_evaluations() -> list[Path]:
    found = []
    for path in sorted(RESULTS.glob("*/scores.csv")):
        with path.open("rb") as handle:
            if handle.read(6) == b"video,":  # detect's begin frame,time
                found.append(path)
    return found


@pytest.mark.parametrize("path", committed_evaluations(), ids=lambda p: p.parent.name)
def test_committed_evaluations_are_written_as_the_formatter_writes(path: Path) -> None:
    """Every committed evaluation's per-frame terms are the formatter's text of their values, but for the files of
    older versions: they lack the newer columns (those they have are compared), and some wrote D to 8 decimals (every
    row of such a file; compared so). A file of today's version is rewritten byte for byte."""
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        present = [c for c in FRAME_COLUMNS if c in (reader.fieldnames or [])]
        assert {"psnr", "distance", "regular_score", "memory_updated", "score"} <= set(present)
        rows = list(reader)
    older_d = any(f"{float(row['distance']):.9g}" != row["distance"] for row in rows)
    for row in rows:
        values = {KEYWORDS[c]: (int(row[c]) if c == "memory_updated" else float(row[c])) if c in row else math.nan for c in FRAME_COLUMNS}
        want = {c: text for c, text in terms(**values).items() if c in present}
        if older_d:
            want |= {c: f"{values[c]:.8f}" for c in ("distance", "patch_distance") if c in present}
        assert want == {c: row[c] for c in present}
    if len(present) == len(FRAME_COLUMNS) and not older_d:
        assert scores_csv_bytes(read_scores(path)) == path.read_bytes()


def test_committed_evaluations_are_found() -> None:
    assert len(committed_evaluations()) >= 10  # the parametrised test above is not empty


def test_the_detect_writer_takes_a_frame_result_and_an_event(tmp_path: Path) -> None:
    """Typed parameters: what detect passes (``FrameResult``, ``Event``), resolved to those classes."""
    from mnad.outputs import detect_writer

    names = {"FrameResult": FrameResult, "Event": Event}
    assert typing.get_type_hints(DetectWriter.score, vars(detect_writer), names)["row"] is FrameResult
    assert typing.get_type_hints(DetectWriter.event, vars(detect_writer), names)["event"] is Event
    assert {"row", "seconds", "alert"} == set(inspect.signature(DetectWriter.score).parameters) - {"self"}
    writer = DetectWriter(tmp_path / "d")
    writer.event(Event(start_frame=4, end_frame=9, peak_frame=6, peak_score=1.5, start_time=0.16, end_time=0.36), 0.0)
    writer.close({})
    assert '"peak_frame": 6' in (tmp_path / "d" / "events.jsonl").read_text()
