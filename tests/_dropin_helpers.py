"""Worker-side helpers for tests/test_dropin.py: importable, so every backend finds them."""

from __future__ import annotations

import contextvars
import threading
import warnings
from typing import Any

import joblib

RELEASE = threading.Event()
REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="default")
REDUCED = 0  # how often a Counted argument was pickled in this process


def wait_for_release(i: int) -> int:
    RELEASE.wait(10)
    return i


class Counted:
    """A task argument that counts how often it is pickled."""

    def __reduce__(self) -> tuple[Any, ...]:
        global REDUCED
        REDUCED += 1
        return Counted, ()


def takes(arg: Any) -> int:
    return 1


def nested_multiprocessing_warnings(parallel_cls: type[joblib.Parallel]) -> int:
    """In a worker: how often a nested multiprocessing call warns that it cannot nest."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parallel_cls(n_jobs=2, backend="multiprocessing")(joblib.delayed(abs)(-i) for i in range(2))
    return sum("cannot be nested" in str(w.message) for w in caught)


def backend_by_name_in_a_worker() -> list[int]:
    """In a worker where only some part of workerstate was imported: select it by name."""
    import workerstate._text  # noqa: F401 - any part of the package, as unpickling a task does

    with joblib.parallel_config(backend="workerstate", inner="threading"):
        return list(joblib.Parallel(n_jobs=2)(joblib.delayed(abs)(-i) for i in range(3)))
