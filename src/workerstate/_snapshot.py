"""Snapshots: the registered state captured in the parent, replayed and undone in a worker.

A snapshot is captured once per ``Parallel`` call and shared by every task of that call, so
pickle's memo sends it once per batch. Its payload is pickled once per snapshot (with
cloudpickle, so nested setters and lambdas work on every backend) and cached; a large payload
is written once to a local file and batches carry only its path. Workers keep recently seen
snapshots by token, so a batch whose snapshot a worker already holds costs a dict lookup.
"""

from __future__ import annotations

import contextlib
import enum
import math
import os
import pickle
import shutil
import sys
import tempfile
import threading
import types
import uuid
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from . import _warnings
from ._errors import CallbackError, SetterError, StatePicklingError, StateRestoreWarning
from ._pickling import describe_failure, find_unpicklable
from ._registry import (
    BUSY,
    CallbackRegistry,
    default_registry,
    running_callbacks,
    side_channels,
)
from ._roundtrip import Note

__all__ = ["Snapshot", "active_snapshot", "capture"]

Entry = tuple[str, Any, Callable[[Any], Any], Callable[[], Any]]

#: Payloads larger than this go to a file when the workers share this machine.
FILE_THRESHOLD = 256 * 1024
_WORKER_CACHE_SIZE = 16


