"""`mnad detect --resume` of a run over several sources whose calibrated model has events: each source's event
tracker, last event line and counts are its own, saved in its own folder's state. A run killed while one source has an
event open and another has just ended one (or had ended its footage altogether) resumes to the events files, rows and
counts of an uninterrupted run, source by source, line for line.

The runs here are made deterministic where a run over several sources is not: the sources' frames are taken in
lockstep (each round one frame of every source still running; the real loop takes whatever its readers have queued)
and each frame is scored on its own (batch 1, exactly ``StreamScorer.push``; batching changes the rounding of the
scores, and with it an event's edge on scores this close to the threshold). What a source's outputs depend on, its own
frames and state, is what is compared."""

from __future__ import annotations

import json
import queue
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import frames_folder
from test_detect_resume import EVENTS, _calibrated, _event_lines, _kill_after_events, _kill_at

import mnad.detect
from mnad.data.read_ahead import SourceReader
from mnad.detect import DetectOptions, detect, stream_folder
from mnad.outputs import SUMMARY_FILE, row_segments_in

COUNTS = ("frames_scored", "events", "alert_frames", "above_threshold_rate")
OPTIONS = DetectOptions(rows_segment=0.2, **EVENTS)  # a state every 5 frames (each row segment's change)
RESUME = replace(OPTIONS, resume=True)


class _Lockstep(queue.Queue):
    """A reader's queue whose ``get_nowait`` waits for the reader's next item: every round of ``_score`` takes one
    frame of each source still running."""

    def get_nowait(self):  # noqa: ANN201
        return self.get(timeout=60)


@pytest.fixture(autouse=True)
def deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run here takes its sources' frames in lockstep (``_Lockstep``) and scores each frame in a batch of its own."""
    init = SourceReader.__init__

    def lockstep(self, *args: object) -> None:  # noqa: ANN001
        init(self, *args)
        self.queue = _Lockstep(maxsize=self.queue.maxsize)

    score_streams = mnad.detect.score_streams
    monkeypatch.setattr(SourceReader, "__init__", lockstep)
    monkeypatch.setattr(mnad.detect, "score_streams", lambda scorers, frames: [
        score_streams([s], [f])[0] if f is not None else None for s, f in zip(scorers, frames, strict=True)])


ROTATION = 17


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Three frame folders of the same noise: a, 60 frames; b, those rotated by ``ROTATION`` (its events elsewhere); c,
    a's first 20 frames (it ends long before the others, inside an event)."""
    root = tmp_path_factory.mktemp("sources")
    first = frames_folder(root / "a", 60)
    names = sorted(p.name for p in first.iterdir())
    rotated, short = root / "b", root / "c"
    rotated.mkdir()
    short.mkdir()
    for i, name in enumerate(names):
        shutil.copy(first / names[(i + ROTATION) % 60], rotated / name)
        if i < 20:
            shutil.copy(first / name, short / name)
    return {"a": str(first), "b": str(rotated), "c": str(short)}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The uninterrupted runs, by the order of their sources ("abc"): (summary, ``_outputs``), made once each."""
    return {"root": tmp_path_factory.mktemp("full")}


def _full(uninterrupted: dict, model: object, config: object, sources: list[str], order: str) -> tuple[dict, list]:
    if order not in uninterrupted:
        out = uninterrupted["root"] / order
        summary = detect(model, config, sources, out, OPTIONS, progress=False)
        for i, name in enumerate(order):
            assert _spans(out / stream_folder(i, sources[i], len(sources))) == FULL[name]
        uninterrupted[order] = (summary, _outputs(out, sources))
    return uninterrupted[order]


def _outputs(out: Path, sources: list[str]) -> list[tuple]:
    """Per source: its events lines (jsonl, csv), its scores.csv lines across row segments, and its summary's counts."""
    found = []
    for i, source in enumerate(sources):
        folder = out / stream_folder(i, source, len(sources))
        rows = [line for segment in row_segments_in(folder)
                for line in (folder / segment / "scores.csv").read_text().splitlines()[1:]]
        summary = json.loads((folder / SUMMARY_FILE).read_text())
        found.append((_event_lines(folder), rows, {k: summary[k] for k in COUNTS}))
    return found


