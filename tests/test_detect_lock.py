"""A detect run holds its --out for the whole run: a second run into it (one started by mistake, a service restarted
while the old process still ends) is refused at once, naming the folder, instead of mixing its rows with the first's
or moving its files aside; the lock file is no run's output; under the lock, what a run killed during an atomic write
left (hidden .tmp files) is deleted. And a stream scorer built directly knows the weights it scores with, so a saved
state of another model is refused however the scorer was built."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import frames_folder, tiny_config

import mnad.detect
from mnad.checkpoint import load_model, weights_digest
from mnad.cli import main
from mnad.detect import DetectOptions, detect
from mnad.errors import CheckpointError, DataError
from mnad.model import MNAD
from mnad.outputs import EARLIER_DIR, STATE_FILE, SUMMARY_FILE, detect_run_entries
from mnad.run_folder import LOCK_FILE, RunFolderLock
from mnad.stream import StreamScorer, scoring_step

BUSY = r"another mnad process is writing this run folder"


def test_a_second_run_into_a_held_out_is_refused_at_once_and_touches_nothing(model_file: Path, tmp_path: Path,
                                                                               capsys: pytest.CaptureFixture[str]) -> None:
    model, config = load_model(model_file)
    src = frames_folder(tmp_path / "f", 6)
    out = tmp_path / "o"
    detect(model, config, str(src), out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with RunFolderLock(out) as other:  # the first run, still writing
        other.acquire()
        for sources in (str(src), [str(src), str(src)]):  # one source; several (--out is the run's folder)
            with pytest.raises(DataError, match=rf"^{out}: {BUSY}"):
                detect(model, config, sources, out, DetectOptions(overwrite=True), progress=False)
        code = main(["detect", str(src), "--checkpoint", str(model_file), "--out", str(out), "--overwrite", "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err and f"{out}: {BUSY}" in err
        assert len([line for line in err.splitlines() if line.startswith("mnad: error:")]) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # nothing moved aside or rewritten
    assert not (out / EARLIER_DIR).exists()


def test_the_lock_is_held_for_the_whole_run_and_released_after(model_file: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    model, config = load_model(model_file)
    tries: list[str] = []
    score = mnad.detect.score_streams

    def scoring(*args: object) -> object:
        try:
            with RunFolderLock(tmp_path / "o") as probe:
                probe.acquire()
                tries.append("taken")
        except DataError as exc:
            tries.append(str(exc))
        return score(*args)

    monkeypatch.setattr(mnad.detect, "score_streams", scoring)
    detect(model, config, [str(frames_folder(tmp_path / "a", 6)), str(frames_folder(tmp_path / "b", 6))], tmp_path / "o",
           progress=False)
    assert tries and all(BUSY in t for t in tries)
    with RunFolderLock(tmp_path / "o") as after:
        after.acquire()  # the run released it


def test_a_killed_runs_lock_file_is_no_earlier_run_and_is_never_moved(model_file: Path, tmp_path: Path) -> None:
    """flock goes with the process: a killed run leaves the empty .lock file, which blocks nothing, is no earlier
    run's output (so a new run needs no --overwrite) and stays where it is when an earlier run is moved aside."""
    model, config = load_model(model_file)
    src = str(frames_folder(tmp_path / "f", 6))
    out = tmp_path / "o"
    out.mkdir()
    (out / LOCK_FILE).touch()
    assert detect_run_entries(out) == []
    detect(model, config, src, out, progress=False)  # no --overwrite needed
    assert LOCK_FILE not in {p.name for p in detect_run_entries(out)}
    detect(model, config, src, out, DetectOptions(overwrite=True), progress=False)
    assert (out / LOCK_FILE).is_file() and not (out / EARLIER_DIR).exists()
    assert sorted(p.name for p in out.iterdir()) == sorted([LOCK_FILE, "scores.csv", "events.jsonl", "events.csv", SUMMARY_FILE,
                                                           STATE_FILE])


