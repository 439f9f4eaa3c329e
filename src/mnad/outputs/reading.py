"""Reading mnad's files checked: text that must be UTF-8, JSON whose content is checked by a ``problem`` function
(an error naming the file, never a traceback), and the small checks those functions are made of."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnad.errors import DataError


def read_text(path: Path) -> str:
    """A file's text, which must be UTF-8 (mnad writes all its files so)."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from exc


def read_json(path: Path, kind: str, problem: Callable[[Any], str | None]) -> Any:
    """A JSON file's content; ``problem`` says what is wrong with it (None: nothing), for the error that names it."""
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not an mnad {kind} file (not valid JSON: {exc})") from exc
    except RecursionError as exc:  # lists or objects nested deeper than Python's stack (was: a traceback)
        raise DataError(f"{path}: not an mnad {kind} file (its JSON is nested too deeply)") from exc
    what = problem(data)
    if what:
        raise DataError(f"{path}: not an mnad {kind} file ({what})")
    return data


def read_json_if_present(path: Path, kind: str, problem: Callable[[Any], str | None], absent: Any) -> Any:
    """An optional JSON file's content: ``absent`` when there is no such file; one that is there is read as
    ``read_json`` reads it, so a damaged one (not UTF-8, not JSON, not of its shape, not a file) is a DataError naming
    it, never taken for a missing one."""
    if not os.path.lexists(path):
        return absent
    return read_json(path, kind, problem)


def is_number(value: Any, *, null: bool = True) -> bool:
    """A finite JSON number (or null, where ``null``)."""
    if value is None:
        return null
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def wrong_kinds(data: dict, where: str, kinds: dict[str, type | tuple[type, ...]]) -> str | None:
    """The first key of ``data`` whose value is present, not null and not of its kind, said; or None."""
    for key, kind in kinds.items():
        value = data.get(key)
        if value is not None and not isinstance(value, kind):
            return f"{where}{key} must be {kind_name(kind)}, got {value!r}"[:200]
    return None


JSON_KIND_NAMES = {dict: "an object", list: "a list", str: "a string", bool: "true or false", int: "an integer", float: "a number"}


def kind_name(kind: type | tuple[type, ...]) -> str:
    """A kind (or kinds) of value as a message says it: ``dict`` 'an object', ``(int, float)`` 'a number'."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names: list[str] = []
    for k in kinds:
        if k is int and float in kinds:  # an int is a number too
            continue
        name = JSON_KIND_NAMES.get(k, f"a {k.__name__}")
        if name not in names:
            names.append(name)
    return " or ".join(names)


def config_problem(config: Any, where: str) -> str | None:
    """What is wrong with a stored config dict (``Config.to_dict()``) as its readers use it, or None."""
    if not isinstance(config, dict):
        return f"{where} must be an object, got {config!r}"[:200]
    return wrong_kinds(config, f"{where}.", {"train": dict})
