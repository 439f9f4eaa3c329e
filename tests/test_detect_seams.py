"""The pieces taken out of detect.py (design review item 6: one file per concept, data flowing one way): the source's
read-ahead thread (``data.read_ahead``), the lock on a detect run's --out (``run_folder.locked_output``) and the
summary.json schema (``outputs.detect_summary``), each on its own."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from conftest import frames_folder

from mnad.data.read_ahead import READ_AHEAD, SourceEnded, SourceReader
from mnad.data.streams import FrameSource, RawFrame
from mnad.errors import DataError
from mnad.outputs import RunSummary, SourceSummary, StreamOutcome
from mnad.run_folder import LOCK_FILE, RunFolderLock, locked_output

# summary.json's keys in the order written (detect's summary.json files are pinned byte for byte by their order)
SOURCE_KEYS = ["source", "frames_scored", "seconds", "fps", "source_fps", "latency_frames", "latency_seconds", "behind_seconds",
               "reconnections", "clock_start", "calibrated", "threshold", "false_alarm_rate", "above_threshold_rate",
               "alert_frames", "not_finite_frames", "calibration_held_out_false_alarm_rate", "scoring_precision",
               "calibration_precision", "calibration_overlaps_training", "smoothing", "events", "ended_by",
               "annotated_video", "annotated_video_files", "annotated_video_deleted", "annotated_video_open", "row_segments",
               "row_segments_open", "row_segments_deleted", "map_shards_deleted", "note", "complete", "updated_at",
               "update_seconds", "resumed"]
RUN_KEYS = ["sources", "complete", "failed", "frames_scored", "seconds", "fps", "latency_frames", "calibrated", "threshold",
            "scoring_precision", "calibration_precision", "calibration_overlaps_training", "note", "updated_at", "update_seconds",
            "resumed", "streams"]
STREAM_KEYS = ["source", "folder", "frames_scored", "events", "ended_by", "failed", "error"]


def test_a_source_summary_is_written_with_its_keys_in_order() -> None:
    summary = SourceSummary(**{k: i for i, k in enumerate(SOURCE_KEYS)})
    written = summary.as_json()
    assert list(written) == SOURCE_KEYS and list(written.values()) == list(range(len(SOURCE_KEYS)))
    assert json.dumps(written, indent=2) == json.dumps(dict(zip(SOURCE_KEYS, range(len(SOURCE_KEYS)), strict=True)), indent=2)


def test_a_run_summary_writes_each_source_as_an_object() -> None:
    streams = [StreamOutcome(**{k: f"{k}{i}" for k in STREAM_KEYS}) for i in range(2)]
    summary = RunSummary(**{k: k for k in RUN_KEYS[:-1]}, streams=streams)
    written = summary.as_json()
    assert list(written) == RUN_KEYS
    assert [list(s) for s in written["streams"]] == [STREAM_KEYS] * 2 and written["streams"][1]["error"] == "error1"
    json.dumps(written)  # plain JSON: no dataclass left in it


def test_the_reader_hands_every_frame_then_how_the_source_ended(tmp_path: Path) -> None:
    wake = threading.Event()
    reader = SourceReader(FrameSource(str(frames_folder(tmp_path / "f", READ_AHEAD + 3))), wake)
    reader.start()
    items = [reader.queue.get(timeout=30) for _ in range(READ_AHEAD + 4)]  # taken as they come: the queue is bounded
    reader.join(timeout=30)
    assert all(isinstance(item, RawFrame) for item in items[:-1]) and len(items[:-1]) == READ_AHEAD + 3
    assert isinstance(items[-1], SourceEnded) and items[-1].error is None and wake.is_set() and not reader.is_alive()


def test_the_reader_stops_when_halted_with_its_queue_full(tmp_path: Path) -> None:
    reader = SourceReader(FrameSource(str(frames_folder(tmp_path / "f", READ_AHEAD + 5))), threading.Event())
    reader.start()
    while not reader.queue.full():
        reader.join(timeout=0.01)
    reader.halt.set()
    reader.join(timeout=30)
    assert not reader.is_alive() and reader.queue.qsize() == READ_AHEAD


def test_an_output_folder_is_locked_tidied_and_left_as_found_when_nothing_was_written(tmp_path: Path) -> None:
    out = tmp_path / "a" / "out"
    seen = []

    def tidy(folder: Path) -> None:  # runs under the lock: a second holder is refused by then
        with pytest.raises(DataError, match="another mnad process"):
            RunFolderLock(folder).acquire()
        seen.append(folder)

    with locked_output(out, tidy):
        assert (out / LOCK_FILE).is_file()
    assert seen == [out] and not (tmp_path / "a").exists()  # the folders it made are gone again
    with locked_output(out, lambda folder: None):
        (out / "scores.csv").write_text("")
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE, "scores.csv"]  # wrote: the folder and its lock stay
