"""Worker-side state, callbacks and tasks for the reference-model tests.

Worker processes import this module by name, so ``SLOTS`` starts empty in each of them and
every slot reads as ``IMPORT_VALUE`` until a setter writes it. Three kinds of callback:

- *live*: reads its slot, as ``get_config()`` reads a library's config;
- *captured*: returns the value it was built with, wherever it is called;
- *None-returning*: ``(None, apply)``, where ``apply`` writes a marker into its slot.

Tasks report what they see as exact fingerprints (never compared with ``==``), then may
change live slots and raise.
"""

from __future__ import annotations

import math
import os
import struct
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

IMPORT_VALUE = "import-time"
OTHER_VALUE = "changed-by-task"
#: The slots that live callbacks read; a worker's own value is ``IMPORT_VALUE`` for each.
LIVE = ("live0", "live1", "live2")

SLOTS: dict[str, Any] = {}


def get_slot(name: str) -> Any:
    return SLOTS.get(name, IMPORT_VALUE)


def set_slot(name: str, value: Any) -> None:
    SLOTS[name] = value


def forget_slot(name: str) -> int:
    """Back to the import-time value; returns the PID so a caller can tell it reached all."""
    SLOTS.pop(name, None)
    time.sleep(0.02)
    return os.getpid()


def reset() -> None:
    SLOTS.clear()
    SETTER_CALLS.clear()


class SlotSetter:
    """``setter(value)`` for one slot; picklable by reference."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, value: Any) -> None:
        set_slot(self.name, value)

    def __repr__(self) -> str:
        return f"SlotSetter({self.name!r})"


class LiveCallback:
    """Reads the slot's state where it is called: ``(SLOTS[name], setter)``."""

    __slots__ = ("name", "setter")

    def __init__(self, name: str) -> None:
        self.name = name
        self.setter = SlotSetter(name)

    def __call__(self) -> tuple[Any, SlotSetter]:
        return get_slot(self.name), self.setter

    def __repr__(self) -> str:
        return f"LiveCallback({self.name!r})"


def captured_lambda(name: str, value: Any) -> Callable[[], tuple[Any, Any]]:
    """``lambda v=value: (v, setter)``: the same value in the parent and in every worker."""
    setter = SlotSetter(name)
    return lambda v=value, s=setter: (v, s)


def captured_closure(name: str, value: Any) -> Callable[[], tuple[Any, Any]]:
    """A closure over the value it was built with; travels by value (cloudpickle)."""
    setter = SlotSetter(name)

    def callback() -> tuple[Any, Any]:
        return value, setter

    return callback


def none_callback(name: str, marker: str) -> Callable[[], tuple[None, Any]]:
    """``lambda: (None, apply)``: ``apply`` writes ``marker``, whatever it is given."""

    def apply(_: Any) -> None:
        set_slot(name, marker)

    return lambda: (None, apply)


# -- a live callback whose setter counts its calls (for the threading contract) --------------
SETTER_CALLS: list[Any] = []
_CALLS_LOCK = threading.Lock()


def counting_setter(name: str) -> Callable[[Any], None]:
    def setter(value: Any) -> None:
        with _CALLS_LOCK:
            SETTER_CALLS.append(value)
        set_slot(name, value)

    return setter


def counting_callback(name: str, copy: bool) -> Callable[[], tuple[Any, Any]]:
    """A live callback; with ``copy`` it returns an equal copy of the slot's object each time."""
    setter = counting_setter(name)

    def callback() -> tuple[Any, Any]:
        value = get_slot(name)
        return (dict(value) if copy else value), setter

    return callback


# -- exact fingerprints -----------------------------------------------------------------------
def fingerprint(value: Any) -> Any:
    """What makes two states interchangeable: types, key order, float signs, array bytes."""
    kind = type(value)
    if kind is np.ndarray:
        return ("ndarray", value.dtype.str, value.shape, value.tobytes())
    if kind is float:
        return ("float", repr(value), math.copysign(1.0, value))
    if kind is dict:
        return ("dict", tuple((fingerprint(k), fingerprint(v)) for k, v in value.items()))
    if kind in (list, tuple):
        return (kind.__name__, tuple(fingerprint(x) for x in value))
    return (kind.__name__, repr(value))


def fingerprints(names: Iterable[str]) -> dict[str, Any]:
    return {name: fingerprint(get_slot(name)) for name in names}


def equal_variant(value: Any) -> Any:
    """A new object equal to ``value`` (``==``, element-wise for arrays) that differs from it
    where that is possible: another key order, float sign, number type or dtype."""
    kind = type(value)
    if kind is bool:
        return int(value)
    if kind is int:
        return float(value)
    if kind is float:
        if value == 0:
            return -value
        # Same bits, a new object: NaN keeps its sign.
        copy: float = struct.unpack("d", struct.pack("d", value))[0]
        return copy
    if kind is dict:
        if len(value) > 1:
            return dict(reversed(list(value.items())))
        return {k: equal_variant(v) for k, v in value.items()}
    if kind is list:
        return [equal_variant(x) for x in value]
    if kind is tuple:
        return tuple(equal_variant(x) for x in value)
    if kind is np.ndarray:
        other = {"int32": "int64", "int64": "int32", "float32": "float64", "float64": "float32"}
        return value.astype(other.get(value.dtype.name, "int8"))
    return value


# -- tasks ------------------------------------------------------------------------------------
class TaskFailedError(Exception):
    """Raised by a task after it changed the state; carries what the task saw."""


def task(
    i: int, names: Iterable[str], changes: dict[str, Any] | None = None, fail: bool = False
) -> dict[str, Any]:
    """Report the named slots, then write ``changes`` into them, then raise if ``fail``."""
    seen = {"i": i, "pid": os.getpid(), "slots": fingerprints(names)}
    for name, value in (changes or {}).items():
        set_slot(name, value)
    if fail:
        raise TaskFailedError(seen)
    return seen


def report(i: int, names: Iterable[str], delay: float = 0.02) -> dict[str, Any]:
    """What a plain task sees; the delay lets every worker of a pool take a task."""
    time.sleep(delay)
    return task(i, names)


def plant(name: str, value: Any) -> int:
    """Give this worker its own state for ``name``, as if its own code had set it."""
    set_slot(name, value)
    time.sleep(0.02)
    return os.getpid()


def caught(inner: tuple[Any, tuple[Any, ...], dict[str, Any]], names: Iterable[str]) -> Any:
    """Run a ``delayed`` task here, catch its ``TaskFailedError``, and report the state after it:
    the next code this worker runs sees that state."""
    func, args, kwargs = inner
    try:
        seen, error = func(*args, **kwargs), None
    except TaskFailedError as exc:
        seen, error = exc.args[0], "TaskFailedError"
    return {"pid": os.getpid(), "seen": seen, "error": error, "after": fingerprints(names)}


def changed_and_put_back(i: int, names: Iterable[str]) -> dict[str, Any]:
    """Report the named slots, change them, report again, and put them back, as a task that
    uses a context manager does."""
    seen = {"i": i, "pid": os.getpid(), "slots": fingerprints(names)}
    before = {name: get_slot(name) for name in names}
    for name in before:
        set_slot(name, OTHER_VALUE)
    seen["inside"] = fingerprints(names)
    for name, value in before.items():
        set_slot(name, value)
    return seen
