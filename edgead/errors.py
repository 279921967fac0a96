"""The one error type the CLI turns into a one-line message (never a traceback)."""


class EdgeadError(Exception):
    """A user-facing error: the message names the file or value and the fix."""
