"""torch's intra-op thread count from a config's ``train.threads`` (``--threads``), applied by every API entry that runs
the model: training and the scoring ones (evaluate, detect, calibrate, export, figures), so that a config's
``train.threads`` is not honoured by the CLI alone."""

from __future__ import annotations

from typing import Any

import torch


def apply_threads(config: Any) -> None:
    """Set torch's intra-op threads to ``config.train.threads``; 0 (the default) leaves torch's count as it is. Like
    ``train()`` always has, the count is left set afterwards (torch's is one per process, and the caller asked for it)."""
    threads = config.train.threads
    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