class Snapshot:
    """The captured state of one ``Parallel`` call.

    ``entries`` holds ``(name, value, setter, callback)`` for each registered callback,
    ``filters`` the parent's warning filters in portable form, and ``side`` holds
    ``(name, captured, restore)`` for each active side channel. ``collect`` says whether the
    caller merges what tasks send back (only :class:`workerstate.parallel.Parallel` does), and
    ``pid`` is the capturing process, so a task can tell whether it runs elsewhere.
    """

    __slots__ = (
        "__weakref__",
        "_data",
        "_live_filters",
        "_lock",
        "_pending",
        "_ref",
        "calls",
        "collect",
        "entries",
        "filters",
        "local_workers",
        "notes",
        "pid",
        "remote",
        "side",
        "stdlib_pickle",
        "token",
    )

    def __init__(
        self,
        entries: tuple[Entry, ...],
        filters: _warnings.FilterState,
        *,
        token: str | None = None,
        local_workers: bool = False,
        stdlib_pickle: bool = False,
        side: tuple[tuple[str, Any, Callable[[Any], Any]], ...] = (),
        collect: bool = False,
        pid: int | None = None,
        remote: Any = None,
    ) -> None:
        self.entries = entries
        # A dask distributed client when the workers are a dask cluster's: large payloads are
        # published on its scheduler once, instead of travelling in every batch.
        self.remote = remote
        self.side = side
        self.collect = collect
        self.pid = os.getpid() if pid is None else pid
        self.filters = filters
        self.token = token or uuid.uuid4().hex
        self.local_workers = local_workers
        self.stdlib_pickle = stdlib_pickle
        self._lock = threading.Lock()
        self._ref: tuple[Any, ...] | None = None
        self._data: bytes | None = None
        self._live_filters: list[tuple[Any, ...]] | None = None
        # The arguments of _load_snapshot while the payload is still to be fetched.
        self._pending: tuple[Any, ...] | None = None
        # In a worker: messages for the parent about state that stays behind (see
        # _note_unreadable), sent back with the next result of a collecting call.
        self.notes: list[Note] = []
        # The last (func, StatefulCall) pair made for this snapshot; see _task.bind.
        self.calls: tuple[Any, Any] = (None, None)

    def __repr__(self) -> str:
        names = ", ".join(name for name, *_ in self.entries)
        return f"<Snapshot {self.token[:8]} [{names}] +{len(self.filters)} warning filters>"

    # -- the parent side ---------------------------------------------------------------------
    def payload_ref(self) -> tuple[Any, ...]:
        """What a batch carries instead of the values: ``("inline", bytes)`` or ``("file", path)``.

        The values and warning filters are pickled once per snapshot; raises
        :class:`StatePicklingError` naming the callback and the failing part when a value,
        setter or callback cannot be pickled.
        """
        ref = self._ref
        if ref is not None:
            return ref
        with self._lock:
            if self._ref is None:
                data = self._data
                if data is None:
                    data = self._data = self._dumps()
                if self.local_workers and len(data) > FILE_THRESHOLD:
                    self._ref = ("file", _write_payload(self, data))
                elif self.remote is not None and len(data) > FILE_THRESHOLD:
                    self._ref = ("dask", _publish_dask(self, data))
                else:
                    self._ref = ("inline", data)
            return self._ref

    def _dumps(self) -> bytes:
        import cloudpickle

        values = tuple(value for _, value, _, _ in self.entries)
        side_values = tuple(captured for _, captured, _ in self.side)
        try:
            # The functions travel inside each batch (see __reduce__); checking them here
            # reports an unpicklable setter in the parent rather than in a queue thread.
            cloudpickle.dumps(tuple((setter, callback) for _, _, setter, callback in self.entries))
            cloudpickle.dumps(tuple(restore for _, _, restore in self.side))
            data: bytes = cloudpickle.dumps(
                (values, side_values, self.filters), protocol=pickle.HIGHEST_PROTOCOL
            )
        except Exception as exc:
            raise _explain_pickling(self.entries, exc) from exc
        return data

    def __reduce__(self) -> tuple[Any, ...]:
        if self._pending is not None:  # passing through (dask's scheduler): as received
            return _load_snapshot, self._pending
        # Values (possibly large) go once per snapshot as bytes or a file. Setters and
        # callbacks go inside the batch, pickled by the backend's own pickler, so a function
        # from a __main__ script shares its globals with the task functions of the batch
        # (cloudpickle) or is found by name in the worker's __main__ (multiprocessing).
        stdlib = self.stdlib_pickle
        functions = tuple(
            (name, _for_pickler(setter, stdlib), _for_pickler(cb, stdlib))
            for name, _, setter, cb in self.entries
        )
        restores = tuple((name, _for_pickler(restore, stdlib)) for name, _, restore in self.side)
        flags = (self.local_workers, self.collect, self.pid)
        return _load_snapshot, (self.token, self.payload_ref(), functions, restores, flags)

    # -- the worker side ---------------------------------------------------------------------
    def live_filters(self) -> list[tuple[Any, ...]]:
        live = self._live_filters
        if live is None:
            live = self._live_filters = _warnings.live_filters(self.filters)
        return live

    def enter(self) -> Undo:
        """Install this state; return what :meth:`exit` needs to undo it.

        In a worker process every setter runs, whatever the callback returns there: the
        worker-side call only reads what to put back after the task. In the parent's own
        process (pool threads, ``n_jobs=1``) a setter is skipped only when the very object
        it would install is in place already.
        """
        if self._pending is not None:
            self._resolve()
        with running_callbacks():
            return self._enter()

    def _enter(self) -> Undo:
        undo = Undo(_warnings.install_filters(self.live_filters()), [])
        _ACTIVE.stack.append(self)
        in_parent = self.pid == os.getpid()
        try:
            for name, value, setter, callback in self.entries:
                undo.steps.append(self._install_one(name, value, setter, callback, in_parent))
        except BaseException:
            self.exit(undo)
            raise
        return undo

    def _install_one(
        self,
        name: str,
        value: Any,
        setter: Callable[[Any], Any],
        callback: Callable[[], Any],
        in_parent: bool,
    ) -> Step:
        try:
            current, restore = _read(name, callback)
        except SetterError as exc:
            # The state is delivered all the same; only the worker's own state cannot be
            # known, so it cannot be put back after the task.
            _set(name, setter, value)
            _note_unreadable(self, name, exc.__cause__ or exc)
            return Step(name, callback, None, setter, Mode.UNREAD)
        if current is value:
            with _INSTALLED_LOCK:
                installed = _INSTALLED.get(name)
                if installed is not None and installed.value is value:
                    # Installed by a task of the same call still running on another thread
                    # of this process: the last of them restores.
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

    def _resolve(self) -> None:
        token, ref, functions, restores, _ = self._pending  # type: ignore[misc]
        _fill(self, _load_payload(token, ref), functions, restores)
        self._pending = None

    def watch(self, undo: Undo) -> tuple[Watched, ...]:
        """What :meth:`refresh` checks between the tasks under one :meth:`enter`.

        Built once per batch, so each task reads a flat tuple.
        """
        return tuple(
            Watched(callback, value, name, setter, step.mode is not Mode.UNREAD)
            for (name, value, setter, callback), step in zip(self.entries, undo.steps, strict=True)
        )

    def refresh(self, undo: Undo, watch: tuple[Watched, ...]) -> None:
        """Between two tasks under one :meth:`enter`: put back what the last task changed.

        This runs before every task but the first of a batch. A value counts as unchanged
        only when it is the very object that was installed or strictly equal to it (same
        types, key order and float signs); anything else, and a callback that cannot be
        read here, is set again. ``watch`` is what :meth:`watch` returned for ``undo``.
        """
        live = self._live_filters
        if live is not None and not _warnings.filters_equal(live):
            undo.filters = _warnings.reinstall_filters(live, undo.filters)
        for callback, value, name, setter, readable in watch:
            if readable:
                try:
                    current = callback()[0]
                except Exception:
                    current = _UNKNOWN
                # Identity first: comparing a large value before every task would cost
                # more than the task.
                if current is value or strictly_equal(current, value) is True:
                    continue
            _set(name, setter, value)

    def exit(self, undo: Undo) -> None:
        """Restore the state that :meth:`enter` found, in reverse order."""
        with running_callbacks():
            self._exit(undo)

    def _exit(self, undo: Undo) -> None:
        failure: BaseException | None = None
        try:
            for index in range(len(undo.steps) - 1, -1, -1):
                step = undo.steps[index]
                try:
                    _restore_one(step, self.entries[index][1])
                except Exception as exc:
                    # Restore the others all the same; report the first failure.
                    if failure is None:
                        failure = _restore_error(step.name, exc)
                        failure.__cause__ = exc
        finally:
            stack = _ACTIVE.stack
            if stack and stack[-1] is self:
                stack.pop()
            elif self in stack:
                stack.remove(self)
            _warnings.uninstall_filters(undo.filters)
        if failure is not None:
            raise failure


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
    """What :meth:`Snapshot.exit` needs: the filters to take off and one step per callback."""

    filters: Any
    steps: list[Step]


