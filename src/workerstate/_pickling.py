"""Locate the part of an object that cannot be pickled, and say what to do about it.

:func:`find_unpicklable` walks an object the way a pickler does (containers, instance state,
what ``__reduce__`` returns, and, for functions pickled by value, their closures and the globals
they use) and returns the deepest part that fails. :func:`classify` names the known trap that
part falls into, and :func:`advice_for` and :func:`describe_failure` turn it into plain words.
Nothing here imports cloudpickle: callers pass the ``dumps`` to test with.
"""

from __future__ import annotations

import functools
import io
import itertools
import linecache
import pickle
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

from ._traps import GENERIC_ADVICE, TRAPS

__all__ = [
    "TRAPS",
    "advice_for",
    "classify",
    "describe_failure",
    "find_unpicklable",
    "find_unpicklable_parts",
    "is_patched_wrapper",
    "lookup",
    "module_of",
    "type_name",
]

_MAX_DEPTH = 12
_MAX_CHILDREN = 2000
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_MISSING = object()


# -- walking an object -----------------------------------------------------------------------
def _code_names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_names(const)


def _function_children(func: types.FunctionType) -> Iterator[tuple[str, Any]]:
    """What a by-value pickler (cloudpickle) sends with a function besides its code."""
    for cell_name, cell in zip(func.__code__.co_freevars, func.__closure__ or (), strict=False):
        try:
            yield f".<closure {cell_name}>", cell.cell_contents
        except ValueError:  # an empty cell
            continue
    names = dict.fromkeys(_code_names(func.__code__))
    for name in itertools.islice(names, _MAX_CHILDREN):
        if name in func.__globals__:
            yield f".<global {name}>", func.__globals__[name]
    for i, default in enumerate(func.__defaults__ or ()):
        yield f".__defaults__[{i}]", default
    for key, default in (func.__kwdefaults__ or {}).items():
        yield f".__kwdefaults__[{key!r}]", default


def _class_children(cls: type) -> Iterator[tuple[str, Any]]:
    """Class attributes that a by-value pickler sends (the methods are part of the class)."""
    for key, val in list(vars(cls).items())[:_MAX_CHILDREN]:
        if key.startswith("__") or isinstance(
            val, (types.FunctionType, staticmethod, classmethod, property)
        ):
            continue
        yield f".{key}", val


