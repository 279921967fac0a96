"""Atomic writes and hashes: nothing already written is lost if a write is interrupted."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temp file beside ``path``, fsync it, then rename over ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _about(e, path) from None
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise _about(e, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_writable(path: str | Path) -> None:
    """Fail now, not after the work, when ``path`` cannot be written: its folder is made and a temp file is
    created and removed there (an OSError naming ``path``, as ``atomic_write_bytes`` would raise later)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(21, "Is a directory", str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent):
            pass
    except OSError as e:
        raise _about(e, path) from None


def _about(e: OSError, path: Path) -> OSError:
    """The same error (its subclass too: ``OSError(errno, ...)`` picks it) naming the file asked for, not its
    temp file: callers that catch OSError still do, and the CLI's one-line message names the right path."""
    return OSError(e.errno, e.strerror, str(path)) if e.errno is not None else e


def finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None (strict JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def json_text(obj: Any) -> str:
    """Strict JSON (NaN and infinities written as null), indented, with a final newline."""
    return json.dumps(finite(obj), indent=2, sort_keys=False, allow_nan=False, default=_plain) + "\n"


def _plain(o: Any) -> Any:
    """numpy scalars and paths, which results sometimes carry, as plain JSON values."""
    if hasattr(o, "item"):
        return finite(o.item())
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_bytes(path, json_text(obj).encode())


def write_json_out(path: str | Path, obj: Any) -> None:
    """A verb's ``--json PATH`` output: ``-`` is standard output, anything else an atomic file write."""
    if str(path) == "-":
        import sys

        sys.stdout.write(json_text(obj))
        sys.stdout.flush()
    else:
        atomic_write_json(path, obj)


@contextlib.contextmanager
def scratch_dir(parent: str | Path, prefix: str) -> Iterator[Path]:
    """A temporary folder ``PARENT/PREFIX<pid>-*`` removed on exit; folders of the same prefix left by a
    process that no longer runs (killed) are removed first, so a kill -9 costs disk only until the
    next run of the same verb."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    clean_stale(parent, prefix)
    with tempfile.TemporaryDirectory(dir=parent, prefix=f"{prefix}{os.getpid()}-") as tmp:
        yield Path(tmp)


def clean_stale(parent: Path, prefix: str) -> list[Path]:
    """Remove ``PREFIX<pid>-*`` folders whose process is gone (and old-style ones without a pid)."""
    removed = []
    for p in parent.glob(f"{prefix}*"):
        pid = p.name[len(prefix):].split("-", 1)[0]
        if p.is_dir() and not (pid.isdigit() and _alive(int(pid))):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_json(path: str | Path) -> Any:
    from edgead.errors import EdgeadError

    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise EdgeadError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise EdgeadError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); restore or regenerate it") from None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
