"""Evaluation reports: one self-contained HTML page (plots embedded as PNG, no script, no network).

A report folder holds ``report.html``, ``provenance.json`` (how the evaluation was run: command, config, checkpoint
hash, library versions) and ``thumbs/`` (localisation thumbnails of the highest-scoring frames, which need the model
and the frames, so they are made once, by ``mnad evaluate --report``). Everything else on the page is drawn from the
evaluation's saved outputs (``metrics.json``, ``scores.csv``) and the training run's ``train_log.jsonl``, read with
``mnad.outputs``, so ``mnad report`` rebuilds the page without scoring anything again.

- ``build``: the entry points below, and where a report's sources are found.
- ``page``: the HTML.
- ``plots``: the matplotlib plots, as PNG bytes.
- ``thumbnails``: the localisation thumbnails (the only part that runs the model).
- ``provenance``: hashes, versions, the command line.
- ``inputs``: the files the page is drawn from, read and checked (UTF-8, JSON, their shape) when they are loaded.
"""

from mnad.report.build import REPORT_FILE, build_report, create_report, find_report_sources, rebuild_report

__all__ = ["REPORT_FILE", "build_report", "create_report", "find_report_sources", "rebuild_report"]