class Watched(NamedTuple):
    """What :meth:`Snapshot.refresh` checks for one callback between the tasks of a batch."""

    callback: Callable[[], Any]
    value: Any
    name: str
    setter: Callable[[Any], Any]
    readable: bool


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


_noted: set[tuple[str, str]] = set()
_noted_lock = threading.Lock()


def _note_unreadable(snapshot: Snapshot, name: str, exc: BaseException) -> None:
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
    return (
        f"Parallel callback {name!r} raised {type(exc).__name__}: {exc} in process {pid} "
        f"when it was called there to read the worker's own state. Its value was set for "
        f"the tasks all the same, but that worker keeps it after them: its own state could "
        f"not be read, so it cannot be put back. Make the callback read state that exists "
        f"in a fresh process (for example a module attribute with an import-time default)."
    )


def _restore_error(name: str, exc: BaseException) -> SetterError:
    if isinstance(exc, SetterError):
        return exc
    return SetterError(
        f"The setter of parallel callback {name!r} raised {type(exc).__name__}: {exc} in "
        f"process {os.getpid()} while putting the worker's own state back after a task; this "
        f"worker may keep the parent's state. The setter must also accept the values its "
        f"callback returns in a worker."
    )


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
        raise _read_error(name, exc) from exc
    return _check_pair(name, result)


def _read_error(name: str, exc: BaseException) -> SetterError:
    return SetterError(
        f"Parallel callback {name!r} raised {type(exc).__name__}: {exc} in process "
        f"{os.getpid()} while reading the worker's state; the task was not run. The callback "
        f"runs in worker processes too, to read the state to restore after each task."
    )


