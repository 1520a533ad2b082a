"""
Warnings and log records from the workers
=========================================

Warnings and log records from worker processes, handled in the parent.

With ``workerstate.parallel.Parallel``, a warning raised in a worker is
re-issued in the parent under the parent's filters, and a log record is handed
to the parent's logger of the same name, with the worker's process id.
``presets.logging_levels`` gives the workers the parent's logger levels, so
they create the INFO records at all.

Run it from the root of the repository::

    python examples/warnings_and_logs.py
"""

from __future__ import annotations

import logging
import os
import warnings

import _example_helpers as helpers
from workerstate import parallel, presets


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def main() -> None:
    # Start the pool first: state changed before a fork-based pool starts is
    # copied into it.
    parallel.Parallel(n_jobs=2)(
        parallel.delayed(os.getpid)() for _ in range(2)
    )

    handler = ListHandler()
    logger = logging.getLogger("examples.worker")
    logger.addHandler(handler)
    # INFO, not DEBUG: the debug records stay in the workers
    logger.setLevel(logging.INFO)

    with (
        presets.registered(presets.logging_levels),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        pids = parallel.Parallel(n_jobs=2)(
            parallel.delayed(helpers.noisy_task)(i) for i in range(6)
        )

    assert os.getpid() not in pids
    assert [str(w.message) for w in caught] == [
        f"task {i}: few samples, the estimate is rough" for i in (1, 3, 5)
    ]
    assert [r.getMessage() for r in handler.records] == [
        f"task {i} done" for i in range(6)
    ]
    assert all(r.process in pids for r in handler.records)
    print(
        f"{len(caught)} warnings recorded in the parent, "
        f"e.g. {str(caught[0].message)!r}"
    )
    for record in handler.records[:2]:
        print(
            f"log record from worker pid {record.process}: "
            f"{record.getMessage()}"
        )


if __name__ == "__main__":
    main()
