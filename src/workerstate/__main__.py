"""Command line: ``python -m workerstate demo``."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m workerstate`` and of the ``workerstate`` script."""
    parser = argparse.ArgumentParser(
        prog="python -m workerstate",
        description="Run-time state that follows tasks into joblib's worker processes.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="show what joblib workers see with and without workerstate"
    )
    demo.add_argument("--folds", type=int, default=6, help="number of tasks (default 6)")
    args = parser.parse_args(argv)
    from ._demo import main as demo_main

    return demo_main(args.folds)


if __name__ == "__main__":
    sys.exit(main())
