"""The one error type the CLI turns into a one-line message (never a traceback), and the exit codes.

Exit codes (README): 0 ok; 1 a gate or budget failed (verify, bench --budget-ms, doctor); 2 bad input
or usage (an :class:`EdgeadError`, or a bad option); 3 an internal error (a bug: one line on stderr
naming the file the traceback was saved to); 130 interrupted (Ctrl-C).
"""

import errno
import os

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class EdgeadError(Exception):
    """A user-facing error: the message names the file or value and the fix."""


_FIXES = {
    errno.ENOENT: "check the path (a folder on it may not exist)",
    errno.ENOTDIR: "a part of the path is a file; pass a folder path",
    errno.EEXIST: "a file is in the way; remove it or pass another path",
    errno.EISDIR: "that is a folder; pass a file path",
    errno.EACCES: "check the permissions or pass a writable path",
    errno.EPERM: "check the permissions or pass a writable path",
    errno.EROFS: "the file system is read-only; pass a path on a writable one",
    errno.ENOSPC: "the disk is full; free space and rerun",
    errno.EDQUOT: "the disk quota is used up; free space and rerun",
}


def file_error(e: OSError) -> EdgeadError | None:
    """A file-system error the user can fix (a missing folder, a file in the way, no permission, a full
    disk) as a one-line :class:`EdgeadError` naming its file; None for one that names no file."""
    if e.errno not in _FIXES or e.filename is None:
        return None
    return EdgeadError(f"{e.filename}: {e.strerror or os.strerror(e.errno)}; {_FIXES[e.errno]}")