def _spans(folder: Path) -> list[tuple[int, int, bool]]:
    return [(e["start_frame"], e["end_frame"], e["open"]) for e in map(json.loads, _event_lines(folder)[0])]


def _last_row(folder: Path) -> int:
    return max(int(line.split(",")[0]) for segment in row_segments_in(folder)
               for line in (folder / segment / "scores.csv").read_text().splitlines()[1:])


# the uninterrupted run's events (start, end, marked open): (a) 4-6, 10-26, 29-31, 33-37, 40-49, 52-59 open; (b)
# 5-9, 12-14, 16-20, 23-32, 35-43, 45-49, 53-59 open; (c) 4-6, 10-19 open, at its end (frame 19)
FULL = {"a": [(4, 6, False), (10, 26, False), (29, 31, False), (33, 37, False), (40, 49, False), (52, 59, True)],
        "b": [(5, 9, False), (12, 14, False), (16, 20, False), (23, 32, False), (35, 43, False), (45, 49, False),
              (53, 59, True)],
        "c": [(4, 6, False), (10, 19, True)]}


@pytest.mark.parametrize(("order", "kill", "between", "at_kill"), [
    # the first source's frame 50 ends its 40-49 (its line written, the row cut); b is inside 45-49; c ended long before,
    # its event open at its end never written (its close never came)
    ("abc", 50, True, {"a": ((40, 49, False), 49), "b": ((35, 43, False), 49), "c": ((4, 6, False), 19)}),
    # a's 10-26 ended by frame 27 (its line written, the row cut); b inside 23-32; c ended
    ("abc", 27, True, {"a": ((10, 26, False), 26), "b": ((16, 20, False), 26), "c": ((4, 6, False), 19)}),
    # b ended 12-14 at frame 15, its row written; a inside 10-26, c inside its 10-, both still running
    ("abc", 16, False, {"a": ((4, 6, False), 15), "b": ((12, 14, False), 15), "c": ((4, 6, False), 15)}),
    # b ended 16-20 at frame 21; a inside 10-26; c ended at 19
    ("abc", 22, False, {"a": ((4, 6, False), 21), "b": ((16, 20, False), 21), "c": ((4, 6, False), 19)}),
    # b first: its frame 33 ends 23-32 (line written, row cut); a ended 29-31 at frame 32, its row written; c ended
    ("bac", 33, True, {"b": ((23, 32, False), 32), "a": ((29, 31, False), 32), "c": ((4, 6, False), 19)}),
    # b first: killed before its row 15, which ends 12-14; a ended nothing there but is inside 10-26
    ("bac", 15, False, {"b": ((5, 9, False), 14), "a": ((4, 6, False), 14), "c": ((4, 6, False), 14)}),
])
def test_several_sources_killed_among_their_events_resume_to_an_uninterrupted_runs(
        model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, made: dict[str, str], uninterrupted: dict,
        order: str, kill: int, between: bool, at_kill: dict) -> None:
    """Killed as a SIGKILL would kill the run (nothing closed: no final summary, state or open event's line) at the
    first source's frame ``kill`` (``between``: after the line of the event that frame ends, before its row): every
    source resumes from its own state to the events.jsonl, events.csv and scores.csv lines and the summary counts of
    an uninterrupted run; the source that had ended its footage before the kill (c) writes the event open at its end
    once."""
    model, config = _calibrated(model_file)
    sources = [made[name] for name in order]
    full, expected = _full(uninterrupted, model, config, sources, order)
    out = tmp_path / "o"
    with monkeypatch.context() as patch:
        (_kill_after_events if between else _kill_at)(patch, kill)
        with pytest.raises(RuntimeError, match="killed"):
            detect(model, config, sources, out, OPTIONS, progress=False)
    for i, name in enumerate(order):  # where each source was at the kill: its last event line and row
        folder = out / stream_folder(i, sources[i], 3)
        assert (_spans(folder)[-1], _last_row(folder)) == at_kill[name], name
    summary = detect(model, config, sources, out, RESUME, progress=False)
    assert _outputs(out, sources) == expected
    assert summary["frames_scored"] == full["frames_scored"] and summary["resumed"] == 1
    assert [s["events"] for s in summary["streams"]] == [len(FULL[name]) for name in order]


