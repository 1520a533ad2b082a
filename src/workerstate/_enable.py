"""The one switch: every joblib call in the process carries the registered state.

In: joblib's backend registry as the program left it. Out, while enabled: every registered
backend that runs tasks (loky, multiprocessing, threading, and dask or Ray when joblib
registers them on first use) is wrapped in :class:`~workerstate.parallel.WorkerStateBackend`,
and the ``"workerstate"`` backend is joblib's default. So a ``joblib.Parallel`` call gets the
state whichever ``delayed`` made its tasks, whichever thread makes it, and whether it names
its backend or not, also inside scikit-learn and tpcp. :func:`disable` puts back the very
factories and the default that were there. Only joblib's public
``register_parallel_backend`` changes the registry.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from . import _joblib
from ._backend import BACKEND_NAME, WorkerStateBackend

__all__ = ["disable", "enable", "enabled", "is_enabled"]

# Backends that run tasks in this very process, one at a time: nothing to carry.
_NOT_WRAPPED = frozenset({"sequential", BACKEND_NAME})


class _Wrapping:
    """A backend factory that wraps what the original factory makes."""

    __slots__ = ("name", "original")

    def __init__(self, name: str, original: Any) -> None:
        self.name = name
        self.original = original

    def __call__(self, *args: Any, **kwargs: Any) -> WorkerStateBackend:
        return WorkerStateBackend(self.original(*args, **kwargs))

    def __repr__(self) -> str:
        return f"<workerstate wrapping of joblib backend {self.name!r}>"


class _DefaultBackend:
    """The factory of the ``"workerstate"`` backend while enabled: wraps ``inner``."""

    __slots__ = ("inner",)

    def __init__(self, inner: str) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> WorkerStateBackend:
        factory = _joblib.backend_factory(self.inner)
        if isinstance(factory, _Wrapping):
            factory = factory.original
        return WorkerStateBackend(self.inner if factory is None else factory(*args, **kwargs))


@dataclass
class _Enabled:
    """What :func:`enable` changed, to put back exactly."""

    inner: str
    default: str
    workerstate_factory: Any
    wrapped: dict[str, Any] = field(default_factory=dict)
    external: dict[str, Any] = field(default_factory=dict)


_lock = threading.RLock()
_state: _Enabled | None = None


def enable(inner: str | None = None) -> None:
    """Make every joblib call in this process carry the registered state.

    Parameters
    ----------
    inner : str, optional
        The backend that runs the tasks of calls that name none. Defaults to joblib's
        default backend at the time of the call (loky unless changed).

    Notes
    -----
    Idempotent and safe to call from any thread; calling it again with another ``inner``
    switches to that one. A backend instance passed to ``joblib.Parallel(backend=...)``
    or ``joblib.parallel_config(backend=...)`` is used as given, since joblib offers no way
    to wrap it: pass its name instead, or use :func:`workerstate.parallel.delayed`.

    Examples
    --------
    >>> import joblib, workerstate
    >>> workerstate.enable()
    >>> joblib.Parallel(n_jobs=2, backend="threading")(joblib.delayed(abs)(-i) for i in range(3))
    [0, 1, 2]
    >>> workerstate.disable()
    """
    global _state
    with _lock:
        if _state is not None:
            if inner is None or inner == _state.inner:
                return
            disable()
        default = _joblib.default_backend_name()
        state = _Enabled(
            inner=inner or default,
            default=default,
            workerstate_factory=_joblib.backend_factory(BACKEND_NAME),
        )
        for name, factory in _joblib.registered_backends().items():
            if name not in _NOT_WRAPPED and not isinstance(factory, _Wrapping):
                state.wrapped[name] = factory
                _joblib.register(name, _Wrapping(name, factory))
        state.external = _joblib.wrap_external_backends(_wrap_registered)
        _joblib.register(BACKEND_NAME, _DefaultBackend(state.inner), make_default=True)
        _state = state


def _wrap_registered(name: str) -> None:
    # Called right after joblib registered ``name`` on first use (dask, ray).
    with _lock:
        factory = _joblib.backend_factory(name)
        if _state is not None and factory is not None and not isinstance(factory, _Wrapping):
            _state.wrapped[name] = factory
            _joblib.register(name, _Wrapping(name, factory))


def disable() -> None:
    """Undo :func:`enable`: joblib's backends and default are exactly what they were.

    Idempotent and safe to call from any thread. A backend that was registered again
    meanwhile by someone else keeps that registration.

    Examples
    --------
    >>> import workerstate
    >>> workerstate.disable()  # nothing to undo
    >>> workerstate.is_enabled()
    False
    """
    global _state
    with _lock:
        state = _state
        if state is None:
            return
        _joblib.unwrap_external_backends(state.external)
        for name, factory in state.wrapped.items():
            if isinstance(_joblib.backend_factory(name), _Wrapping):
                _joblib.register(name, factory)
        _joblib.register(BACKEND_NAME, state.workerstate_factory or WorkerStateBackend)
        default_factory = _joblib.backend_factory(state.default)
        if default_factory is not None:
            _joblib.register(state.default, default_factory, make_default=True)
        _state = None


def is_enabled() -> bool:
    """Whether :func:`enable` is in effect."""
    return _state is not None


@contextmanager
def enabled(inner: str | None = None) -> Iterator[None]:
    """:func:`enable` for the ``with`` block; what was in effect before comes back after it.

    Examples
    --------
    >>> import joblib, workerstate
    >>> with workerstate.enabled():
    ...     workerstate.is_enabled()
    True
    >>> workerstate.is_enabled()
    False
    """
    with _lock:
        before = None if _state is None else _state.inner
        enable(inner)
    try:
        yield
    finally:
        with _lock:
            if before is None:
                disable()
            else:
                enable(before)
