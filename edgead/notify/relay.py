"""Delivery from ``events.jsonl`` to one notifier, in its own thread: the file stays the source of truth.

A relay keeps a cursor (byte offset of the first line not yet delivered) in a small state file beside the
events, written by temp name and rename. It reads complete lines from the cursor, sends each one, and
moves the cursor only after the notifier confirmed it (an MQTT PUBACK, an OPC UA write's Good status).
A notifier that is down is reconnected with exponential back-off while alerts wait in the file, so the
inspection loop never waits for it and no alert is lost; alerts left at exit are sent by the next run.

Before a line is sent the state records it as attempted; a line sent again (the confirmation was lost,
or the process ended before it came) goes out with ``"retry": true``, so a consumer sees a line twice
only with that flag. A relay started for the first time begins at the end of the existing file: it
forwards alerts from now on, not the history of earlier runs.

The cursor names its file by inode and first bytes, so it survives the log's rotation
(``edgead.live.alerts``): a relay behind the writer finishes the rotated file it was in, then goes on
to the next one. A file deleted before it was delivered (the relay was down for longer than the
log's budget) is counted in ``files_gone`` and the relay goes on from the oldest file left.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edgead.fileio import atomic_write_bytes
from edgead.live.alerts import chain

BACKOFF_S = (0.5, 30.0)  # first and longest wait between reconnects
HEAD = 64  # first bytes of a file kept in the cursor: with the inode, they tell a reused inode apart


class NotifierDown(Exception):
    """The notifier cannot deliver now (no connection, no confirmation in time); the relay retries."""


class Notifier(Protocol):
    """One destination. ``connect`` and ``send`` raise :class:`NotifierDown` on a transient failure."""

    description: str

    def connect(self) -> None: ...

    def send(self, record: dict) -> None: ...

    def idle(self) -> None: ...  # keep the connection alive between alerts (MQTT pings)

    def close(self) -> None: ...


def _head(path: Path) -> str:
    with open(path, "rb") as f:
        return f.read(HEAD).hex()


@dataclass
class Cursor:
    offset: int = 0  # first byte not yet delivered
    attempted: int | None = None  # offset of a line sent but not confirmed (sent again as a retry)
    inode: int | None = None  # the events file the offsets belong to (the live one, or after a rotation an older one)
    head: str | None = None  # its first bytes (hex) when the cursor was saved

    @classmethod
    def load(cls, path: Path, events: Path) -> Cursor:
        st = events.stat() if events.exists() else None
        inode = st.st_ino if st else None
        try:
            d = json.loads(path.read_text())
            cur = cls(int(d["offset"]), None if d.get("attempted") is None else int(d["attempted"]), d.get("inode"),
                      d.get("head"))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return cls(st.st_size if st else 0, None, inode)  # new relay: alerts from now on
        if cur.inode is None:  # a state saved before the file existed (or before inodes were kept)
            return cls(cur.offset if st and cur.offset <= st.st_size else 0, cur.attempted, inode)
        return cur  # the relay finds the file (``locate``): live, rotated, or gone

    def locate(self, events: Path) -> Path | None:
        """The file this cursor's offsets belong to, or None when it is gone (replaced, or rotated and deleted)."""
        for p in reversed(chain(events)):
            try:
                st = p.stat()
                if st.st_ino != self.inode or (self.head and not _head(p).startswith(self.head)):
                    continue
            except FileNotFoundError:
                continue
            if self.offset > st.st_size:  # truncated in place: all of it is new
                self.offset, self.attempted = 0, None
            return p
        return None

    def move_to(self, p: Path) -> bool:
        """Point at the start of ``p``; False when it vanished meanwhile."""
        try:
            self.inode, self.offset, self.attempted, self.head = p.stat().st_ino, 0, None, None
        except FileNotFoundError:
            return False
        return True

    def save(self, path: Path, file: Path | None = None) -> None:
        if file is not None and self.head is None:
            try:
                self.head = _head(file) or None
            except FileNotFoundError:
                pass
        atomic_write_bytes(path, json.dumps({"offset": self.offset, "attempted": self.attempted,
                                             "inode": self.inode, "head": self.head}).encode())


