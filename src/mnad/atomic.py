"""Atomic writes: a reader sees a file's old version or its new one, never a part; several files that belong
together are replaced all or none. Its own module, without torch, so that what writes only JSON, CSV or HTML (the
report, detect's outputs) does not import it."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from mnad.errors import DataError, MNADError, os_reason
from mnad.interrupts import held_interrupts

try:
    import fcntl
except ImportError:  # not POSIX (Windows): no flock
    fcntl = None  # type: ignore[assignment]

TEMP_SUFFIX = ".tmp"  # atomic writes go to ``.<name>.<random>.tmp`` beside the target, then are renamed


def atomic_write(path: Path, data: bytes, *, error: type[MNADError] = DataError) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part.

    A failure (disk full, no permission, ...) leaves the previous file as it was and no temporary file, and is
    raised as ``error`` naming ``path``.
    """
    atomic_write_many({Path(path): data}, error=error)


def atomic_write_many(files: dict[Path, bytes], *, error: type[MNADError] = DataError) -> None:
    """Write several files that belong together, all or none: every target is checked (no folder in the way) and
    every file written and flushed to a temporary name first, then they are renamed; a rename that still fails puts
    back the files the earlier renames replaced, so a failure leaves only the previous files. The folders are synced
    after the renames: until then a power cut can lose a rename (the old file back, or none), however synced the data."""
    temps: dict[Path, str] = {}
    kept: dict[Path, str] = {}  # each replaced file's previous version, linked aside until every rename succeeded
    current = next(iter(files), Path("."))
    umask = _umask()
    try:
        for current in files:  # before anything is written: the first rename must not be the only one to land
            if current.is_dir():
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(current))
        for current, data in files.items():
            current.parent.mkdir(parents=True, exist_ok=True)
            fd, temps[current] = tempfile.mkstemp(dir=current.parent, prefix=f".{current.name}.", suffix=TEMP_SUFFIX)
            try:  # mkstemp creates 0600: give the file the mode open() would (an existing file keeps its own)
                os.fchmod(fd, _mode_of(current, umask))
            except BaseException:
                os.close(fd)
                raise
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        for current in files:
            if os.path.lexists(current):
                kept[current] = _keep_aside(current)
        with held_interrupts():  # files that belong together are renamed all, or none, even on Ctrl-C
            done: list[Path] = []
            try:
                for current, tmp in temps.items():
                    os.replace(tmp, current)
                    done.append(current)
            except OSError:
                _put_back(done, kept)
                raise
        for folder in dict.fromkeys(path.parent for path in files):  # each once, in order
            fsync_dir(folder)
    except OSError as exc:
        reason = os_reason(exc)
        raise error(f"{current}: cannot write ({reason}); the previous file, if any, is unchanged") from exc
    finally:
        for tmp in (*temps.values(), *kept.values()):
            Path(tmp).unlink(missing_ok=True)


def fsync_dir(folder: Path) -> None:
    """Make ``folder``'s entries (renames, new and removed files) durable. Skipped where a folder cannot be opened or
    synced (Windows, some network file systems): the files are written all the same, only less surely after a power cut."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: Path) -> bool:
    """Make the file at ``path`` durable (its data written through any handle: fsync acts on the file, not on the
    handle). False when it is gone (deleted since it was written: nothing of it to keep); OSError when it cannot be."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _keep_aside(path: Path) -> str:
    """A second name for ``path``'s current file (a hard link; a copy where the file system has none), beside it."""
    aside = str(path.with_name(f".{path.name}.{os.urandom(4).hex()}.old{TEMP_SUFFIX}"))  # cleared as a stale temp if killed
    try:
        os.link(path, aside, follow_symlinks=False)
    except OSError:
        shutil.copy2(path, aside, follow_symlinks=False)
    return aside


def _put_back(done: list[Path], kept: dict[Path, str]) -> None:
    """Undo the renames done: each target gets its previous file back, or is removed when it had none."""
    for target in reversed(done):
        if target in kept:
            os.replace(kept.pop(target), target)
        else:
            target.unlink(missing_ok=True)


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (os.umask sets it to read it)."""
    try:
        with open("/proc/self/status", encoding="utf-8", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _mode_of(path: Path, umask: int) -> int:
    """The permissions a plain open(path, "w") gives: an existing file's own, else 0666 less the umask."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        return 0o666 & ~umask


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files a killed writer left in ``folder`` (``.<name>.<random>.tmp``); returns them."""
    stale = [p for p in Path(folder).glob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def same_file(fd: int, path: Path) -> bool:
    """Whether the open ``fd`` is the file now at ``path`` (not one since removed or replaced): a lock
    file held only while it is still the one at its path (run folders' and the compiled-step cache's locks)."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


CAN_LOCK = fcntl is not None  # flock exists here (POSIX); where it does not, callers go on unlocked
_BUSY = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)  # flock(LOCK_NB): another process holds the lock


class LockError(Exception):
    """Why ``lock_current`` holds no lock; ``error`` is the OSError behind it (None where there is none)."""

    without_error = ""  # the reason where there is no OSError

    def __init__(self, path: Path, error: OSError | None = None) -> None:
        self.path, self.error = path, error
        super().__init__(f"{path}: {self.reason}")

    @property
    def reason(self) -> str:
        """The OSError's words (its strerror), for a message."""
        if self.error is None:
            return self.without_error
        return str(self.error.strerror or self.error)


class LockOpenError(LockError):
    """The lock file could not be opened (or created): no permission, a read-only or missing folder, ..."""


class LockUnsupportedError(LockError):
    """The lock file is open but ``flock`` refused it for another reason than another holder (ENOLCK: no locks on
    this file system, as on some NFS mounts), or this platform has no flock (``error`` None)."""

    without_error = "no file locks on this platform"


class LockReplacedError(LockError):
    """The file locked was no longer the one at its path each of ``attempts`` times (removed or replaced meanwhile)."""

    without_error = "its lock file kept being replaced"


def lock_current(path: Path, *, wait: bool, attempts: int) -> int | None:
    """Open (creating it, mode 0o666 less the umask) the lock file at ``path`` and hold an exclusive ``flock`` on it;
    returns the descriptor, whose closing releases the lock (as does the process's end). ``wait`` False: None at once
    where another process holds it; True: wait for it.

    A holder may remove its lock file before it lets go (a run folder that got nothing, a pruned compiled step): a
    file opened just before that and locked just after is no longer the one at ``path``, where a newcomer would lock
    the new one beside it. So the lock is kept only on the file now at ``path`` (``same_file``, checked after
    locking), and that file opened again otherwise, up to ``attempts`` times in all.

    Raises LockOpenError, LockUnsupportedError or LockReplacedError (each a LockError), each descriptor closed."""
    if fcntl is None:
        raise LockUnsupportedError(path)
    for _ in range(attempts):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise LockOpenError(path, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            if same_file(fd, path):
                return fd
        except OSError as exc:
            os.close(fd)
            if not wait and exc.errno in _BUSY:
                return None
            raise LockUnsupportedError(path, exc) from exc
        except BaseException:  # a Ctrl-C or SIGTERM while waiting: no descriptor (nor lock) kept open behind it
            os.close(fd)
            raise
        os.close(fd)
    raise LockReplacedError(path)