def _state_children(state: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(state, dict):
        for key, val in list(state.items())[:_MAX_CHILDREN]:
            yield (f".{key}" if isinstance(key, str) else f".<state {key!r}>"), val
    elif (
        isinstance(state, tuple)
        and len(state) == 2
        and all(part is None or isinstance(part, dict) for part in state)
    ):
        # (__dict__, slots) as copyreg returns it for classes with __slots__
        for part in state:
            yield from _state_children(part)
    elif state is not None:
        yield ".<state>", state


def _reduce_children(obj: Any, by_value: bool) -> Iterator[tuple[str, Any]]:
    """The parts that pickling ``obj`` sends: what its ``__reduce_ex__`` returns."""
    try:
        reduced = obj.__reduce_ex__(_PROTOCOL)
    except Exception:
        return  # obj itself is the failing part
    if not isinstance(reduced, tuple) or len(reduced) < 2:
        return
    args = reduced[1] if isinstance(reduced[1], tuple) else ()
    for i, arg in enumerate(args[:_MAX_CHILDREN]):
        if arg is type(obj):
            # copyreg.__newobj__(cls, ...): a class sent by name is not the problem, while
            # one sent by value (cloudpickle) may hold the failing class attribute.
            if by_value:
                yield ".__class__", arg
            continue
        yield f".<__reduce__ arg {i}>", arg
    if len(reduced) > 2:
        yield from _state_children(reduced[2])
    if len(reduced) > 3 and reduced[3] is not None:
        for i, item in enumerate(itertools.islice(reduced[3], _MAX_CHILDREN)):
            yield f"<item {i}>", item
    if len(reduced) > 4 and reduced[4] is not None:
        for key, val in itertools.islice(reduced[4], _MAX_CHILDREN):
            yield f"[{key!r}]", val


def _children(obj: Any, by_value: bool = True) -> Iterator[tuple[str, Any]]:
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
    elif isinstance(obj, types.MethodType):
        yield ".__self__", obj.__self__
        yield ".__func__", obj.__func__
    elif isinstance(obj, types.FunctionType):
        # Standard pickle sends a function by name: there is nothing inside to blame.
        if by_value:
            yield from _function_children(obj)
    elif isinstance(obj, type):
        if by_value:
            yield from _class_children(obj)
    elif isinstance(obj, (types.ModuleType, types.BuiltinFunctionType)):
        return
    else:
        yield from _reduce_children(obj, by_value)


def find_unpicklable(
    obj: Any, dumps: Callable[[Any], Any], root: str = "value", *, by_value: bool = True
) -> tuple[str, Any, BaseException] | None:
    """Return ``(path, part, error)`` for the deepest part of ``obj`` that fails ``dumps``.

    Returns ``None`` when ``obj`` pickles. The path is written like Python code starting at
    ``root``, e.g. ``value['lock']`` or ``value.model._lock``; parts that have no Python
    spelling appear in angle brackets (``f.<global LOCK>``, ``f.<closure state>``).

    Parameters
    ----------
    obj : object
        What to pickle.
    dumps : callable
        The pickling function to test with, e.g. ``pickle.dumps`` or ``cloudpickle.dumps``.
    root : str
        The name the path starts with.
    by_value : bool
        Whether ``dumps`` sends functions and classes by value (cloudpickle does), so that
        their closures, globals and class attributes are searched too.

    Examples
    --------
    >>> import pickle, threading
    >>> path, part, error = find_unpicklable({"a": 1, "lock": threading.Lock()}, pickle.dumps)
    >>> path
    "value['lock']"
    """
    parts = find_unpicklable_parts(obj, dumps, root, by_value=by_value, limit=1)
    return parts[0] if parts else None


def find_unpicklable_parts(
    obj: Any,
    dumps: Callable[[Any], Any],
    root: str = "value",
    *,
    by_value: bool = True,
    limit: int = 3,
) -> list[tuple[str, Any, BaseException]]:
    """Like :func:`find_unpicklable`, for up to ``limit`` distinct failing parts.

    The walk goes on after the first failing part, so an object that holds a lock and an open
    file reports both, in the order a pickler meets them; an object met twice is reported once.
    Returns an empty list when ``obj`` pickles.

    Examples
    --------
    >>> import pickle, threading
    >>> value = {"a": threading.Lock(), "b": 1, "c": threading.RLock()}
    >>> [path for path, _, _ in find_unpicklable_parts(value, pickle.dumps)]
    ["value['a']", "value['c']"]
    """
    seen: set[int] = set()
    found: list[tuple[str, Any, BaseException]] = []
    found_ids: set[int] = set()

    def visit(node: Any, path: str, depth: int) -> bool:
        """Whether ``node`` fails to pickle; records the deepest failing parts under it."""
        try:
            dumps(node)
        except Exception as exc:  # any failure is what we are looking for
            error: BaseException = exc
        else:
            return False
        inside = False
        if depth < _MAX_DEPTH and id(node) not in seen:
            seen.add(id(node))
            try:
                children = list(_children(node, by_value))
            except Exception:  # a broken __dict__, __reduce__ or iterator: node is the part
                children = []
            for label, child in children:
                if len(found) >= limit:
                    break
                inside = visit(child, path + label, depth + 1) or inside
        # A lock's bound methods (a Condition holds them) are that lock again.
        owner = node.__self__ if isinstance(node, types.BuiltinMethodType) else node
        if not inside and id(owner) not in found_ids and len(found) < limit:
            found_ids.update((id(node), id(owner)))
            found.append((path, node, error))
        return True

    visit(obj, root, 0)
    return found


# -- naming what was found -------------------------------------------------------------------
def type_name(obj: Any) -> str:
    """``module.qualname`` of ``obj``'s type (just the name for builtins).

    Examples
    --------
    >>> import threading
    >>> type_name(threading.Lock()), type_name([])
    ('_thread.lock', 'list')
    """
    cls = type(obj)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def lookup(module: str, qualname: str) -> Any:
    """The object found at ``module.qualname`` in the loaded modules, or a sentinel."""
    target: Any = sys.modules.get(module, _MISSING)
    for name in qualname.split("."):
        if target is _MISSING:
            break
        target = getattr(target, name, _MISSING)
    return target


def _named(obj: Any) -> tuple[str, str] | None:
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str):
        return module, qualname
    return None


def module_of(obj: Any) -> str | None:
    """The module a worker must import to unpickle ``obj`` by name, if it is a function,
    method, class or an instance of a class; ``None`` for builtins."""
    if isinstance(obj, functools.partial):
        obj = obj.func
    if isinstance(obj, types.MethodType):
        obj = obj.__func__
    if not isinstance(obj, (types.FunctionType, type, types.BuiltinFunctionType)):
        obj = type(obj)
    module = getattr(obj, "__module__", None)
    if not isinstance(module, str) or module == "builtins":
        return None
    return module


def _is_replaced(obj: Any) -> bool:
    """A function or class whose name in its (loaded) module now refers to something else."""
    named = _named(obj)
    if named is None or "<locals>" in named[1] or "<lambda>" in named[1]:
        return False
    module, qualname = named
    if module == "__main__" or module not in sys.modules:
        return False
    return lookup(module, qualname) is not obj


