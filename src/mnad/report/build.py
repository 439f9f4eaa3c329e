"""The report's entry points: ``create_report`` after an evaluation, ``rebuild_report`` for ``mnad report``, and
``build_report``, which writes the page of a report folder from saved outputs."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from mnad.config import check_count
from mnad.errors import DataError, os_reason
from mnad.launch import single_process
from mnad.outputs import (
    EVENTS_CSV,
    EVENTS_JSONL,
    METRICS_FILE,
    ROWS_DIR,
    SCORES_FILE,
    SUMMARY_FILE,
    check_output_folder,
    check_replace,
    check_replace_in,
    read_metrics,
)
from mnad.report.page import render_report
from mnad.report.provenance import (
    PROVENANCE_FILE,
    checkpoint_metadata,
    collect_provenance,
    is_run_dir,
    provenance_bytes,
    read_provenance,
    relative_path,
    write_provenance,
)
from mnad.report.thumbnails import THUMBS_DIR, TOP_K, read_thumbnail_index, remove_thumbnails, write_thumbnails

REPORT_FILE = "report.html"
# what `mnad evaluate --report DIR` writes into DIR: the thumbnails and provenance need the model and the evaluation's
# command, so an earlier report's cannot be made again from its folder; replacing them takes --overwrite
REPORT_FILES = (REPORT_FILE, PROVENANCE_FILE, THUMBS_DIR)


def check_report_output(report_dir: str | Path, *, overwrite: bool = False) -> Path:
    """A new report's folder (``--report``), before the evaluation: writable, and no earlier report there unless
    ``overwrite`` (``outputs.check_replace``). An earlier report's thumbnail index that is damaged is refused here too,
    before the evaluation (its thumbnails are replaced by the index's names: ``thumbnails.write_thumbnails``)."""
    folder = check_replace_in(report_dir, REPORT_FILES, overwrite=overwrite, option="--report")
    read_thumbnail_index(folder)
    return folder


def _resolve(base: Path, stored: str | None) -> Path | None:
    if not stored:
        return None
    path = Path(stored)
    return Path(os.path.normpath(path if path.is_absolute() else base / path))


def _run_config(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / "config.json").read_bytes())
    except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested beyond Python's stack
        return None
    return data if isinstance(data, dict) else None


def _trained_here(folder: Path, config: dict, weights: str | None) -> bool:
    """Whether the run in ``folder`` trained the evaluated model: its config.json has the evaluation's model, dataset,
    seed and epochs (the rest may differ: eval.* set at evaluation, where it ran) and, where ``weights`` (the
    evaluation's weights digest) is known, one of its model files holds those weights."""
    stored = _run_config(folder)
    if stored is None or not is_run_dir(folder):
        return False
    train, ours = stored.get("train") or {}, config.get("train") or {}
    if (stored.get("model"), stored.get("dataset")) != (config.get("model"), config.get("dataset")) or \
            any(train.get(k) != ours.get(k) for k in ("seed", "epochs")):
        return False
    return weights is None or any(checkpoint_metadata(f).get("sha256") == weights for f in sorted(folder.glob("*.safetensors")))


def _guess_run_dir(eval_dir: Path) -> Path | None:
    """The run folder that trained the model evaluated in ``eval_dir``, or None when it is not known: the one its
    metrics.json records, else the evaluation folder or the one above it, each accepted only if it trained that model
    (``_trained_here``): an evaluation written into another run's folder is not that run's."""
    try:
        metrics, config = read_metrics(eval_dir / METRICS_FILE)
    except DataError:
        return None
    record = metrics.get("model") if isinstance(metrics.get("model"), dict) else {}
    weights = record.get("weights_sha256") if isinstance(record.get("weights_sha256"), str) else None
    recorded = _resolve(eval_dir, record.get("run_dir")) if isinstance(record.get("run_dir"), str) else None
    for folder in (recorded, eval_dir, eval_dir.parent):
        if folder is not None and _trained_here(folder, config, weights):
            return folder
    return None


def _sources(report_dir: Path, eval_dir: Path | None, run_dir: Path | None) -> tuple[dict, Path, Path | None]:
    provenance = read_provenance(report_dir)
    eval_path = eval_dir or _resolve(report_dir, provenance.get("eval_dir")) or report_dir
    run_path = run_dir or _resolve(report_dir, provenance.get("run_dir")) or _guess_run_dir(eval_path)
    return provenance, eval_path, run_path


