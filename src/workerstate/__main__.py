"""Command line: ``python -m workerstate demo`` and ``python -m workerstate doctor``."""

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
    doctor = commands.add_parser(
        "doctor",
        help="check on this machine that the registered state reaches the workers",
        description="Run the debugging checklist live: joblib's backend and worker count, a "
        "new worker's start-up and import times, and for each registered callback whether its "
        "value pickles, arrives in a fresh worker and leaks into later plain tasks, and how "
        "long its setter takes. Exits with status 1 when a problem is found.",
    )
    doctor.add_argument(
        "--module",
        action="append",
        default=[],
        metavar="MOD[:FUNC]",
        help="import MOD first, so that it registers its callbacks; with :FUNC also call "
        "MOD.FUNC() in this process (e.g. to change the state as your program does). "
        "Repeatable.",
    )
    doctor.add_argument(
        "--n-jobs", type=int, default=2, help="workers for the live checks, at least 2 (default 2)"
    )
    doctor.add_argument(
        "--backend",
        choices=("loky", "multiprocessing"),
        default="loky",
        help="backend for the live checks (default loky)",
    )
    args = parser.parse_args(argv)
    if args.command == "doctor":
        if args.n_jobs < 2:
            parser.error("--n-jobs must be at least 2 (joblib runs n_jobs=1 in this process)")
        from ._doctor import main as doctor_main

        return doctor_main(args.module, n_jobs=args.n_jobs, backend=args.backend)
    from ._demo import main as demo_main

    return demo_main(args.folds)


if __name__ == "__main__":
    sys.exit(main())