def _check_pair(name: str, result: Any) -> tuple[Any, Callable[[Any], Any]]:
    if not (isinstance(result, tuple) and len(result) == 2 and callable(result[1])):
        raise CallbackError(
            f"Parallel callback {name!r} must return a (value, setter) pair with a callable "
            f"setter; got {_short(result)}. Return e.g. `return get_config(), _set_config`."
        )
    return result


def _short(obj: Any) -> str:
    text = repr(obj)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(obj).__name__} {text}"


# -- capture ---------------------------------------------------------------------------------
class _Active(threading.local):
    def __init__(self) -> None:
        self.stack: list[Snapshot] = []


_ACTIVE = _Active()


def active_snapshot() -> Snapshot | None:
    """The snapshot installed on this thread by the running task, if any."""
    stack = _ACTIVE.stack
    return stack[-1] if stack else None


class _LastCapture(threading.local):
    def __init__(self) -> None:
        self.by_mode: dict[tuple[bool, bool, bool, int], Snapshot] = {}


_LAST = _LastCapture()


def capture(
    registry: CallbackRegistry | None = None,
    *,
    local_workers: bool = False,
    stdlib_pickle: bool = False,
    collect: bool = False,
    remote: Any = None,
) -> Snapshot:
    """Call every registered callback on this thread and return the snapshot of their state.

    Inside a running task (a nested ``Parallel``), the callbacks of the task's own snapshot
    are captured too, so state registered only in the top-level parent reaches nested
    workers.

    Returns the previous snapshot of this thread when nothing changed, so workers that hold
    it skip unpickling and setting it.
    """
    if BUSY.depth:
        raise CallbackError(
            "A Parallel call was started from inside a parallel callback, setter or side "
            "channel while workerstate was capturing or installing state; that would capture "
            "again without end. Start parallel work from the task, not from a callback."
        )
    with running_callbacks():
        return _capture(registry, local_workers, stdlib_pickle, collect, remote)


def _capture(
    registry: CallbackRegistry | None,
    local_workers: bool,
    stdlib_pickle: bool,
    collect: bool,
    remote: Any,
) -> Snapshot:
    items = (registry or default_registry).items()
    outer = active_snapshot()
    if outer is not None:
        present = {name for name, _ in items}
        items = items + tuple((n, cb) for n, _, _, cb in outer.entries if n not in present)
    entries = []
    for name, callback in items:
        try:
            result = callback()
        except Exception as exc:
            raise CallbackError(
                f"Parallel callback {name!r} raised {type(exc).__name__}: {exc} while its state "
                f"was captured in the parent; no task was sent. Fix the callback or remove it "
                f"with remove_global_parallel_callback({name!r})."
            ) from exc
        value, setter = _check_pair(name, result)
        entries.append((name, value, setter, callback))
    side = _capture_side_channels()
    filters = _warnings.capture_filters()
    mode = (local_workers, stdlib_pickle, collect, id(remote))
    previous = _LAST.by_mode.get(mode)
    unchanged = (
        _unchanged(previous.entries, entries)
        if previous is not None
        and previous.filters is filters
        and previous.remote is remote
        and not side
        else False
    )
    if unchanged is True:
        return previous  # type: ignore[return-value]
    snapshot = Snapshot(
        tuple(entries),
        filters,
        local_workers=local_workers,
        stdlib_pickle=stdlib_pickle,
        side=side,
        collect=collect,
        remote=remote,
    )
    if unchanged is None and previous is not None and previous._data is not None:
        # A callback returned the very object it returned last time; it may have been
        # changed in place, so only its pickle can tell. Reusing the previous snapshot when
        # the pickles match spares the workers a reload.
        data = snapshot._data = snapshot._dumps()
        if data == previous._data:
            return previous
    _LAST.by_mode[mode] = snapshot
    return snapshot


