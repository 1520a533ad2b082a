"""Locate the part of an object that cannot be pickled, and say what to do about it."""

from __future__ import annotations

import functools
import io
import types
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["advice_for", "describe_failure", "find_unpicklable"]

_MAX_DEPTH = 12
_MAX_CHILDREN = 2000


def _children(obj: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, dict):
        for i, (key, val) in enumerate(obj.items()):
            if i >= _MAX_CHILDREN:
                return
            yield f"[{key!r}]", val
            yield f".keys()[{i}]", key
    elif isinstance(obj, (list, tuple)):
        for i, val in enumerate(obj[:_MAX_CHILDREN]):
            yield f"[{i}]", val
    elif isinstance(obj, (set, frozenset)):
        for i, val in enumerate(obj):
            if i >= _MAX_CHILDREN:
                return
            yield f"<item {i}>", val
    elif isinstance(obj, functools.partial):
        yield ".func", obj.func
        for i, val in enumerate(obj.args):
            yield f".args[{i}]", val
        for key, val in obj.keywords.items():
            yield f".keywords[{key!r}]", val
    elif isinstance(obj, types.FunctionType):
        for cell_name, cell in zip(obj.__code__.co_freevars, obj.__closure__ or (), strict=False):
            try:
                yield f".<closure {cell_name}>", cell.cell_contents
            except ValueError:  # an empty cell
                continue
    else:
        state = getattr(obj, "__dict__", None)
        if isinstance(state, dict):
            yield from ((f".{key}", val) for key, val in list(state.items())[:_MAX_CHILDREN])
        for slot in getattr(type(obj), "__slots__", ()) or ():
            if isinstance(slot, str) and hasattr(obj, slot):
                yield f".{slot}", getattr(obj, slot)


def find_unpicklable(
    obj: Any, dumps: Callable[[Any], bytes], root: str = "value"
) -> tuple[str, Any, BaseException] | None:
    """Return ``(path, part, error)`` for the deepest part of ``obj`` that fails ``dumps``.

    Returns ``None`` when ``obj`` pickles. The path is written like Python code starting at
    ``root``, e.g. ``value['lock']`` or ``value.model._lock``.

    Examples
    --------
    >>> import pickle, threading
    >>> path, part, error = find_unpicklable({"a": 1, "lock": threading.Lock()}, pickle.dumps)
    >>> path
    "value['lock']"
    """
    seen: set[int] = set()

    def visit(node: Any, path: str, depth: int) -> tuple[str, Any, BaseException] | None:
        try:
            dumps(node)
        except Exception as exc:  # any failure is what we are looking for
            error: BaseException = exc
        else:
            return None
        if depth < _MAX_DEPTH and id(node) not in seen:
            seen.add(id(node))
            for label, child in _children(node):
                found = visit(child, path + label, depth + 1)
                if found is not None:
                    return found
        return path, node, error

    return visit(obj, root, 0)


def _type_name(obj: Any) -> str:
    cls = type(obj)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def advice_for(part: Any) -> str:
    """One sentence on why ``part`` cannot travel to a worker and what to do instead."""
    import socket
    import threading

    lock_types = (
        type(threading.Lock()),
        type(threading.RLock()),
        threading.Condition,
        threading.Event,
    )
    if isinstance(part, lock_types):
        return (
            "Locks and other synchronisation objects belong to one process; create a new one "
            "in the setter (or in the task) instead of sending it."
        )
    if isinstance(part, (io.IOBase, socket.socket)):
        return (
            "Open files and sockets cannot cross process boundaries; send the path or address "
            "and open it in the setter (or in the task)."
        )
    if isinstance(part, types.GeneratorType):
        return "Generators cannot be pickled; send a list, or the arguments to rebuild it."
    if isinstance(part, types.ModuleType):
        return (
            "Modules are not pickled by value; send the module's name and import it in the setter."
        )
    if type(part).__module__ == "sqlite3" or "connection" in type(part).__name__.lower():
        return (
            "Database connections cannot cross process boundaries; send the connection "
            "parameters and connect in the setter (or in the task)."
        )
    return (
        "Make the callback return plain data (numbers, strings, dicts, importable objects) and "
        "rebuild anything else in the setter."
    )


def describe_failure(path: str, part: Any, error: BaseException) -> str:
    """A readable account of one pickling failure found by :func:`find_unpicklable`."""
    return (
        f"{path} is a {_type_name(part)} that cannot be pickled "
        f"({type(error).__name__}: {error}). {advice_for(part)}"
    )
