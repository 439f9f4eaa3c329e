"""A training run's folder and its lifecycle: the lock its writer holds, the check that a folder fits the request
(a new run, ``--resume`` or ``--overwrite``), and the replaced run set aside and then discarded (or cleared) so that
the folder never pairs one run's config with another run's model. The files themselves are ``mnad.checkpoint``'s.
A detect run's --out is held with the same lock (``locked_output``); its files are ``mnad.outputs``'.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from mnad.atomic import (
    CAN_LOCK,
    TEMP_SUFFIX,
    LockOpenError,
    LockReplacedError,
    LockUnsupportedError,
    fsync_dir,
    lock_current,
)
from mnad.checkpoint import CONFIG_FILE, EPOCH_GLOB, KNOWN_FORMATS, MODEL_FILE, TRAIN_STATE_FILE
from mnad.errors import CheckpointError, ConfigError, DataError, os_reason
from mnad.safetensors_header import read_header

LOCK_FILE = ".lock"  # held (flock) by the process writing a run folder
LOCK_ATTEMPTS = 10  # times a lock file replaced under us is opened again (each replacement is another run's end)


class RunFolderLock:
    """An exclusive, non-blocking lock on a run folder (``flock`` on ``<folder>/.lock``) while a process writes it.

    A second process that asks for it gets a DataError at once. The lock goes with the process: a killed writer
    leaves the (empty) ``.lock`` file but no lock. ``acquire`` may be called again (a no-op once held).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None or not CAN_LOCK:
            return
        # a holder that wrote nothing removes its lock file before it lets go (locked_output): lock_current keeps
        # the lock only on the file now at the path, or a second run would lock the new one
        try:
            fd = lock_current(self.folder / LOCK_FILE, wait=False, attempts=LOCK_ATTEMPTS)
        except LockOpenError as exc:
            raise DataError(f"{self.folder}: cannot write to the output folder ({exc.reason})") from exc
        except LockUnsupportedError as exc:
            raise DataError(f"{self.folder}: cannot lock the run folder ({exc.reason})") from exc
        except LockReplacedError as exc:
            raise DataError(f"{self.folder}: cannot lock the run folder (its lock file kept being replaced)") from exc
        if fd is None:
            raise DataError(f"{self.folder}: another mnad process is writing this run folder")
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> RunFolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def locked_output(out_dir: Path, tidy: Callable[[Path], None]) -> Iterator[None]:
    """Hold a command's output folder ``out_dir`` (detect's --out) for a run: it is created if need be and locked
    (``RunFolderLock``: flock on ``<out_dir>/.lock``, as a training run does; the lock goes with the process, so a killed
    run leaves none), so that a second run into it, detect's or training's, is refused at once (``DataError`` naming it)
    rather than mixing its rows with this one's or moving its files aside. Under the lock, ``tidy`` deletes what a run
    killed there left (detect: the temporary files of an atomic write, ``outputs.remove_detect_temps``). A run that
    wrote nothing (refused at its start: its source, an earlier run without --overwrite, another command's outputs)
    leaves the folder as it found it: the lock file it created is removed again, and so is a folder it made (the
    other half of the lock file's rule: ``RunFolderLock.acquire`` never holds a lock file so removed)."""
    made, folder = [], out_dir
    while not os.path.lexists(folder) and folder != folder.parent:
        made.append(folder)
        folder = folder.parent
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{out_dir}: cannot write the outputs ({os_reason(exc)})") from exc
    created = _create_lock_file(out_dir)
    lock = RunFolderLock(out_dir)
    lock.acquire()  # another run's folder: refused here, before anything is touched
    found: dict[str, tuple[int, int, int]] | None = None
    try:
        tidy(out_dir)
        found = _folder_entries(out_dir)
        yield
    finally:
        # only a lock file this run created (another's stays, its run may want it), and only while it is held: a run
        # that opened it before is refused, one after makes its own
        try:
            if created and found is not None and _folder_entries(out_dir) == found:
                (out_dir / LOCK_FILE).unlink(missing_ok=True)
                for folder in made:
                    folder.rmdir()
        except OSError:
            pass
        lock.release()


def _create_lock_file(folder: Path) -> bool:
    """Create ``folder``'s lock file if it has none; whether this call created it (O_EXCL: no other process can have
    made it in between). A failure here is left to ``RunFolderLock.acquire`` to report."""
    try:
        os.close(os.open(folder / LOCK_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))
    except OSError:  # there already, or not writable
        return False
    return True


def _folder_entries(folder: Path) -> dict[str, tuple[int, int, int]] | None:
    """What says a run wrote into ``folder``: each entry but the lock file, with its inode, size and time of change
    (the run's outputs are new files, or replace others by renaming); None when it cannot be read (then the lock file
    stays)."""
    entries = {}
    try:
        for path in folder.iterdir():
            if path.name != LOCK_FILE:
                info = path.lstat()
                entries[path.name] = (info.st_ino, info.st_size, info.st_mtime_ns)
    except OSError:
        return None
    return entries


