"""Install a snapshot's state for a task, check it between tasks, and restore afterwards.

In: a :class:`~workerstate._snapshot.Snapshot` whose values have arrived (in a worker, or on a
thread of the parent). Out: an :class:`Undo` record from :func:`install`, which
:func:`refresh` keeps right between the tasks of a batch and :func:`restore` undoes.

In a worker process every setter runs with the parent's value, whatever the callback returns
there: the worker-side call only reads what to put back after the task. In the parent's own
process (pool threads, ``n_jobs=1``) a setter is skipped only when the very object it would
install is in place already. Between tasks and at restore, state is unchanged only when it is
the same object or strictly equal (:func:`workerstate._compare.strictly_equal`).
"""

from __future__ import annotations

import contextlib
import enum
import os
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from . import _warnings
from ._compare import strict_checker
from ._errors import CallbackError, SetterError, StateRestoreWarning
from ._registry import check_pair, running_callbacks
from ._roundtrip import Note

__all__ = [
    "Installed",
    "Mode",
    "Step",
    "Undo",
    "Watched",
    "active_snapshot",
    "install",
    "refresh",
    "restore",
    "watch",
]


class Mode(enum.IntEnum):
    """How one callback's state was installed for a task, which says how to undo it."""

    #: In the parent's own process the very object was in place: nothing was set, and
    #: only what the task changes is undone.
    SKIPPED = 0
    #: Set by the first task of the call in this process; restored when the last one ends.
    RECORDED = 1
    #: Set on a thread whose state is its own (thread-local state); restored by this task.
    PRIVATE = 2
    #: Installed by a task of the same call still running on another thread of this process.
    SHARED = 3
    #: Set, but the callback could not be read here, so nothing can be put back.
    UNREAD = 4


class Step(NamedTuple):
    """What installing one callback's state for a task found, and how to undo it."""

    name: str
    callback: Callable[[], Any]
    before: Any
    restore: Callable[[Any], Any]
    mode: Mode


@dataclass
class Undo:
    """What :func:`restore` needs: the filters to take off and one step per callback."""

    filters: Any
    steps: list[Step]


class Watched(NamedTuple):
    """What :func:`refresh` checks for one callback between the tasks of a batch."""

    callback: Callable[[], Any]
    value: Any
    name: str
    setter: Callable[[Any], Any]
    readable: bool
    #: ``strict_checker(value)``: is the state read between tasks still ``value``?
    same: Callable[[Any], bool]


@dataclass
class Installed:
    """Process-global state installed by running tasks of one call."""

    value: Any
    before: Any
    restore: Callable[[Any], Any]
    count: int = 1


# Concurrent tasks of one call on several threads of a process (dask, the threading
# backend) restore process-global state only when the last one ends.
_INSTALLED: dict[str, Installed] = {}
_INSTALLED_LOCK = threading.Lock()
# Never the same object as any state, so a callback that cannot be read counts as changed.
_UNKNOWN = object()
# Python 3.14 can keep warning filters per context (thread) instead of per process.
_CONTEXT_AWARE = bool(getattr(sys.flags, "context_aware_warnings", False))


class _Active(threading.local):
    def __init__(self) -> None:
        self.stack: list[Any] = []


_ACTIVE = _Active()


def active_snapshot() -> Any:
    """The snapshot installed on this thread by the running task, if any."""
    stack = _ACTIVE.stack
    return stack[-1] if stack else None


# -- install ---------------------------------------------------------------------------------
def install(snapshot: Any) -> Undo:
    """Install ``snapshot``'s state on this thread; return what :func:`restore` needs."""
    with running_callbacks():
        in_parent = snapshot.pid == os.getpid()
        # Threads of the parent's own process share its warning filters, which are the
        # parent's live ones: installing and restoring them there would undo what the
        # parent changes meanwhile. Only with context-aware warnings (Python 3.14) does each
        # thread have filters of its own, set here for the task.
        filters = (
            None
            if in_parent and not _CONTEXT_AWARE
            else _warnings.install_filters(snapshot.live_filters())
        )
        undo = Undo(filters, [])
        _ACTIVE.stack.append(snapshot)
        try:
            for entry in snapshot.entries:
                undo.steps.append(_install_one(snapshot, entry, in_parent))
        except BaseException:
            _exit(snapshot, undo)
            raise
        return undo


def _install_one(snapshot: Any, entry: Any, in_parent: bool) -> Step:
    name, value, setter, callback = entry
    try:
        current, restore = _read(name, callback)
    except SetterError as exc:
        # The state is delivered all the same; only the worker's own state cannot be
        # known, so it cannot be put back after the task.
        _set(name, setter, value)
        _note_unreadable(snapshot, name, exc.__cause__ or exc)
        return Step(name, callback, None, setter, Mode.UNREAD)
    if current is value:
        with _INSTALLED_LOCK:
            installed = _INSTALLED.get(name)
            if installed is not None and installed.value is value:
                # Installed by a task of the same call still running on another thread of
                # this process: the last of them restores.
                installed.count += 1
                return Step(name, callback, current, restore, Mode.SHARED)
        if in_parent:
            return Step(name, callback, current, restore, Mode.SKIPPED)
    _set(name, setter, value)
    with _INSTALLED_LOCK:
        if name in _INSTALLED:
            return Step(name, callback, current, restore, Mode.PRIVATE)  # thread-local
        _INSTALLED[name] = Installed(value, current, restore)
    return Step(name, callback, current, restore, Mode.RECORDED)


