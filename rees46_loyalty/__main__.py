"""``python -m rees46_loyalty demo``: the checkout life cycle, end to end."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m rees46_loyalty", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run a whole order life cycle against the embedded fake API")
    args = parser.parse_args(argv)
    if args.command == "demo":
        print(
            "rees46_loyalty demo: the embedded fake REES46 server is not built yet.\n"
            "Until it lands, see README.md's quick start; the test suite exercises every\n"
            "operation against a real HTTP server on loopback."
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
