"""A camera read under mnad's own open and read timeouts (``WatchedCapture``), for a backend that takes none.

OpenCV refuses to open a camera with ``CAP_PROP_OPEN_TIMEOUT_MSEC``/``CAP_PROP_READ_TIMEOUT_MSEC`` where its backend
does not take them (V4L2, the usual one on Linux, and others); opened without them, a silent camera could block a read
for as long as its backend likes, or for ever. Each open and read here runs in one daemon thread of the capture's own,
and the caller waits at most its timeout: a call that overruns it is given up on, the capture left to that thread,
which releases it when the call returns. A live source never hangs, whatever its backend.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

log = logging.getLogger(__name__)

_RELEASE = object()  # the worker's last call: release the capture (once a blocked call has returned) and stop


class WatchedCapture:
    """The capture ``open_capture()`` returns, opened within ``open_timeout`` seconds and each ``read`` returning within
    ``read_timeout`` seconds; a call that overran its timeout leaves the capture closed (``isOpened`` False, ``read``
    ``(False, None)``) as a capture that stalled, for the caller to reconnect. ``release`` never waits."""

    def __init__(self, open_capture: Callable[[], cv2.VideoCapture], open_timeout: float, read_timeout: float) -> None:
        self.read_timeout = read_timeout
        self.stalled = False  # a call overran its timeout: the capture is the worker's alone from then on
        self._capture: cv2.VideoCapture | None = None
        self._calls: queue.Queue[tuple[Any, queue.Queue | None]] = queue.Queue()
        opened: queue.Queue = queue.Queue(maxsize=1)
        # a daemon: a camera blocked in its driver never holds up the exit
        threading.Thread(target=self._serve, args=(open_capture, opened), name="mnad-camera", daemon=True).start()
        self._capture = self._answer(opened, open_timeout)

    def _serve(self, open_capture: Callable[[], cv2.VideoCapture], opened: queue.Queue) -> None:
        try:
            capture = open_capture()
        except Exception as exc:  # raised in the caller
            opened.put((False, exc))
            return
        opened.put((True, capture))
        while True:  # the capture is released here, after any call its caller gave up on has returned
            call, answer = self._calls.get()
            if call is _RELEASE:
                capture.release()
                return
            try:
                answer.put((True, call(capture)))
            except Exception as exc:
                answer.put((False, exc))

    def _answer(self, answer: queue.Queue, timeout: float) -> Any:
        try:
            ok, result = answer.get(timeout=timeout)
        except queue.Empty:
            # said each time: a driver that never returns keeps one thread and camera handle per stall
            log.warning("the camera did not answer within %g s: the call is given up on, the capture left to its "
                        "thread until the driver returns", timeout)
            self.stalled = True
            return None
        if not ok:
            raise result
        return result

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return not self.stalled and self._capture is not None and self._capture.isOpened()

    def read(self) -> tuple[bool, np.ndarray | None]:
        if not self.isOpened():
            return False, None
        answer: queue.Queue = queue.Queue(maxsize=1)
        self._calls.put((lambda capture: capture.read(), answer))
        result = self._answer(answer, self.read_timeout)
        return (False, None) if result is None else result

    def get(self, prop: int) -> float:
        # a property read is the driver's bookkeeping, not a wait for the camera; the worker is idle between calls
        return 0.0 if not self.isOpened() else self._capture.get(prop)

    def release(self) -> None:
        self._calls.put((_RELEASE, None))
