"""Readers and setters behind the standard-library and import-path presets of
:mod:`workerstate.presets`: logging levels, environment variables, the decimal context,
context variables and run-time patches.
"""

from __future__ import annotations

import enum
import functools
import importlib
import os
import pickle
import sys
import threading
import types
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

from ._presets_libs import differs

__all__ = [
    "DECIMAL_DEFAULTS",
    "Marker",
    "locate",
    "make_callback",
    "read_context_var",
    "read_decimal_context",
    "read_environ",
    "read_logging_levels",
    "read_patch",
    "set_context_var",
    "set_decimal_context",
    "set_environ",
    "set_logging_levels",
    "set_patch",
    "split_target",
]

PUBLIC_MODULE = "workerstate.presets"


class Marker(str, enum.Enum):
    """Values that stand for "nothing there"; they pickle by name, so identity survives.

    A ``str`` subclass, so that an unchanged capture that holds one is recognised as
    unchanged and reuses the previous snapshot.
    """

    NOT_IMPORTED = "module not imported"
    ABSENT = "attribute absent"
    UNSET = "context variable unset"

    def __repr__(self) -> str:
        return f"<{self.value}>"


def make_callback(
    label: str, read: Callable[[], Any], setter: Callable[[Any], None]
) -> Callable[[], tuple[Any, Callable[[Any], None]]]:
    """A preset callback named ``workerstate.presets.<label>`` that returns ``(read(), setter)``.

    The setter object is the same on every call, so a capture whose value did not change
    reuses the previous snapshot.
    """

    def callback() -> tuple[Any, Callable[[Any], None]]:
        return read(), setter

    callback.__name__ = callback.__qualname__ = label
    callback.__module__ = PUBLIC_MODULE
    return callback


# -- logging -----------------------------------------------------------------------------------
def read_logging_levels() -> dict[str, int]:
    if "logging" not in sys.modules:
        return {}
    import logging

    levels: dict[str, int] = {}
    if logging.root.level != logging.WARNING:
        levels["root"] = logging.root.level
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET:
            levels[name] = logger.level
    return levels


def set_logging_levels(value: dict[str, int]) -> None:
    if not value and "logging" not in sys.modules:
        return
    import logging

    root_level = value.get("root", logging.WARNING)
    if logging.root.level != root_level:
        logging.root.setLevel(root_level)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if (
            isinstance(logger, logging.Logger)
            and name not in value
            and logger.level != logging.NOTSET
        ):
            logger.setLevel(logging.NOTSET)
    for name, level in value.items():
        if name != "root":
            logger = logging.getLogger(name)
            if logger.level != level:
                logger.setLevel(level)


# -- environment variables ---------------------------------------------------------------------
def read_environ(names: tuple[str, ...]) -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in names}


def set_environ(value: dict[str, str | None]) -> None:
    for name, text in value.items():
        if text is None:
            os.environ.pop(name, None)
        elif os.environ.get(name) != text:
            os.environ[name] = text


# -- decimal -----------------------------------------------------------------------------------
#: The settings of ``decimal.DefaultContext`` as Python ships it.
DECIMAL_DEFAULTS: dict[str, Any] = {
    "prec": 28,
    "rounding": "ROUND_HALF_EVEN",
    "Emin": -999999,
    "Emax": 999999,
    "capitals": 1,
    "clamp": 0,
    "traps": ("DivisionByZero", "InvalidOperation", "Overflow"),
}


def read_decimal_context() -> dict[str, Any]:
    if "decimal" not in sys.modules:
        return {}
    import decimal

    context = decimal.getcontext()
    current: dict[str, Any] = {
        key: getattr(context, key) for key in DECIMAL_DEFAULTS if key != "traps"
    }
    current["traps"] = tuple(sorted(sig.__name__ for sig, on in context.traps.items() if on))
    return {key: val for key, val in current.items() if val != DECIMAL_DEFAULTS[key]}


def set_decimal_context(value: dict[str, Any]) -> None:
    if not value and "decimal" not in sys.modules:
        return
    import decimal

    context = decimal.getcontext()
    target = {**DECIMAL_DEFAULTS, **value}
    for key, val in target.items():
        if key == "traps":
            for sig in list(context.traps):
                on = sig.__name__ in val
                if context.traps[sig] != on:
                    context.traps[sig] = on
        elif getattr(context, key) != val:
            setattr(context, key, val)