def build_report(
    report_dir: str | Path, *, eval_dir: str | Path | None = None, run_dir: str | Path | None = None, out: str | Path | None = None,
    record: dict | None = None,
) -> Path:
    """Write ``report.html`` (into ``out``, default the report folder) from saved outputs; returns its path.

    ``record``: the provenance of a report folder not made yet (``rebuild_report`` of an evaluation without one),
    written into it only once the page is drawn, i.e. once every input has been read and checked: an evaluation that
    cannot be drawn leaves no report folder behind that a later ``mnad evaluate --report`` would take for an earlier
    report. Paths on the page are shown from the page's own folder (``out``, default the report folder).

    The evaluation and run folders come from the arguments, else from ``provenance.json`` in the report folder,
    else the evaluation folder is the report folder and the run folder the one its metrics.json records, or that
    folder or the one above it, each only if it trained the evaluated model (``_guess_run_dir``); else it is unknown.
    """
    from mnad.atomic import atomic_write_many

    report_dir = Path(report_dir)
    provenance, eval_path, run_path = _sources(report_dir, Path(eval_dir) if eval_dir else None, Path(run_dir) if run_dir else None)
    if record is not None:  # a report folder not made yet: its provenance is the record, written once the page is drawn
        run_record = relative_path(run_path, report_dir) if run_path else None
        provenance = record = {**record, "run_dir": record.get("run_dir", run_record)}
    if eval_dir is None and provenance.get("eval_dir") and not (eval_path / METRICS_FILE).is_file():
        # a report folder moved or copied without its evaluation: say where the path came from, not only that a file is missing
        raise DataError(f"{report_dir / PROVENANCE_FILE}: names the evaluation folder {provenance['eval_dir']!r} (from the report "
                        f"folder), and {eval_path / METRICS_FILE} is not there: move the report folder together with its "
                        "evaluation, or run `mnad report` on the evaluation folder")
    page_dir = Path(out) if out is not None else report_dir
    text = render_report(report_dir, eval_path, run_path, provenance, page_dir=page_dir)  # every input checked here
    target = page_dir / REPORT_FILE
    files = {target: text.encode("utf-8")}
    made = record is not None and not report_dir.exists()
    if record is not None:  # with the page, all or none: a provenance without its page would be taken for a report
        files[report_dir / PROVENANCE_FILE] = provenance_bytes(record)
    try:
        try:
            if record is not None:
                report_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_many(files)
            target.chmod(0o644)  # a page to share, not a private temporary file
        except OSError as exc:
            raise DataError(f"{target}: cannot write the report ({exc.strerror or exc})") from exc
    except DataError:
        if made:  # the folder this call made for them, empty again
            with contextlib.suppress(OSError):
                report_dir.rmdir()
        raise
    return target


def check_top_k(top_k: int) -> None:
    """``top_k`` (--top-k), the thumbnails of a report: a whole number >= 0. create_report checks it; call it before an
    evaluation too, as `mnad evaluate --report` does (create_report runs only after the scoring)."""
    check_count("top_k (--top-k)", top_k, minimum=0)


def create_report(
    model: Any,
    config: Any,
    data_root: str | Path,
    eval_dir: str | Path,
    report_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    labels: str | Path | None = None,
    command: str | None = None,
    top_k: int = TOP_K,
    device: str = "cpu",
    overwrite: bool = False,
) -> Path:
    """After an evaluation that wrote ``eval_dir``: thumbnails (of the ``top_k`` highest-scoring frames; 0: none),
    provenance and the page. Returns the page's path. An earlier report in ``report_dir`` is refused unless
    ``overwrite`` (``check_report_output``; call it before the evaluation too, as `mnad evaluate --report` does)."""
    single_process("mnad evaluate --report (create_report)", rank_zero=True)
    check_top_k(top_k)
    report_dir = check_report_output(report_dir, overwrite=overwrite)
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{report_dir}: cannot create the report folder ({exc.strerror or exc})") from exc
    try:
        if top_k > 0:
            write_thumbnails(model, config, data_root, eval_dir, report_dir, top_k=top_k, device=device)
        else:  # none asked for: an earlier report's in this folder are of another evaluation
            remove_thumbnails(report_dir)
        provenance = collect_provenance(config, report_dir, eval_dir, checkpoint=checkpoint, data_root=data_root, labels=labels,
                                        command=command)
        write_provenance(report_dir, provenance)
    except OSError as exc:  # a full disk or a read-only folder: one clear error, not a traceback
        reason = os_reason(exc)
        raise DataError(f"{report_dir}: cannot write the report ({reason})") from exc
    return build_report(report_dir)


