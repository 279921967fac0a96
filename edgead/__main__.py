"""``python -m edgead``: the same command line as ``edgead``."""

from edgead.cli import main

main()
