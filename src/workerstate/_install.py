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
from ._compare import strict_checker, strictly_equal
from ._errors import CallbackError, SetterError, StateChangedError, StateRestoreWarning
from ._registry import check_pair, running_callbacks
from ._roundtrip import Note

__all__ = [
    "Installed",
    "Mode",
    "Step",
    "Undo",
    "Watching",
    "active_snapshot",
    "install",
    "refresh",
    "restore",
    "verify",
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


class Watching:
    """What :func:`refresh` checks between the tasks under one :func:`install`.

    ``checks`` holds an ``(unchanged, reset)`` pair per callback read before every task:
    ``unchanged()`` says whether the state is still the installed value, ``reset()`` sets it
    again. Callbacks registered with ``check="batch"`` are not among them: ``batch`` holds
    ``(name, unchanged)`` for those, read once after the batch's last task by :func:`verify`.
    """

    __slots__ = ("batch", "checks", "live", "undo")

    def __init__(
        self,
        undo: Undo,
        live: list[tuple[Any, ...]] | None,
        checks: tuple[tuple[Callable[[], bool], Callable[[], None]], ...],
        batch: tuple[tuple[str, Callable[[], bool]], ...],
    ) -> None:
        self.undo = undo
        self.live = live
        self.checks = checks
        self.batch = batch


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
def watch(snapshot: Any, undo: Undo) -> Watching:
    """What :func:`refresh` checks between the tasks under one :func:`install`.

    Built once per batch, so each task runs one flat loop of prepared checks.
    """
    checks = []
    batch = []
    per_batch = snapshot.per_batch
    for entry, step in zip(snapshot.entries, undo.steps, strict=True):
        unchanged = (
            _reads(entry.callback, entry.value)
            if step.mode is not Mode.UNREAD
            else _never  # cannot be read here: set again before every task
        )
        if entry.name in per_batch and step.mode is not Mode.UNREAD:
            batch.append((entry.name, unchanged))
        else:
            checks.append((unchanged, _resetter(entry.name, entry.setter, entry.value)))
    return Watching(undo, snapshot._live_filters, tuple(checks), tuple(batch))


def _reads(callback: Callable[[], Any], value: Any) -> Callable[[], bool]:
    raw = _raw_reads(callback, value)
    if raw is not None:
        return raw
    same = strict_checker(value)

    def unchanged() -> bool:
        try:
            current = callback()[0]
        except Exception:
            return False  # cannot be read: counts as changed
        # Identity first: comparing a large value before every task would cost more than
        # the task.
        return current is value or same(current)

    return unchanged


def _raw_reads(callback: Callable[[], Any], value: Any) -> Callable[[], bool] | None:
    """A cheaper check for a preset whose value is computed from a raw reading.

    A preset such as :func:`workerstate.presets.sklearn_config` derives its value from one
    call (``sklearn.get_config()``) that returns a new object each time; its callback names
    that call as ``_workerstate_raw``. While the raw reading stays strictly equal to the one
    taken now, when the callback gives exactly ``value``, the callback would give exactly
    ``value`` too, so the check skips deriving it. None when there is no raw reading or the
    callback does not give ``value`` now.
    """
    read_raw = getattr(callback, "_workerstate_raw", None)
    if read_raw is None:
        return None
    try:
        raw = read_raw()
        if strictly_equal(callback()[0], value) is not True:
            return None
    except Exception:
        return None
    same = strict_checker(raw)

    def unchanged() -> bool:
        try:
            return same(read_raw()) is True
        except Exception:
            return False

    return unchanged


def _never() -> bool:
    return False


def _resetter(name: str, setter: Callable[[Any], Any], value: Any) -> Callable[[], None]:
    def reset() -> None:
        _set(name, setter, value)

    return reset


def refresh(watching: Watching) -> None:
    """Between two tasks under one :func:`install`: put back what the last task changed.

    This runs before every task but the first of a batch. A value counts as unchanged only
    when it is the very object that was installed or strictly equal to it; anything else,
    and a callback that cannot be read here, is set again.
    """
    live = watching.live
    if live is not None and not _warnings.filters_equal(live):
        watching.undo.filters = _warnings.reinstall_filters(live, watching.undo.filters)
    for unchanged, reset in watching.checks:
        if not unchanged():
            reset()


def verify(watching: Watching) -> None:
    """After the last task of a batch: the state of each ``check="batch"`` callback is still
    what was installed, or :class:`StateChangedError` names it."""
    changed = [name for name, unchanged in watching.batch if not unchanged()]
    if changed:
        names = ", ".join(repr(name) for name in changed)
        raise StateChangedError(
            f"A task changed the state of parallel callback(s) {names} in process "
            f"{os.getpid()} and left it changed, but they are registered with check='batch', "
            f"which says tasks leave that state as they found it: it is read once per batch, "
            f"so the tasks that ran after the change in the same batch may have seen the "
            f"changed state. Register them with check='task' (the default), which reads the "
            f"state before every task, or put the state back in the task (for example with "
            f"a context manager)."
        )


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
