"""What the benchmark's workers run and the state they check; importable, so no task
function is shipped by value."""

from __future__ import annotations

import gc
import os
import time
import warnings

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


def collect_garbage(hold: float) -> int:
    """Collect this worker's garbage, then stay busy for ``hold`` seconds so that the other
    tasks of the same call go to the other workers."""
    gc.collect()
    time.sleep(hold)
    return os.getpid()
