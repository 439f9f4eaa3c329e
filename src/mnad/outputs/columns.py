"""The per-frame columns of the two scores.csv files: an evaluation's (``SCORES_HEADER``, one row per scored frame of
each video) and a ``mnad detect`` run's (``DETECT_SCORES_HEADER``, one row per frame with its time, smoothed score
and alert). A frame's terms are written by one formatter in both (``frame_columns``), so the PSNRs, distances, E_t and
memory flag of a frame scored by both commands read the same in each file. Their ``score`` columns do not hold the
same thing:

- an evaluation's ``score`` is the S_t its AUCs are computed from: after the trailing mean over ``eval.smoothing``
  frames (the published protocol's default, 1, is no mean: S_t itself). Where a trailing mean was taken
  (``eval.smoothing`` above 1) or under the stream protocol, the S_t before the mean is there too, in
  ``unsmoothed_score`` (``UNSMOOTHED_COLUMN``, after the others; absent in files of older versions and where there
  was no mean to tell it from);
- a detect run's ``score`` is S_t before the trailing mean, and ``smoothed`` the S_t after it, which its alerts
  compare with the threshold (written exactly, ``smoothed_text``, not to 6 decimals).

So a detect ``smoothed`` reads as an evaluation's ``score``, a detect ``score`` as its ``unsmoothed_score``."""

from __future__ import annotations

# a scored frame's terms, in the order ``frame_columns`` gives them (detect's order; an evaluation's file interleaves
# video and label, and has the patch terms last: columns added after its first version)
FRAME_COLUMNS = ("psnr", "patch_psnr", "distance", "patch_distance", "regular_score", "memory_updated", "score")
SCORES_HEADER = ["video", "frame", "psnr", "distance", "regular_score", "memory_updated", "score", "label", "patch_psnr", "patch_distance"]
DETECT_SCORES_HEADER = ["frame", "time", *FRAME_COLUMNS, "smoothed", "alert"]
UNSMOOTHED_COLUMN = "unsmoothed_score"  # an evaluation's S_t before its trailing mean, where it kept it


def frame_columns(*, psnr: float, patch_psnr: float, distance: float, patch_distance: float, regular: float, updated: bool,
                  score: float) -> tuple[str, str, str, str, str, str, str]:
    """A scored frame's terms as text, in ``FRAME_COLUMNS``' order: PSNRs to 6 decimals, D to 9 significant digits (it
    is 1e-6 to 1e-2: fixed decimals would lose it), E_t to 8 decimals, memory_updated 0 or 1, the score to 6 decimals
    (``score_text``). An evaluation's format (detect wrote PSNR to 5 decimals): its committed files in results/ are
    written the same."""
    return (f"{psnr:.6f}", f"{patch_psnr:.6f}", f"{distance:.9g}", f"{patch_distance:.9g}", f"{regular:.8f}", str(int(updated)),
            score_text(score))


def score_text(score: float) -> str:
    """A score as both scores.csv files write it (S_t; detect's smoothed score is ``smoothed_text``'s): 6 decimals."""
    return f"{score:.6f}"


def smoothed_text(score: float) -> str:
    """Detect's smoothed score (what its alerts compare with the threshold) as its scores.csv writes it: the fewest
    digits that give the very number back (``repr``), not 6 decimals, since a resumed camera pushes the rows written
    after its last state back into the event tracker from this text (``mnad detect --resume``), and a score within
    5e-7 of the threshold would open or end an event otherwise than the run that wrote it did."""
    return repr(float(score))


def shown_score(value: float) -> str:
    """A score, threshold or other measured number as shown to a person (the report's page and plots, ``mnad detect``'s
    annotated video): 4 significant digits, the one format of each (was: 2 decimals on the video and the timelines,
    which showed a threshold of 0.9951 as 1.00, beside 4 significant digits on the page)."""
    return f"{value:.4g}"
