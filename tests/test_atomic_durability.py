"""Atomic writes survive a power cut: after the renames, the folders holding them are synced (a rename lives in the
folder, and until the folder is synced it can be lost though the file's data was synced); where a folder cannot be
opened or synced, the write still succeeds."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from mnad.atomic import atomic_write, atomic_write_many


def record_syncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object]]:
    """Every rename (its target) and every fsync (of a folder: its inode; of a file: 'file'), in order."""
    events: list[tuple[str, object]] = []
    replace, fsync = os.replace, os.fsync

    def recording_replace(src: str, dst: str | Path) -> None:
        replace(src, dst)
        events.append(("rename", Path(dst)))

    def recording_fsync(fd: int) -> None:
        info = os.fstat(fd)
        events.append(("fsync", info.st_ino if stat.S_ISDIR(info.st_mode) else "file"))
        fsync(fd)

    monkeypatch.setattr(os, "replace", recording_replace)
    monkeypatch.setattr(os, "fsync", recording_fsync)
    return events


def test_a_write_syncs_its_folder_after_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = record_syncs(monkeypatch)
    atomic_write(tmp_path / "a.json", b"{}")
    assert (tmp_path / "a.json").read_bytes() == b"{}"
    folder = ("fsync", tmp_path.stat().st_ino)
    assert folder in events, "the folder was not synced"
    assert events.index(("rename", tmp_path / "a.json")) < events.index(folder)


def test_files_written_together_sync_each_folder_after_every_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sub").mkdir()
    files = {tmp_path / "a.csv": b"a", tmp_path / "sub" / "b.json": b"b", tmp_path / "c.json": b"c"}
    events = record_syncs(monkeypatch)
    atomic_write_many(files)
    last_rename = max(i for i, e in enumerate(events) if e[0] == "rename")
    synced = [e[1] for e in events[last_rename + 1:] if e[0] == "fsync"]
    assert sorted(synced) == sorted({tmp_path.stat().st_ino, (tmp_path / "sub").stat().st_ino})  # each folder once


@pytest.mark.parametrize("fails", ["open", "fsync"])
def test_a_folder_that_cannot_be_synced_does_not_fail_the_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                fails: str) -> None:
    """Windows cannot open a folder; some file systems refuse to fsync one (EINVAL): the files are written all the same."""
    real_open, real_fsync = os.open, os.fsync

    def refusing_open(path: str | Path, flags: int, *args: object, **kwargs: object) -> int:
        if os.path.isdir(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    def refusing_fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        real_fsync(fd)

    if fails == "open":
        monkeypatch.setattr(os, "open", refusing_open)
    else:
        monkeypatch.setattr(os, "fsync", refusing_fsync)
    atomic_write_many({tmp_path / "a.json": b"1", tmp_path / "b.json": b"2"})
    assert [(tmp_path / n).read_bytes() for n in ("a.json", "b.json")] == [b"1", b"2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]  # no temporary file left


def test_a_compiled_step_package_is_durable_before_its_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The record says the package is whole: a power cut must not keep the record and lose the package's rename."""
    import subprocess

    from conftest import tiny_config

    import mnad.aot
    from mnad.model import MNAD

    def fake_compiler(args: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        Path(args[-1], "step.pt2").write_bytes(b"package")  # what the compiling child writes
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(mnad.aot.subprocess, "run", fake_compiler)
    config = tiny_config()
    step = mnad.aot.AotStep(MNAD(config.model), config)
    events = record_syncs(monkeypatch)
    package, record = tmp_path / "key.pt2", tmp_path / "key.json"
    step._build(((1, 12, 32, 32), (1, 3, 32, 32), (10, 64)), package, record)
    folder = ("fsync", tmp_path.stat().st_ino)
    assert events.index(("rename", package)) < events.index(folder) < events.index(("rename", record))
