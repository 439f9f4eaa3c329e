"""What ``mnad evaluate --report`` spends besides the model: which frames get localisation thumbnails
(``thumbnails.pick_top_frames``), on a day of one camera (1 M rows) and on small inputs with ties: the same frames, in
the same order, as sorting every row; and the library versions its provenance records, read without importing torch
or scikit-learn. Seconds."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mnad import outputs
from mnad.report.provenance import library_versions
from mnad.report.thumbnails import pick_top_frames


def rows(name: str, frame: np.ndarray, score: np.ndarray) -> outputs.VideoRows:
    n = frame.size
    return outputs.VideoRows(name=name, frames=frame, score=score, labels=None, psnr=np.full(n, 30.0), updated=np.zeros(n, bool))


def every_row_sorted(videos: list[outputs.VideoRows], k: int, *, gap: int = 5) -> list[tuple[int, int]]:
    """The rule as it was first written (a Python list of every row, sorted): what pick_top_frames must pick."""
    candidates = [(-float(v.score[i]), vi, int(v.frames[i]), i) for vi, v in enumerate(videos) for i in range(len(v.frames))]
    candidates.sort()
    chosen: list[tuple[int, int, int]] = []
    for _, vi, frame, i in candidates:
        if len(chosen) >= k:
            break
        if any(cv == vi and abs(cf - frame) < gap for cv, cf, _ in chosen):
            continue
        chosen.append((vi, frame, i))
    return [(vi, i) for vi, _, i in chosen]


@pytest.mark.parametrize("seed", range(200))
def test_the_same_frames_as_sorting_every_row(seed: int) -> None:
    """Ties (scores from a few values, -0.0 and 0.0 among them), several videos (one may be empty), frames not starting
    at 0, with holes or repeated, float32 or float64 scores; k from 0 to more than can be chosen, so that the sorted
    head is widened (a repeated frame passes over every row after its first pick)."""
    rng = np.random.default_rng(seed)
    videos = []
    for j in range(int(rng.integers(1, 5))):
        n = int(rng.integers(0, 400))
        kind = rng.integers(0, 3)
        if kind == 0:
            frame = np.arange(n) + int(rng.integers(0, 10))
        elif kind == 1:
            frame = np.sort(rng.choice(4 * n + 1, n, replace=False))
        else:
            frame = rng.integers(0, 30, n)  # repeated frame numbers
        values = np.array([-0.0, 0.0, 0.25, 0.5, 1.0, np.inf])[: int(rng.integers(2, 7))]
        score = values[rng.integers(0, values.size, n)] if rng.random() < 0.7 else rng.uniform(0, 1, n)
        videos.append(rows(f"v{j}", frame, score.astype(np.float32) if rng.random() < 0.3 else score))
    for k in (0, 1, 8, 40):
        for gap in (1, 5, 16):
            assert pick_top_frames(videos, k, gap=gap) == every_row_sorted(videos, k, gap=gap)


def test_no_videos_or_no_rows() -> None:
    assert pick_top_frames([], 8) == []
    assert pick_top_frames([rows("empty", np.arange(0), np.zeros(0))], 8) == []


def test_a_million_rows_pick_the_planted_peaks() -> None:
    """A day of one camera (1 M rows; the speed is a benchmark's business, not a test's): eight planted peaks are
    picked in score order; the frame next to the highest, scored just below it, is passed over."""
    rng = np.random.default_rng(0)
    n = 1_000_000
    score = rng.uniform(0.0, 0.5, n)
    peaks = [912_345, 17, 500_000, 250_001, 999_999, 600_000, 70_000, 333_333]
    score[peaks] = np.linspace(0.99, 0.9, len(peaks))
    score[peaks[0] + 1] = 0.985  # one event's neighbouring frame: no thumbnail of its own
    day = [rows("camera", np.arange(n) + 4, score)]
    assert pick_top_frames(day, 8, gap=5) == [(0, i) for i in peaks]


def test_the_versions_are_read_without_importing_torch_or_sklearn() -> None:
    """(was: both imported to read ``__version__``: 7-9 s alone; in `mnad evaluate --report`, whose model has imported
    torch, scikit-learn's ~2 s when the evaluation had no labels) Their installed metadata is read instead."""
    code = ("import sys; from mnad.report.provenance import library_versions; library_versions(); "
            "print(sorted(m for m in ('torch', 'sklearn', 'matplotlib') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_the_versions_are_what_the_packages_say() -> None:
    """The metadata's strings are the ones the provenance recorded before (each package's ``__version__``)."""
    import cv2
    import matplotlib
    import sklearn
    import torch

    versions = library_versions()
    assert versions["torch"] == torch.__version__ and versions["scikit-learn"] == sklearn.__version__
    assert versions["matplotlib"] == matplotlib.__version__ and versions["opencv"] == cv2.__version__
    assert versions["numpy"] == np.__version__ and versions["mnad"] != "unknown"
    assert set(versions) == {"mnad", "python", "torch", "numpy", "opencv", "scikit-learn", "matplotlib", "platform"}