def _capture_side_channels() -> tuple[tuple[str, Any, Callable[[Any], Any]], ...]:
    side = []
    for name, channel in side_channels.items():
        try:
            captured = channel()
        except Exception as exc:
            raise CallbackError(
                f"The capture of parallel side channel {name!r} raised {type(exc).__name__}: "
                f"{exc} in the parent; no task was sent. Fix it or remove it with "
                f"remove_parallel_side_channel({name!r})."
            ) from exc
        if captured is not None:  # None switches the channel off for this call
            side.append((name, captured, channel.restore))  # type: ignore[attr-defined]
    return tuple(side)


_IMMUTABLE_SCALARS = (type(None), bool, int, float, complex, str, bytes, range)


def _unchanged(old: tuple[Entry, ...], new: list[Entry]) -> bool | None:
    """True if a worker would see the same state, False if not, None if only a pickle can tell."""
    if len(old) != len(new):
        return False
    verdict: bool | None = True
    for (o_name, o_value, o_setter, o_cb), (n_name, n_value, n_setter, n_cb) in zip(
        old, new, strict=True
    ):
        if o_name != n_name or o_cb is not n_cb or not _same_function(o_setter, n_setter):
            return False
        same = strictly_equal(o_value, n_value)
        if same is False:
            return False
        if same is None:
            verdict = None
    return verdict


