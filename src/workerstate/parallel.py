"""Carry run-time state from the parent into joblib workers, and undo it after each task.

Register a callback that returns ``(value, setter)``. When a ``Parallel`` call starts, the
callback runs in the parent and its value is captured; in the worker, ``setter(value)`` runs
before each task and the worker's previous state is put back after it. Swap one import to use
it: ``from workerstate.parallel import delayed`` in place of ``from joblib import delayed``.

The registry functions have the names of ``tpcp.parallel``'s, so code written for it works
after changing the import.

Examples
--------
>>> from joblib import Parallel
>>> from workerstate import parallel
>>> SETTINGS = {"scale": 1}
>>> def settings_callback():
...     def setter(value):
...         SETTINGS.clear()
...         SETTINGS.update(value)
...     return dict(SETTINGS), setter
>>> def scaled(x):
...     return x * SETTINGS["scale"]
>>> SETTINGS["scale"] = 10
>>> with parallel.global_parallel_callback(settings_callback, name="settings"):
...     Parallel(n_jobs=2, backend="threading")(parallel.delayed(scaled)(i) for i in range(3))
[0, 10, 20]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from ._backend import WorkerStateBackend, register_backend
from ._enable import disable, enable, enabled, is_enabled
from ._errors import (
    CallbackError,
    SetterError,
    StateChangedError,
    StatePicklingError,
    StateRestoreWarning,
    StateTransportError,
    TaskPicklingAttributeError,
    TaskPicklingError,
    TaskPicklingTypeError,
    WorkerStateError,
)
from ._parallel import Parallel
from ._pool import fresh_pool
from ._registry import Callback, SideChannel, default_name, default_registry, side_channels
from ._task import delayed

__all__ = [
    "CallbackError",
    "Parallel",
    "SetterError",
    "StateChangedError",
    "StatePicklingError",
    "StateRestoreWarning",
    "StateTransportError",
    "TaskPicklingAttributeError",
    "TaskPicklingError",
    "TaskPicklingTypeError",
    "WorkerStateBackend",
    "WorkerStateError",
    "delayed",
    "disable",
    "enable",
    "enabled",
    "fresh_pool",
    "global_parallel_callback",
    "is_enabled",
    "register_global_parallel_callback",
    "register_parallel_side_channel",
    "registered_callbacks",
    "remove_global_parallel_callback",
    "remove_parallel_side_channel",
]


# Makes joblib.parallel_config(backend="workerstate") available; see WorkerStateBackend.
register_backend()


def register_global_parallel_callback(
    callback: Callback, name: str | None = None, *, check: str = "task"
) -> str:
    """Register ``callback`` so its state reaches every worker of later ``Parallel`` calls.

    Parameters
    ----------
    callback : callable
        Called with no arguments; must return a ``(value, setter)`` pair with a callable
        ``setter``. See Notes for when and where it runs.
    name : str, optional
        The registration name. Defaults to the callback's ``module.qualname``, with a
        suffix (``-2``, ``-3``, ...) when another callback object already holds that name,
        as two closures made by one factory do.
    check : {"task", "batch"}, default "task"
        When a worker reads the state again to find what a task changed. ``"task"`` reads
        it before every task of a batch but the first, and sets it again if the task before
        left it changed, so no task sees what another one did. ``"batch"`` is for state that
        the tasks leave as they found it (or put back themselves, as ``with
        sklearn.config_context(...)`` does): it is read once, after the last task of each
        batch, which saves one call of the callback per task; a batch whose tasks left it
        changed fails with :class:`StateChangedError`, since the tasks after the change may
        have seen it. A task that changes it and a later task of the same batch that sets it
        back to exactly the parent's value are not detected.

    Returns
    -------
    str
        The name under which the callback is registered.

    Raises
    ------
    TypeError
        If ``callback`` is not callable or ``name`` is not a string.
    ValueError
        If a callback is already registered under ``name``, or ``check`` is neither
        ``"task"`` nor ``"batch"``.

    Notes
    -----
    The contract, which is tpcp's:

    - **In the parent**, the callback is called once per ``Parallel`` call, on the thread
      that starts the call. The ``value`` it returns is what every task of the call gets;
      it must be picklable for process-backed workers.
    - **In a worker process** (loky, multiprocessing, dask, Ray), ``setter(value)`` runs with
      the parent's value before the first task that needs it, always, whatever the callback
      would return there. The callback is also called in the worker, before the task, only
      to read the worker's own state; after the task (also when it raises) the setter it
      returns there is called with what it read, which puts the worker back as it was.
    - **In the parent's own process** (the threading backend, ``n_jobs=1``) the setter is
      skipped only when the object in place is the very object the parent captured.
    - Between the tasks of a batch, and when restoring, state counts as unchanged only when
      it is the same object or strictly equal (same types, key order and float signs);
      anything else is set again.

    A callback that reads live state (``get_config()``) restores exactly. One that returns a
    captured value or ``None`` (tpcp's ``lambda: (None, apply_patch)``) still delivers its
    state, but cannot read the worker's own state, so the worker keeps the parent's state
    after the task. A callback that raises when called in a worker delivers its state too;
    the parent gets a :class:`StateRestoreWarning` once per call naming it.

    Examples
    --------
    >>> import logging
    >>> from workerstate import parallel
    >>> def log_level():
    ...     return logging.getLogger("myapp").level, logging.getLogger("myapp").setLevel
    >>> parallel.register_global_parallel_callback(log_level, name="myapp-level")
    'myapp-level'
    >>> parallel.remove_global_parallel_callback("myapp-level")
    """
    return default_registry.register(callback, name, check=check)


def remove_global_parallel_callback(name: str) -> None:
    """Remove the callback registered under ``name``.

    Raises
    ------
    KeyError
        If no callback is registered under ``name``; the message lists what is registered.

    Examples
    --------
    >>> from workerstate import parallel
    >>> parallel.remove_global_parallel_callback("never-registered")
    Traceback (most recent call last):
    ...
    KeyError: "No parallel callback is registered under 'never-registered'; registered now: none."
    """
    default_registry.remove(name)


@contextmanager
def global_parallel_callback(
    callback: Callback, name: str | None = None, *, check: str = "task"
) -> Iterator[str]:
    """Register ``callback`` for the duration of a ``with`` block; yields the name.

    ``name`` and ``check`` are those of :func:`register_global_parallel_callback`.

    Examples
    --------
    >>> from workerstate import parallel
    >>> def cb():
    ...     return 0, print
    >>> with parallel.global_parallel_callback(cb, name="scoped") as name:
    ...     parallel.registered_callbacks()
    ('scoped',)
    >>> parallel.registered_callbacks()
    ()
    """
    registered = default_registry.register(callback, name, check=check)
    try:
        yield registered
    finally:
        default_registry.remove(registered)


def registered_callbacks() -> tuple[str, ...]:
    """The names of the callbacks registered now, in registration order.

    Examples
    --------
    >>> from workerstate import parallel
    >>> parallel.registered_callbacks()
    ()
    """
    return default_registry.names()


def register_parallel_side_channel(
    capture: Callable[[], Any],
    restore: Callable[[Any], AbstractContextManager[Callable[[], Any]]],
    merge: Callable[[Any], Any],
    name: str | None = None,
) -> str:
    """Register state that travels to the workers and back: capture, restore, collect, merge.

    ``capture()`` runs in the parent when a call's state is captured; ``None`` switches the
    channel off for that call. In the worker, ``restore(captured)`` must return a context
    manager that is entered around each task and yields a zero-argument collector; after a
    task that returns, the collector's result travels back and ``merge(data)`` receives it
    in the parent as :class:`Parallel` hands out that task's result.

    The names and the meaning of the three functions are those of ``tpcp.parallel``'s side
    channels. Two differences: the capture runs once per ``Parallel`` call on the calling
    thread (tpcp captures once per task), and with a plain :class:`joblib.Parallel` the
    context is entered in the worker but nothing is collected or merged, as in tpcp.

    Parameters
    ----------
    capture : callable
        ``capture() -> captured or None``, called in the parent.
    restore : callable
        ``restore(captured) -> context manager yielding collect``, called in the worker.
    merge : callable
        ``merge(data)``, called in the parent with what ``collect()`` returned.
    name : str, optional
        The registration name; defaults to ``capture``'s ``module.qualname``.

    Returns
    -------
    str
        The registration name, for :func:`remove_parallel_side_channel`.

    Raises
    ------
    TypeError
        If one of the three functions is not callable, or ``name`` is not a string.
    ValueError
        If a side channel is already registered under ``name``.

    Notes
    -----
    Data from a task that raises is not collected; the exception propagates unchanged. The
    warnings and log records that such a task emitted before raising do reach the parent.

    Examples
    --------
    Count the tasks that ran, across processes:

    >>> from contextlib import contextmanager
    >>> from workerstate import parallel
    >>> totals = {"tasks": 0}
    >>> @contextmanager
    ... def count_tasks(start):
    ...     yield lambda: 1
    >>> def merge(count):
    ...     totals["tasks"] += count
    >>> name = parallel.register_parallel_side_channel(lambda: 0, count_tasks, merge, "count")
    >>> parallel.Parallel(n_jobs=2, backend="threading")(parallel.delayed(abs)(i) for i in range(5))
    [0, 1, 2, 3, 4]
    >>> totals["tasks"]
    5
    >>> parallel.remove_parallel_side_channel("count")
    """
    channel = SideChannel(capture, restore, merge)
    return side_channels.register(channel, default_name(capture) if name is None else name)


def remove_parallel_side_channel(name: str) -> None:
    """Remove the side channel registered under ``name``.

    Raises
    ------
    KeyError
        If no side channel is registered under ``name``.
    """
    side_channels.remove(name)
