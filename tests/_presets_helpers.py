"""Worker-side functions for ``tests/test_presets.py``.

They live in an importable module so that worker processes load them by name rather than
by value. Each returns ``((pid, thread id), what the worker sees)``, after a short pause so that the
tasks of a call spread over the workers. Libraries are imported inside the functions, so
importing this module imports none of them.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

PAUSE = 0.03

#: No default: "unset" is visible to the tasks.
REQUEST_ID: ContextVar[str] = ContextVar("REQUEST_ID")

T = TypeVar("T")
Worker = tuple[int, int]


def _seen(value: T) -> tuple[tuple[int, int], T]:
    """``((pid, thread id), value)``: which worker saw the value."""
    time.sleep(PAUSE)
    return (os.getpid(), threading.get_ident()), value


def pid() -> int:
    return os.getpid()


def sklearn_config() -> tuple[Worker, tuple[bool, int]]:
    import sklearn

    config = sklearn.get_config()
    return _seen((config["assume_finite"], config["working_memory"]))


def pandas_options(*keys: str) -> tuple[Worker, tuple[Any, ...]]:
    import pandas as pd

    return _seen(tuple(pd.get_option(key) for key in keys))


def numpy_state() -> tuple[Worker, tuple[str, int]]:
    import numpy as np

    return _seen((np.geterr()["divide"], np.get_printoptions()["precision"]))


def logger_levels(*names: str) -> tuple[Worker, tuple[int, ...]]:
    import logging

    return _seen(tuple(logging.getLogger(name).level for name in names))


def environ(*names: str) -> tuple[Worker, tuple[str | None, ...]]:
    return _seen(tuple(os.environ.get(name) for name in names))


def blas_threads() -> tuple[Worker, int]:
    import threadpoolctl

    counts = [
        lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"
    ]
    return _seen(min(counts))


def request_id() -> tuple[Worker, str]:
    return _seen(REQUEST_ID.get("<unset>"))


def decimal_state() -> tuple[Worker, tuple[int, str, str]]:
    import decimal

    context = decimal.getcontext()
    return _seen((context.prec, context.rounding, str(decimal.Decimal(2) / 3)))


def loaded(*names: str) -> tuple[Worker, tuple[str, ...]]:
    return _seen(tuple(name for name in names if name in sys.modules))


# -- run-time patches --------------------------------------------------------------------------
def expensive(x: int, log_dir: str) -> int:
    """Records each real execution as a file in ``log_dir``."""
    Path(log_dir, f"{x}-{os.getpid()}-{uuid.uuid4().hex}").touch()
    return x * x


def call_expensive(x: int, log_dir: str) -> tuple[Worker, tuple[str, int]]:
    # Looks ``expensive`` up at call time, as the module's own code would.
    return _seen((type(expensive).__name__, expensive(x, log_dir)))


def square(x: int) -> int:
    return x * x


def call_square(x: int) -> tuple[Worker, tuple[Any, bool]]:
    return _seen((square(x), hasattr(square, "cache_info")))


def tagging(func: Callable[[int], int]) -> Callable[[int], Any]:
    """A decorator that copies the name of the function it wraps."""

    @functools.wraps(func)
    def wrapper(x: int) -> Any:
        return ("tagged", func(x))

    return wrapper


def nested_sklearn_config() -> tuple[Worker, list[tuple[bool, int]]]:
    """A nested call from a worker: its threads see what the outer task saw."""
    import joblib

    from workerstate import parallel

    inner = joblib.Parallel(n_jobs=2, backend="threading")(
        parallel.delayed(sklearn_config)() for _ in range(2)
    )
    return _seen([value for _, value in inner])