# -- between the tasks of a batch ------------------------------------------------------------
def watch(snapshot: Any, undo: Undo) -> tuple[Watched, ...]:
    """What :func:`refresh` checks between the tasks under one :func:`install`.

    Built once per batch, so each task reads a flat tuple.
    """
    return tuple(
        Watched(
            entry.callback,
            entry.value,
            entry.name,
            entry.setter,
            step.mode is not Mode.UNREAD,
            strict_checker(entry.value),
        )
        for entry, step in zip(snapshot.entries, undo.steps, strict=True)
    )


def refresh(snapshot: Any, undo: Undo, watched: tuple[Watched, ...]) -> None:
    """Between two tasks under one :func:`install`: put back what the last task changed.

    This runs before every task but the first of a batch. A value counts as unchanged only
    when it is the very object that was installed or strictly equal to it; anything else,
    and a callback that cannot be read here, is set again.
    """
    live = snapshot._live_filters
    if live is not None and not _warnings.filters_equal(live):
        undo.filters = _warnings.reinstall_filters(live, undo.filters)
    for callback, value, name, setter, readable, same in watched:
        if readable:
            try:
                current = callback()[0]
            except Exception:
                current = _UNKNOWN
            # Identity first: comparing a large value before every task would cost more
            # than the task.
            if current is value or same(current):
                continue
        _set(name, setter, value)


# -- restore ---------------------------------------------------------------------------------
def restore(snapshot: Any, undo: Undo) -> None:
    """Restore the state that :func:`install` found, in reverse order."""
    with running_callbacks():
        _exit(snapshot, undo)


def _exit(snapshot: Any, undo: Undo) -> None:
    failure: BaseException | None = None
    try:
        for index in range(len(undo.steps) - 1, -1, -1):
            step = undo.steps[index]
            try:
                _restore_one(step, snapshot.entries[index].value)
            except Exception as exc:
                # Restore the others all the same; report the first failure.
                if failure is None:
                    failure = _restore_error(step.name, exc)
                    failure.__cause__ = exc
    finally:
        stack = _ACTIVE.stack
        if stack and stack[-1] is snapshot:
            stack.pop()
        elif snapshot in stack:
            stack.remove(snapshot)
        if undo.filters is not None:
            _warnings.uninstall_filters(undo.filters)
    if failure is not None:
        raise failure


def _restore_one(step: Step, value: Any) -> None:
    mode = step.mode
    if mode is Mode.UNREAD:
        return
    if mode is Mode.SKIPPED:
        # Nothing was set; undo only what the task changed. In the parent's process the
        # object in place is compared by identity, never by equality.
        after, _ = _read(step.name, step.callback)
        if after is not step.before:
            step.restore(step.before)
        return
    if mode is Mode.PRIVATE:
        step.restore(step.before)
        return
    with _INSTALLED_LOCK:
        installed = _INSTALLED.get(step.name)
        if installed is None or installed.value is not value:
            return
        installed.count -= 1
        if installed.count > 0:
            return  # another task of the call is still running here
        del _INSTALLED[step.name]
    installed.restore(installed.before)


# -- calling the user's callbacks and setters ------------------------------------------------
def _set(name: str, setter: Callable[[Any], Any], value: Any) -> None:
    try:
        setter(value)
    except BaseException as exc:
        raise SetterError(
            f"The setter of parallel callback {name!r} raised {type(exc).__name__}: "
            f"{exc} in process {os.getpid()}; the task was not run. Fix the setter "
            f"or remove the callback with remove_global_parallel_callback({name!r})."
        ) from exc


def _read(name: str, callback: Callable[[], Any]) -> tuple[Any, Callable[[Any], Any]]:
    try:
        result = callback()
    except BaseException as exc:
        raise SetterError(
            f"Parallel callback {name!r} raised {type(exc).__name__}: {exc} in process "
            f"{os.getpid()} while reading the worker's state."
        ) from exc
    try:
        return check_pair(name, result)
    except CallbackError as exc:
        raise SetterError(str(exc)) from exc


def _restore_error(name: str, exc: BaseException) -> SetterError:
    if isinstance(exc, SetterError):
        return exc
    return SetterError(
        f"The setter of parallel callback {name!r} raised {type(exc).__name__}: {exc} in "
        f"process {os.getpid()} while putting the worker's own state back after a task; this "
        f"worker may keep the parent's state. The setter must also accept the values its "
        f"callback returns in a worker."
    )


_noted: set[tuple[str, str]] = set()
_noted_lock = threading.Lock()


def _note_unreadable(snapshot: Any, name: str, exc: BaseException) -> None:
    """Tell the parent, once per call and process, that ``name``'s state stays behind here."""
    with _noted_lock:
        key = (snapshot.token, name)
        if key in _noted:
            return
        _noted.add(key)
    message = unreadable_message(name, exc, os.getpid())
    if snapshot.pid == os.getpid():
        warnings.warn(message, StateRestoreWarning, stacklevel=2)
    elif snapshot.collect:
        snapshot.notes.append(Note(snapshot.token, name, message))  # back with a result
    else:
        # Nothing goes back to the parent from this call: show it as a worker shows a
        # warning, on its standard error.
        with contextlib.suppress(Exception):
            sys.stderr.write(warnings.formatwarning(message, StateRestoreWarning, __file__, 0))


def unreadable_message(name: str, exc: BaseException, pid: int) -> str:
    """What the parent is told when ``name`` cannot be read in worker ``pid``."""
    return (
        f"Parallel callback {name!r} raised {type(exc).__name__}: {exc} in process {pid} "
        f"when it was called there to read the worker's own state. Its value was set for "
        f"the tasks all the same, but that worker keeps it after them: its own state could "
        f"not be read, so it cannot be put back. Make the callback read state that exists "
        f"in a fresh process (for example a module attribute with an import-time default)."
    )
