"""Objects for the diagnostics tests, and setups for ``python -m workerstate doctor``.

Workers import this module by name, so its globals start at their import-time values there.
The ``setup_*`` functions register callbacks and change the state in the parent only, the way
a program changes it at run time; the doctor runs them with ``--module
tests._diagnose_helpers:setup_...``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from workerstate import parallel

IMPORT_LEVEL = "import-time"
PARENT_LEVEL = "set-in-the-parent"

# -- state for the doctor ---------------------------------------------------------------------
SETTINGS: dict[str, Any] = {"level": IMPORT_LEVEL}


def set_settings(value: dict[str, Any]) -> None:
    SETTINGS.clear()
    SETTINGS.update(value)


def settings_callback() -> tuple[dict[str, Any], Callable[[Any], None]]:
    """Healthy: a copy of the state, and a setter that replaces it."""
    return dict(SETTINGS), set_settings


def _ignore(value: Any) -> None:
    """A setter that forgets to set anything."""


def not_arriving_callback() -> tuple[dict[str, Any], Callable[[Any], None]]:
    """Broken: the setter does not change what the tasks read."""
    return dict(SETTINGS), _ignore


def live_callback() -> tuple[dict[str, Any], Callable[[Any], None]]:
    """Broken: returns the live dict that the setter changes in place, so restoring fails."""
    return SETTINGS, set_settings


LOCKED: dict[str, Any] = {"level": IMPORT_LEVEL}


def set_locked(value: dict[str, Any]) -> None:
    LOCKED.clear()
    LOCKED.update(value)


def locked_callback() -> tuple[dict[str, Any], Callable[[Any], None]]:
    """Broken in the parent after ``setup_unpicklable``: the value holds a lock."""
    return dict(LOCKED), set_locked


PARENT_ONLY = False


def parent_only_callback() -> tuple[dict[str, Any], Callable[[Any], None]]:
    """Broken: works only where ``setup_parent_only`` ran, not in a fresh worker."""
    if not PARENT_ONLY:
        raise LookupError("no state in this process yet")
    return dict(SETTINGS), set_settings


def setup_healthy() -> None:
    parallel.register_global_parallel_callback(settings_callback, name="settings")
    SETTINGS["level"] = PARENT_LEVEL


def setup_unchanged() -> None:
    """Healthy, but the parent's value is the import-time one."""
    parallel.register_global_parallel_callback(settings_callback, name="settings")


def setup_not_arriving() -> None:
    setup_healthy()
    parallel.register_global_parallel_callback(not_arriving_callback, name="forgetful")


def setup_unpicklable() -> None:
    setup_healthy()
    parallel.register_global_parallel_callback(locked_callback, name="locked")
    LOCKED["guard"] = threading.Lock()


def setup_leaky() -> None:
    parallel.register_global_parallel_callback(live_callback, name="live")
    SETTINGS["level"] = PARENT_LEVEL


def setup_parent_only() -> None:
    global PARENT_ONLY
    PARENT_ONLY = True
    parallel.register_global_parallel_callback(parent_only_callback, name="parent-only")
    SETTINGS["level"] = PARENT_LEVEL


def _apply_patch(value: Any) -> None:
    SETTINGS["patched"] = True


def setup_captured() -> None:
    """tpcp's pattern and a callback that returns the value it captured: both deliver, but
    neither can read the worker's own state back."""
    setup_healthy()
    parallel.register_global_parallel_callback(lambda: (None, _apply_patch), name="patch")
    captured = {"level": PARENT_LEVEL}
    parallel.register_global_parallel_callback(
        lambda value=captured: (value, set_settings), name="captured"
    )


# -- objects for the pickling traps -----------------------------------------------------------
class Model:
    """An importable class whose instances hold a lock."""

    def __init__(self) -> None:
        self.coef = [1.0, 2.0]
        self._lock = threading.Lock()


class Holder:
    """An importable class holding whatever it is given."""

    def __init__(self, **attrs: Any) -> None:
        self.__dict__.update(attrs)


class Refuses:
    """A class whose ``__reduce__`` raises."""

    def __reduce__(self) -> Any:
        raise RuntimeError("Refuses objects hold a native handle and cannot be copied")


class Rebuilt:
    """A class whose ``__reduce__`` sends its resource to the constructor."""

    def __init__(self, resource: Any) -> None:
        self.resource = resource

    def __reduce__(self) -> Any:
        return Rebuilt, (self.resource,)


def scale(x: float) -> float:
    """An importable task function, patched by the tests."""
    return 2 * x


def traced(func: Callable[..., Any]) -> Callable[..., Any]:
    """A decorator applied by assignment at run time."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper


@traced
def decorated(x: float) -> float:
    """Decorated in the source: workers get the wrapper too."""
    return x


def square(x: float) -> float:
    """An importable task function, patched with a cache by the tests."""
    return x * x


class Point:
    """An importable class that the tests replace at run time."""

    def __init__(self, x: int) -> None:
        self.x = x


def length(items: Any) -> int:
    """An importable task function."""
    return len(items)


def is_wrapped(func: Any) -> bool:
    """Run in a worker: whether ``func`` arrived as a wrapper."""
    return hasattr(func, "__wrapped__")


def first(items: Any) -> Any:
    """An importable task function."""
    return items[0]


def refuse_pickling(x: Any) -> Any:
    """An importable task function whose own error mentions pickling."""
    raise TypeError("cannot pickle the weather")


# -- setups for the doctor's leak findings -----------------------------------------------------
PLUGINS: dict[str, str] = {"builtin": IMPORT_LEVEL}


def add_plugins(value: dict[str, str]) -> None:
    """A setter that only adds entries: it never removes those the parent or a task added."""
    PLUGINS.update(value)


def plugins_callback() -> tuple[dict[str, str], Callable[[Any], None]]:
    """Returns a copy, as it should; the setter is what is wrong."""
    return dict(PLUGINS), add_plugins


def setup_adds_only() -> None:
    parallel.register_global_parallel_callback(plugins_callback, name="plugins")
    PLUGINS["added-in-the-parent"] = PARENT_LEVEL


TOLERANCE: dict[str, Any] = {"level": IMPORT_LEVEL, "tol": float("nan")}


def set_tolerance(value: dict[str, Any]) -> None:
    TOLERANCE.clear()
    TOLERANCE.update(value)


def tolerance_callback() -> tuple[dict[str, Any], Callable[[Any], None]]:
    """Healthy, with a NaN in the state: a NaN that comes back from a worker is not ``==``
    to any other."""
    return dict(TOLERANCE), set_tolerance


def setup_nan() -> None:
    parallel.register_global_parallel_callback(tolerance_callback, name="tolerance")
    TOLERANCE["level"] = PARENT_LEVEL
