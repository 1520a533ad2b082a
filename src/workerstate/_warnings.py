"""Carry the parent's warning filters to workers without importing what they name.

A filter holds a warning category class. Pickling the class would import its module in every
worker (``sklearn.exceptions.ConvergenceWarning`` imports scikit-learn), so categories outside
``builtins`` travel by name. In the worker a category whose module is already imported is used
as is; otherwise a placeholder class stands in, and resolves the real class by name the first
time a warning is matched against it, i.e. only once the module has been imported anyway.
"""

from __future__ import annotations

import re
import sys
import threading
import warnings
from typing import Any

__all__ = [
    "FilterState",
    "capture_filters",
    "install_filters",
    "keep_showwarning",
    "lazy_category",
]

# (action, message pattern, message flags, category, module pattern, module flags, lineno);
# category is a builtin class or a (module, qualname) pair.
PortableFilter = tuple[str, str | None, int, type | tuple[str, str], str | None, int, int]
FilterState = tuple[PortableFilter, ...]

_filters_mutated = getattr(warnings, "_filters_mutated", None)
# Python 3.14 can keep filters in a context variable (``sys.flags.context_aware_warnings``);
# then ``warnings.filters`` is not what is consulted and only the public context manager
# installs filters correctly.
_CONTEXT_AWARE = bool(getattr(sys.flags, "context_aware_warnings", False))
_FAST_PATH = _filters_mutated is not None and not _CONTEXT_AWARE
#: :mod:`warnings` when the active filters are ``warnings.filters`` itself, which a task may
#: replace or change in place; None when they are not (context-aware warnings). The checks
#: between two tasks of a batch compare ``FILTERS_MODULE.filters`` inline.
FILTERS_MODULE = warnings if _FAST_PATH else None


def _active_filters() -> list[Any]:  # the filter tuples, typed loosely as warnings does
    # Python 3.14 reads the filters of the current context through a private accessor; older
    # versions only have the module-level list.
    getter = getattr(warnings, "_get_filters", None)
    if _CONTEXT_AWARE and getter is not None:
        return list(getter())
    return warnings.filters  # type: ignore[return-value]


class _LazyCategoryMeta(type):
    """Metaclass of the placeholders: ``issubclass(C, placeholder)`` asks the real class."""

    _ws_target: tuple[str, str]

    def __subclasscheck__(cls, subclass: type) -> bool:
        real = _resolve(cls._ws_target)
        if real is None:
            # The module that defines the category is not imported, so no warning of that
            # category (or of a subclass of it) can have been raised.
            return type.__subclasscheck__(cls, subclass)
        return issubclass(subclass, real)

    def __instancecheck__(cls, instance: Any) -> bool:
        return cls.__subclasscheck__(type(instance))

    def __reduce__(cls) -> tuple[Any, ...]:
        return lazy_category, cls._ws_target


_LAZY: dict[tuple[str, str], type] = {}
_LAZY_LOCK = threading.Lock()


def lazy_category(module: str, qualname: str) -> type:
    """The placeholder for the warning category ``module.qualname`` (one per name).

    Examples
    --------
    >>> cat = lazy_category("json", "NoSuchWarning")
    >>> issubclass(UserWarning, cat)
    False
    >>> issubclass(DeprecationWarning, lazy_category("builtins", "Warning"))
    True
    """
    key = (module, qualname)
    with _LAZY_LOCK:
        cls = _LAZY.get(key)
        if cls is None:
            cls = _LazyCategoryMeta(qualname.rpartition(".")[2], (Warning,), {"_ws_target": key})
            cls.__module__ = __name__
            _LAZY[key] = cls
        return cls


def _resolve(target: tuple[str, str]) -> type | None:
    module = sys.modules.get(target[0])
    if module is None:
        return None
    obj: Any = module
    try:
        for part in target[1].split("."):
            obj = getattr(obj, part)
    except AttributeError:
        return None
    return obj if isinstance(obj, type) else None


def _portable_category(category: Any) -> type | tuple[str, str]:
    if isinstance(category, _LazyCategoryMeta):
        return category._ws_target
    module = getattr(category, "__module__", "builtins")
    if module == "builtins":
        return category  # type: ignore[no-any-return]
    return (module, category.__qualname__)


# dask's distributed pickles a task a second time, with cloudpickle, whenever the standard
# pickle of it contains b"__main__" (Python's default filters name that module), which would
# send every task's arguments twice. Such a pattern travels reversed, marked by a bit that no
# re flag uses.
_REVERSED = 1 << 30
_MAIN = "__main__"