def find_report_sources(path: str | Path) -> tuple[Path, Path | None]:
    """For ``mnad report PATH``: (report folder, evaluation folder, or None when the report folder records it).

    PATH may be a report folder (with provenance.json), an evaluation folder (metrics.json; its report goes to its
    ``report/`` sub-folder), or a run folder holding one of these one or two levels down.
    """
    path = Path(path)
    if path.is_file() and path.name == REPORT_FILE:  # the page itself: its folder is the report folder
        path = path.parent
    if path.is_file():
        raise DataError(f"{path}: a file, not a folder (`mnad report` takes a report, evaluation or run folder, or a "
                        f"{REPORT_FILE})")
    if not path.is_dir():
        raise DataError(f"{path}: folder not found")
    if (path / PROVENANCE_FILE).is_file():
        return path, None
    if (path / METRICS_FILE).is_file():
        return path / "report", path
    reports = sorted({p.parent for pattern in ("*/", "*/*/") for p in path.glob(pattern + PROVENANCE_FILE)})
    evals = sorted({p.parent for pattern in ("*/", "*/*/") for p in path.glob(pattern + METRICS_FILE)})
    # evaluations without a report yet: not one a report found here was made of (its provenance.json's eval_dir, as
    # `mnad evaluate --out E --report R` records it; or E/report, which `mnad report E` makes)
    reported = {found.resolve() for r in reports if (found := _resolve(r, read_provenance(r).get("eval_dir"))) is not None}
    bare = [e for e in evals if e not in reports and e / "report" not in reports and e.resolve() not in reported]
    found = [(r, None) for r in reports] + [(e / "report", e) for e in bare]
    if len(found) == 1:
        return found[0]
    if found:
        names = ", ".join(str(p.relative_to(path)) for p in reports + bare)
        raise DataError(f"{path}: several reports or evaluations ({names}); name one")
    if (path / SUMMARY_FILE).is_file() or (path / EVENTS_JSONL).is_file():  # said, not left to look like a lost file
        try:
            never_ended = json.loads((path / SUMMARY_FILE).read_text(encoding="utf-8")).get("complete") is False
        except (OSError, ValueError, AttributeError):
            never_ended = False
        ended = (f"; its {SUMMARY_FILE} says this run never ended (\"complete\": false: still running, or killed; "
                 "docs/detect.md, Outputs)") if never_ended else ""
        raise DataError(f"{path}: an `mnad detect` output ({SUMMARY_FILE}, {EVENTS_JSONL}), not an evaluation: `mnad report` "
                        f"draws the page of `mnad evaluate --out DIR` ({METRICS_FILE}, {SCORES_FILE}); a detect run's results are "
                        f"its {SUMMARY_FILE}, {EVENTS_CSV} and {SCORES_FILE} (a run longer than --rows-segment: in {ROWS_DIR}/<first "
                        f"frame>/ each; mnad.outputs.read_detect_scores reads them all){ended}")
    raise DataError(f"{path}: no {METRICS_FILE} here or in a sub-folder (run `mnad evaluate --out DIR` first)")


def rebuild_report(path: str | Path, *, out: str | Path | None = None, overwrite: bool = False) -> Path:
    """``mnad report``: the page rebuilt from saved outputs, without the model. Returns the page's path.

    Into the report folder itself (no ``out``) the page is always replaced: redrawing it is what the command is for,
    and the page it replaces is drawn from that folder's own saved outputs, so nothing is lost that this command
    cannot make again (the thumbnails and provenance, which it could not, are left as they are). Into ``out``, another
    folder, a page already there is another report's: refused unless ``overwrite`` (``outputs.check_replace``),
    before the page is drawn."""
    single_process("mnad report")
    report_dir, eval_dir = find_report_sources(path)
    if out is not None:
        out = check_output_folder(out)
        if out.resolve() != report_dir.resolve():
            check_replace([out / REPORT_FILE], overwrite=overwrite)
    record = None
    if eval_dir is not None and out is None and not (report_dir / PROVENANCE_FILE).is_file():
        # A report of an evaluation run without --report: record where its sources are, so this folder can be rebuilt.
        # Not with --out: the page goes there, and the evaluation folder (perhaps read-only, or another's) is left alone.
        # Written by build_report once the page is drawn: an evaluation it cannot draw leaves no report folder.
        # Its run folder is the one build_report finds (written into the record there: one look for it).
        record = {"eval_dir": relative_path(eval_dir, report_dir)}
    return build_report(report_dir, eval_dir=eval_dir, out=out, record=record)
