"""A detect run refused into an existing --out leaves that folder exactly as it found it: the lock file it created to
hold the folder goes again (while still held), and a lock file that was there already stays."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import frames_folder

from mnad.checkpoint import load_model
from mnad.cli import main
from mnad.detect import detect
from mnad.errors import DataError
from mnad.outputs import METRICS_FILE, SCORES_FILE, SCORES_HEADER
from mnad.run_folder import LOCK_FILE, RunFolderLock


def contents(folder: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``folder``, hidden ones included."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("sources", [1, 2])
def test_a_run_refused_for_an_earlier_run_leaves_the_folder_as_it_was(model_file: Path, tmp_path: Path, sources: int,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    model, config = load_model(model_file)
    src = [str(frames_folder(tmp_path / f"f{i}", 6)) for i in range(sources)]
    out = tmp_path / "o"
    detect(model, config, src, out, progress=False)
    (out / LOCK_FILE).unlink()  # outputs copied from elsewhere, or a lock file someone tidied away
    before = contents(out)
    with pytest.raises(DataError, match="holds the outputs of an earlier run"):
        detect(model, config, src, out, progress=False)
    assert contents(out) == before
    assert main(["detect", *src, "--checkpoint", str(model_file), "--out", str(out), "--quiet"]) == 2
    assert "holds the outputs of an earlier run" in capsys.readouterr().err
    assert contents(out) == before


def test_a_run_refused_for_another_commands_outputs_leaves_the_folder_as_it_was(model_file: Path, tmp_path: Path,
                                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval"
    out.mkdir()
    (out / SCORES_FILE).write_text(",".join(SCORES_HEADER) + "\n01,0,30.0,0.1,0.2,1,0.5,0,30.0,0.1\n")
    (out / METRICS_FILE).write_text('{"metrics": {}, "config": {}}')
    before = contents(out)
    src = frames_folder(tmp_path / "f", 6)
    for extra in ([], ["--overwrite"]):
        assert main(["detect", str(src), "--checkpoint", str(model_file), "--out", str(out),
                     "--quiet", *extra]) == 2
        assert "holds another command's outputs" in capsys.readouterr().err
        assert contents(out) == before


def test_a_lock_file_that_was_there_stays(model_file: Path, tmp_path: Path) -> None:
    model, config = load_model(model_file)
    src = str(frames_folder(tmp_path / "f", 6))
    out = tmp_path / "o"
    detect(model, config, src, out, progress=False)  # its lock file stays with its outputs
    before = contents(out)
    assert LOCK_FILE in before
    with pytest.raises(DataError, match="holds the outputs of an earlier run"):
        detect(model, config, src, out, progress=False)
    with RunFolderLock(out) as other, pytest.raises(DataError, match="another mnad process"):  # held by another run
        other.acquire()
        detect(model, config, src, out, progress=False)
    assert contents(out) == before
