"""The per-frame columns of the two scores.csv files: an evaluation's (``SCORES_HEADER``, one row per scored frame of
each video) and a ``mnad detect`` run's (``DETECT_SCORES_HEADER``, one row per frame with its time, smoothed score
and alert)."""

from __future__ import annotations

SCORES_HEADER = ["video", "frame", "psnr", "distance", "regular_score", "memory_updated", "score", "label", "patch_psnr", "patch_distance"]
DETECT_SCORES_HEADER = ["frame", "time", "psnr", "patch_psnr", "distance", "patch_distance", "regular_score", "memory_updated", "score",
                        "smoothed", "alert"]
