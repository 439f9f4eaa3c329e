"""Interrupts (Ctrl-C, SIGTERM) and the writes that belong together.

Python raises an interrupt's exception between any two bytecodes, so a run stopped while it writes one frame's row
and counts it, or renames the second of two files that go together, would leave its outputs disagreeing with each
other. ``held_interrupts`` makes such a step whole: a signal that arrives inside waits until the step completes and
then acts as it would have (KeyboardInterrupt, ``Terminated``, ...).
"""

from __future__ import annotations

import signal
import threading
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


class held_interrupts:  # noqa: N801 (a context manager used like a function, as contextlib's are)
    """Ctrl-C and SIGTERM arriving inside the block wait for it to complete, then act as their handlers would have
    (the first one only). Only handlers set from Python are held (Python's Ctrl-C handler, the CLI's SIGTERM one): an
    ignored signal stays ignored, a default one acts at once as it always did. A no-op off the main thread and inside
    another held block. A class, not a generator: the stream scorer enters one per frame."""

    __slots__ = ("outer", "holding", "previous", "arrived")

    def __enter__(self) -> None:
        global _holding
        self.outer = not _holding and threading.current_thread() is threading.main_thread()
        if not self.outer:
            return
        self.previous: dict[int, Any] = {}
        self.arrived: list[tuple[int, Any]] = []
        self.holding = True
        _holding = True
        try:
            for s in INTERRUPTS:
                if callable(handler := signal.getsignal(s)):
                    self.previous[s] = handler
                    signal.signal(s, self._wait)
        except BaseException:  # a signal not yet held arrived while the others were being held: none is held
            self._release()
            raise

    def _wait(self, signum: int, frame: Any) -> None:
        if self.holding:
            self.arrived.append((signum, frame))
        else:  # the block is over but its handler is not yet (or, cut short by another signal, never) put back
            self.previous[signum](signum, frame)

    def _release(self) -> None:
        global _holding
        self.holding = _holding = False
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def __exit__(self, *exc: object) -> None:
        if not self.outer:
            return
        self._release()
        if self.arrived:
            signum, frame = self.arrived[0]
            self.previous[signum](signum, frame)  # Ctrl-C's raises KeyboardInterrupt; the CLI's SIGTERM one Terminated
