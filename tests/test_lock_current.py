"""atomic.lock_current: the one "open, flock, check it is still the file at its path, else again" loop of the run
folder's lock (RunFolderLock), the compiled-step cache's (aot._locked) and aot.prune's."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

import pytest

from mnad import atomic
from mnad.atomic import LockError, LockOpenError, LockReplacedError, LockUnsupportedError, lock_current


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_it_holds_the_file_at_the_path_and_a_second_caller_is_told_busy(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    fd = lock_current(lock, wait=False, attempts=1)
    assert fd is not None and lock.exists()
    try:
        assert lock_current(lock, wait=False, attempts=1) is None  # another open file description: refused, not waited
        other = os.open(lock, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
    finally:
        os.close(fd)
    again = lock_current(lock, wait=True, attempts=1)  # released with its descriptor
    assert again is not None
    os.close(again)


def test_a_file_that_cannot_be_opened_is_told_apart(tmp_path: Path) -> None:
    with pytest.raises(LockOpenError) as caught:
        lock_current(tmp_path / "missing" / ".lock", wait=True, attempts=3)
    assert caught.value.error.errno == errno.ENOENT and caught.value.reason == os.strerror(errno.ENOENT)


@pytest.mark.parametrize("wait", [True, False])
def test_a_file_system_without_locks_is_told_apart_and_the_file_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       wait: bool) -> None:
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    before = _open_fds()
    with pytest.raises(LockUnsupportedError) as caught:
        lock_current(tmp_path / ".lock", wait=wait, attempts=3)
    assert caught.value.error.errno == errno.ENOLCK and caught.value.reason == "No locks available"
    assert _open_fds() == before


def test_a_file_replaced_after_its_open_is_opened_again_up_to_attempts(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    lock, real_flock, calls = tmp_path / ".lock", fcntl.flock, []

    def flock_after_replacement(fd: int, operation: int) -> None:
        calls.append(fd)
        if len(calls) <= 2:  # the holder removes the file between this open and this lock, twice
            lock.unlink()
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_replacement)
    fd = lock_current(lock, wait=False, attempts=3)
    assert fd is not None and len(calls) == 3 and os.fstat(fd).st_ino == lock.stat().st_ino
    os.close(fd)

    calls.clear()
    before = _open_fds()
    with pytest.raises(LockReplacedError) as caught:  # replaced every time: given up after attempts, all closed
        lock_current(lock, wait=True, attempts=2)
    assert len(calls) == 2 and _open_fds() == before
    assert isinstance(caught.value, LockError) and caught.value.error is None
    assert caught.value.reason == "its lock file kept being replaced"


def test_a_stop_while_locking_keeps_no_descriptor_nor_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only an OSError closed the descriptor: a Ctrl-C or SIGTERM just after the flock succeeded left the lock held by
    a descriptor nobody had, so every later caller in the process (a notebook) was told busy, or waited for ever."""
    path = tmp_path / ".lock"

    def stopped(fd: int, where: Path) -> bool:
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic, "same_file", stopped)
    with pytest.raises(KeyboardInterrupt):
        lock_current(path, wait=False, attempts=1)
    monkeypatch.undo()
    fd = lock_current(path, wait=False, attempts=1)
    assert fd is not None
    os.close(fd)