# -- import paths ------------------------------------------------------------------------------
def split_target(target: str) -> tuple[str, str]:
    """``"pkg.mod:attr.sub"`` or ``"pkg.mod.attr"`` -> ``("pkg.mod", "attr.sub")``.

    Without a colon, the longest dotted prefix that is an imported module is the module;
    if none is imported, the part before the last dot.
    """
    if not isinstance(target, str):
        raise TypeError(f"The target must be a str like 'package.module:attr'; got {target!r}.")
    if ":" in target:
        module, _, attr = target.partition(":")
    else:
        parts = target.split(".")
        module, attr = ".".join(parts[:-1]), parts[-1]
        for i in range(len(parts) - 1, 0, -1):
            if ".".join(parts[:i]) in sys.modules:
                module, attr = ".".join(parts[:i]), ".".join(parts[i:])
                break
    if not module or not attr or not all(p.isidentifier() for p in attr.split(".")):
        raise ValueError(
            f"Cannot split {target!r} into a module and an attribute; write it as "
            f"'package.module:attr' (or 'package.module:Class.attr')."
        )
    return module, attr


def get_path(module: types.ModuleType, attr: str) -> Any:
    """``module.<attr>`` following dots, or :attr:`Marker.ABSENT`."""
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, Marker.ABSENT)
        if obj is Marker.ABSENT:
            break
    return obj


def _owner(module_name: str, attr: str) -> tuple[Any, str]:
    module = sys.modules[module_name]
    *outer, name = attr.split(".")
    owner: Any = module
    for part in outer:
        owner = getattr(owner, part)
    return owner, name


def locate(obj: object) -> tuple[str, str]:
    """The ``(module, attribute)`` under which an imported module holds ``obj``."""
    name = getattr(obj, "name", None)
    hits: list[tuple[str, str]] = []
    for module_name, module in list(sys.modules.items()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        if isinstance(name, str) and namespace.get(name) is obj:
            hits.append((module_name, name))
    if not hits:
        for module_name, module in list(sys.modules.items()):
            namespace = getattr(module, "__dict__", None)
            if isinstance(namespace, dict):
                hits.extend(
                    (module_name, key) for key, val in list(namespace.items()) if val is obj
                )
    if not hits:
        raise ValueError(
            f"{obj!r} is not a module-level variable of an imported module, so worker "
            f"processes cannot find it; define it at module level, or pass its path as "
            f"'package.module:NAME'."
        )
    # Any module that holds it gives the same object; prefer the one that defines it (the
    # shortest name other than __main__, which worker processes may not have).
    hits.sort(key=lambda hit: (hit[0] in ("__main__", "__mp_main__"), len(hit[0]), hit))
    return hits[0]


# -- context variables -------------------------------------------------------------------------
class _Tokens(threading.local):
    def __init__(self) -> None:
        self.by_path: dict[tuple[str, str], list[Token[Any]]] = {}


_TOKENS = _Tokens()
_MAX_TOKENS = 64


def find_context_var(module_name: str, attr: str, *, load: bool) -> ContextVar[Any] | None:
    module = sys.modules.get(module_name)
    if module is None:
        if not load:
            return None
        module = importlib.import_module(module_name)
    var = get_path(module, attr)
    if not isinstance(var, ContextVar):
        raise TypeError(
            f"{module_name}:{attr} is {'missing' if var is Marker.ABSENT else repr(var)} in "
            f"process {os.getpid()}, not a contextvars.ContextVar."
        )
    return var


def read_context_var(module_name: str, attr: str) -> Any:
    var = find_context_var(module_name, attr, load=False)
    return Marker.UNSET if var is None else var.get(Marker.UNSET)


def set_context_var(module_name: str, attr: str, value: Any) -> None:
    var = find_context_var(module_name, attr, load=value is not Marker.UNSET)
    if var is None:
        return
    tokens = _TOKENS.by_path.setdefault((module_name, attr), [])
    if value is Marker.UNSET:
        # Only a token from set() can unset a variable: undo our own sets, newest first.
        while tokens and var.get(Marker.UNSET) is not Marker.UNSET:
            try:
                var.reset(tokens.pop())
            except (ValueError, RuntimeError):  # another context's token, or used already
                continue
        return
    if tokens:
        old = tokens[-1].old_value
        if old is not Token.MISSING and (old is value or not differs(old, value)):
            # Putting back the value that our last set() replaced: reset, so the tokens
            # do not pile up.
            try:
                var.reset(tokens.pop())
            except (ValueError, RuntimeError):
                pass
            else:
                if var.get(Marker.UNSET) is value:
                    return
    tokens.append(var.set(value))
    if len(tokens) > _MAX_TOKENS:
        del tokens[0]


# -- run-time patches --------------------------------------------------------------------------
#: What an attribute held before a setter imported its module, per process, so that
#: restoring the "not imported" state puts it back.
_ORIGINALS: dict[tuple[str, str], Any] = {}


class _Carrier:
    """A patch value that must not be pickled the plain way; compares by the object's identity.

    Unpickles to a carrier of the same type, so the worker's read of the patched attribute
    (also a carrier) compares equal to the value once it is installed.
    """

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Carrier) and type(other) is type(self) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.obj!r})"


