"""Alert records that survive a crash or power loss: one JSON line per defect, flushed and fsynced;
saved images are written to a temporary name and renamed."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from edgead.fileio import atomic_write_bytes


class EventLog:
    """Appends one complete JSON line per event. A line is written with a single ``write`` of the
    whole record plus newline, then flushed and fsynced; a reader skips a torn last line (see
    ``read_events``), so a crash mid-write never leaves a half record that counts."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if self.path.stat().st_size:  # a torn line from a crash: end it so the next record starts clean
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    os.write(self._fd, b"\n")

    def append(self, record: dict) -> None:
        os.write(self._fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_events(path: str | Path) -> list[dict]:
    """Complete records only (a torn line from a power cut is skipped)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def save_png(path: Path, rgb: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
