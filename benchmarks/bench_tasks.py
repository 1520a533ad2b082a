"""What the benchmark's workers run and the state they check; importable, so no task
function is shipped by value."""

from __future__ import annotations

import functools
import gc
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import sklearn

MARKER = "workerstate-bench-marker"
#: The custom registered state; ``None`` until a setter runs in this process.
STATE: dict[str, object] | None = None


def get_state() -> dict[str, object] | None:
    return STATE


def set_state(value: dict[str, object] | None) -> None:
    global STATE
    STATE = value


def state_callback() -> tuple[object, object]:
    return STATE, set_state


def sklearn_callback() -> tuple[object, object]:
    return sklearn.get_config(), _set_sklearn


def _set_sklearn(config: dict[str, object]) -> None:
    sklearn.set_config(**config)


def seen(token: str) -> int:
    """Bit mask of the propagated state this task sees: 1 sklearn, 2 custom, 4 warnings."""
    mask = 1 if sklearn.get_config()["assume_finite"] else 0
    state = STATE
    if state is not None and state["token"] == token:
        mask |= 2
    first = warnings.filters[0] if warnings.filters else None
    if first is not None and first[1] is not None and first[1].pattern == MARKER:
        mask |= 4
    return mask


def trivial(token: str) -> int:
    return seen(token)


def busy(token: str, seconds: float = 0.005) -> int:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return seen(token)


# -- many callbacks: each one carries a slot of its own -------------------------------------------
#: Values of the extra callbacks; ``None`` until their setters run in this process.
SLOTS: list[object] = []


def set_slot(index: int, value: object) -> None:
    if index >= len(SLOTS):  # a worker that has not seen the slots yet
        SLOTS.extend([None] * (index + 1 - len(SLOTS)))
    SLOTS[index] = value


class SlotCallback:
    """The registered callback of slot ``index``: an instance of an importable class, so the
    workers get it by reference, like a module-level function."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __call__(self) -> tuple[object, Callable[[object], None]]:
        # A fresh worker has no slots yet: its own state is None, as in the parent before
        # make_slots().
        value = SLOTS[self.index] if self.index < len(SLOTS) else None
        return value, functools.partial(set_slot, self.index)


def make_slots(count: int) -> list[SlotCallback]:
    """``count`` slot callbacks, every slot set to ``None``."""
    SLOTS[:] = [None] * count
    return [SlotCallback(i) for i in range(count)]


def set_slots(token: str) -> None:
    SLOTS[:] = [token] * len(SLOTS)


def trivial_slots(token: str) -> int:
    """:func:`seen`, plus 8 when this process has slots and every one holds ``token``."""
    mask = seen(token)
    # count() compares every slot whatever it holds, so the check costs a task about the
    # same (within 0.05 us) with the slots set or not; all() would stop at the first slot
    # of a worker without them and make plain joblib's tasks the cheaper ones.
    if SLOTS and SLOTS.count(token) == len(SLOTS):
        mask |= 8
    return mask


# -- counting the bytes that dask's comms write ---------------------------------------------------
SENT = {"bytes": 0}


def count_tcp_writes() -> int:
    """Wrap ``distributed.comm.tcp.TCP.write`` in this process (once) so that it adds up the
    bytes of every message it sends; returns the process id."""
    from distributed.comm import tcp

    if not getattr(tcp.TCP.write, "_counting", False):
        original = tcp.TCP.write

        async def write(self: Any, *args: Any, **kwargs: Any) -> int:
            nbytes: int = await original(self, *args, **kwargs)
            SENT["bytes"] += nbytes
            return nbytes

        write._counting = True  # type: ignore[attr-defined]
        tcp.TCP.write = write  # type: ignore[method-assign]
    return os.getpid()


def bytes_sent() -> int:
    return SENT["bytes"]


def collect_garbage(hold: float) -> int:
    """Collect this worker's garbage, then stay busy for ``hold`` seconds so that the other
    tasks of the same call go to the other workers."""
    gc.collect()
    time.sleep(hold)
    return os.getpid()
