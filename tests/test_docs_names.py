"""Every ``mnad.<module>.<name>`` the README and docs cite exists: a module split or a rename that leaves a doc (or the
README's Python example) naming the old place fails here, not in a user's hands."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]
DOTTED = re.compile(r"(?<![\w/.-])mnad(?:\.[A-Za-z_]\w*)+")


def resolves(dotted: str) -> bool:
    """Whether ``dotted`` is a module of mnad, or a module followed by attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def cited() -> list[tuple[str, str]]:
    found = set()
    for doc in DOCS:
        for match in DOTTED.finditer(doc.read_text(encoding="utf-8")):
            name = match.group(0).rstrip(".")
            if not name.endswith((".py", ".md", ".json", ".toml", ".safetensors")):
                found.add((doc.name, name))
    return sorted(found)


@pytest.mark.parametrize(("doc", "name"), cited())
def test_each_cited_name_exists(doc: str, name: str) -> None:
    assert resolves(name), f"{doc} cites {name}, which does not exist"


def test_the_docs_cite_names() -> None:
    assert len(cited()) > 20
