"""The doctor's probes: the tasks its live checks run in worker processes.

In: each callback (pickled), the parent's value. Out: what the worker saw, pickled with
cloudpickle, or the error as text. This module imports only the standard library at import
time: every worker that runs a probe imports it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from ._text import error_text

__all__ = ["probe_fresh", "probe_plain", "probe_setter", "probe_wrapped", "unpack"]


def _pack(result: Any) -> bytes:
    import cloudpickle

    try:
        data: bytes = cloudpickle.dumps(result)
    except Exception as exc:
        data = cloudpickle.dumps({"pid": os.getpid(), "error": f"result: {error_text(exc)}"})
    return data


def _value(value: Any) -> tuple[str, Any]:
    """A value to send back to the parent; its repr when it does not pickle."""
    import cloudpickle

    try:
        cloudpickle.dumps(value)
    except Exception:
        return "repr", repr(value)[:200]
    return "value", value


def _timed_read(callback: Callable[[], Any]) -> tuple[Any, Any, float]:
    start = time.perf_counter()
    value, setter = callback()
    return value, setter, time.perf_counter() - start


def probe_fresh(payload: bytes) -> bytes:
    """Task A: each callback's value in this worker, and how long reading it takes."""
    import cloudpickle

    results: dict[str, Any] = {}
    for name, callback in cloudpickle.loads(payload):
        try:
            value, _, seconds = _timed_read(callback)
        except BaseException as exc:
            results[name] = ("error", error_text(exc))
        else:
            results[name] = ("ok", _value(value), seconds)
    return _pack({"pid": os.getpid(), "results": results})


def probe_wrapped(name: str) -> bytes:
    """Task B (made by workerstate's ``delayed``): the state this task runs under."""
    from ._install import active_snapshot

    snapshot = active_snapshot()
    if snapshot is None:
        return _pack({"pid": os.getpid(), "error": "no workerstate snapshot is installed"})
    for entry_name, _, _, callback in snapshot.entries:
        if entry_name == name:
            try:
                value = callback()[0]
            except BaseException as exc:
                return _pack({"pid": os.getpid(), "error": error_text(exc)})
            return _pack({"pid": os.getpid(), "seen": _value(value)})
    return _pack({"pid": os.getpid(), "error": f"the snapshot has no entry {name!r}"})


def probe_plain(payload: bytes) -> bytes:
    """Task C: the worker's own value after workerstate's tasks. It only reads: a probe that
    set anything would change what the next probe on this worker reads."""
    import cloudpickle

    callback = cloudpickle.loads(payload)
    result: dict[str, Any] = {"pid": os.getpid()}
    try:
        own, _, result["read_seconds"] = _timed_read(callback)
        result["own"] = _value(own)
    except BaseException as exc:
        result["error"] = f"{error_text(exc)} while reading the state"
    return _pack(result)


def probe_setter(payload: bytes) -> bytes:
    """Task D, after the leak checks: time ``setter(parent_value)``, read the state, then
    restore the worker's own value (as read in a fresh worker) and read it again."""
    import cloudpickle

    callback, parent_value, fresh_values = cloudpickle.loads(payload)
    pid = os.getpid()
    result: dict[str, Any] = {"pid": pid}
    stage = "reading the state"
    try:
        _, setter, _ = _timed_read(callback)
        stage = "calling the setter with the parent's value"
        start = time.perf_counter()
        setter(parent_value)
        result["set_seconds"] = time.perf_counter() - start
        stage = "reading the state after the setter"
        result["after_set"] = _value(callback()[0])
        if fresh_values:
            fresh = fresh_values.get(pid, next(iter(fresh_values.values())))
            stage = "restoring the worker's own value"
            setter(fresh)
            result["restored"] = fresh
            result["after_restore"] = _value(callback()[0])
    except BaseException as exc:
        result["error"] = f"{error_text(exc)} while {stage}"
    return _pack(result)


def unpack(data: bytes) -> dict[str, Any]:
    import cloudpickle

    result: dict[str, Any] = cloudpickle.loads(data)
    return result
