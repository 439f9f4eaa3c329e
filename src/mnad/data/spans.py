"""Footage spans: (absolute path, first frame, end frame) of what a video covers, as training records it and
calibration compares it (``footage_span``), written and read back as 'path[first:end]'.
"""

from __future__ import annotations

import re
from pathlib import Path

from mnad.data.videos import FrameRange, Video


def footage_span(video: Video) -> tuple[str, int, int]:
    """(absolute path, first frame, end frame) of the footage a video covers: what training records and calibration
    compares, wherever each is run from."""
    if isinstance(video, FrameRange):
        return str(Path(video.path).resolve()), video.start, video.stop
    return str(Path(video.path).resolve()), 0, len(video)


def spans_overlap(a: tuple[str, int, int], b: tuple[str, int, int]) -> bool:
    return a[0] == b[0] and a[1] < b[2] and b[1] < a[2]


def span_intersection(a: tuple[str, int, int], b: tuple[str, int, int]) -> tuple[str, int, int] | None:
    """The footage two spans both cover (None: none): what calibration footage shares with training's."""
    return (a[0], max(a[1], b[1]), min(a[2], b[2])) if spans_overlap(a, b) else None


def shared_footage(spans: list[tuple[str, int, int]], others: list[tuple[str, int, int]]) -> list[str]:
    """The footage covered by both ``spans`` and ``others`` (``span_text`` of each intersection, sorted; empty: none):
    what calibration footage shares with the model's training footage."""
    return sorted({span_text(both) for a in spans for b in others if (both := span_intersection(a, b))})


def span_text(span: tuple[str, int, int]) -> str:
    """A footage span as a calibration records it and messages show it: 'path[first:end]'."""
    return f"{span[0]}[{span[1]}:{span[2]}]"


def parse_span(text: str) -> tuple[str, int, int] | None:
    """The span ``span_text`` wrote (None: not one)."""
    match = re.fullmatch(r"(.*)\[(\d+):(\d+)\]", text, flags=re.DOTALL)
    return (match[1], int(match[2]), int(match[3])) if match else None
