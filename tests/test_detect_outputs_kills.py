"""mnad detect's outputs where a run is killed or the disk fails: an --overwrite run killed at any rename of its move
over an earlier run leaves that run whole (in --out and .mnad-detect-earlier) and the next run able to go on; a row
segment that is not durable or cannot be deleted fails the source without losing a row; an evaluation never writes
into a detect run's folder, and only a detect run's scores.csv is read as one."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import frames_folder

import mnad.outputs.detect_folder
import mnad.outputs.detect_writer
from mnad.checkpoint import load_model
from mnad.detect import DetectOptions, detect
from mnad.errors import DataError
from mnad.outputs import (
    EARLIER_DIR,
    ROWS_DIR,
    STAGING_DIR,
    DetectWriter,
    check_evaluation_output,
    read_detect_scores,
    row_segment_name,
)

SEGMENT = 0.2  # seconds: 5 frames at a frame folder's 25 frames/s


def files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file() and p.name not in (".lock", mnad.outputs.MOVING_MARK)}


def killed_at(n: int, run: object, fail_at: int = 0) -> int:
    """Run ``run()`` in a forked process killed outright (``os._exit``, nothing cleaned up) at the ``n``-th rename
    into or out of detect's hidden folders (``DetectFolder.take_over``), the ``fail_at``-th failing (OSError) if
    given; its exit status (0: it never got there, 3: it failed)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        real, calls = os.rename, [0]

        def rename(source: object, target: object, *args: object, **kwargs: object) -> None:
            if ".mnad-detect" in f"{source}{target}":
                calls[0] += 1
                if calls[0] == n:
                    os._exit(137)
                if calls[0] == fail_at:
                    raise OSError(errno.EIO, "Input/output error")
            real(source, target, *args, **kwargs)

        os.rename = rename
        try:
            run()  # type: ignore[operator]
        except BaseException:
            os._exit(3)
        os._exit(0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.parametrize(("sources", "fail_at"), [(1, 0), (2, 0), (1, 4)])
def test_a_kill_at_any_rename_of_the_move_over_an_earlier_run_keeps_it_whole(model_file: Path, tmp_path: Path,
                                                                             sources: int, fail_at: int) -> None:
    """For every rename of take_over (``fail_at``: after the rename moving in the new run's second file failed, for
    every rename putting things back): the earlier run whole in --out and .mnad-detect-earlier together; a later run
    without --overwrite refused; one with it that fails keeps the earlier run whole aside (was: the part aside deleted,
    24 of 25 files kept), and one that ends well replaces it (was, several sources: their folders, with the summary.json
    naming them moved aside first, refused for good as a user's)."""
    model, config = load_model(model_file)
    names = ["a", "b"][:sources]
    earlier = [str(frames_folder(tmp_path / f"e{name}", 12)) for name in names]
    new = [str(frames_folder(tmp_path / f"n{name}", 8)) for name in names]
    bad = [str(frames_folder(tmp_path / "bad", 8, corrupt_at=6))] * sources
    base = tmp_path / "earlier"
    detect(model, config, earlier, base, DetectOptions(rows_segment=SEGMENT), progress=False)
    before = files(base)
    assert any(ROWS_DIR in name for name in before)
    n = fail_at
    while True:
        n += 1
        out = tmp_path / f"o{n}"
        shutil.copytree(base, out)
        status = killed_at(n, lambda out=out: detect(model, config, new, out, DetectOptions(overwrite=True), progress=False),
                           fail_at)
        if status == 0 or (fail_at and status == 3):
            break
        assert status == 137, n
        here, aside = files(out), files(out / EARLIER_DIR) if (out / EARLIER_DIR).is_dir() else {}
        assert all(here.get(k) == v or aside.get(k) == v for k, v in before.items()), n
        # killed once the earlier run was whole aside, while the new one moved in: the new one is the earlier run now
        moving_in = aside == before and not (out / EARLIER_DIR / mnad.outputs.MOVING_MARK).exists()
        with pytest.raises(DataError, match="earlier run"):
            detect(model, config, new, out, DetectOptions(), progress=False)
        with pytest.raises(DataError):  # a damaged frame: this run did not end well, the earlier one is kept whole aside
            detect(model, config, bad, out, DetectOptions(overwrite=True), progress=False)
        assert moving_in or files(out / EARLIER_DIR) == before, n
        detect(model, config, new, out, DetectOptions(overwrite=True), progress=False)
        assert not (out / EARLIER_DIR).exists() and not (out / STAGING_DIR).exists(), n
        folder = out / f"0_n{names[0]}" if sources > 1 else out
        assert [int(r["frame"]) for r in read_detect_scores(folder)] == list(range(4, 8)), n
    assert n > fail_at + 2  # the renames were reached


@pytest.mark.parametrize("sources", [1, 2])
def test_a_rename_that_fails_during_the_move_puts_everything_back(model_file: Path, tmp_path: Path, sources: int,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A rename of take_over that fails (not a kill): the run fails, the earlier run is back whole in --out, and the
    next --overwrite run replaces it."""
    model, config = load_model(model_file)
    names = ["a", "b"][:sources]
    earlier = [str(frames_folder(tmp_path / f"e{name}", 12)) for name in names]
    new = [str(frames_folder(tmp_path / f"n{name}", 8)) for name in names]
    base = tmp_path / "earlier"
    detect(model, config, earlier, base, DetectOptions(rows_segment=SEGMENT), progress=False)
    before = files(base)
    real = os.rename
    for n in range(1, 12):
        out = tmp_path / f"o{n}"
        shutil.copytree(base, out)
        calls = [0]

        def rename(source: object, target: object, *args: object, n: int = n, calls: list = calls, **kwargs: object) -> None:
            if ".mnad-detect" in f"{source}{target}":
                calls[0] += 1
                if calls[0] == n:
                    raise OSError(errno.EIO, "Input/output error")
            real(source, target, *args, **kwargs)

        monkeypatch.setattr(os, "rename", rename)
        try:
            detect(model, config, new, out, DetectOptions(overwrite=True), progress=False)
        except DataError as exc:
            assert "cannot replace the earlier run's outputs" in str(exc)
        else:
            break
        finally:
            monkeypatch.undo()
        assert files(out) == before and not (out / EARLIER_DIR).exists(), n
        detect(model, config, new, out, DetectOptions(overwrite=True), progress=False)
        assert not (out / EARLIER_DIR).exists(), n
    assert n > 3


def row(index: int) -> SimpleNamespace:
    return SimpleNamespace(index=index, psnr=30.0, patch_psnr=29.0, distance=0.1, patch_distance=0.2, regular=0.5,
                           updated=False, score=0.3, smoothed=0.3)


def test_a_closed_segment_not_made_durable_fails_the_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fsync of a closed segment fails (EIO): a DataError (was: suppressed, the run ended well); the segment stays
    listed and the row that began the next is written (and the error comes before the next row)."""
    def eio(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    writer = DetectWriter(tmp_path / "w", rows_segment=1.0)
    monkeypatch.setattr(mnad.outputs.detect_writer.os, "fsync", eio)
    for i in range(3):
        writer.score(row(i), i * 0.5, False)
    assert writer.kept.names == [row_segment_name(0)]  # closed at frame 2, which begins the next
    with pytest.raises(DataError, match=r"000000000000: cannot make the row segment durable \(Input/output error"):
        writer.score(row(3), 1.5, False)
    with pytest.raises(DataError, match="000000000002: cannot make the row segment durable"):
        writer.close_rows()
    monkeypatch.undo()
    writer.close({})
    assert [int(r["frame"]) for r in read_detect_scores(tmp_path / "w")] == [0, 1, 2]


def test_a_segment_that_cannot_be_deleted_stays_listed_as_it_is_named_and_no_row_is_lost(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, undeletable_doomed: None) -> None:
    """--rows-keep cannot delete the oldest segment (rmtree fails after its rename): it is renamed back and stays
    listed under its name (was: listed as rows/<first>, left as .<first>.<hex>.tmp), and the row of the frame that
    began the new segment is written before (was: written nowhere)."""
    out = tmp_path / "w"
    writer = DetectWriter(out, rows_segment=1.0, rows_keep=1)
    for i in range(5):  # segments 0-1, 2-3, 4: closing 2-3 at frame 4 deletes 0-1
        writer.score(row(i), i * 0.5, False)
    assert writer.kept.names == [row_segment_name(0), row_segment_name(2)]
    assert sorted(p.name for p in (out / ROWS_DIR).iterdir()) == ["000000000000", "000000000002", "000000000004"]
    assert [int(r["frame"]) for r in read_detect_scores(out)] == [0, 1, 2, 3, 4]
    with pytest.raises(DataError, match="000000000000: cannot delete the oldest row segment for --rows-keep"):
        writer.score(row(5), 2.5, False)
    with pytest.raises(DataError, match="000000000000: cannot delete"):  # the source's end: said again, all listed
        writer.close_rows()
    writer.close({"row_segments": writer.kept.names})
    assert all((out / name).is_dir() for name in json.loads((out / "summary.json").read_text())["row_segments"])


def test_a_segment_not_renamed_back_is_listed_under_its_hidden_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kept = mnad.outputs.OldestFirst(1, "--rows-keep", "row segment")
    for first in (4, 9):
        (tmp_path / row_segment_name(first)).mkdir(parents=True)
    real = Path.rename

    def once(self: Path, target: Path) -> Path:  # into the hidden name, never back
        if self.name.endswith(".tmp"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(self, target)

    monkeypatch.setattr(Path, "rename", once)
    monkeypatch.setattr(mnad.outputs.detect_folder.shutil, "rmtree", lambda *a, **k: (_ for _ in ()).throw(PermissionError(13, "no")))
    kept.add(tmp_path, row_segment_name(4), 11)
    with pytest.raises(DataError, match="cannot delete the oldest row segment"):
        kept.add(tmp_path, row_segment_name(9), 11)
    assert kept.names[0].startswith(f"{ROWS_DIR}/.000000000004.") and (tmp_path / kept.names[0]).is_dir()


def test_an_evaluation_is_refused_in_a_long_detect_runs_folder(tmp_path: Path) -> None:
    """A detect run longer than one row segment has no scores.csv at the top: its summary.json or rows/ say what it is
    (was: taken for an empty folder, the evaluation written beside the run)."""
    for name, content in (("summary", {"summary.json": json.dumps({"frames_scored": 3})}),
                          ("several", {"summary.json": json.dumps({"sources": 2, "streams": []})}),
                          ("rows", {"rows/000000000004/scores.csv": "frame,time\n"})):
        folder = tmp_path / name
        for relative, text in content.items():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).write_text(text)
        for overwrite in (False, True):
            with pytest.raises(DataError, match="holds an `mnad detect` output"):
                check_evaluation_output(folder, overwrite=overwrite)
    other = tmp_path / "other"  # a summary.json of something else: not detect's
    other.mkdir()
    (other / "summary.json").write_text('{"title": "mine"}')
    assert check_evaluation_output(other) == other


def test_read_detect_scores_reads_only_detect_runs_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no_such: not found"):
        read_detect_scores(tmp_path / "no_such")
    with pytest.raises(DataError, match="scores.csv: not found"):
        read_detect_scores(tmp_path / "no_such" / "scores.csv")
    folder = tmp_path / "mixed"
    (folder / row_segment_name(4)).mkdir(parents=True)
    (folder / row_segment_name(4) / "scores.csv").write_text("frame,time,score\n4,0.160,0.5\n")
    assert [r["frame"] for r in read_detect_scores(folder)] == ["4"]
    (folder / "scores.csv").write_text("video,frame,psnr\nv,0,30\n")  # an evaluation's, written into it
    with pytest.raises(DataError, match=r"mixed/scores.csv: not a detect run's scores.csv"):
        read_detect_scores(folder)
    with pytest.raises(DataError, match=r"mixed/scores.csv: not a detect run's scores.csv"):
        read_detect_scores(folder / "scores.csv")


def test_a_kill_while_the_earlier_run_is_deleted_leaves_no_part_of_it_under_its_name(
        model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that ended well deletes the earlier run it replaced: killed midway, what is left is a hidden temporary
    folder the next run deletes (was: .mnad-detect-earlier half deleted, read as an earlier run kept)."""
    model, config = load_model(model_file)
    out = tmp_path / "o"
    detect(model, config, str(frames_folder(tmp_path / "e", 8)), out, DetectOptions(), progress=False)
    rmtree = shutil.rmtree

    def killed(path: Path, *args: object, **kwargs: object) -> None:
        if f"{EARLIER_DIR}." not in str(path):
            return rmtree(path, *args, **kwargs)
        next(p for p in Path(path).rglob("*") if p.is_file()).unlink()  # one file deleted, then the process dies
        raise SystemExit(137)

    monkeypatch.setattr(mnad.outputs.detect_folder.shutil, "rmtree", killed)
    with pytest.raises(SystemExit):
        detect(model, config, str(frames_folder(tmp_path / "n", 8)), out, DetectOptions(overwrite=True), progress=False)
    monkeypatch.undo()
    assert not (out / EARLIER_DIR).exists()
    [temp] = [p for p in out.iterdir() if p.name.startswith(f".{EARLIER_DIR}.")]
    assert [int(r["frame"]) for r in read_detect_scores(out)] == list(range(4, 8))  # the new run's, whole
    detect(model, config, str(frames_folder(tmp_path / "n2", 8)), out, DetectOptions(overwrite=True), progress=False)
    assert not temp.exists()
