"""Preprocessing ahead of inference, one thread per source, into one queue.

Capture pipelines run in GStreamer's threads; each source's thread here pulls its frames and applies
the bundle's preprocessing (a full-frame resize at camera sizes) while the loop's thread runs the
engine on an earlier frame. Both release the GIL in their heavy parts (PIL's resize, ONNX Runtime).
One prepared frame per source waits at most. An ``every`` source keeps its back-pressure (the thread
blocks, the appsink fills, the source waits). A ``latest`` source (``fresh``) keeps pulling while its
prepared frame waits and replaces it with the newer one (the replaced frame counts as dropped), so
inference always starts on the newest frame: before, a frame prepared during one inference waited for
it to end, and the frames that came meanwhile waited for the next (10-minute soak, 30 fps, CRR INT8:
p99 capture-to-decision 148 ms). Every item is tagged with its source's index; a source's end of
stream and errors come through the same queue, after its frames.
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


_BOXED = object()  # in the queue: "source i's newest prepared frame is in its box"


class Prefetch:
    def __init__(self, sources: Sequence[Source], prepare: Sequence[Callable], fresh: Sequence[bool] = ()):
        self.sources, self.prepare = list(sources), list(prepare)
        self.fresh = list(fresh) or [False] * len(self.sources)  # latest: the newest frame replaces a waiting one
        self.queue: queue.Queue = queue.Queue(maxsize=len(self.sources))
        self._slots = [threading.Semaphore(1) for _ in self.sources]  # one waiting frame per source
        self._box: list = [None] * len(self.sources)  # fresh sources: the waiting frame, replaced by newer ones
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), name=f"edgead-prepare-{i}", daemon=True)
                         for i in range(len(self.sources))]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def _run(self, i: int) -> None:
        give = self._offer if self.fresh[i] else self._put
        try:
            while not self._stop.is_set():
                fr = self.sources[i].read(0.5)
                if fr is not None:
                    give(i, self.prepare[i](fr))
        except EndOfStream:
            self._put(i, Ended())
        except BaseException as e:  # handed to the loop, which reports it
            self._put(i, _Failed(e))

    def _slot(self, i: int, after_box: bool = False) -> bool:
        """Wait for source ``i``'s slot (with ``after_box``, also for its boxed frame to be taken); False once
        stopped."""
        while not self._stop.is_set():
            if after_box and self._box[i] is not None:
                self._stop.wait(0.01)
            elif self._slots[i].acquire(timeout=0.2):
                return True
        return False

    def _put(self, i: int, item) -> None:
        if self._slot(i, after_box=self.fresh[i]):  # an end or error comes after a waiting fresh frame
            self.queue.put((i, item))
        else:
            self._discard(i, item)

    def _offer(self, i: int, item) -> None:
        """A fresh source's prepared frame: into its box, replacing the one waiting there (dropped)."""
        with self._lock:
            old, self._box[i] = self._box[i], item
        if old is not None:
            self._discard(i, old)
        elif self._slot(i):  # free once the loop took the last token; after a stop, ``stop`` empties the box
            self.queue.put((i, _BOXED))

    def _discard(self, i: int, item) -> None:
        """A frame pulled from its source but never inspected (replaced, or the run stopped) counts as dropped."""
        if not isinstance(item, Ended | _Failed):
            self.sources[i].stats.delivered -= 1

    def read(self, timeout_s: float) -> tuple[int, object] | None:
        """(source index, prepared frame or ``Ended``), or None after ``timeout_s``; a source's error is raised."""
        try:
            i, item = self.queue.get(timeout=timeout_s)
        except queue.Empty:
            return None
        if item is _BOXED:
            with self._lock:
                item, self._box[i] = self._box[i], None
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
            if item is not _BOXED:
                self._discard(i, item)
        for i, item in enumerate(self._box):
            if item is not None:
                self._discard(i, item)
                self._box[i] = None
