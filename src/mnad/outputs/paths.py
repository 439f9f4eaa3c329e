"""Where a command writes: an output path given by the user, checked before the work that precedes the write, and
the one rule for an earlier result already there (``check_replace``)."""

from __future__ import annotations

import os
from pathlib import Path

from mnad.errors import ConfigError, DataError, MNADError


def output_path(path: str | Path, option: str) -> Path:
    """``path`` where a command writes (``option``: its name for messages, e.g. '--out'); an empty one is refused,
    since Path('') is the current folder, which nobody means."""
    if not isinstance(path, str | os.PathLike):
        raise ConfigError(f"{option} must be a path, got {type(path).__name__}")
    if str(path) == "":
        raise ConfigError(f"{option} is empty: name a folder or file")
    return Path(path)


def writable_ancestor(path: Path) -> str | None:
    """Why nothing could be written at ``path`` (missing folders are created when it is): its nearest existing
    ancestor is a file or not writable; None when it can be."""
    folder = path.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder} is not writable"
    return None


def check_output_folder(path: str | Path, option: str = "--out") -> Path:
    """Refuse at once, before the work that precedes the write, an output folder that could not be written then (a
    file in its place, no writable folder to hold it); nothing is created here. Returns it as a ``Path``."""
    path = output_path(path, option)
    if (why := writable_ancestor(path)) is not None:
        raise DataError(f"{path}: cannot write there ({why})")
    return path


def check_output_file(path: str | Path, option: str = "--out", *, error: type[MNADError] = DataError) -> Path:
    """Refuse at once, before the minutes of scoring or quantising that precede the write, an output file that could
    not be written then: a folder in its place, or no writable folder to hold it. Returns it as a ``Path``."""
    path = output_path(path, option)
    if path.is_dir():
        raise error(f"{path}: cannot write a file there (it is a folder; {option} names the file to write)")
    if (why := writable_ancestor(path.parent)) is not None:
        raise error(f"{path}: cannot write there ({why})")
    return path


def check_replace(paths: list[Path], *, overwrite: bool, option: str = "--out") -> None:
    """The one rule for a command's outputs where an earlier result already is: the files (or folders) this command
    would write at ``paths`` (under ``option``), where any exists, are refused unless ``overwrite``; called by the
    API before any work, not when it writes. With ``overwrite`` the earlier files stay whole until the new ones
    replace them: every write is atomic (``atomic.atomic_write_many``), a set of files all or none. (A training
    run's folder and a detect folder, written over hours, refuse an earlier run the same way, in
    ``run_folder.check_run_folder`` and ``detect.detect``, and keep it aside until the new run has its own result:
    ``run_folder.set_aside_run``, ``DetectFolder``.)"""
    earlier = [p for p in paths if os.path.lexists(p)]
    if earlier and not overwrite:
        shown = ", ".join(str(p) for p in earlier)
        raise DataError(f"{shown}: {'holds' if len(earlier) == 1 else 'hold'} the output of an earlier run; choose another "
                        f"{option} or pass --overwrite to replace {'it' if len(earlier) == 1 else 'them'}")


def check_replace_in(folder: str | Path, names: tuple[str, ...], *, overwrite: bool, option: str = "--out") -> Path:
    """``check_replace`` for a command that writes the files ``names`` into the folder ``folder`` (``option``): a
    folder that cannot be written is refused first (``check_output_folder``); the folder's other files are not the
    command's and are left alone. Returns the folder as a ``Path``."""
    if output_path(folder, option).exists() and not Path(folder).is_dir():
        raise DataError(f"{folder}: {option} must be a folder, and this is a file")
    folder = check_output_folder(folder, option)
    check_replace([folder / name for name in names], overwrite=overwrite, option=option)
    return folder