_CACHE_WRAPPER = type(functools.lru_cache()(len))


def is_patched_wrapper(obj: Any) -> bool:
    """A wrapper that took the name of the function it wraps at run time.

    ``functools.wraps`` wrappers and ``functools.cache``/``lru_cache`` wrappers assigned over
    a module attribute are pickled by that name, so they arrive in a worker as the original
    function. A decorator applied with ``@`` in the source is no trap (the worker's import
    applies it too); that is told apart by the source line where the wrapped function starts.
    """
    if not isinstance(obj, (types.FunctionType, _CACHE_WRAPPER)):
        return False
    wrapped = getattr(obj, "__wrapped__", None)
    named = _named(obj)
    if not isinstance(wrapped, types.FunctionType) or named is None:
        return False
    module, qualname = named
    if module == "__main__" or "<" in qualname or lookup(module, qualname) is not obj:
        return False
    if isinstance(obj, types.FunctionType) and (
        obj.__code__ is wrapped.__code__ or obj.__code__.co_name == obj.__name__
    ):
        return False
    code = wrapped.__code__
    line = linecache.getline(code.co_filename, code.co_firstlineno).lstrip()
    return line.startswith(("def ", "async def "))


def _lock_types() -> tuple[type, ...]:
    import threading

    return (
        type(threading.Lock()),
        type(threading.RLock()),
        threading.Condition,
        threading.Event,
        threading.Semaphore,
        threading.Barrier,
    )


def _defines_pickling(cls: type) -> bool:
    """Whether Python code in ``cls``'s MRO overrides how it pickles."""
    for klass in cls.__mro__[:-1]:
        for name in ("__reduce_ex__", "__reduce__", "__getstate__"):
            if isinstance(vars(klass).get(name), (types.FunctionType, classmethod, staticmethod)):
                return True
    return False


def classify(part: Any, error: BaseException | None = None) -> str | None:
    """The identifier (a key of :data:`TRAPS`) of the known trap ``part`` falls into, if any.

    Examples
    --------
    >>> import threading
    >>> classify(threading.Lock())
    'lock'
    >>> classify(lambda: 0)
    'lambda'
    >>> classify(42) is None
    True
    """
    import socket

    cls = type(part)
    if isinstance(part, _lock_types()) or cls.__module__ == "multiprocessing.synchronize":
        return "lock"
    if isinstance(part, io.IOBase):
        return "open_file"
    if isinstance(part, socket.socket):
        return "socket"
    if cls.__module__ == "sqlite3" or "connection" in cls.__name__.lower():
        return "db_connection"
    if isinstance(part, (types.GeneratorType, types.AsyncGeneratorType, types.CoroutineType)):
        return "generator"
    if isinstance(part, types.ModuleType):
        return "module"
    if isinstance(part, types.MethodType):
        return classify(part.__func__, error)
    if is_patched_wrapper(part):
        return "patched_wrapper"
    target = part if isinstance(part, (types.FunctionType, type)) else cls
    named = _named(target)
    if named is not None:
        module, qualname = named
        if isinstance(target, types.FunctionType) and (
            "<lambda>" in qualname or "<locals>" in qualname
        ):
            return "lambda"
        if isinstance(target, type) and "<locals>" in qualname:
            return "local_class"
        if module == "__main__":
            return "main_module"
        if _is_replaced(target):
            return "replaced_global"
        if is_patched_wrapper(target):
            return "patched_wrapper"
    if target is cls and _defines_pickling(cls):
        try:
            part.__reduce_ex__(_PROTOCOL)
        except Exception:
            return "reduce_raises"
    return None


def advice_for(part: Any, error: BaseException | None = None) -> str:
    """One sentence or two on why ``part`` cannot travel to a worker and what to do instead.

    Examples
    --------
    >>> import threading
    >>> advice_for(threading.Lock())[:40]
    'Locks and other synchronisation objects '
    """
    trap = classify(part, error)
    return GENERIC_ADVICE if trap is None else TRAPS[trap][1]


def describe_failure(path: str, part: Any, error: BaseException) -> str:
    """A readable account of one pickling failure found by :func:`find_unpicklable`.

    Examples
    --------
    >>> import threading
    >>> print(describe_failure("value['lock']", threading.Lock(), TypeError("no")))
    ... # doctest: +ELLIPSIS
    value['lock'] is a _thread.lock that cannot be pickled (TypeError: no): a lock or ...
    """
    trap = classify(part, error)
    what = f": {TRAPS[trap][0]}." if trap is not None else "."
    advice = GENERIC_ADVICE if trap is None else TRAPS[trap][1]
    return (
        f"{path} is a {type_name(part)} that cannot be pickled "
        f"({type(error).__name__}: {error}){what} {advice}"
    )
