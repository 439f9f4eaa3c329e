"""mnad detect's row files (scores.csv, events.jsonl, events.csv) in segments of --rows-segment seconds of footage, the
oldest deleted past --rows-keep: a camera left for months fills no single file without bound."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import frames_folder, kill_when

from mnad.calibrate import with_calibration
from mnad.calibration import Calibration
from mnad.checkpoint import load_model
from mnad.detect import DetectOptions, detect
from mnad.errors import ConfigError, DataError
from mnad.outputs import (
    DETECT_SCORES_HEADER,
    ROWS_DIR,
    DetectWriter,
    OldestFirst,
    SegmentedVideo,
    detect_run_entries,
    read_detect_scores,
    remove_detect_temps,
    row_segment_name,
)

SEGMENT = 0.2  # seconds: 5 frames at a frame folder's 25 frames/s
EVENT_HEADER = ["start_frame", "end_frame", "peak_frame", "peak_score", "start_time", "end_time", "video", "open", "peak_x", "peak_y",
                "peak_width", "peak_height", "alert_frame", "alert_time"]


def calibrated(model_file: Path, threshold: float) -> tuple:
    """The untrained tiny model with a hand-made calibration (1-frame mean) at ``threshold``: events come and go."""
    model, config = load_model(model_file)
    cal = Calibration(psnr_low=0.0, psnr_high=40.0, distance_low=0.0, distance_high=1.0, threshold=threshold,
                      false_alarm_rate=0.05, smoothing=1, frames=100)
    return model, with_calibration(config, cal)


def table(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def segments(out: Path) -> list[Path]:
    return sorted((out / ROWS_DIR).iterdir())


@pytest.fixture
def runs(model_file: Path, tmp_path: Path) -> tuple[Path, Path, dict]:
    """The same footage (40 frames: 36 scored, frames 4-39) detected twice: in one segment (the default, a day), and
    in segments of 5 frames."""
    model, config = calibrated(model_file, 0.0)
    source = str(frames_folder(tmp_path / "f", 40))
    plain, rotated = tmp_path / "plain", tmp_path / "rotated"
    detect(model, config, source, plain, DetectOptions(), progress=False)
    median = sorted(float(r["smoothed"]) for r in read_detect_scores(plain / "scores.csv"))[18]
    model, config = calibrated(model_file, median)  # about half the frames above it: several events
    detect(model, config, source, plain, DetectOptions(min_event_frames=1, hysteresis=0.0, overwrite=True), progress=False)
    summary = detect(model, config, source, rotated, DetectOptions(min_event_frames=1, hysteresis=0.0, rows_segment=SEGMENT),
                     progress=False)
    assert DetectOptions().rows_segment == 86400.0 and DetectOptions().rows_keep is None
    return plain, rotated, summary


def test_a_long_run_writes_its_rows_in_segments_named_by_their_first_frame(runs: tuple[Path, Path, dict]) -> None:
    """8 segments of 5 frames (4-8, 9-13, ..., 39), each with its csv headers; none of the row files in the folder
    itself; the rows of all of them, in order, are those of the run in one segment."""
    plain, rotated, summary = runs
    names = [row_segment_name(i) for i in range(4, 40, 5)]
    assert names == sorted(names) and names[0] == f"{ROWS_DIR}/000000000004"
    assert [p.relative_to(rotated).as_posix() for p in segments(rotated)] == names
    assert summary["row_segments"] == names and summary["row_segments_open"] is None
    assert summary["row_segments_deleted"] == 0
    assert not any((rotated / name).exists() for name in ("scores.csv", "events.jsonl", "events.csv"))
    frames = []
    for folder in segments(rotated):
        assert sorted(p.name for p in folder.iterdir()) == ["events.csv", "events.jsonl", "scores.csv"]
        header, rows = table(folder / "scores.csv")
        assert header == DETECT_SCORES_HEADER and len(rows) == (5 if folder.name != "000000000039" else 1)
        assert int(rows[0]["frame"]) == int(folder.name)
        assert table(folder / "events.csv")[0] == EVENT_HEADER
        frames += [int(r["frame"]) for r in rows]
    assert frames == list(range(4, 40))
    assert read_detect_scores(rotated) == read_detect_scores(plain / "scores.csv") == read_detect_scores(plain)
    assert summary["frames_scored"] == 36


def test_each_event_is_in_the_segment_open_when_it_ends(runs: tuple[Path, Path, dict]) -> None:
    plain, rotated, summary = runs
    everything = table(plain / "events.csv")[1]
    assert len(everything) >= 3 and summary["events"] == len(everything)
    found = []
    firsts = [int(p.name) for p in segments(rotated)] + [10**12]
    for folder, first, after in zip(segments(rotated), firsts, firsts[1:], strict=False):
        events = table(folder / "events.csv")[1]
        lines = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
        assert [int(e["end_frame"]) for e in events] == [e["end_frame"] for e in lines]
        assert all(first <= int(e["end_frame"]) < after for e in events)  # the segment that holds its last frame
        found += events
    assert found == everything  # none lost, none twice, in order


def test_a_run_within_one_segment_keeps_the_row_files_in_its_folder(model_file: Path, tmp_path: Path) -> None:
    """36 frames scored in 36/25 s, a segment of 36 frames: one segment, no rows/ (its end is not a second one)."""
    model, config = load_model(model_file)
    out = tmp_path / "o"
    summary = detect(model, config, str(frames_folder(tmp_path / "f", 40)), out, DetectOptions(rows_segment=36 / 25),
                     progress=False)
    assert summary["row_segments"] == ["."] and summary["row_segments_open"] is None and not (out / ROWS_DIR).exists()
    assert len(read_detect_scores(out / "scores.csv")) == 36 and read_detect_scores(out) == read_detect_scores(out / "scores.csv")


def test_rows_keep_deletes_the_oldest_segments_first(model_file: Path, tmp_path: Path) -> None:
    """A byte's worth kept: as each segment closes the older ones go, the newest always stays."""
    model, config = load_model(model_file)
    out = tmp_path / "o"
    summary = detect(model, config, str(frames_folder(tmp_path / "f", 40)), out,
                     DetectOptions(rows_segment=SEGMENT, rows_keep=1e-9), progress=False)
    assert summary["row_segments"] == [row_segment_name(39)] and summary["row_segments_deleted"] == 7
    assert [p.name for p in (out / ROWS_DIR).iterdir()] == ["000000000039"]  # no hidden half-deleted one left
    assert [int(r["frame"]) for r in read_detect_scores(out)] == [39]

    kept = tmp_path / "k"  # room for the last two closed segments, not three
    first = detect(model, config, str(frames_folder(tmp_path / "g", 24)), tmp_path / "sizes",
                   DetectOptions(rows_segment=SEGMENT), progress=False)
    size = max(sum(p.stat().st_size for p in (tmp_path / "sizes" / name).iterdir()) for name in first["row_segments"])
    summary = detect(model, config, str(frames_folder(tmp_path / "h", 24)), kept,
                     DetectOptions(rows_segment=SEGMENT, rows_keep=(2 * size + 10) / 2**30), progress=False)
    assert summary["row_segments"] == [row_segment_name(14), row_segment_name(19)] and summary["row_segments_deleted"] == 2


