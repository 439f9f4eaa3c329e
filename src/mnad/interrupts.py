"""Interrupts (Ctrl-C, SIGTERM, SIGHUP) and the writes that belong together.

Python raises an interrupt's exception between any two bytecodes, so a run stopped while it writes one frame's row
and counts it, or renames the second of two files that go together, would leave its outputs disagreeing with each
other. ``held_interrupts`` makes such a step whole: a signal that arrives inside waits until the step completes and
then acts as it would have (KeyboardInterrupt, ``Terminated``, ...).
"""

from __future__ import annotations

import os
import signal
import stat
import sys
import threading
from typing import Any

from mnad.errors import Terminated

# the signals that stop a run the way it can unwind from: Ctrl-C, a service manager's stop, a closed terminal or ssh
SIGHUP = getattr(signal, "SIGHUP", None)  # none on Windows
TERMINATING = (signal.SIGTERM,) + ((SIGHUP,) if SIGHUP is not None else ())
INTERRUPTS = (signal.SIGINT, *TERMINATING)
_holding = False  # a held block is running (only the main thread holds: only it runs Python's signal handlers)


def raise_terminated_on_signals() -> dict[int, Any]:
    """SIGTERM and SIGHUP raise ``Terminated`` (as Ctrl-C raises KeyboardInterrupt), so that a run stopped by a service
    manager, or by its terminal or ssh connection closing, unwinds and completes its outputs (Python's default for
    both ends the process on the spot). An ignored signal stays ignored (``nohup``). Returns the handlers replaced,
    for ``restore_handlers``; none off the main thread."""
    previous: dict[int, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for signum in TERMINATING:
        if signal.getsignal(signum) == signal.SIG_IGN:
            continue
        previous[signum] = signal.signal(signum, _terminate)
    return previous


def restore_handlers(previous: dict[int, Any]) -> None:
    """Put back the handlers ``raise_terminated_on_signals`` replaced."""
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def _terminate(signum: int, frame: Any) -> None:
    if signum == SIGHUP:
        _leave_the_terminal()
    raise Terminated(signal.Signals(signum).name)


def _leave_the_terminal() -> None:
    """After a hangup the terminal is gone and a write to it fails (EIO): standard output and error, where they are
    a terminal, go to the null device instead, so that the run's unwinding and last line (which nobody can see now)
    cannot fail on a progress bar or a message. Output redirected to a file or pipe is kept."""
    for stream in (sys.stdout, sys.stderr):
        try:
            fd = stream.fileno()
            if stat.S_ISCHR(os.fstat(fd).st_mode):  # not os.isatty: a hung-up terminal is no longer one to it
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, fd)
                os.close(null)
        except (AttributeError, OSError, ValueError):  # no real file (captured), or already closed
            continue


class held_interrupts:  # noqa: N801 (a context manager used like a function, as contextlib's are)
    """Ctrl-C, SIGTERM and SIGHUP arriving inside the block wait for it to complete, then act as their handlers would have
    (the first one only). Only handlers set from Python are held (Python's Ctrl-C handler, the CLI's SIGTERM and SIGHUP one): an
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
            self.previous[signum](signum, frame)  # Ctrl-C's raises KeyboardInterrupt; the CLI's SIGTERM/SIGHUP one Terminated
