"""A source's frames read ahead of scoring in a thread of their own (``SourceReader``), a few at most (``READ_AHEAD``),
so that a camera that is slower, stalls (up to its read timeout) or reconnects holds up no other source, and decoding
(OpenCV, which releases the GIL) overlaps scoring. Its last item says how the source ended (``SourceEnded``).
"""

from __future__ import annotations

import queue
import threading
import time

from mnad.data.streams import FrameSource, RawFrame

READ_AHEAD = 4  # frames a source's reader may decode ahead of scoring (bounded: a fast file does not fill the memory)


class SourceEnded:
    """A reader's last item: the source ended, by itself (``error`` None) or with an exception."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error


class SourceReader(threading.Thread):
    """Reads one source a few frames ahead of scoring, in its own thread; sets ``wake`` after each item."""

    def __init__(self, frames: FrameSource, wake: threading.Event) -> None:
        super().__init__(name="mnad-reader", daemon=True)  # a stalled camera never holds up the exit
        self.frames, self.wake = frames, wake
        self.queue: queue.Queue[RawFrame | SourceEnded] = queue.Queue(maxsize=READ_AHEAD)
        self.halt = threading.Event()
        # seconds this reader waited for the scorer with its queue full. A live source does not wait with it: its
        # frames pile up in the camera's and the network's buffers (or are dropped there), so the scores fall behind
        # the camera by about this much
        self.waited = 0.0

    def run(self) -> None:
        frames = iter(self.frames)
        ended: Exception | None = None
        try:
            for frame in frames:
                if not self._offer(frame):
                    return
        except Exception as exc:  # handed to the scoring thread: a DataError ends this stream, anything else is a bug
            ended = exc
        finally:
            frames.close()  # releases the capture now, in this thread
        self._offer(SourceEnded(ended))

    def _offer(self, item: RawFrame | SourceEnded) -> bool:
        since = time.monotonic()
        try:
            while not self.halt.is_set():
                try:
                    self.queue.put(item, timeout=0.2)
                except queue.Full:
                    continue
                self.wake.set()
                return True
            return False
        finally:
            self.waited += time.monotonic() - since