def test_the_video_and_the_rows_keep_one_pruning_rule(tmp_path: Path) -> None:
    video = SegmentedVideo(tmp_path / "v", 25.0, 1.0, keep_bytes=5)
    writer = DetectWriter(tmp_path / "w", rows_keep=5)
    assert type(video.kept) is OldestFirst and type(writer.kept) is OldestFirst
    writer.close({})


def test_a_row_segment_that_cannot_be_deleted_fails_the_source_and_stays_listed(tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real = Path.rename

    def refuse(self: Path, target: Path) -> Path:
        if Path(target).name.endswith(".tmp"):
            raise PermissionError(13, "Permission denied")
        return real(self, target)

    monkeypatch.setattr(Path, "rename", refuse)
    kept = OldestFirst(1, "--rows-keep", "row segment")
    for first in (4, 9):
        (tmp_path / row_segment_name(first)).mkdir(parents=True)
        (tmp_path / row_segment_name(first) / "scores.csv").write_text("frame,time\n")
    kept.add(tmp_path, row_segment_name(4), 11)
    with pytest.raises(DataError, match="000000000004: cannot delete the oldest row segment for --rows-keep \\(Permission"):
        kept.add(tmp_path, row_segment_name(9), 11)
    assert kept.names == [row_segment_name(4), row_segment_name(9)] and kept.deleted == 0


# A run of detect in a process of its own (to be killed), with 5-frame row segments
RUN = """
import sys
import mnad.detect
from mnad.checkpoint import load_model
from mnad.detect import DetectOptions, detect
mnad.detect.SUMMARY_SECONDS = 0.05
model, config = load_model(sys.argv[1])
detect(model, config, sys.argv[2], sys.argv[3], DetectOptions(rows_segment=float(sys.argv[4])), progress=False)
"""


def test_sigkill_leaves_every_closed_segment_whole_and_the_open_one_readable(model_file: Path, tmp_path: Path) -> None:
    folder = frames_folder(tmp_path / "f", 2000, size=16)
    out = tmp_path / "o"
    kill_when(RUN, [str(model_file), str(folder), str(out), str(SEGMENT)],
              lambda: (out / ROWS_DIR).is_dir() and len(list((out / ROWS_DIR).iterdir())) >= 4)  # 3 closed
    found = segments(out)
    for closed in found[:-1]:
        header, rows = table(closed / "scores.csv")
        assert header == DETECT_SCORES_HEADER and [int(r["frame"]) for r in rows] == list(range(int(closed.name), int(closed.name) + 5))
        assert table(closed / "events.csv")[0] == EVENT_HEADER  # uncalibrated: no events, the header
    rows = read_detect_scores(out)  # the open one too, up to its last flushed row
    assert [int(r["frame"]) for r in rows] == list(range(4, 4 + len(rows))) and len(rows) >= 15
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["row_segments"] == [p.relative_to(out).as_posix() for p in found[:len(summary["row_segments"])]]
    assert summary["row_segments_open"] in (None, *(p.relative_to(out).as_posix() for p in found))
    # an --overwrite replaces it (a --resume continues it)
    assert sorted(detect_run_entries(out)) == sorted(out / n for n in ("rows", "stream_state.safetensors", "summary.json"))


class Killed(BaseException):
    """Stands for a kill in the middle of the first segment's move into rows/."""


def test_a_kill_while_the_first_segment_moves_loses_no_row(model_file: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Its files move one by one, scores.csv last: a kill between two leaves every row readable, in order, and the
    folder an earlier run's that --overwrite replaces."""
    model, config = load_model(model_file)
    out = tmp_path / "o"
    real, calls = Path.rename, []

    def rename(self: Path, target: Path) -> Path:
        if Path(target).parent.name == "000000000004":
            calls.append(self.name)
            if len(calls) == 2:
                raise Killed
        return real(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(Killed):
        detect(model, config, str(frames_folder(tmp_path / "f", 20)), out, DetectOptions(rows_segment=SEGMENT), progress=False)
    monkeypatch.undo()
    assert calls == ["events.csv", "events.jsonl"] and (out / "scores.csv").is_file()
    assert [int(r["frame"]) for r in read_detect_scores(out)] == list(range(4, 9))
    summary = detect(model, config, str(frames_folder(tmp_path / "g", 12)), out, DetectOptions(rows_segment=SEGMENT,
                     overwrite=True), progress=False)
    assert summary["row_segments"] == [row_segment_name(4), row_segment_name(9)] and not (out / "scores.csv").exists()
    assert [int(r["frame"]) for r in read_detect_scores(out)] == list(range(4, 12))  # the new run's alone
    assert not (out / ".mnad-detect-earlier").exists()


def test_overwrite_replaces_a_rotated_run_only_once_it_scores_a_frame(model_file: Path, tmp_path: Path) -> None:
    model, config = load_model(model_file)
    out = tmp_path / "o"
    detect(model, config, str(frames_folder(tmp_path / "long", 20)), out, DetectOptions(rows_segment=SEGMENT), progress=False)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    assert len([p for p in before if p.parts[0] == ROWS_DIR]) == 12  # 4 segments of 3 files
    with pytest.raises(DataError, match="holds the outputs of an earlier run"):
        detect(model, config, str(frames_folder(tmp_path / "short", 8)), out, DetectOptions(), progress=False)
    with pytest.raises(DataError, match="no frame was scored"):  # 3 frames: none scored, the earlier run untouched
        detect(model, config, str(frames_folder(tmp_path / "none", 3)), out, DetectOptions(overwrite=True), progress=False)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"} == before
    summary = detect(model, config, str(frames_folder(tmp_path / "short2", 8)), out, DetectOptions(overwrite=True),
                     progress=False)
    assert not (out / ROWS_DIR).exists() and summary["row_segments"] == ["."] and len(read_detect_scores(out)) == 4
    assert not (out / ".mnad-detect-earlier").exists()


def test_overwrite_replaces_rotated_sources_of_a_run_over_several(model_file: Path, tmp_path: Path) -> None:
    model, config = load_model(model_file)
    out = tmp_path / "o"
    sources = [str(frames_folder(tmp_path / name, 14)) for name in ("a", "b")]
    detect(model, config, sources, out, DetectOptions(rows_segment=SEGMENT), progress=False)
    assert [p.name for p in segments(out / "0_a")] == ["000000000004", "000000000009"]
    detect(model, config, sources[:1], out, DetectOptions(overwrite=True), progress=False)
    assert not (out / "0_a").exists() and len(read_detect_scores(out)) == 10


def test_a_rows_folder_with_a_users_files_is_never_replaced(model_file: Path, tmp_path: Path) -> None:
    model, config = load_model(model_file)
    source = str(frames_folder(tmp_path / "f", 8))
    for n, (name, content) in enumerate([("mine.txt", "a user's"), ("000000000004/scores.csv", "video,frame\n"),
                                         ("000000000004/notes.txt", "mine")]):
        out = tmp_path / f"o{n}"
        (out / ROWS_DIR / name).parent.mkdir(parents=True)
        (out / ROWS_DIR / name).write_text(content)
        for overwrite in (False, True):
            with pytest.raises(DataError, match=f"{out / ROWS_DIR}: holds files mnad detect did not write \\({ROWS_DIR}/{name}"):
                detect(model, config, source, out, DetectOptions(overwrite=overwrite), progress=False)
        assert (out / ROWS_DIR / name).read_text() == content and not (out / "scores.csv").exists()


@pytest.mark.parametrize("name", ["maps/notes.txt", "maps/00000000/mine.txt", "maps/00000000/000000000004.jpg",
                                  "maps/holidays/000000000004.png", "annotated/holiday.mp4", "annotated/000000000004.mkv/x"])
def test_maps_and_annotated_folders_with_a_users_files_are_never_replaced(model_file: Path, tmp_path: Path,
                                                                           name: str) -> None:
    """As rows/: detect's own maps/ and annotated/ move aside with an earlier run under --overwrite, so one holding
    anything detect does not write there is refused (was: moved aside and deleted with the earlier run)."""
    model, config = load_model(model_file)
    out = tmp_path / "o"
    (out / name).parent.mkdir(parents=True)
    (out / name).write_text("a user's")
    folder, first = name.split("/", 2)[:2]
    source = str(frames_folder(tmp_path / "f", 8))
    for overwrite in (False, True):
        with pytest.raises(DataError, match=f"{out / folder}: holds files mnad detect did not write \\({folder}/{first}"):
            detect(model, config, source, out, DetectOptions(overwrite=overwrite), progress=False)
    assert (out / name).read_text() == "a user's" and not (out / "scores.csv").exists()


def test_a_segment_half_deleted_by_a_killed_run_is_removed_as_a_temporary(tmp_path: Path) -> None:
    doomed = tmp_path / ROWS_DIR / ".000000000004.0a1b2c3d.tmp"
    doomed.mkdir(parents=True)
    (doomed / "events.csv").write_text("start_frame\n")
    assert detect_run_entries(tmp_path) == [tmp_path / ROWS_DIR]  # an earlier run's, which --overwrite replaces
    mine = tmp_path / ROWS_DIR / ".mine.tmp"
    mine.mkdir()
    assert remove_detect_temps(tmp_path) == [doomed] and not doomed.exists() and mine.is_dir()


def test_read_detect_scores_of_a_folder_without_rows_says_so(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no scores.csv here or in rows/"):
        read_detect_scores(tmp_path)


@pytest.mark.parametrize("option", ["rows_segment", "rows_keep"])
def test_the_row_options_are_checked(model_file: Path, tmp_path: Path, option: str, capsys: pytest.CaptureFixture) -> None:
    from mnad.cli import main

    flag = "--" + option.replace("_", "-")
    words = "a number of seconds > 0 and at most" if option == "rows_segment" else "a number of GiB > 0 and at most"
    for bad in (0, -1.0, float("nan"), float("inf"), True, "600", 1e308, 2.0**33 if option == "rows_keep" else 400 * 86400.0):
        with pytest.raises(ConfigError, match=f"{flag} must be {words}"):
            DetectOptions(**{option: bad})
    source = str(frames_folder(tmp_path / "a", 6))
    for bad in ("-1", "nan", "0", "1e308"):
        assert main(["detect", source, "--checkpoint", str(model_file), "--out", str(tmp_path / "o"), flag, bad,
                     "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count(f"mnad: error: {flag} must be {words}") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()
