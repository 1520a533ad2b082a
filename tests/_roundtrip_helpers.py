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