class _ByValue(_Carrier):
    """Sends a function by value although it pickles by reference to the patched path.

    ``functools.wraps`` copies the name of the wrapped function, so a wrapper assigned at
    that function's own path pickles as a reference to that path, and a worker would find
    its own, unpatched function there.
    """

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:
        return _load_by_value, (_dumps_by_value(self.obj),)


class _LruCache(_Carrier):
    """Sends a ``functools.lru_cache`` wrapper as the wrapped function and its parameters.

    The C wrapper pickles only by name, which would give the worker its own object. The
    worker's copy starts with an empty cache.
    """

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:
        params = self.obj.cache_parameters()
        return _rebuild_lru_cache, (self.obj.__wrapped__, params["maxsize"], params["typed"])


def _load_by_value(data: bytes) -> _ByValue:
    return _ByValue(pickle.loads(data))


def _rebuild_lru_cache(func: Callable[..., Any], maxsize: int | None, typed: bool) -> _LruCache:
    return _LruCache(functools.lru_cache(maxsize=maxsize, typed=typed)(func))


def _dumps_by_value(func: Any) -> bytes:
    import io

    import cloudpickle

    if not hasattr(cloudpickle.Pickler, "_dynamic_function_reduce"):  # pragma: no cover
        raise pickle.PicklingError(
            f"This cloudpickle ({cloudpickle.__version__}) cannot send {func!r} by value, and "
            f"by reference a worker would find its own, unpatched function; give the "
            f"replacement a name of its own (do not copy the name with functools.wraps)."
        )

    class Pickler(cloudpickle.Pickler):  # type: ignore[misc]
        def reducer_override(self, obj: Any) -> Any:
            if obj is func:
                return self._dynamic_function_reduce(obj)
            return super().reducer_override(obj)

    buffer = io.BytesIO()
    Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(func)
    return buffer.getvalue()


def _named_as(obj: Any, module_name: str, attr: str) -> bool:
    return getattr(obj, "__module__", None) == module_name and (
        getattr(obj, "__qualname__", None) == attr
    )


def portable(obj: Any, module_name: str, attr: str) -> Any:
    """``obj`` as the value of a run-time patch: wrapped when plain pickling would lose it."""
    if _named_as(obj, module_name, attr):
        if isinstance(obj, types.FunctionType) and hasattr(obj, "__wrapped__"):
            return _ByValue(obj)
        if isinstance(obj, functools._lru_cache_wrapper):
            return _LruCache(obj)
    return obj


def read_patch(module_name: str, attr: str) -> Any:
    module = sys.modules.get(module_name)
    if module is None:
        return Marker.NOT_IMPORTED
    return portable(get_path(module, attr), module_name, attr)


def set_patch(module_name: str, attr: str, value: Any) -> None:
    if isinstance(value, _Carrier):
        value = value.obj
    key = (module_name, attr)
    if value is Marker.NOT_IMPORTED:
        if key not in _ORIGINALS or module_name not in sys.modules:
            return
        value = _ORIGINALS[key]
    elif module_name not in sys.modules:
        module = importlib.import_module(module_name)
        _ORIGINALS.setdefault(key, get_path(module, attr))
    owner, name = _owner(module_name, attr)
    if value is Marker.ABSENT:
        if hasattr(owner, name):
            delattr(owner, name)
    elif getattr(owner, name, Marker.ABSENT) is not value:
        setattr(owner, name, value)
