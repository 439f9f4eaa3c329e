"""outputs.py's small helpers: the messages that say what kind a value must be, and the one reader of an optional
JSON file (absent: nothing; there but damaged: one DataError naming it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnad import outputs
from mnad.errors import DataError
from mnad.outputs import kind_name, read_json_if_present, wrong_kinds
from mnad.report.provenance import PROVENANCE_FILE, read_provenance
from mnad.report.thumbnails import THUMBS_DIR, THUMBS_INDEX, read_thumbnail_index


@pytest.mark.parametrize("kind, said", [(dict, "an object"), (str, "a string"), (list, "a list"), (int, "an integer"),
                                        ((int, float), "a number"), ((str, list), "a string or a list"), (bool, "true or false")])
def test_a_wrong_kind_is_named_as_it_is(kind: type | tuple[type, ...], said: str) -> None:
    assert kind_name(kind) == said
    assert wrong_kinds({"key": object()}, "where.", {"key": kind}).startswith(f"where.key must be {said}, got ")


def test_an_optional_json_file(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    assert read_json_if_present(path, "x", lambda data: None, {}) == {}  # absent: nothing
    path.write_text('{"a": 1}')
    assert read_json_if_present(path, "x", lambda data: None, {}) == {"a": 1}
    path.write_text("{damaged")
    with pytest.raises(DataError, match="x.json: not an mnad x file \\(not valid JSON"):
        read_json_if_present(path, "x", lambda data: None, {})


@pytest.mark.parametrize("where, read", [
    (PROVENANCE_FILE, read_provenance),
    (f"{THUMBS_DIR}/{THUMBS_INDEX}", read_thumbnail_index),
])
def test_the_reports_optional_files_are_refused_when_damaged_never_taken_for_absent(tmp_path: Path, where: str, read: object) -> None:
    assert read(tmp_path) in ({}, [])
    (tmp_path / where).mkdir(parents=True)  # not a file: was read as missing
    with pytest.raises(DataError, match=f"{where.split('/')[-1]}: cannot read it"):
        read(tmp_path)


def test_the_readers_that_swallowed_damaged_files_are_gone() -> None:
    assert not hasattr(outputs, "read_figures_index") and not hasattr(outputs, "read_json_dict")
