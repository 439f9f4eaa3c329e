"""eval.compile on the CPU: the scoring step compiled ahead of time (AOTInductor) in a child process, cached on disk.

Why not ``torch.compile`` in the scoring process: importing dynamo and inductor and compiling there left the process
at 0.70 GiB peak while it scored 256x256 frames, against a goal of 0.6 (docs/performance.md, "Peak memory of each
scoring path"). The same graph, compiled with the same inductor settings (weights frozen, so pre-packed for oneDNN with
each ReLU fused into its convolution), runs from a package that loads without the compiler. So the first call with
given input shapes saves the model with its config (``checkpoint.save_model``) to a temporary folder and runs ``python -m mnad.aot`` on
it: the child rebuilds the ``ScoringStep``, exports it (``torch.export``) and compiles it into a package; the scoring
process only loads the package. Later runs with the same model, config, shapes, threads, torch, CPU and mnad code
(its source files' digest: a package traced from an older scoring step is never reused) load it from the cache
without compiling.

A package is native code, as torch's own compile cache is. mnad builds each one itself, keeps it in the user's cache
folder (``MNAD_CACHE_DIR``, else ``$XDG_CACHE_HOME/mnad`` or ``~/.cache/mnad``) beside a record of its SHA-256, and
checks the SHA-256 before loading it; a package that does not match is built again. It is never a checkpoint format:
a package from someone else would run their code. So the cache folder (and ``MNAD_CACHE_DIR`` itself, or
``.../mnad``) must be the user's own and writable by no one else (mnad makes it with mode 0o700), and a package or record
another user owns or could write is never loaded (``check_private``): in a shared cache, another local user could
otherwise plant a package beside a matching record. Not checked where there are no user ids (``os.getuid``).

Each new model, calibration, frame size or mnad version builds another package (tens of MB) and the old ones are never
asked for again, so each build prunes the cache (``prune``): packages unused for KEEP_DAYS days, and all but the
KEEP_PACKAGES most recently used, are deleted, each under its lock, skipped while another process holds it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mnad.atomic import LockError, LockOpenError, LockReplacedError, LockUnsupportedError, atomic_write, fsync_dir, lock_current
from mnad.checkpoint import load_model, save_model, weights_digest
from mnad.config import Config
from mnad.errors import ConfigError
from mnad.model import MNAD

if TYPE_CHECKING:
    from mnad.stream import StepResult

log = logging.getLogger("mnad")

PACKAGE_FORMAT = "mnad-aoti-1"
KEEP_PACKAGES = 16  # most recently used packages kept by ``prune``
KEEP_DAYS = 30  # a package unused this long is deleted by ``prune``


def cache_dir() -> Path:
    """Where built packages are kept (``MNAD_CACHE_DIR``; else the user's cache folder)."""
    if os.environ.get("MNAD_CACHE_DIR"):
        return Path(os.environ["MNAD_CACHE_DIR"]) / "aoti"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mnad" / "aoti"


def check_private(path: Path, what: str, fix: str) -> None:
    """Refuse (``ConfigError``) a cache folder or file that is not the current user's or that group or others may
    write: native code is loaded from it. ``what``: what it is, in words; ``fix``: what to do. No check without user
    ids (Windows)."""
    if not hasattr(os, "getuid"):
        return
    info = os.stat(path)  # a link's target: what would be read
    if info.st_uid != os.getuid():
        why = f"it is owned by user id {info.st_uid}, not by you ({os.getuid()})"
    elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        why = f"group or other users may write it (mode {stat.filemode(info.st_mode)})"
    else:
        return
    raise ConfigError(f"{path}: {what} that another local user could change, so the compiled scoring steps (native "
                      f"code) in it are not used: {why}; {fix}")


def private_cache() -> Path:
    """``cache_dir()``, made (mode 0o700) where absent and checked, with the folder above it (``MNAD_CACHE_DIR``, or
    ``.../mnad``), to be the user's own and writable by no one else (``check_private``)."""
    folder = cache_dir()
    try:
        folder.parent.parent.mkdir(parents=True, exist_ok=True)
        for path in (folder.parent, folder):
            path.mkdir(mode=0o700, exist_ok=True)
            check_private(path, "a compiled-step cache folder",
                          f"make it your own and private (chmod 700 {path}), or set MNAD_CACHE_DIR to a folder only you "
                          "may write, or score without --compile")
        probe = tempfile.TemporaryFile(dir=folder)
    except OSError as exc:
        raise ConfigError(f"{folder}: cannot keep compiled scoring steps there ({exc.strerror}); set MNAD_CACHE_DIR "
                          "to a writable folder, or score without --compile") from exc
    probe.close()
    return folder


def _cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor()
    return next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("flags")), "")


