"""Preprocessing one frame ahead of inference, in its own thread.

The capture pipeline runs in GStreamer's threads; this thread pulls frames from the source and
applies the bundle's preprocessing (a full-frame resize at camera sizes) while the loop's thread
runs the engine on the previous frame. Both release the GIL in their heavy parts (PIL's resize,
ONNX Runtime). One prepared frame waits at most, so ``every`` keeps its back-pressure (the thread
blocks, the appsink fills, the source waits) and ``latest`` stays at most one frame behind.
End of stream and errors reach the loop through the same queue, in order.
"""

from __future__ import annotations

import queue
import threading

from edgead.live.source import EndOfStream, Source

_END = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetcher:
    def __init__(self, source: Source, prepare, depth: int = 1):
        self.source, self.prepare = source, prepare
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgead-prepare", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                fr = self.source.read(0.5)
                if fr is not None:
                    self._put(self.prepare(fr))
        except EndOfStream:
            self._put(_END)
        except BaseException as e:  # handed to the loop, which reports it
            self._put(_Failed(e))

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        self._discard(item)

    def _discard(self, item) -> None:
        """A frame pulled from the source but never inspected (the run stopped) counts as dropped."""
        if item is not _END and not isinstance(item, _Failed):
            self.source.stats.delivered -= 1

    def read(self, timeout_s: float):
        """The next prepared frame, or None after ``timeout_s``; raises EndOfStream (or the thread's error)."""
        try:
            item = self.queue.get(timeout=timeout_s)
        except queue.Empty:
            return None
        if item is _END:
            raise EndOfStream
        if isinstance(item, _Failed):
            raise item.error
        return item

    def stop(self) -> None:
        """Stop pulling frames and wait for the thread; a prepared frame never inspected counts as dropped."""
        self._stop.set()
        self._thread.join(timeout=5)
        while True:
            try:
                self._discard(self.queue.get_nowait())
            except queue.Empty:
                break
