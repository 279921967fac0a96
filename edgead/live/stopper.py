"""Ending a live run on time, whatever its pipeline does: SIGINT/SIGTERM, ``--duration``, and a hard
deadline.

A Python signal handler only runs when the main thread executes Python; a GStreamer call that blocks
(an element stuck in a state change) would delay it forever, and a systemd stop would then always
time out. So the C-level signal handler also writes to a wake-up socket that a watchdog thread
reads: the stop is seen at once, the loop is told (and a source waiting to reconnect is woken),
and if the run has not ended ``grace_s`` seconds after the stop (a signal, or the end of
``--duration``), the watchdog says so on stderr and ends the process with ``os._exit``. Alert lines
are fsynced one by one as they are written, so nothing written is lost by that exit.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopper:
    """``with Stopper(duration, grace_s, hard_exit) as stop:`` ... ``if stop.reason: break``."""

    def __init__(self, duration: float | None = None, grace_s: float = 15.0,
                 hard_exit: Callable[[str], int] | None = None, on_stop: Callable[[], None] | None = None):
        self.duration, self.grace_s = duration, grace_s
        self.hard_exit = hard_exit or (lambda reason: 3)
        self.on_stop = on_stop or (lambda: None)
        self.reason: str | None = None
        self.requested_at: float | None = None
        self.start = time.monotonic()
        self._done = threading.Event()
        self._old: dict = {}
        self._old_fd = -1
        self._pair: tuple[socket.socket, socket.socket] | None = None
        self._thread: threading.Thread | None = None

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason, self.requested_at = reason, time.monotonic()
            self.on_stop()

    def _on_signal(self, signum, _frame) -> None:
        self.request(signal.Signals(signum).name)

    def __enter__(self) -> Stopper:
        self.start = time.monotonic()
        if threading.current_thread() is threading.main_thread():  # handlers can only be set from there
            r, w = socket.socketpair()
            r.setblocking(False)
            w.setblocking(False)
            self._pair = (r, w)
            self._old_fd = signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)
            self._old = {s: signal.signal(s, self._on_signal) for s in SIGNALS}
        self._thread = threading.Thread(target=self._watch, name="edgead-stopper", daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        sock = self._pair[0] if self._pair else None
        seen = 0  # signals, counted from the wake-up socket (every delivery writes one byte there)
        while not self._done.is_set():
            if sock is not None:
                ready, _, _ = select.select([sock], [], [], 0.2)
                if ready:
                    try:
                        data = sock.recv(64)
                    except OSError:
                        data = b""
                    for b in data:
                        if b not in SIGNALS:
                            continue
                        seen += 1
                        if seen > 1:  # asked twice: no more waiting
                            self._exit(f"second {signal.Signals(b).name}")
                        self.request(signal.Signals(b).name)
            else:
                self._done.wait(0.2)
            now = time.monotonic()
            if self.duration is not None and self.reason is None and now - self.start >= self.duration:
                self.request("duration")
            if self.requested_at is not None and now - self.requested_at > self.grace_s and not self._done.is_set():
                self._exit(f"{self.reason}: the run did not end within {self.grace_s:g} s")

    def _exit(self, why: str) -> None:
        code = self.hard_exit(why)
        os._exit(code)

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self._pair is not None:
            signal.set_wakeup_fd(self._old_fd)
            for s, h in self._old.items():
                signal.signal(s, h)
            for sock in self._pair:
                sock.close()
