"""``python -m rees46_loyalty``: the command line, which lives in :mod:`rees46_loyalty.cli`."""

import sys

from .cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