def test_a_refused_run_leaves_no_folder_it_made(model_file: Path, tmp_path: Path) -> None:
    model, config = load_model(model_file)
    with pytest.raises(DataError, match="no such video file"):  # the folder is made and locked before the sources are opened
        detect(model, config, str(tmp_path / "missing.mp4"), tmp_path / "new" / "o", progress=False)
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    with pytest.raises(DataError, match="no such video file"):
        detect(model, config, str(tmp_path / "missing.mp4"), tmp_path / "mine", progress=False)
    assert (tmp_path / "mine").is_dir()  # not made by the run: kept


def test_stale_temporary_files_of_a_killed_write_are_deleted_under_the_lock(model_file: Path, tmp_path: Path) -> None:
    model, config = load_model(model_file)
    a, b = str(frames_folder(tmp_path / "a", 6)), str(frames_folder(tmp_path / "b", 6))
    out = tmp_path / "o"
    detect(model, config, [a, b], out, progress=False)
    stale = [out / ".summary.json.k3j9x2ab.tmp", out / ".events.csv.5f0e1c2d.old.tmp",
             out / "0_a" / ".summary.json.q8w7e6r5.tmp", out / "0_a" / ".events.csv.1a2b3c4d.tmp"]
    for path in stale:
        path.write_bytes(b'{"half": ')
    foreign = [out / ".notes.txt.swp.tmp", out / ".summary.json"]  # not detect's temporary files: kept
    for path in foreign:
        path.write_bytes(b"mine")
    short = str(frames_folder(tmp_path / "s", 1))  # the new run fails: the earlier run is kept aside, as it was
    with pytest.raises(DataError, match="1 of 2 sources failed"):
        detect(model, config, [a, short], out, DetectOptions(overwrite=True), progress=False)
    kept = out / EARLIER_DIR / "0_a"
    assert (kept / "scores.csv").is_file() and not list(kept.glob(".*.tmp"))
    assert not any(p.exists() for p in stale) and all(p.read_bytes() == b"mine" for p in foreign)
    assert json.loads((out / SUMMARY_FILE).read_text())["failed"] == 1


def direct_scorer(seed: int) -> tuple[StreamScorer, MNAD]:
    torch.manual_seed(seed)
    config = tiny_config()
    model = MNAD(config.model).eval()
    return StreamScorer(scoring_step(model, config), config, model.memory.items, normalization="causal"), model


def test_a_directly_built_scorer_refuses_the_state_of_another_models_scorer() -> None:
    a, model_a = direct_scorer(0)
    b, _ = direct_scorer(1)
    frame = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for _ in range(6):
        a.push(frame)
    assert a.model_digest == weights_digest(model_a)  # as for_model gives it: their states are interchangeable
    with pytest.raises(CheckpointError, match=r"another model or scorer: model '[0-9a-f]{64}' \(this scorer: '[0-9a-f]{64}'\)"):
        b.restore(a.state())
    direct_scorer(0)[0].restore(a.state())  # the same weights: taken
    StreamScorer.for_model(model_a, a.config, normalization="causal").restore(a.state())


def test_a_scorer_whose_weights_cannot_be_told_restores_no_state() -> None:
    a, _ = direct_scorer(0)
    blind = StreamScorer(lambda *x: a.step(*x), a.config, a.items, normalization="causal")  # no torch module
    assert blind.model_digest is None
    with pytest.raises(CheckpointError, match="does not know the weights"):
        blind.restore(blind.state())


def test_a_lock_file_removed_between_open_and_lock_is_not_held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that wrote nothing removes its lock file while holding it (run_folder.locked_output): a second process that
    opened the file just before and locks it just after must not hold a lock on a file no longer in the folder, where a
    third would lock the new one beside it."""
    import fcntl

    folder = tmp_path / "o"
    folder.mkdir()
    real_flock, removed = fcntl.flock, []

    def flock_after_removal(fd: int, operation: int) -> None:
        if not removed:  # the first holder ends between this process's open and its lock
            removed.append(True)
            (folder / LOCK_FILE).unlink()
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_removal)
    with RunFolderLock(folder) as lock:
        lock.acquire()
        assert lock.held and removed
        monkeypatch.setattr(fcntl, "flock", real_flock)
        with pytest.raises(DataError, match="another mnad process"):  # was: a third run locked the new file too
            RunFolderLock(folder).acquire()
