"""The JSON header of a safetensors file, read without its tensors (and without torch: the report reads it)."""

from __future__ import annotations

import json
from pathlib import Path


def read_header(path: str | Path) -> dict:
    """The header of the safetensors file ``path``: tensor names, shapes and offsets, and ``__metadata__`` (mnad's
    config and digests). OSError or ValueError (JSON and UTF-8 errors included) where it is not one."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as handle:  # an 8-byte little-endian length, then that many bytes of JSON
        length = int.from_bytes(handle.read(8), "little")
        if not 2 <= length <= size - 8:
            raise ValueError(f"header length {length} does not fit a file of {size} bytes")
        try:
            header = json.loads(handle.read(length))
        except RecursionError as exc:  # a header of nested lists or objects deeper than Python's stack
            raise ValueError("the header is nested too deeply") from exc
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    return header