def _same_function(a: Any, b: Any) -> bool:
    """Whether two setters behave the same: the same object, or the same code over the same
    objects (a nested setter is a new function object on every capture)."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, types.MethodType):
        return a.__self__ is b.__self__ and a.__func__ is b.__func__
    if not isinstance(a, types.FunctionType) or a.__code__ is not b.__code__:
        return False
    if a.__globals__ is not b.__globals__:
        return False
    try:
        cells_a = tuple(cell.cell_contents for cell in a.__closure__ or ())
        cells_b = tuple(cell.cell_contents for cell in b.__closure__ or ())
    except ValueError:  # an empty cell
        return False
    return (
        _same_objects(cells_a, cells_b)
        and _same_objects(a.__defaults__ or (), b.__defaults__ or ())
        and _same_objects(*_kwdefaults(a, b))
    )


def _kwdefaults(a: types.FunctionType, b: types.FunctionType) -> tuple[tuple[Any, ...], ...]:
    kw_a, kw_b = a.__kwdefaults__ or {}, b.__kwdefaults__ or {}
    if kw_a.keys() != kw_b.keys():
        return (None,), (False,)  # compares as different
    return tuple(kw_a.values()), tuple(kw_b[key] for key in kw_a)


def _same_objects(xs: tuple[Any, ...], ys: tuple[Any, ...]) -> bool:
    return len(xs) == len(ys) and all(x is y for x, y in zip(xs, ys, strict=True))


def strictly_equal(a: Any, b: Any, depth: int = 0) -> bool | None:
    """Whether ``a`` and ``b`` are interchangeable as state: never plain ``==``.

    True for the same immutable scalar, or equal values of exactly the same types, with the
    same key order and float signs, elements compared the same way (NumPy arrays by dtype,
    shape, memory layout and bytes). False when they differ. None when that cannot be told
    by looking: the same mutable object (it may have been changed in place since it was
    pickled) or an object of any other type. Callers treat None as changed.
    """
    if type(a) is not type(b) or depth > 6:
        return False
    if isinstance(a, _IMMUTABLE_SCALARS):
        if a is b:
            return True
        if isinstance(a, float):
            return _same_float(a, b)
        if isinstance(a, complex):
            return _same_float(a.real, b.real) and _same_float(a.imag, b.imag)
        return bool(a == b)
    if isinstance(a, type) or (callable(a) and not isinstance(a, (list, dict))):
        return a is b
    if isinstance(a, (list, dict)) and a is b:
        return None
    if isinstance(a, (tuple, list)):
        if len(a) != len(b):
            return False
        return _all_equal(strictly_equal(x, y, depth + 1) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        if len(a) != len(b) or list(a) != list(b):
            return False
        if not all(type(k) in _IMMUTABLE_SCALARS for k in a):
            return None
        return _all_equal(strictly_equal(v, b[k], depth + 1) for k, v in a.items())
    if type(a).__module__ == "numpy" and type(a).__name__ == "ndarray":
        return _same_array(a, b)
    return None


def _same_float(a: float, b: float) -> bool:
    # 0.0 == -0.0, and NaN != NaN: compare as values and by sign.
    if a != b and not (a != a and b != b):
        return False
    return math.copysign(1.0, a) == math.copysign(1.0, b)


_ARRAY_BYTES_LIMIT = 1 << 16


def _same_array(a: Any, b: Any) -> bool | None:
    if a is b:
        return None  # may have been changed in place
    if a.dtype != b.dtype or a.shape != b.shape or a.strides != b.strides:
        return False
    if a.dtype.hasobject or a.nbytes > _ARRAY_BYTES_LIMIT:
        return None  # too costly or not comparable by bytes: count as changed
    return bool(a.tobytes() == b.tobytes())


def _all_equal(verdicts: Any) -> bool | None:
    result: bool | None = True
    for verdict in verdicts:
        if verdict is False:
            return False
        if verdict is None:
            result = None
    return result


def _explain_pickling(entries: tuple[Entry, ...], exc: Exception) -> StatePicklingError:
    import cloudpickle

    for name, value, setter, callback in entries:
        for label, part in (("value", value), ("setter", setter), ("callback", callback)):
            found = find_unpicklable(part, cloudpickle.dumps, root=label)
            if found is not None:
                return StatePicklingError(
                    f"The state of parallel callback {name!r} cannot be sent to worker "
                    f"processes: {describe_failure(*found)} (The threading backend does not "
                    f"pickle and would work as is.)"
                )
    return StatePicklingError(
        f"The captured warning filters cannot be pickled ({type(exc).__name__}: {exc})."
    )


# -- payload transport -----------------------------------------------------------------------
_payload_dir: str | None = None
_payload_dir_lock = threading.Lock()


def _write_payload(snapshot: Snapshot, data: bytes) -> str:
    global _payload_dir
    with _payload_dir_lock:
        if _payload_dir is None:
            # /dev/shm keeps the file in memory, as joblib does for memmapped arrays.
            base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
            _payload_dir = tempfile.mkdtemp(prefix=f"workerstate-{os.getpid()}-", dir=base)
            weakref.finalize(sys.modules[__name__], shutil.rmtree, _payload_dir, True)
    path = os.path.join(_payload_dir, snapshot.token)
    with open(path, "wb") as handle:
        handle.write(data)
    weakref.finalize(snapshot, _unlink, path)
    return path


def _publish_dask(snapshot: Snapshot, data: bytes) -> str:
    # Stored once on the scheduler; each worker process fetches it once (see _load_snapshot).
    name = f"workerstate-{snapshot.token}"
    client = snapshot.remote
    client.publish_dataset(**{name: data})
    weakref.finalize(snapshot, _unpublish_dask, weakref.ref(client), name)
    return name


def _unpublish_dask(client_ref: Any, name: str) -> None:
    client = client_ref()
    if client is None or client.status != "running":
        return

    def unpublish() -> Any:
        # Run on the client's event loop, where unpublish_dataset returns a coroutine that
        # the loop awaits; called from any other thread it would block or be dropped.
        return client.unpublish_dataset(name)

    with contextlib.suppress(Exception):  # the cluster may be gone already
        client.loop.add_callback(unpublish)


def _fetch_dask(name: str) -> bytes:
    from distributed import get_client

    data: bytes = get_client().get_dataset(name)
    return data


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _for_pickler(func: Any, stdlib_pickle: bool) -> Any:
    """``func`` as it should go into a batch that ``pickle`` (not cloudpickle) will pickle."""
    if not stdlib_pickle:
        return func
    try:
        pickle.dumps(func)
    except Exception:
        return _ByValue(func)
    return func


class _ByValue:
    """A function that only cloudpickle can pickle (a lambda, a nested setter)."""

    __slots__ = ("func",)

    def __init__(self, func: Any) -> None:
        self.func = func

    def __reduce__(self) -> tuple[Any, ...]:
        import cloudpickle

        func = self.func
        if isinstance(func, types.FunctionType) and func.__module__ == "__main__":
            return _load_main_function, (cloudpickle.dumps(func),)
        return pickle.loads, (cloudpickle.dumps(func),)


def _load_main_function(data: bytes) -> Any:
    """A script's function that only cloudpickle could send, bound to the worker's script.

    cloudpickle ships a copy of the globals such a function names, so a lambda setter from
    a script would fill a copy, while the script's tasks, which ``pickle`` sends by name,
    read the worker's own ``__main__``. Where that module has every name the function uses,
    the function is bound to it, as a task function from the script is.
    """
    func = pickle.loads(data)
    main = sys.modules.get("__main__")
    names = vars(main) if main is not None else {}
    if not all(name in names for name in func.__globals__ if not name.startswith("__")):
        return func  # a notebook or ``python -c``: the names exist only in what was sent
    rebuilt = types.FunctionType(
        func.__code__, names, func.__name__, func.__defaults__, func.__closure__
    )
    rebuilt.__kwdefaults__ = func.__kwdefaults__
    rebuilt.__qualname__ = func.__qualname__
    rebuilt.__dict__.update(func.__dict__)
    return rebuilt


_worker_cache: OrderedDict[str, list[Any]] = OrderedDict()
_worker_cache_lock = threading.Lock()


def _load_snapshot(
    token: str,
    ref: tuple[Any, ...],
    functions: tuple[tuple[str, Any, Any], ...],
    restores: tuple[tuple[str, Any], ...],
    flags: tuple[bool, bool, int],
) -> Snapshot:
    """Unpickling side of :meth:`Snapshot.__reduce__`; the values are cached per process."""
    local_workers, collect, pid = flags
    snapshot = Snapshot((), (), token=token, local_workers=local_workers, collect=collect, pid=pid)
    with _worker_cache_lock:
        cached = _worker_cache.get(token)
        if cached is not None:
            _worker_cache.move_to_end(token)
    if cached is None and ref[0] == "dask":
        # dask's scheduler unpickles tasks too, and only a worker can fetch the payload:
        # resolve on first use, in the worker (see Snapshot.enter).
        snapshot._pending = (token, ref, functions, restores, flags)
        snapshot._ref = ref
        return snapshot
    _fill(
        snapshot, cached if cached is not None else _load_payload(token, ref), functions, restores
    )
    return snapshot


_fetch_lock = threading.Lock()


def _load_payload(token: str, ref: tuple[Any, ...]) -> list[Any]:
    # One fetch per process: threads of a dask worker that start together wait for the
    # first one's copy instead of fetching and unpickling their own.
    with _fetch_lock:
        with _worker_cache_lock:
            cached = _worker_cache.get(token)
        if cached is not None:
            return cached
        return _fetch_payload(token, ref)


def _fetch_payload(token: str, ref: tuple[Any, ...]) -> list[Any]:
    kind, data = ref
    if kind == "file":
        with open(data, "rb") as handle:
            data = handle.read()
    elif kind == "dask":
        data = _fetch_dask(data)
    values, side_values, filters = pickle.loads(data)
    cached = [values, side_values, filters, None]
    with _worker_cache_lock:
        _worker_cache[token] = cached
        while len(_worker_cache) > _WORKER_CACHE_SIZE:
            _worker_cache.popitem(last=False)
    return cached


def _fill(
    snapshot: Snapshot,
    cached: list[Any],
    functions: tuple[tuple[str, Any, Any], ...],
    restores: tuple[tuple[str, Any], ...],
) -> None:
    values, side_values, filters, live = cached
    snapshot.entries = tuple(
        (name, value, setter, callback)
        for (name, setter, callback), value in zip(functions, values, strict=True)
    )
    snapshot.side = tuple(
        (name, captured, restore)
        for (name, restore), captured in zip(restores, side_values, strict=True)
    )
    snapshot.filters = filters
    if live is None:
        live = cached[3] = _warnings.live_filters(filters)
    snapshot._live_filters = live
