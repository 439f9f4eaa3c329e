"""Whether this process is one of a multi-process launch, read from the environment alone.

Its own small module so that the CLI (which must not import torch before it has parsed its options) and
``mnad.distributed`` share one definition.
"""

from __future__ import annotations

import os


def multi_process_launch() -> bool:
    """Whether this process is one of a multi-process launch (torchrun, or the same variables set by hand:
    WORLD_SIZE > 1 with MASTER_ADDR and MASTER_PORT; a WORLD_SIZE left exported in a shell is not one)."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "") or 1)
    except ValueError:
        return False  # mnad.distributed.setup says what is wrong with it
    return world_size > 1 and bool(os.environ.get("MASTER_ADDR")) and bool(os.environ.get("MASTER_PORT"))
