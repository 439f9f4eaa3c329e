"""Nothing is lost: `detect --overwrite` replaces an earlier run whole, and only once it has its own; files written
together (atomic_write_many) land together or not at all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from mnad.checkpoint import atomic_write_many, load_model
from mnad.cli import main
from mnad.detect import DetectOptions, detect
from mnad.errors import DataError
from mnad.export import export_onnx
from mnad.outputs import EARLIER_DIR, STAGING_DIR


def frames_folder(folder: Path, n: int, corrupt_at: int | None = None) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:05d}.png"), rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    if corrupt_at is not None:
        (folder / f"{corrupt_at:05d}.png").write_bytes(b"\x89PNG not really")
    return folder


def run_detect(model_file: Path, out: Path, *sources: Path, overwrite: bool = False, max_frames: int | None = None) -> dict:
    model, config = load_model(model_file)
    return detect(model, config, [str(s) for s in sources], out, DetectOptions(overwrite=overwrite, max_frames=max_frames),
                  progress=False)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


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
    while scores.read_text().count("\n") < 30 and time.monotonic() < deadline:  # the new run's rows, live, where they belong
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    rows = scores.read_text().splitlines()
    assert len(rows) >= 30 and rows[1].startswith("4,") and not (out / "summary.json").exists()
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
    assert sorted(p.name for p in out.iterdir()) == ["2024_clips", "events.csv", "events.jsonl", "notes.txt", "scores.csv",
                                                     "summary.json"]
    run_detect(model_file, out, v, w, overwrite=True)  # one source -> several
    assert sorted(p.name for p in out.iterdir()) == ["0_v", "1_w", "2024_clips", "notes.txt", "summary.json"]
    run_detect(model_file, out, v, short, overwrite=True)  # the same count, another source
    assert sorted(p.name for p in out.iterdir()) == ["0_v", "1_short", "2024_clips", "notes.txt", "summary.json"]
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