@functools.cache
def code_digest() -> str:
    """SHA-256 of mnad's own source files: a package compiled from other code (another mnad version, a local edit of
    the scoring step) is built again, never loaded in place of this code's step."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


class AotStep:
    """The scoring step (``stream.ScoringStep``) run from an AOTInductor package; one package per set of input shapes,
    built at the first call with those shapes. Called as the step is: (inputs, target, items) -> ``StepResult``."""

    def __init__(self, model: MNAD, config: Config) -> None:
        self.model, self.config = model, config
        self.runners: dict[tuple, torch._C._aoti.AOTIModelPackageLoader] = {}
        self.builds = 0  # packages built by this step (0: every one came from the cache)
        self._weights = weights_digest(model)  # taken once: the package cache's key and what a saved stream state is of

    @property
    def digest(self) -> str:
        """The SHA-256 of the weights this step scores with (``checkpoint.weights_digest`` of its model when it was
        built), as ``stream.ScoringStep.digest``; read-only."""
        return self._weights

    def key(self, shapes: tuple) -> str:
        what = {"format": PACKAGE_FORMAT, "code": code_digest(), "weights": self._weights, "config": self.config.to_dict(), "shapes": shapes,
                "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
                "cpu": hashlib.sha256(_cpu_flags().encode()).hexdigest()}
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]

    def __call__(self, inputs: torch.Tensor, target: torch.Tensor, items: torch.Tensor) -> StepResult:
        from mnad.stream import StepResult  # here: mnad.stream imports this module

        shapes = tuple(tuple(t.shape) for t in (inputs, target, items))
        if shapes not in self.runners:
            self.runners[shapes] = self._runner(shapes)
        return StepResult(*self.runners[shapes].run([inputs.contiguous(), target.contiguous(), items.contiguous()]))

    def _runner(self, shapes: tuple) -> torch._C._aoti.AOTIModelPackageLoader:
        folder = private_cache()
        key = self.key(shapes)
        package, record = folder / f"{key}.pt2", folder / f"{key}.json"
        # One process at a time checks, builds and loads a key's package: a second one started meanwhile waits and
        # loads the first one's package instead of compiling it again, and no package is replaced between its check
        # and its load (or paired with the record of another build).
        with _locked(folder / f".{key}.lock"):
            if not _matches(package, record):
                self._build(shapes, package, record)
                self.builds += 1
                prune(folder, keep=key)
            with contextlib.suppress(OSError):
                os.utime(record)  # its last use: what ``prune`` keeps the recent ones by
            # torch's own loader, without torch._inductor.package's Python wrapper: that imports part of the compiler
            # (72 MiB) and reads the weights through Python (a second transient copy)
            try:
                return torch._C._aoti.AOTIModelPackageLoader(str(package), "model", False, 1, -1)
            except RuntimeError as exc:
                raise ConfigError(f"{package}: the compiled scoring step does not load ({exc}); delete it to compile it again") from exc

    def _build(self, shapes: tuple, package: Path, record: Path) -> None:
        log.info("compiling the scoring step for inputs %s (once for this model and frame size; minutes on 2 cores)",
                 "x".join(map(str, shapes[0])))
        if weights_digest(self.model) != self._weights:  # the package is kept under the digest taken when built
            raise ConfigError("eval.compile: the model's weights changed after its scorer was built (the compiled step "
                              "would be filed under the weights it was built with); build the scorer again")
        with tempfile.TemporaryDirectory(prefix="mnad-aoti-", dir=package.parent) as work:
            save_model(Path(work, "model.safetensors"), self.model, self.config)  # with its config, read back hash-checked
            job = {"shapes": shapes, "threads": torch.get_num_threads(), "package": f"{work}/step.pt2"}
            Path(work, "job.json").write_text(json.dumps(job), encoding="utf-8")
            done = subprocess.run([sys.executable, "-m", "mnad.aot", work], capture_output=True, text=True)
            if done.returncode != 0:
                tail = " | ".join(done.stderr.strip().splitlines()[-3:])
                raise ConfigError(f"eval.compile: compiling the scoring step failed (exit {done.returncode}): {tail}")
            built = Path(work, "step.pt2")
            with built.open("rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
                os.fsync(f.fileno())
            os.chmod(built, 0o600)  # the user's alone (check_private), however loose the umask
            os.replace(built, package)  # the package first: a kill before its record leaves one that is built again
            fsync_dir(package.parent)  # and durably first: a power cut must not keep the record of a package it lost
        atomic_write(record, json.dumps({"format": PACKAGE_FORMAT, "sha256": digest, "torch": torch.__version__}).encode())
        os.chmod(record, 0o600)  # an existing record keeps its mode through atomic_write: one found loose is made private


def prune(folder: Path, *, keep: str = "", now: float | None = None) -> list[str]:
    """Delete the packages of ``folder`` last used (their record's mtime) more than KEEP_DAYS days ago, and all but the
    KEEP_PACKAGES most recent, never ``keep`` (a key) nor one whose lock another process holds (it is being built or
    loaded); also the work folders of builds killed more than a day ago. Returns the keys deleted."""
    now = time.time() if now is None else now
    used: list[tuple[float, str]] = []
    for record in folder.glob("*.json"):
        with contextlib.suppress(OSError):
            used.append((record.stat().st_mtime, record.stem))
    used.sort(reverse=True)
    stale = [key for rank, (when, key) in enumerate(used)
             if key != keep and (rank >= KEEP_PACKAGES or now - when > KEEP_DAYS * 86400)]
    deleted = []
    for key in stale:
        lock = folder / f".{key}.lock"
        try:  # one attempt: a lock file removed by another prune since it was opened may be a builder's new one
            fd = lock_current(lock, wait=False, attempts=1)
        except LockError:  # cannot open, no locks on this file system, or replaced: leave it
            continue
        if fd is None:  # in use
            continue
        try:
            # a kill part way leaves a package or a record alone, which is built again if ever asked for
            for path in (folder / f"{key}.pt2", folder / f"{key}.json", lock):
                path.unlink(missing_ok=True)
            deleted.append(key)
        except OSError as exc:
            log.info("%s: cannot delete an unused compiled step (%s)", folder / f"{key}.pt2", exc.strerror or exc)
        finally:
            os.close(fd)
    for work in folder.glob("mnad-aoti-*"):
        with contextlib.suppress(OSError):
            if now - work.stat().st_mtime > 86400:
                shutil.rmtree(work)
    if deleted:
        log.info("%s: deleted %d compiled scoring steps unused for %d days or beyond the %d most recent", folder,
                 len(deleted), KEEP_DAYS, KEEP_PACKAGES)
    return deleted


LOCK_ATTEMPTS = 100  # times a lock file removed under a waiter is opened again (each removal is a prune of its key)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock (``flock``, released when the process ends or dies) on ``path``, waiting for it.

    ``prune`` removes a stale key's lock file while it holds it: a process that opened that file before and was
    waiting would then hold a lock on a file no longer in the folder while a newcomer locks the new one (both building
    the key). So the lock is held only on the file now at ``path``, checked after locking, opened again otherwise
    (the rule of the run folder's lock, reliability row 276)."""
    fd = None
    try:
        fd = lock_current(path, wait=True, attempts=LOCK_ATTEMPTS)
    except LockOpenError as exc:
        raise ConfigError(f"{path.parent}: cannot keep compiled scoring steps there ({exc.reason}); set "
                          "MNAD_CACHE_DIR to a writable folder, or score without --compile") from exc
    except LockUnsupportedError as exc:  # a file system without locks (some NFS mounts): go on unlocked, as one process would
        log.info("%s: cannot lock (%s): compiled steps built by two processes at once may be built twice", path,
                 exc.reason)
    except LockReplacedError as exc:
        raise ConfigError(f"{path}: cannot lock the compiled step's lock file (it kept being removed)") from exc
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def _matches(package: Path, record: Path) -> bool:
    """Whether a cached package is there and is the one its record describes (else it is built again). A package or
    record another user owns or that group or others may write (``check_private``) is never read: built again, with
    a warning (the build replaces both with files of this user's, mode 0o600)."""
    for path in (record, package):
        try:
            check_private(path, "a compiled-step cache file", "compiling it again")
        except OSError:  # not there (or not readable): built
            return False
        except ConfigError as exc:
            log.warning("%s", exc)
            return False
    try:
        kept = json.loads(record.read_text(encoding="utf-8"))
        with package.open("rb") as f:  # in chunks: one buffer of the package's size would stay in the heap's high-water mark
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested beyond Python's stack
        return False
    ok = isinstance(kept, dict) and kept.get("format") == PACKAGE_FORMAT and kept.get("sha256") == digest
    if not ok:
        log.warning("%s: does not match its record %s (altered or damaged): compiling it again", package, record.name)
    return ok


def build(work: Path) -> None:
    """In the child: rebuild the step from ``work``'s model and config, export it and compile it into a package."""
    from torch._inductor import config as inductor_config

    from mnad.stream import ScoringStep

    job = json.loads((work / "job.json").read_text(encoding="utf-8"))
    torch.set_num_threads(job["threads"])
    model, config = load_model(work / "model.safetensors")
    step = _Flat(ScoringStep(model.eval(), config).eval())
    examples = tuple(torch.zeros(shape) for shape in job["shapes"])
    with torch.no_grad():
        program = torch.export.export(step, examples)
        # weights in a blob beside the library rather than inside it: loaded once into tensors, not also mapped with it
        with inductor_config.patch({"freezing": True, "aot_inductor.package_constants_in_so": False,
                                    "aot_inductor.package_constants_on_disk_format": "binary_blob"}):
            torch._inductor.aoti_compile_and_package(program, package_path=job["package"])


class _Flat(torch.nn.Module):
    """The step with its ``StepResult`` returned as a plain tuple (what an exported program returns)."""

    def __init__(self, step: torch.nn.Module) -> None:
        super().__init__()
        self.step = step

    def forward(self, inputs: torch.Tensor, target: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.step(inputs, target, items))


if __name__ == "__main__":
    build(Path(sys.argv[1]))
