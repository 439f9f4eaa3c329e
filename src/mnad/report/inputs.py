"""What the report checks of the optional files it is drawn from (provenance.json, thumbs/thumbs.json,
figures/figures.json, train_log.jsonl), read through ``mnad.outputs.read_json`` when they are loaded: one that is not
UTF-8, not JSON or not of the shape the page reads is one DataError naming it, never a traceback while the page is
drawn. A missing one gives nothing; one that is there but damaged is an error, not a page that silently lacks its
section. train_log.jsonl is read line by line (``training_records``): a line cut short by a kill or spoilt by a
damaged byte is skipped, as every reader of a training log skips it; a file with no epoch record at all is an error.
metrics.json and scores.csv are checked by their reader, ``mnad.outputs.read_evaluation``, and the scores once more
for what the plots need (``scores_problem``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mnad import outputs
from mnad.errors import DataError
from mnad.outputs import config_problem, is_number, wrong_kinds


def provenance_problem(data: Any) -> str | None:
    """What the report reads of a provenance.json that is not as ``provenance.collect_provenance`` writes it, or None."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    wrong = wrong_kinds(data, "", {"eval_dir": str, "run_dir": str, "checkpoint": dict, "versions": dict,
                                    "scores_sha256": str})
    return wrong or (config_problem(data["config"], "config") if data.get("config") is not None else None)


def thumbs_problem(data: Any) -> str | None:
    """What the page reads of thumbs/thumbs.json (``thumbnails.write_thumbnails``) that is wrong, or None."""
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        return "not a list of thumbnail entries"
    for entry in data:
        if not isinstance(entry.get("file"), str) or not is_number(entry.get("score"), null=False) or entry.get("label") not in (None, 0, 1):
            return f"an entry needs a file name, a numeric score and a label of null, 0 or 1, got {entry!r}"[:200]
    return None


def figures_problem(data: Any) -> str | None:
    """What the page reads of figures/figures.json (``mnad.figures.memory_figures``) that is wrong, or None."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    return wrong_kinds(data, "", {"files": dict, "weights_sha256": str})


def scores_problem(videos: list[outputs.VideoRows]) -> str | None:
    """What the page cannot draw in scores.csv (read by ``outputs.read_scores``), or None: a score that is not finite
    (NaN, inf: mnad evaluate refuses to write one, but a file edited by hand or from an older version may hold it) or a
    label other than 0 and 1 would fail the ROC, the histogram and the timelines with a traceback."""
    for video in videos:
        bad = np.flatnonzero(~np.isfinite(video.score))
        if bad.size:
            i = int(bad[0])
            return (f"video {video.name!r}, frame {int(video.frames[i])}: score {video.score[i]} is not a finite number "
                    f"({bad.size} of its {video.score.size} frames)")
        if video.labels is not None and (wrong := np.flatnonzero((video.labels != 0) & (video.labels != 1))).size:
            i = int(wrong[0])
            return f"video {video.name!r}, frame {int(video.frames[i])}: label {int(video.labels[i])} is not 0 (normal) or 1 (abnormal)"
    return None


def training_records(path: Path) -> list[dict]:
    """The per-epoch records the page draws from a run's train_log.jsonl, read by the one rule for a training log,
    ``outputs.read_train_log`` (a line that is not UTF-8 or not JSON, as a kill mid-write or a damaged byte leaves it,
    is skipped, as status and resume skip it), each checked to have a numeric epoch and seconds. A file that holds
    text but not one epoch record is not a training log: a DataError, not a page without its training section."""
    try:
        records, text = outputs.read_train_log(path), path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    for record in records:
        if not (is_number(record.get("epoch"), null=False) and is_number(record.get("seconds", 0), null=False)):
            raise DataError(f"{path}: not an mnad training log (a record's epoch and seconds must be numbers, got {record!r})"[:300])
    if not records and text.strip():
        raise DataError(f"{path}: not an mnad training log (no line of it is an epoch record)")
    return records