@pytest.mark.parametrize(("first", "again"), [((27, True), (26, False)), ((16, False), (50, True)), ((33, True), (45, False))])
def test_several_sources_killed_again_while_resumed_resume_to_an_uninterrupted_runs(
        model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, made: dict[str, str], uninterrupted: dict,
        first: tuple[int, bool], again: tuple[int, bool]) -> None:
    """The resumed run is killed too, (26) among the frames it scores again, or later, inside or between events; the
    next --resume still ends at the uninterrupted run's outputs, none of its events written twice or lost."""
    model, config = _calibrated(model_file)
    sources = [made[name] for name in "abc"]
    full, expected = _full(uninterrupted, model, config, sources, "abc")
    out = tmp_path / "o"
    for (kill, between), options in ((first, OPTIONS), (again, RESUME)):
        with monkeypatch.context() as patch:
            (_kill_after_events if between else _kill_at)(patch, kill)
            with pytest.raises(RuntimeError, match="killed"):
                detect(model, config, sources, out, options, progress=False)
    summary = detect(model, config, sources, out, RESUME, progress=False)
    assert _outputs(out, sources) == expected
    assert summary["frames_scored"] == full["frames_scored"] and summary["resumed"] == 2


class _Killed(BaseException):
    """A SIGKILL: nothing after it runs, no handler catches it (a source's failed close is caught, the others closed)."""


@pytest.mark.parametrize(("closing", "cut"), [(1, "before the line"), (1, "after the line"), (2, "after the line")])
def test_several_sources_killed_while_they_close_resume_to_an_uninterrupted_runs(
        model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, made: dict[str, str], uninterrupted: dict,
        closing: int, cut: str) -> None:
    """Every row written, the sources closed one after another, the run killed in the close of source ``closing``
    (before the line of the event open at its end, or after it, before its state): the sources closed before it (their
    open event written, their final state saved), the one cut and those never closed (c, whose footage ended long
    before; never closed when ``closing`` is 1) each resume to the uninterrupted run's outputs: each open event
    written once."""
    import mnad.outputs.detect_writer as writer

    model, config = _calibrated(model_file)
    sources = [made[name] for name in "abc"]
    full, expected = _full(uninterrupted, model, config, sources, "abc")
    close, close_rows = mnad.detect._SourceRun.close, writer.DetectWriter.close_rows
    closed: list[object] = []

    def dying_close(self, *args):  # noqa: ANN001, ANN202
        if len(closed) == closing and cut == "before the line":
            raise _Killed
        closed.append(self)
        return close(self, *args)

    def dying_rows(self):  # noqa: ANN001, ANN202
        if len(closed) == closing + 1 and cut == "after the line":
            raise _Killed
        return close_rows(self)

    out = tmp_path / "o"
    with monkeypatch.context() as patch:
        patch.setattr(mnad.detect._SourceRun, "close", dying_close)
        patch.setattr(writer.DetectWriter, "close_rows", dying_rows)
        with pytest.raises(_Killed):
            detect(model, config, sources, out, OPTIONS, progress=False)
    spans = [_spans(out / stream_folder(i, source, 3)) for i, source in enumerate(sources)]
    assert [s[-1][2] for s in spans] == [True, cut == "after the line", closing == 2]  # the open lines written
    summary = detect(model, config, sources, out, RESUME, progress=False)
    assert _outputs(out, sources) == expected
    assert summary["frames_scored"] == full["frames_scored"] and summary["resumed"] == 1
