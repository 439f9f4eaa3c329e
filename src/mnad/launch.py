"""Whether this process is one of a multi-process launch, read from the environment alone.

Its own small module so that the CLI (which must not import torch before it has parsed its options) and
``mnad.distributed`` share one definition.
"""

from __future__ import annotations

import os

# the commands (and API entries, mnad.train.train and mnad.evaluate.evaluate) that split their work over the ranks
DISTRIBUTED_COMMANDS = ("train", "evaluate")


def multi_process_launch() -> bool:
    """Whether this process is one of a multi-process launch (torchrun, or the same variables set by hand:
    WORLD_SIZE > 1 with MASTER_ADDR and MASTER_PORT; a WORLD_SIZE left exported in a shell is not one).
    The one rule: the CLI, ``mnad.distributed.setup`` (which joins a group only then) and ``single_process`` read it."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "") or 1)
    except ValueError:
        return False  # mnad.distributed.setup says what is wrong with it
    return world_size > 1 and bool(os.environ.get("MASTER_ADDR")) and bool(os.environ.get("MASTER_PORT"))


def single_process(name: str, *, rank_zero: bool = False) -> None:
    """Refuse ``name`` (an API entry, as ``mnad <command>`` names it) under a multi-process launch: every rank would
    do all its work and write the same outputs. ``rank_zero``: allowed on rank 0 of a launch (create_report, which
    `mnad evaluate --report` calls on rank 0 once the ranks have scored), refused on the others."""
    if not multi_process_launch():
        return
    from mnad.errors import ConfigError  # torch-free

    if rank_zero:
        rank = os.environ.get("RANK", "0").strip() or "0"
        if rank == "0":
            return
        raise ConfigError(f"{name} runs on rank 0 only: call it there, once the ranks have evaluated (RANK={rank})")
    raise ConfigError(f"{name} runs in one process: start it without torchrun (only {' and '.join(DISTRIBUTED_COMMANDS)} "
                      "split their work over torchrun's processes)")
