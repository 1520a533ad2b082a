"""Worker-side functions for ``test_garbage``: watch a worker's cyclic garbage."""

from __future__ import annotations

import gc
import os
import time
import warnings

#: Every how many tasks a task warns, so that the round trip carries something back.
WARN_EVERY = 97


def arm(seconds: float) -> int:
    """Start keeping what this process's cyclic garbage collector finds, instead of freeing
    it; sleep so that the other worker takes the other arming task."""
    gc.collect()
    gc.garbage.clear()
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.disable()
    time.sleep(seconds)
    return os.getpid()


def report(seconds: float) -> tuple[int, bool, list[str]]:
    """(pid, whether :func:`arm` ran here, the workerstate types in the cyclic garbage since);
    then collect normally again."""
    time.sleep(seconds)
    armed = bool(gc.get_debug() & gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return os.getpid(), armed, workerstate_types(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def workerstate_types(objects: list[object]) -> list[str]:
    """The names of the workerstate types among ``objects``."""
    return sorted(
        {
            f"{type(obj).__module__}.{type(obj).__qualname__}"
            for obj in objects
            if type(obj).__module__.split(".")[0] == "workerstate"
        }
    )


def task(i: int, warn: bool) -> int:
    """A task that warns now and then, with ``warn``."""
    if warn and i % WARN_EVERY == 0:
        warnings.warn(f"task {i}", UserWarning, stacklevel=1)
    return i + 1
