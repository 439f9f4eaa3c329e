"""Where video files' decoded frames are kept: a temporary file on disk (``DecodedFrames``) in ``decode_dir``, and
the room it has there (``usable_space``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

from mnad.errors import DataError, printable

try:
    import resource
except ImportError:  # not POSIX (Windows)
    resource = None  # type: ignore[assignment]


def decode_dir() -> Path:
    """Where video files' decoded frames are written: $TMPDIR if set, else /var/tmp (on disk by convention, where /tmp
    is often a tmpfs held in memory), else the system's temporary folder."""
    if os.environ.get("TMPDIR"):
        return Path(os.environ["TMPDIR"])
    if os.path.isdir("/var/tmp") and os.access("/var/tmp", os.W_OK | os.X_OK):
        return Path("/var/tmp")
    return Path(tempfile.gettempdir())


def in_memory_filesystem(path: Path) -> bool:
    """Whether ``path`` is on a tmpfs or ramfs (Linux's /proc/self/mounts), whose files take memory, not disk."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as handle:
            mounts = [line.split()[1:3] for line in handle if len(line.split()) > 2]
    except OSError:
        return False
    where = os.path.realpath(path)
    inside = [(len(point), kind) for point, kind in mounts
              if where == point or where.startswith(point.rstrip("/") + "/")]
    return bool(inside) and max(inside)[1] in ("tmpfs", "ramfs")


def available_memory() -> int:
    """Bytes of memory the system can give now without swapping (Linux's MemAvailable; else its free pages)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):  # no such sysconf (macOS, Windows): no bound known
        return 1 << 62


def usable_space(folder: Path, what: str | Path) -> tuple[int, str]:
    """(bytes decoded frames may take in ``folder``, the words saying so): its free space, or in a tmpfs, whose files
    take memory, at most half the memory available. A folder that cannot be looked at is a ``DataError`` about
    ``what`` (a video, a dataset's folder)."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        raise DataError(f"{printable(what)}: cannot write its decoded frames to {printable(folder)} "
                        f"({exc.strerror or exc}); set TMPDIR to a writable folder") from exc
    if in_memory_filesystem(folder):  # what is free there may not be in memory
        free = min(free, available_memory() // 2)
        return free, f"{printable(folder)} is held in memory (tmpfs), {free / 1e9:.1f} GB of which can be used"
    return free, f"{printable(folder)} has {free / 1e9:.1f} GB free"


def raise_open_file_limit() -> None:
    """The soft limit on open files raised to the hard one, once: each decoded video file holds one open file, and a
    folder of more than ~1000 short clips would pass the usual soft limit (1024) well before the hard one."""
    global _files_raised
    if _files_raised or resource is None:
        return
    _files_raised = True
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError):  # not allowed here: the limit stays, and reaching it is said as such
        pass


_files_raised = False


class DecodedFrames:
    """The decoded frames of one video at one size: uint8 (size, size, channels) each, in order, in a temporary file
    without a name (removed by the system when the process ends, however it ends), read back at random."""

    def __init__(self, folder: Path, size: int, channels: int) -> None:
        self.shape = (size, size, channels)
        self.frame_bytes = size * size * channels
        self.count = 0
        raise_open_file_limit()
        self.file = tempfile.TemporaryFile(dir=folder, prefix="mnad-frames-")
        self._lock = threading.Lock()

    def append(self, frame: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(frame).data)
        self.count += 1

    def finish(self) -> None:
        self.file.flush()  # written: later reads see every frame

    def read(self, index: int, count: int = 1) -> np.ndarray:
        """Frames ``index`` to ``index + count`` as (count, size, size, channels): one read, as they lie in order."""
        if not (0 <= index and count >= 1 and index + count <= self.count):
            raise IndexError(index if index < 0 or index >= self.count else index + count - 1)
        out = np.empty((count, *self.shape), np.uint8)  # a fresh array: callers may change it, the stored frame stays
        offset = index * self.frame_bytes
        if hasattr(os, "preadv"):  # no shared file position: safe across threads and forked DataLoader workers
            got = os.preadv(self.file.fileno(), [out], offset)
        else:
            with self._lock:
                self.file.seek(offset)
                got = self.file.readinto(out)
        if got != out.nbytes:
            raise OSError(f"read {got} of {count} frames' {out.nbytes} bytes")
        return out

    def close(self) -> None:
        self.file.close()
