"""Frames inferred side by side, decisions handed back in arrival order.

One engine, ``workers`` threads calling it at once (each inference single-threaded inside the engine):
on a small CPU a frame's kernels then stop waiting on each other's threads, and two frames fill two
cores. With one worker a frame is decided on the caller's thread, as a plain loop would. Decisions
leave in the order the frames were submitted, so ``every`` keeps the source's order and counts
exactly; a worker's exception is raised on the caller's thread when its frame's turn comes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class InOrder(Generic[T, R]):
    """``submit(tag, item)`` runs ``work(item)``; ``pop()`` returns ``(tag, item, result)`` oldest first."""

    def __init__(self, work: Callable[..., R], workers: int = 1):
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.workers = workers
        self._work = work
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="edgead-infer") if workers > 1 else None
        self._pending: deque[tuple[object, T, Future]] = deque()

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def full(self) -> bool:
        return len(self._pending) >= self.workers

    def oldest_done(self) -> bool:
        return bool(self._pending) and self._pending[0][2].done()

    def submit(self, tag: object, item: T, *args) -> None:
        if self._pool is not None:
            fut = self._pool.submit(self._work, item, *args)
        else:
            fut = Future()
            try:
                fut.set_result(self._work(item, *args))
            except BaseException as e:  # noqa: BLE001  (raised again by pop, as a worker's would be)
                fut.set_exception(e)
        self._pending.append((tag, item, fut))

    def pop(self) -> tuple[object, T, R]:
        """The oldest submitted frame's result (waits for it)."""
        tag, item, fut = self._pending.popleft()
        return tag, item, fut.result()

    def close(self) -> None:
        """Wait for the frames in flight and stop the threads (their results are dropped: ``pop`` them first)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()