class Relay:
    """``events.jsonl`` -> one notifier. ``wake()`` after a line is appended (cheap: sets an event);
    ``close(flush_s)`` keeps delivering until caught up or ``flush_s`` passed, then returns the counts."""

    def __init__(self, notifier: Notifier, events: Path, state: Path, max_age: float | None = None):
        self.notifier, self.events, self.state_path, self.max_age = notifier, Path(events), Path(state), max_age
        self.cursor = Cursor.load(self.state_path, self.events)
        self.stats = {"delivered": 0, "retried": 0, "expired": 0, "skipped_lines": 0, "files_gone": 0,
                      "connects": 0, "failures": 0}
        self.last_error: str | None = None
        self.connected = False
        self._wake, self._stop = threading.Event(), threading.Event()
        self._deadline = float("inf")
        self._thread = threading.Thread(target=self._run, name=f"edgead-notify-{notifier.description}", daemon=True)

    def start(self) -> Relay:
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def pending(self) -> int:
        """Complete lines after the cursor (not yet delivered), in its file and the newer ones."""
        here = self._file()
        files = chain(self.events)
        if here is None:
            return sum(self._lines(p, 0) for p in files)
        after = files[files.index(here) + 1:] if here in files else []
        return self._lines(here, self.cursor.offset) + sum(self._lines(p, 0) for p in after)

    @staticmethod
    def _lines(p: Path, offset: int) -> int:
        try:
            with open(p, "rb") as f:
                f.seek(offset)
                return f.read().count(b"\n")
        except FileNotFoundError:
            return 0

    def close(self, flush_s: float = 5.0) -> dict:
        self._deadline = time.monotonic() + flush_s
        self._stop.set()
        self._wake.set()
        self._thread.join(flush_s + 1.0)  # a send still in progress is sent again (a retry) by the next run
        return self.summary()

    def summary(self) -> dict:
        return {"notify": self.notifier.description, **self.stats, "pending": self.pending(),
                "connected": self.connected, "last_error": self.last_error}

    # the thread -----------------------------------------------------------------------------------------
    def _file(self) -> Path | None:
        """The file the cursor is in (None: gone, or the log not yet created)."""
        if self.cursor.inode is None:  # saved before the log existed: it is the live file, from its start
            return self.events if self.cursor.move_to(self.events) else None
        return self.cursor.locate(self.events)

    def _next_line(self) -> tuple[bytes, int] | None:
        """The next complete line and the offset after it; follows the cursor into the next file when a rotated
        one is done."""
        while True:
            here = self._file()
            if here is None:
                if self.cursor.inode is None:
                    return None  # no log yet
                files = [p for p in chain(self.events) if p.exists()]
                if not files or not self.cursor.move_to(files[0]):
                    return None
                self.stats["files_gone"] += 1  # rotated away and deleted before delivery (or replaced)
                self.cursor.save(self.state_path, files[0])
                continue
            try:
                with open(here, "rb") as f:
                    if os.fstat(f.fileno()).st_ino != self.cursor.inode:
                        continue  # rotated between locating and opening it: locate it again
                    f.seek(self.cursor.offset)
                    line = f.readline()
            except FileNotFoundError:
                continue
            if line.endswith(b"\n"):
                return line, self.cursor.offset + len(line)
            if here == self.events:
                return None  # nothing new, or a line still being written
            # a rotated file is complete: a torn tail is a crash's, then on to the next file
            self.stats["skipped_lines"] += bool(line)
            files = chain(self.events)
            nxt = files[files.index(here) + 1] if here in files else self.events
            if not self.cursor.move_to(nxt):
                return None  # the live file is being replaced right now
            self.cursor.save(self.state_path, nxt)

    def _give_up(self) -> bool:
        return self._stop.is_set() and time.monotonic() >= self._deadline

    def _run(self) -> None:
        wait = BACKOFF_S[0]
        try:
            while not self._give_up():
                got = self._next_line()
                if got is None:
                    if self._stop.is_set():
                        return  # caught up
                    self._wake.wait(0.5)
                    self._wake.clear()
                    if self.connected:
                        self._guard(self.notifier.idle)
                    continue
                line, end = got
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a torn line from a power cut: not an alert
                    self.stats["skipped_lines"] += 1
                    self._advance(end)
                    continue
                if self.max_age is not None and time.time() - float(record.get("unix", time.time())) > self.max_age:
                    self.stats["expired"] += 1
                    self._advance(end)
                    continue
                if not self.connected and not self._guard(self._connect):
                    self._sleep(wait)
                    wait = min(wait * 2, BACKOFF_S[1])
                    continue
                retry = self.cursor.attempted == self.cursor.offset
                if not retry:
                    self.cursor.attempted = self.cursor.offset
                    self._save()
                if self._guard(lambda r=record, t=retry: self.notifier.send({**r, "retry": t})):
                    self.stats["delivered"] += 1
                    self.stats["retried"] += retry
                    self.cursor.attempted = None
                    self._advance(end)
                    wait = BACKOFF_S[0]
                else:
                    self._sleep(wait)
                    wait = min(wait * 2, BACKOFF_S[1])
        finally:
            self._guard(self.notifier.close)
            self.connected = False

    def _connect(self) -> None:
        self.notifier.connect()
        self.connected = True
        self.stats["connects"] += 1

    def _guard(self, fn) -> bool:
        """Run ``fn``; a :class:`NotifierDown` (or a socket error) marks the notifier down and returns False."""
        try:
            fn()
            return True
        except (NotifierDown, OSError) as e:
            self.stats["failures"] += 1
            self.last_error = f"{type(e).__name__}: {e}" if not isinstance(e, NotifierDown) else str(e)
            if self.connected:
                self.connected = False
                try:
                    self.notifier.close()
                except (NotifierDown, OSError):
                    pass
            return False

    def _advance(self, end: int) -> None:
        self.cursor.offset = end
        self._save()

    def _save(self) -> None:
        """The cursor to its state file; its file located only while the cursor has not recorded its first bytes."""
        self.cursor.save(self.state_path, self._file() if self.cursor.head is None else None)

    def _sleep(self, s: float) -> None:
        """Back-off that a stop cuts short only when the flush time is over."""
        until = time.monotonic() + s
        while time.monotonic() < until and not self._give_up():
            time.sleep(min(0.1, max(0.0, until - time.monotonic())))