def run_files(folder: str | Path) -> list[str]:
    """Names of the files in ``folder`` that show a training run was started or finished there."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [name for name in (CONFIG_FILE, MODEL_FILE, TRAIN_STATE_FILE) if (folder / name).exists()]
    return found + sorted(p.name for p in folder.glob(EPOCH_GLOB))


def output_names() -> tuple[str, ...]:
    """The names, besides ``run_files``', of what mnad writes into a run folder: the rest of a training run (its log,
    held-out footage record, TensorBoard folder, a replaced run kept aside) and what the commands that read a run
    write beside it when their --out is the run folder (evaluate's scores and metrics, its report, the figures,
    detect's outputs). Each is an earlier result that a new run must not silently delete or sit beside."""
    # here: the lock (detect's too) needs none of them, and mnad.figures imports the model code
    from mnad.figures import FIGURES_FILES
    from mnad.outputs import DETECT_FILES, EVALUATION_FILES, FIGURES_DIR, TRAIN_LOG
    from mnad.report.build import REPORT_FILES

    names = (TRAIN_LOG, HOLDOUT_FILE, TENSORBOARD_DIR, EARLIER_RUN_DIR, *EVALUATION_FILES, *REPORT_FILES, FIGURES_DIR,
             *FIGURES_FILES, *DETECT_FILES)
    return tuple(dict.fromkeys(names))


def models_beside(folder: str | Path) -> list[str]:
    """Names of the models mnad wrote into ``folder`` under names of the user's choice: a calibrated model
    (``mnad calibrate --out runs/cam/calibrated.safetensors``, as the docs do) and an export with its sidecar
    (``model.onnx``, ``model.onnx.json``). Each holds the weights of the run there: a new run beside them would leave
    them scoring with the old one's, silently: a new run there is refused, ``--overwrite`` too (``check_run_folder``;
    such a file is never moved or deleted). Known by their contents (an mnad checkpoint's format tag; a sidecar's
    ``mnad-onnx`` format), so a user's other files are never taken."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    own = {*run_files(folder), MODEL_FILE, TRAIN_STATE_FILE}
    found = []
    for path in sorted(folder.glob("*.safetensors")):
        if path.name in own or not path.is_file():
            continue
        try:
            fmt = read_header(path).get("__metadata__", {}).get("format")
        except (OSError, ValueError, AttributeError):
            continue  # not a safetensors file mnad could have written
        if fmt in KNOWN_FORMATS:
            found.append(path.name)
    for path in sorted(folder.glob("*.onnx")):
        side = folder / f"{path.name}.json"
        try:
            fmt = json.loads(side.read_text(encoding="utf-8")).get("format") if side.is_file() else None
        except (OSError, ValueError, AttributeError, RecursionError):  # RecursionError: JSON nested beyond Python's stack
            continue
        if isinstance(fmt, str) and fmt.startswith("mnad-onnx"):
            found += [path.name, side.name]
    return found


def folder_outputs(folder: str | Path) -> list[str]:
    """Names of everything mnad wrote in ``folder`` (``run_files`` first, then ``output_names`` and
    ``models_beside``), that is, whatever a new run there would delete or contradict."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return (run_files(folder) + [name for name in output_names() if os.path.lexists(folder / name)]
            + models_beside(folder))


