"""``python -m vuer_sync``: the ``vuer-sync`` command (see :mod:`vuer_sync.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
