"""The files a report is drawn from, read and checked in one place, when they are loaded: one that is not UTF-8, not
JSON or not of the shape the page reads is one DataError naming it, never a traceback while the page is drawn.

The optional files (provenance.json, thumbs/thumbs.json, figures/figures.json, train_log.jsonl) give nothing when
they are missing; one that is there but damaged is an error too, not a page that silently lacks its section.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnad import outputs
from mnad.errors import DataError
from mnad.outputs import METRICS_FILE, SCORES_FILE, VideoRows


def read_text(path: Path) -> str:
    """A file's text, which must be UTF-8 (mnad writes all its files so)."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from exc


def read_checked_json(path: Path, kind: str, problem: Callable[[Any], str | None]) -> Any:
    """A JSON file's content; ``problem`` says what is wrong with it (None: nothing), for the error that names it."""
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not an mnad {kind} file (not valid JSON: {exc})") from exc
    what = problem(data)
    if what:
        raise DataError(f"{path}: not an mnad {kind} file ({what})")
    return data


def _number(value: Any, *, null: bool = True) -> bool:
    if value is None:
        return null
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _kinds(data: Any, where: str, kinds: dict[str, type | tuple[type, ...]]) -> str | None:
    """The first key of ``data`` whose value is present, not null and not of its kind."""
    for key, kind in kinds.items():
        value = data.get(key)
        if value is not None and not isinstance(value, kind):
            return f"{where}{key} must be {'an object' if kind is dict else 'a string'}, got {value!r}"[:200]
    return None


def _config_problem(config: Any, where: str) -> str | None:
    if not isinstance(config, dict):
        return f"{where} must be an object, got {config!r}"[:200]
    return _kinds(config, f"{where}.", {"train": dict})


def metrics_problem(data: Any) -> str | None:
    """What the report reads of a metrics.json that is not as ``outputs.metrics_json_bytes`` writes it, or None."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    metrics = data.get("metrics")
    if not isinstance(metrics, dict):
        return "no 'metrics' entry" if metrics is None else f"metrics must be an object, got {metrics!r}"[:200]
    for key in ("micro_auc", "macro_auc"):
        if not _number(metrics.get(key)):
            return f"metrics.{key} must be a number or null, got {metrics[key]!r}"[:200]
    per_video = metrics.get("per_video_auc", {})
    if not isinstance(per_video, dict) or not all(_number(v) for v in per_video.values()):
        return f"metrics.per_video_auc must map video names to numbers, got {per_video!r}"[:200]
    stream = metrics.get("stream")
    if stream is not None and not (isinstance(stream, dict) and _number(stream.get("event_threshold"))):
        return f"metrics.stream must be an object with a numeric event_threshold, got {stream!r}"[:200]
    wrong_config = _config_problem(data["config"], "config") if "config" in data else None
    return wrong_config or _kinds(data, "", {"scores_sha256": str})


def provenance_problem(data: Any) -> str | None:
    """What the report reads of a provenance.json that is not as ``provenance.collect_provenance`` writes it, or None."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    wrong = _kinds(data, "", {"eval_dir": str, "run_dir": str, "checkpoint": dict, "versions": dict})
    return wrong or (_config_problem(data["config"], "config") if data.get("config") is not None else None)


def thumbs_problem(data: Any) -> str | None:
    """What the page reads of thumbs/thumbs.json (``thumbnails.write_thumbnails``) that is wrong, or None."""
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        return "not a list of thumbnail entries"
    for entry in data:
        if not isinstance(entry.get("file"), str) or not _number(entry.get("score"), null=False) or entry.get("label") not in (None, 0, 1):
            return f"an entry needs a file name, a numeric score and a label of null, 0 or 1, got {entry!r}"[:200]
    return None


def figures_problem(data: Any) -> str | None:
    """What the page reads of figures/figures.json (``mnad.figures.memory_figures``) that is wrong, or None."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    return _kinds(data, "", {"files": dict})


def read_evaluation(eval_dir: Path) -> tuple[dict, dict, list[VideoRows]]:
    """(metrics, config dict, scores) of an evaluation folder (``outputs.read_evaluation``), its metrics.json and
    scores.csv checked to be what the page reads."""
    metrics_path, scores_path = eval_dir / METRICS_FILE, eval_dir / SCORES_FILE
    if metrics_path.is_file():  # else outputs.read_evaluation says it is missing
        read_checked_json(metrics_path, "metrics", metrics_problem)
    if scores_path.is_file():
        read_text(scores_path)
    try:
        return outputs.read_evaluation(eval_dir)
    except (ValueError, csv.Error) as exc:  # a value of scores.csv that is not a number
        raise DataError(f"{scores_path}: not an mnad scores file ({exc})") from exc


def read_train_log(path: Path) -> list[dict]:
    """A run's per-epoch records (``outputs.read_train_log``), each with a numeric epoch and seconds."""
    read_text(path)
    records = outputs.read_train_log(path)
    for record in records:
        if not (_number(record.get("epoch"), null=False) and _number(record.get("seconds", 0), null=False)):
            raise DataError(f"{path}: not an mnad training log (a record's epoch and seconds must be numbers, got {record!r})"[:300])
    return records
