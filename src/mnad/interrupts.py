"""Interrupts (Ctrl-C, SIGTERM) and the writes that belong together.

Python raises an interrupt's exception between any two bytecodes, so a run stopped while it writes one frame's row
and counts it, or renames the second of two files that go together, would leave its outputs disagreeing with each
other. ``held_interrupts`` makes such a step whole: a signal that arrives inside waits until the step completes and
then acts as it would have (KeyboardInterrupt, ``Terminated``, ...).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mnad.errors import Terminated

INTERRUPTS = (signal.SIGINT, signal.SIGTERM)
_holding = False  # a held block is running (only the main thread holds: only it runs Python's signal handlers)


def raise_terminated_on_sigterm() -> Any:
    """SIGTERM raises ``Terminated`` (as Ctrl-C raises KeyboardInterrupt), so that a run stopped by a service manager
    unwinds and completes its outputs; returns the previous handler, or None off the main thread."""
    def handler(signum: int, frame: Any) -> None:
        raise Terminated()

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None


@contextmanager
def held_interrupts() -> Iterator[None]:
    """Ctrl-C and SIGTERM arriving inside the block wait for it to complete, then act as their handlers would have
    (the first one only). A no-op off the main thread and inside another held block."""
    global _holding
    if _holding or threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[tuple[int, Any]] = []
    previous = {s: h for s in INTERRUPTS if (h := signal.getsignal(s)) is not None}  # None: set outside Python, kept
    for s in previous:
        signal.signal(s, lambda signum, frame: arrived.append((signum, frame)))
    _holding = True
    try:
        yield
    finally:
        _holding = False
        for s, handler in previous.items():
            signal.signal(s, handler)
        if arrived:
            _act(previous[arrived[0][0]], *arrived[0])


def _act(handler: Any, signum: int, frame: Any) -> None:
    """What ``handler`` does with a signal that waited."""
    if callable(handler):
        handler(signum, frame)  # Python's Ctrl-C handler raises KeyboardInterrupt; the CLI's SIGTERM one Terminated
    elif handler == signal.SIG_DFL:
        signal.raise_signal(signum)  # its default action (stops the process), now that the handler is back
