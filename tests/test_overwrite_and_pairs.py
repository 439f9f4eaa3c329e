"""Nothing is lost: `detect --overwrite` replaces an earlier run whole, and only once it has its own; files written
together (atomic_write_many) land together or not at all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from conftest import frames_folder

from mnad.atomic import atomic_write_many
from mnad.checkpoint import load_model
from mnad.cli import main
from mnad.detect import DetectOptions, detect
from mnad.errors import DataError
from mnad.export import export_onnx
from mnad.outputs import EARLIER_DIR, STAGING_DIR
from mnad.run_folder import LOCK_FILE


def run_detect(model_file: Path, out: Path, *sources: Path, overwrite: bool = False, max_frames: int | None = None) -> dict:
    model, config = load_model(model_file)
    return detect(model, config, [str(s) for s in sources], out, DetectOptions(overwrite=overwrite, max_frames=max_frames),
                  progress=False)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.name != LOCK_FILE}


# ------------------------------------------------------------------ 3. an overwrite that has nothing of its own


@pytest.mark.parametrize("case", ["short source", "max frames"])
def test_an_overwrite_that_scores_nothing_keeps_the_earlier_run(model_file: Path, tmp_path: Path, case: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "d2"
    run_detect(model_file, out, frames_folder(tmp_path / "v", 12))
    before = snapshot(out)
    assert len((out / "scores.csv").read_text().splitlines()) == 9
    source = frames_folder(tmp_path / "short", 3) if case == "short source" else tmp_path / "v"
    extra = ["--max-frames", "3"] if case == "max frames" else []
    assert main(["detect", str(source), "--checkpoint", str(model_file), "--out", str(out), "--overwrite", "--quiet", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mnad: error:") and "no frame was scored" in err[-1] and "unchanged" in err[-1]
    assert snapshot(out) == before and not (out / STAGING_DIR).exists()


def test_an_overwrite_that_fails_part_way_keeps_the_earlier_run_aside(model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "d2"
    run_detect(model_file, out, frames_folder(tmp_path / "v", 20))
    before = snapshot(out)
    with pytest.raises(DataError, match=f"not a readable image.*moved to .*{EARLIER_DIR}"):
        run_detect(model_file, out, frames_folder(tmp_path / "bad", 20, corrupt_at=8), overwrite=True)
    assert len((out / "scores.csv").read_text().splitlines()) == 1 + 4  # the new run's frames 4..7, in place
    assert snapshot(out / EARLIER_DIR) == before  # and the earlier run's 16 rows, whole
    run_detect(model_file, out, tmp_path / "v", overwrite=True)  # a run that ends well deletes the kept one
    assert not (out / EARLIER_DIR).exists() and not (out / STAGING_DIR).exists()
    assert snapshot(out).keys() == before.keys()


def test_a_killed_overwrite_leaves_one_whole_run_in_place(model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "d2"
    run_detect(model_file, out, frames_folder(tmp_path / "v", 12))
    before = snapshot(out)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    process = subprocess.Popen([sys.executable, "-m", "mnad", "detect", str(frames_folder(tmp_path / "long", 3000)), "--checkpoint",
                                str(model_file), "--out", str(out), "--overwrite", "--quiet", "--threads", "1"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    scores = out / "scores.csv"
    deadline = time.monotonic() + 120
    # the new run's rows, live, where they belong (its files appear only once its first frame is scored)
    while (not scores.exists() or scores.read_text().count("\n") < 30) and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    rows = scores.read_text().splitlines()
    assert len(rows) >= 30 and rows[1].startswith("4,") and json.loads((out / "summary.json").read_text())["complete"] is False
    assert snapshot(out / EARLIER_DIR) == before and not (out / STAGING_DIR).exists()


# ------------------------------------------------------------------ 4. an overwrite replaces the whole earlier run


def test_an_overwrite_replaces_the_whole_earlier_run_and_nothing_else(model_file: Path, tmp_path: Path) -> None:
    v, w, short = frames_folder(tmp_path / "v", 8), frames_folder(tmp_path / "w", 8), frames_folder(tmp_path / "short", 8)
    out = tmp_path / "d6"
    run_detect(model_file, out, v, w)
    (out / "notes.txt").write_text("mine")
    (out / "2024_clips").mkdir()  # named like a source's folder, but holds none of detect's files
    (out / "2024_clips" / "a.txt").write_text("mine")
    run_detect(model_file, out, v, overwrite=True)  # several sources -> one
    assert sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE) == ["2024_clips", "events.csv", "events.jsonl", "notes.txt", "scores.csv",
                                                     "stream_state.safetensors", "summary.json"]
    run_detect(model_file, out, v, w, overwrite=True)  # one source -> several
    assert sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE) == ["0_v", "1_w", "2024_clips", "notes.txt", "summary.json"]
    run_detect(model_file, out, v, short, overwrite=True)  # the same count, another source
    assert sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE) == ["0_v", "1_short", "2024_clips", "notes.txt", "summary.json"]
    assert (out / "2024_clips" / "a.txt").read_text() == "mine"


def test_an_overwrite_refuses_a_source_folder_holding_other_files(model_file: Path, tmp_path: Path) -> None:
    v, w = frames_folder(tmp_path / "v", 8), frames_folder(tmp_path / "w", 8)
    out = tmp_path / "d7"
    run_detect(model_file, out, v, w)
    (out / "1_w" / "my_notes.txt").write_text("mine")
    before = snapshot(out)
    with pytest.raises(DataError, match="1_w: holds files mnad detect did not write \\(my_notes.txt\\)"):
        run_detect(model_file, out, v, overwrite=True)
    assert snapshot(out) == before


# ------------------------------------------------------------------ 5. files written together: all or none


def test_a_folder_in_the_way_of_one_file_writes_none(tmp_path: Path) -> None:
    scores, metrics = tmp_path / "scores.csv", tmp_path / "metrics.json"
    scores.write_text("old")
    metrics.mkdir()
    with pytest.raises(DataError, match="metrics.json: cannot write \\(Is a directory\\); the previous file, if any, is unchanged"):
        atomic_write_many({scores: b"new", metrics: b"{}"})
    assert scores.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "scores.csv"]


def test_a_rename_failing_part_way_puts_back_the_earlier_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    a.write_text("old a"), c.write_text("old c")
    replace = os.replace

    def failing_on_c(src: str, dst: str) -> None:
        if Path(dst) == c and src.endswith(".tmp") and ".old" not in src:
            raise OSError(28, "No space left on device")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_on_c)
    with pytest.raises(DataError, match="c: cannot write \\(disk full"):
        atomic_write_many({a: b"new", b: b"new", c: b"new"})
    assert (a.read_text(), c.read_text()) == ("old a", "old c") and sorted(p.name for p in tmp_path.iterdir()) == ["a", "c"]


def test_an_export_with_its_sidecar_blocked_writes_no_graph(model_file: Path, tmp_path: Path) -> None:
    model, config = load_model(model_file)
    (tmp_path / "z.onnx.json").mkdir()
    with pytest.raises(DataError, match="z.onnx.json: cannot write"):
        export_onnx(model, config, tmp_path / "z.onnx")
    assert not (tmp_path / "z.onnx").exists()


# ------------------------------------------------------------------ 6. only a run that ended well deletes the earlier one


def failing_on_frame(monkeypatch: pytest.MonkeyPatch, n: int, error: BaseException) -> None:
    """``_SourceRun.score`` raises ``error`` on the ``n``-th frame scored (a bug, no memory), after scoring the others."""
    import mnad.detect

    score, calls = mnad.detect._SourceRun.score, []

    def failing(self: mnad.detect._SourceRun, row: object) -> None:
        calls.append(1)
        if len(calls) == n:
            raise error
        score(self, row)

    monkeypatch.setattr(mnad.detect._SourceRun, "score", failing)


def test_an_overwrite_that_crashes_keeps_the_earlier_run(model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "d8"
    source = frames_folder(tmp_path / "v", 12)
    run_detect(model_file, out, source)
    before = snapshot(out)
    failing_on_frame(monkeypatch, 2, RuntimeError("a bug"))
    with pytest.raises(RuntimeError, match="a bug"):  # a bug stays a traceback
        main(["detect", str(source), "--checkpoint", str(model_file), "--out", str(out), "--overwrite", "--quiet"])
    assert snapshot(out / EARLIER_DIR) == before  # the earlier run, whole
    assert len((out / "scores.csv").read_text().splitlines()) == 1 + 1  # beside the crashed run's one row
    assert json.loads((out / "summary.json").read_text())["ended_by"] == "crashed (RuntimeError: a bug)"
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mnad: warning:")]
    assert any(EARLIER_DIR in line and "kept" in line for line in warnings)
    monkeypatch.undo()
    run_detect(model_file, out, source, overwrite=True)  # the next run that ends well replaces both
    assert snapshot(out).keys() == before.keys() and not (out / STAGING_DIR).exists()


def test_an_overwrite_stopped_by_ctrl_c_replaces_the_earlier_run(model_file: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from mnad import outputs

    out = tmp_path / "d9"
    run_detect(model_file, out, frames_folder(tmp_path / "v", 12))
    write_row, rows = outputs.DetectWriter.score, []

    def row_then_ctrl_c(self: outputs.DetectWriter, row: object, seconds: float, alert: bool) -> None:
        write_row(self, row, seconds, alert)
        rows.append(1)
        if len(rows) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # as a user stops a live stream

    monkeypatch.setattr(outputs.DetectWriter, "score", row_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run_detect(model_file, out, frames_folder(tmp_path / "long", 40), overwrite=True)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ended_by"] == "interrupted (SIGINT)" and summary["frames_scored"] == 3  # its outputs complete
    assert not (out / EARLIER_DIR).exists() and not (out / STAGING_DIR).exists()
    assert sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE) == ["events.csv", "events.jsonl", "scores.csv",
                                                                               "stream_state.safetensors", "summary.json"]


# ------------------------------------------------------------------ 7. a user's folder is never taken for a source's


def test_a_users_folder_named_like_a_sources_is_never_touched(model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "d10"
    v, w = frames_folder(tmp_path / "v", 8), frames_folder(tmp_path / "w", 8)
    mine = out / "2023_trip"
    mine.mkdir(parents=True)
    (mine / "summary.json").write_text("my trip")  # named like detect's outputs
    (mine / "photo.jpg").write_bytes(b"jpeg")
    ours = snapshot(mine)
    run_detect(model_file, out, v)  # no earlier run here: not refused
    run_detect(model_file, out, v, w, overwrite=True)
    run_detect(model_file, out, w, overwrite=True)
    assert snapshot(mine) == ours and sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE) == ["2023_trip", "events.csv", "events.jsonl",
                                                                                 "scores.csv", "stream_state.safetensors",
                                                                                 "summary.json"]


def test_a_users_folder_where_a_source_would_write_is_refused(model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "d11"
    v, w = frames_folder(tmp_path / "v", 8), frames_folder(tmp_path / "w", 8)
    mine = out / "1_w"
    mine.mkdir(parents=True)
    (mine / "scores.csv").write_text("my own scores")
    for overwrite in (False, True):
        with pytest.raises(DataError, match="1_w: is in the way of a source's outputs and is no earlier run's"):
            run_detect(model_file, out, v, w, overwrite=overwrite)
        assert sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE) == ["1_w"] and (mine / "scores.csv").read_text() == "my own scores"


def test_a_run_over_several_sources_names_its_folders_from_its_start(model_file: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import mnad.detect

    out = tmp_path / "d12"
    seen: list[dict] = []
    score = mnad.detect._SourceRun.score

    def looking(self: mnad.detect._SourceRun, row: object) -> None:
        if not seen:  # as a run killed now would leave it
            seen.append(json.loads((out / "summary.json").read_text()))
        score(self, row)

    monkeypatch.setattr(mnad.detect._SourceRun, "score", looking)
    run_detect(model_file, out, frames_folder(tmp_path / "v", 8), frames_folder(tmp_path / "w", 8))
    assert seen[0]["complete"] is False and [s["folder"] for s in seen[0]["streams"]] == ["0_v", "1_w"]
    assert json.loads((out / "summary.json").read_text())["complete"] is True
    (out / "summary.json").write_text(json.dumps(seen[0]))  # a killed run's folders are known to be detect's
    with pytest.raises(DataError, match="earlier run .*0_v"):
        run_detect(model_file, out, tmp_path / "v")


def test_an_unreadable_summary_is_refused_not_guessed(model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "d13"
    run_detect(model_file, out, frames_folder(tmp_path / "v", 8), frames_folder(tmp_path / "w", 8))
    (out / "summary.json").write_text("{not json")
    before = snapshot(out)
    with pytest.raises(DataError, match="summary.json: not an mnad detect summary file .*move it, or choose another --out"):
        run_detect(model_file, out, tmp_path / "v", overwrite=True)
    assert snapshot(out) == before


# ------------------------------------------------------------------ 8. one source failing to close closes the others


def test_a_source_failing_to_close_leaves_the_others_closed(model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mnad import outputs

    out = tmp_path / "d14"
    v, w = frames_folder(tmp_path / "v", 8), frames_folder(tmp_path / "w", 8)
    run_detect(model_file, out, v)
    before = snapshot(out)
    close = outputs.DetectWriter.close

    def failing_for_the_first(self: outputs.DetectWriter, summary: dict) -> None:
        if self.out_dir.name == "0_v":
            raise DataError(f"{self.out_dir}: cannot write the outputs (disk full)")
        close(self, summary)

    monkeypatch.setattr(outputs.DetectWriter, "close", failing_for_the_first)
    model, config = load_model(model_file)
    with pytest.raises(DataError, match=f"0_v: cannot write the outputs \\(disk full\\); .*moved to .*{EARLIER_DIR}"):
        detect(model, config, [str(v), str(w)], out, DetectOptions(overwrite=True, save_video=True), progress=False)
    assert json.loads((out / "1_w" / "summary.json").read_text())["frames_scored"] == 4  # the next source closed
    capture = cv2.VideoCapture(str(out / "1_w" / "annotated.mkv"))  # its video released: playable
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 4 and capture.read()[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and [s["failed"] for s in summary["streams"]] == [True, False]
    assert "disk full" in summary["streams"][0]["error"]
    assert snapshot(out / EARLIER_DIR) == before and not (out / STAGING_DIR).exists()  # the earlier run kept, and said