def _pattern(regex: Any) -> tuple[str | None, int]:
    if regex is None:
        return None, 0
    if isinstance(regex, str):  # some code inserts raw strings into warnings.filters
        pattern, flags = regex, 0
    else:
        pattern, flags = regex.pattern, regex.flags
    if _MAIN in pattern:
        return pattern[::-1], flags | _REVERSED
    return pattern, flags


def _compiled(pattern: str, flags: int) -> re.Pattern[str]:
    if flags & _REVERSED:
        pattern, flags = pattern[::-1], flags & ~_REVERSED
    return re.compile(pattern, flags)


class _CaptureCache(threading.local):
    raw: tuple[Any, ...] | None = None
    portable: FilterState = ()


_capture_cache = _CaptureCache()


def capture_filters() -> FilterState:
    """The active warning filters in a picklable form that names categories by string.

    Repeated captures of unchanged filters return the same object, so snapshots can tell
    "unchanged" by identity.
    """
    raw = tuple(_active_filters())
    cache = _capture_cache
    if raw == cache.raw:
        return cache.portable
    portable: list[PortableFilter] = []
    for action, message, category, module, lineno in raw:
        msg, msg_flags = _pattern(message)
        mod, mod_flags = _pattern(module)
        portable.append(
            (action, msg, msg_flags, _portable_category(category), mod, mod_flags, lineno)
        )
    cache.raw = raw
    cache.portable = tuple(portable)
    return cache.portable


def live_filters(state: FilterState) -> list[tuple[Any, ...]]:
    """Turn a captured filter state back into entries for ``warnings.filters``."""
    live = []
    for action, msg, msg_flags, category, mod, mod_flags, lineno in state:
        if isinstance(category, tuple):
            category = _resolve(category) or lazy_category(*category)
        live.append(
            (
                action,
                None if msg is None else _compiled(msg, msg_flags),
                category,
                None if mod is None else _compiled(mod, mod_flags),
                lineno,
            )
        )
    return live


# The process-wide ``warnings.showwarning`` hook and the function it replaced. Leaving a
# ``catch_warnings`` block puts back the ``showwarning`` found on entering it, which predates a
# hook installed inside the block (by the first task a worker runs); that hook must stay.
_kept_showwarning: tuple[Any, Any] | None = None


def keep_showwarning(hook: Any) -> None:
    """Make ``hook`` ``warnings.showwarning`` for the rest of the process.

    Restoring the filters afterwards keeps it, unless what was restored is another function
    than the one ``hook`` replaced (a task's own change is still undone).
    """
    global _kept_showwarning
    _kept_showwarning = (warnings.showwarning, hook)
    warnings.showwarning = hook


def install_filters(live: list[tuple[Any, ...]]) -> Any:
    """Make ``live`` the active filters; return a token for :func:`uninstall_filters`.

    When the active filters already equal ``live`` (always so for threads of the parent
    process) nothing is written, so threads do not race; the token then remembers the
    filters' content to undo a task that changes them itself.
    """
    if _FAST_PATH:
        current = warnings.filters
        if current == live:
            return (current, tuple(current))
        # A fresh list per task: a task that adds a filter changes only its own copy.
        warnings.filters = list(live)
        _filters_mutated()  # type: ignore[misc]
        return (current, None)
    manager = warnings.catch_warnings()
    manager.__enter__()
    warnings.resetwarnings()
    for action, message, category, module, lineno in live:
        warnings.filterwarnings(
            action,
            message.pattern if message is not None else "",
            category,
            module.pattern if module is not None else "",
            lineno,
            append=True,
        )
    return manager


def uninstall_filters(token: Any) -> None:
    """Undo :func:`install_filters`."""
    if isinstance(token, warnings.catch_warnings):
        token.__exit__(None, None, None)
        kept = _kept_showwarning
        if kept is not None and warnings.showwarning is kept[0]:
            warnings.showwarning = kept[1]
        return
    prior, content = token
    if content is not None:
        if warnings.filters is prior and len(prior) == len(content) and tuple(prior) == content:
            return
        prior[:] = content
    warnings.filters = prior
    _filters_mutated()  # type: ignore[misc]


def filters_equal(live: list[tuple[Any, ...]]) -> bool:
    """Whether the active filters are ``live`` (list comparison short-cuts on identity)."""
    return (warnings.filters if _FAST_PATH else _active_filters()) == live


def reinstall_filters(live: list[tuple[Any, ...]], token: Any) -> Any:
    """Make ``live`` active again after a task changed the filters; returns the new token."""
    if _FAST_PATH:
        warnings.filters = list(live)
        _filters_mutated()  # type: ignore[misc]
        return token
    uninstall_filters(token)
    return install_filters(live)
