"""Preprocessing ahead of inference, one thread per source, into one queue.

Capture pipelines run in GStreamer's threads; each source's thread here pulls its frames and applies
the bundle's preprocessing (a full-frame resize at camera sizes) while the loop's thread runs the
engine on an earlier frame. Both release the GIL in their heavy parts (PIL's resize, ONNX Runtime).
One prepared frame per source waits at most, so ``every`` keeps its back-pressure (the thread
blocks, the appsink fills, the source waits) and ``latest`` stays at most one frame behind. Every
item is tagged with its source's index; a source's end of stream and errors come through the same
queue, after its frames.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence

from edgead.live.source import EndOfStream, Source


class Ended:
    """A source's end of stream."""


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetch:
    def __init__(self, sources: Sequence[Source], prepare: Sequence[Callable]):
        self.sources, self.prepare = list(sources), list(prepare)
        self.queue: queue.Queue = queue.Queue(maxsize=len(self.sources))
        self._slots = [threading.Semaphore(1) for _ in self.sources]  # one waiting frame per source
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), name=f"edgead-prepare-{i}", daemon=True)
                         for i in range(len(self.sources))]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def _run(self, i: int) -> None:
        try:
            while not self._stop.is_set():
                fr = self.sources[i].read(0.5)
                if fr is not None:
                    self._put(i, self.prepare[i](fr))
        except EndOfStream:
            self._put(i, Ended())
        except BaseException as e:  # handed to the loop, which reports it
            self._put(i, _Failed(e))

    def _put(self, i: int, item) -> None:
        while not self._stop.is_set():
            if self._slots[i].acquire(timeout=0.2):
                self.queue.put((i, item))
                return
        self._discard(i, item)

    def _discard(self, i: int, item) -> None:
        """A frame pulled from its source but never inspected (the run stopped) counts as dropped there."""
        if not isinstance(item, Ended | _Failed):
            self.sources[i].stats.delivered -= 1

    def read(self, timeout_s: float) -> tuple[int, object] | None:
        """(source index, prepared frame or ``Ended``), or None after ``timeout_s``; a source's error is raised."""
        try:
            i, item = self.queue.get(timeout=timeout_s)
        except queue.Empty:
            return None
        self._slots[i].release()
        if isinstance(item, _Failed):
            raise item.error
        return i, item

    def stop(self) -> None:
        """Stop pulling frames and wait for the threads; a prepared frame never inspected counts as dropped."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        while True:
            try:
                i, item = self.queue.get_nowait()
            except queue.Empty:
                break
            self._discard(i, item)
