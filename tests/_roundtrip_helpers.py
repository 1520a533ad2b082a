"""What round-trip tests run in workers (importable, so nothing is shipped by value)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

LOG = logging.getLogger("tests.roundtrip")


class RoundTripWarning(UserWarning):
    pass


class TaskFailedError(ValueError):
    pass


def warn_and_log(i: int) -> int:
    import warnings

    warnings.warn(f"warning from task {i}", RoundTripWarning, stacklevel=1)
    LOG.warning("record from task %d", i)
    return i * 10


def warn_then_fail(i: int) -> int:
    import warnings

    warnings.warn(f"warning before failing {i}", RoundTripWarning, stacklevel=1)
    LOG.error("record before failing %d", i)
    raise TaskFailedError(f"task {i} failed")


def pid(i: int = 0) -> int:
    return os.getpid()


# -- a side channel: counts the tasks each worker process ran ---------------------------------
MERGED: list[Any] = []
RESTORED: list[Any] = []


def capture_side() -> str:
    return "from-parent"


@contextmanager
def restore_side(captured: str) -> Iterator[Callable[[], Any]]:
    RESTORED.append(captured)
    yield lambda: (captured, os.getpid())


def merge_side(data: Any) -> None:
    MERGED.append(data)


# -- tasks that log and warn in ways that must not change what they do -----------------------
def log_unformattable(i: int) -> int:
    LOG.warning("%d items", "x")  # logging reports the bad record; the task goes on
    return i


def log_unpicklable(i: int) -> int:
    import threading

    LOG.warning("record %d with a lock", i, extra={"conn": threading.Lock(), "kept": i})
    return i


def log_to_own_file(path: str, i: int) -> int:
    """Log through a handler of the worker's own, on a logger that does not propagate."""
    logger = logging.getLogger("tests.roundtrip.own")
    if not any(getattr(h, "baseFilename", None) == path for h in logger.handlers):
        logger.addHandler(logging.FileHandler(path))
        logger.propagate = False
        logger.setLevel(logging.INFO)
    logger.info("own line %d", i)
    for handler in logger.handlers:
        handler.flush()
    return i


def warn_odd_categories(i: int) -> int:
    import warnings

    # A category that is not a Warning, and ones whose module only the worker has.
    warnings.showwarning(f"int category {i}", int, __file__, 7)  # type: ignore[arg-type]
    worker_only = type("WorkerOnlyWarning", (RoundTripWarning,), {"__module__": "no_such_mod"})
    warnings.warn(f"worker-only category {i}", worker_only, stacklevel=1)
    bare = type("BareWarning", (Warning,), {"__module__": "no_such_mod"})
    warnings.warn(f"bare category {i}", bare, stacklevel=1)
    return i


def flood(start: int, count: int) -> int:
    """Distinct warnings (one text each) and records under distinct logger names."""
    import warnings

    for n in range(start, start + count):
        warnings.warn(f"flood {n}", RoundTripWarning, stacklevel=1)
        if n % 10 == 0:
            logging.getLogger(f"tests.roundtrip.flood.n{n}").warning("flood record %d", n)
    return count


def emit_nothing(i: int) -> int:
    return i


def emit_one_each(i: int) -> int:
    import warnings

    warnings.warn("one warning", RoundTripWarning, stacklevel=1)
    LOG.warning("one record %d", i)
    return i


def where_and_pid(i: int) -> tuple[str, int, int]:
    """Warn and log; return the file name and line of the warning and the worker's pid."""
    import sys
    import warnings

    frame = sys._getframe()
    warnings.warn(f"located {i}", RoundTripWarning, stacklevel=1)
    LOG.warning("located record %d", i)
    return frame.f_code.co_filename, frame.f_lineno - 2, os.getpid()


# -- a __main__ script: tasks defined in it are sent by value ---------------------------------
MAIN_SCRIPT = """
import json, logging, os, sys, warnings

import joblib
from workerstate import parallel


class MainWarning(UserWarning):
    pass


log = logging.getLogger("main.tasks")


def task(i):
    frame = sys._getframe()
    warnings.warn(f"main warning {i}", MainWarning)
    log.warning("main record %d", i)
    return frame.f_code.co_filename, frame.f_lineno - 2, os.getpid()


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.seen = []

    def emit(self, record):
        self.seen.append((record.getMessage(), record.process))


def run(form, make, backend, n):
    tasks = (make(task)(i) for i in range(n))
    if form == "parallel":
        return parallel.Parallel(n_jobs=2, backend=backend)(tasks)
    with joblib.parallel_config(backend="workerstate", inner=backend):
        return joblib.Parallel(n_jobs=2)(tasks)


if __name__ == "__main__":
    handler = Records()
    log.addHandler(handler)
    out = {}
    for backend in ("loky", "multiprocessing"):
        for form in ("parallel", "backend"):
            for name, make in (("workerstate", parallel.delayed), ("joblib", joblib.delayed)):
                handler.seen.clear()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    results = run(form, make, backend, 6)
                mine = [w for w in caught if w.category is MainWarning]
                try:
                    with warnings.catch_warnings():
                        warnings.filterwarnings("error", category=MainWarning, module="__main__")
                        run(form, make, backend, 1)
                    error = None
                except MainWarning as exc:
                    error = str(exc)
                out[f"{backend}-{form}-{name}"] = {
                    "results": sorted(map(list, results)),
                    "warnings": sorted([str(w.message), w.filename, w.lineno] for w in mine),
                    "records": sorted(map(list, handler.seen)),
                    "error": error,
                }
    json.dump({"parent": os.getpid(), "calls": out}, sys.stdout)
"""
