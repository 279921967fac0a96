"""The one error type the CLI turns into a one-line message (never a traceback), and the exit codes.

Exit codes (README): 0 ok; 1 a gate or budget failed (verify, bench --budget-ms, doctor); 2 bad input
or usage (an :class:`EdgeadError`, or a bad option); 3 an internal error (a bug: one line on stderr
naming the file the traceback was saved to); 130 interrupted (Ctrl-C).
"""

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class EdgeadError(Exception):
    """A user-facing error: the message names the file or value and the fix."""