def check_run_folder(folder: str | Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse a run folder that does not fit the request: ``resume`` needs a training checkpoint to continue from;
    a new run (neither flag) needs a folder that holds nothing mnad wrote (``folder_outputs``: a run, or an
    evaluation of one); ``overwrite`` replaces it (kept aside until the new run has its model, ``set_aside_run``)."""
    folder = Path(folder)
    if resume and overwrite:
        raise ConfigError(f"{folder}: --resume and --overwrite exclude each other (continue the run there, or replace it)")
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder}: is a file, expected a run folder")
    if resume:
        if not folder.is_dir():
            raise CheckpointError(f"{folder}: run folder not found, nothing to resume (train without --resume to start a run)")
        if not (folder / TRAIN_STATE_FILE).is_file():
            raise CheckpointError(f"{folder}: no training checkpoint ({TRAIN_STATE_FILE}) to resume from; "
                                  "pass --overwrite instead of --resume to start the run again")
        return
    found = folder_outputs(folder)
    if overwrite and (models := models_beside(folder)):
        # never set aside (and deleted with the replaced run): a calibrated model may be the one a camera is scored
        # with, and a copy of another model is the user's; which to keep is the user's choice, not a guess
        raise DataError(f"{folder}: holds models written beside the run ({', '.join(models)}), which --overwrite would "
                        "leave scoring with the replaced run's weights or delete with it; move them out of the folder "
                        "(or delete them), or choose another --out")
    if found and not overwrite:
        run = run_files(folder)
        others = found[len(run):]
        if not run:  # a training log, an evaluation's scores...: a new run would delete or contradict them
            raise DataError(f"{folder}: already holds the outputs of an earlier mnad run ({', '.join(others)}); "
                            "pass --overwrite to replace them, or choose another --out")
        beside = f" and what was written beside it ({', '.join(others)})" if others else ""
        # only a training checkpoint can be resumed: a run killed before its first epoch ended left none
        how = ("pass --resume to continue it or --overwrite to replace it" if TRAIN_STATE_FILE in run
               else f"it has no training checkpoint ({TRAIN_STATE_FILE}) to resume from: pass --overwrite to start it again")
        raise DataError(f"{folder}: already holds a training run ({', '.join(run)}){beside}; {how}, or choose another --out")


EARLIER_RUN_DIR = ".mnad-train-earlier"  # train --overwrite: the replaced run, kept until the new one has its model
HOLDOUT_FILE = "holdout.json"  # the footage a run held out of training, for calibration (mnad.train)
TENSORBOARD_DIR = "tensorboard"  # train.tensorboard = true


def set_aside_run(folder: str | Path, also: tuple[str, ...] = ()) -> Path | None:
    """Move a previous run's outputs (those ``clear_run`` deletes) into ``<folder>/.mnad-train-earlier/`` before a
    new run (``--overwrite``) writes its config, durably: the folder never pairs one run's config with another's
    model, and the earlier run is not destroyed before the new one has its result (``discard_earlier_run`` deletes
    it once the new model is written; a killed new run, resumed to its end, does the same). Where a run is already
    set aside (an overwrite killed before its end) and this one has no final model, that earlier run is the one
    kept and this unfinished one is deleted. Returns the folder holding the earlier run, if any."""
    folder = Path(folder)
    aside = folder / EARLIER_RUN_DIR
    names = [n for n in _run_names(folder, also) if os.path.lexists(folder / n)]
    # a move killed part way: its files are in the staging folder, the rest (the config last) still here
    staging = next((p for p in folder.glob(f"{EARLIER_RUN_DIR}.*{TEMP_SUFFIX}") if p.is_dir()), None)
    if staging is None:
        if not names:
            return aside if aside.is_dir() else None
        if aside.is_dir() and not (folder / MODEL_FILE).exists():
            clear_run(folder, also)  # unfinished: nothing of it is a result; the run set aside before it is
            return aside
        if os.path.lexists(aside):
            _remove(aside)  # this folder's run is finished, newer than the one set aside (killed before its discard)
        staging = folder / f"{EARLIER_RUN_DIR}.{os.urandom(4).hex()}{TEMP_SUFFIX}"  # renamed into place once complete
        staging.mkdir()
    elif os.path.lexists(aside):
        _remove(aside)
    for name in names:  # the config last: until then the folder still describes the old run
        os.replace(folder / name, staging / name)
    fsync_dir(staging)
    os.replace(staging, aside)
    fsync_dir(folder)
    return aside


def discard_earlier_run(folder: str | Path) -> bool:
    """Delete the run ``set_aside_run`` kept, now that the run replacing it has its final model. Returns whether
    there was one."""
    aside = Path(folder) / EARLIER_RUN_DIR
    if not os.path.lexists(aside):
        return False
    _remove(aside)
    fsync_dir(Path(folder))
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _run_names(folder: Path, also: tuple[str, ...]) -> list[str]:
    """The names of a run's outputs in ``folder`` and of what was written beside it (``output_names``, but the
    earlier run kept aside: that one is handled on its own), the config last."""
    others = [n for n in (*also, *output_names()) if n != EARLIER_RUN_DIR]
    return [MODEL_FILE, TRAIN_STATE_FILE, *sorted(p.name for p in folder.glob(EPOCH_GLOB)), *dict.fromkeys(others),
            CONFIG_FILE]


def clear_run(folder: str | Path, also: tuple[str, ...] = ()) -> list[Path]:
    """Delete a previous run's outputs (config, final model, training checkpoint, epoch models and the names in
    ``also``, files or folders) and make that durable, before a new run writes its config: a kill then never leaves
    one run's config beside another run's model. Returns what was removed."""
    folder = Path(folder)
    removed = []
    for name in _run_names(folder, also):  # the config last: until then the folder still describes the old run
        path = folder / name
        if not os.path.lexists(path):
            continue
        _remove(path)
        removed.append(path)
    if removed:
        fsync_dir(folder)
    return removed
