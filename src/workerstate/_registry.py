"""The callback registry: which state is captured in the parent.

A registry is a small object with a lock. The module keeps one default instance that the
public functions in :mod:`workerstate.parallel` delegate to; tests snapshot and restore it
rather than rebinding a global dict.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ._errors import CallbackError
from ._text import short

__all__ = [
    "Callback",
    "CallbackRegistry",
    "SideChannel",
    "check_pair",
    "default_name",
    "default_registry",
    "side_channels",
]

#: A callback returns ``(value, setter)``; ``setter(value)`` replays the state.
Callback = Callable[[], "tuple[Any, Callable[[Any], Any]]"]


def default_name(callback: Callable[..., Any]) -> str:
    module = getattr(callback, "__module__", None)
    qualname = getattr(callback, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str) and "<lambda>" not in qualname:
        return f"{module}.{qualname}"
    # Lambdas and callable instances have no stable readable name; id() is the last
    # resort because ids are reused after garbage collection.
    label = qualname if isinstance(qualname, str) else type(callback).__qualname__
    return f"{module or '?'}.{label}@{id(callback):x}"


def check_pair(name: str, result: Any) -> tuple[Any, Callable[[Any], Any]]:
    """``result`` of callback ``name`` as ``(value, setter)``; ``CallbackError`` otherwise."""
    if not (isinstance(result, tuple) and len(result) == 2 and callable(result[1])):
        raise CallbackError(
            f"Parallel callback {name!r} must return a (value, setter) pair with a callable "
            f"setter; got {type(result).__name__} {short(result)}. Return e.g. `return get_config(), _set_config`."
        )
    return result


class _Busy(threading.local):
    """How deep this thread is inside callbacks, setters or captures."""

    depth = 0


BUSY = _Busy()


@contextmanager
def running_callbacks() -> Iterator[None]:
    """Mark this thread as running callbacks or setters: registrations are refused meanwhile."""
    BUSY.depth += 1
    try:
        yield
    finally:
        BUSY.depth -= 1


class CallbackRegistry:
    """An ordered, thread-safe collection of named state callbacks.

    Readers get an immutable tuple of ``(name, callback)`` pairs, so a capture that runs while
    another thread registers or removes a callback never sees a half-changed registry.

    Examples
    --------
    >>> reg = CallbackRegistry()
    >>> def cb():
    ...     return 1, print
    >>> reg.register(cb, name="one")
    'one'
    >>> reg.names()
    ('one',)
    >>> reg.remove("one")
    >>> reg.names()
    ()
    """

    def __init__(
        self,
        kind: str = "parallel callback",
        api: str = "global_parallel_callback",
        expects: str = "a callable that returns (value, setter)",
    ) -> None:
        # Words for error messages, so each registry names its own API.
        self._kind, self._api, self._expects = kind, api, expects
        self._lock = threading.Lock()
        self._items: tuple[tuple[str, Callback], ...] = ()
        # Names registered with check="batch": read once per batch in a worker.
        self._per_batch: frozenset[str] = frozenset()

    def _refuse_if_busy(self, action: str) -> None:
        if BUSY.depth:
            raise RuntimeError(
                f"Cannot {action} a {self._kind} from inside a callback, setter or side "
                f"channel while workerstate captures or installs state; the registry is "
                f"unchanged. Register it before the Parallel call instead."
            )

    def register(self, callback: Callback, name: str | None = None, check: str = "task") -> str:
        """Add ``callback`` under ``name`` (default: ``module.qualname``) and return the name.

        ``check`` is ``"task"`` or ``"batch"``: how often a worker reads the state between
        tasks (see :func:`workerstate.parallel.register_global_parallel_callback`).
        """
        self._refuse_if_busy("register")
        if not callable(callback):
            raise TypeError(
                f"register_{self._api}() needs {self._expects}; "
                f"got {type(callback).__name__} {callback!r}."
            )
        chosen = name is None
        if name is None:
            name = default_name(callback)
        elif not isinstance(name, str):
            raise TypeError(
                f"The registration name must be a str; got {type(name).__name__} {name!r}."
            )
        elif not name:
            raise ValueError("The registration name must not be empty.")
        if check not in ("task", "batch"):
            raise ValueError(
                f"check= of {name or default_name(callback)!r} must be 'task' (read the state "
                f"before every task) or 'batch' (once per batch, for state that tasks leave as "
                f"they found it); got {check!r}. Nothing was registered."
            )
        with self._lock:
            if chosen:
                name = self._free_default(name, callback)
            if any(existing == name for existing, _ in self._items):
                raise ValueError(
                    f"A {self._kind} named {name!r} is already registered. Remove it first "
                    f"with remove_{self._api}({name!r}) or pass another name=."
                )
            self._items = (*self._items, (name, callback))
            if check == "batch":
                self._per_batch = self._per_batch | {name}
        return name

    def _free_default(self, name: str, callback: Callback) -> str:
        # Two closures made by one factory share a qualified name: each callback object
        # gets its own name, with a suffix; the same object again keeps the name it has, so
        # registering it twice still fails.
        taken = dict(self._items)
        candidate, number = name, 1
        while candidate in taken and taken[candidate] is not callback:
            number += 1
            candidate = f"{name}-{number}"
        return candidate

    def remove(self, name: str) -> None:
        """Remove the callback registered under ``name``; ``KeyError`` names unknown ones."""
        self._refuse_if_busy("remove")
        with self._lock:
            items = tuple(item for item in self._items if item[0] != name)
            if len(items) == len(self._items):
                known = ", ".join(repr(n) for n, _ in self._items) or "none"
                raise KeyError(
                    f"No {self._kind} is registered under {name!r}; registered now: {known}."
                )
            self._items = items
            self._per_batch = self._per_batch - {name}

    def per_batch(self) -> frozenset[str]:
        """The names registered with ``check="batch"``."""
        return self._per_batch

    def items(self) -> tuple[tuple[str, Callback], ...]:
        """The registered ``(name, callback)`` pairs, in registration order."""
        return self._items

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(name for name, _ in self._items)

    def get(self, name: str) -> Callback:
        """The callback registered under ``name``."""
        for existing, callback in self._items:
            if existing == name:
                return callback
        raise KeyError(name)

    @contextmanager
    def preserved(self) -> Iterator[CallbackRegistry]:
        """Restore the registrations present on entry when the block ends (for tests)."""
        with self._lock:
            saved, saved_per_batch = self._items, self._per_batch
        try:
            yield self
        finally:
            with self._lock:
                self._items, self._per_batch = saved, saved_per_batch


default_registry = CallbackRegistry()


class SideChannel:
    """A registered round trip: ``capture`` in the parent, ``restore`` in the worker, ``merge``
    back in the parent. Calling it captures."""

    __slots__ = ("capture", "merge", "restore")

    def __init__(
        self,
        capture: Callable[[], Any],
        restore: Callable[[Any], Any],
        merge: Callable[[Any], Any],
    ) -> None:
        for label, func in (("capture", capture), ("restore", restore), ("merge", merge)):
            if not callable(func):
                raise TypeError(
                    f"register_parallel_side_channel() needs a callable {label}; "
                    f"got {type(func).__name__} {func!r}."
                )
        self.capture, self.restore, self.merge = capture, restore, merge

    def __call__(self) -> Any:
        return self.capture()


side_channels = CallbackRegistry(
    kind="parallel side channel",
    api="parallel_side_channel",
    expects="capture, restore and merge callables",
)
