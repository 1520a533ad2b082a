"""The task wrapper and ``delayed``: which snapshot a task gets, and how it runs under it.

joblib pulls the first ``pre_dispatch`` tasks of a call from the iterable on the calling
thread and the rest on its own dispatch threads, where thread-local state (scikit-learn's
config) has other values. So the snapshot is taken once per call, when the first task of the
call is made on the calling thread, and kept on the ``joblib.Parallel`` object under the call's
id; tasks made later on the dispatch threads find the same object on their stack and reuse it.
"""

from __future__ import annotations

import contextvars
import operator
import threading
import types
import warnings
import weakref
from collections.abc import Callable
from itertools import repeat
from typing import Any

import joblib

from . import _install, _joblib
from ._capture import capture
from ._install import Watching, refresh
from ._roundtrip import Gathering
from ._snapshot import Snapshot
from ._warnings import FILTERS_MODULE, filters_equal

__all__ = [
    "BINDING",
    "CALL_SNAPSHOT",
    "DelayedFunction",
    "StatefulCall",
    "bind",
    "delayed",
    "snapshot_for_new_task",
]

_getframe = _joblib.caller_frame
_first = operator.itemgetter(0)


class StatefulCall:
    """A task callable: install a snapshot, call ``func``, restore what was there before.

    Instances are made by :func:`delayed` and by :class:`workerstate.parallel.Parallel`; one
    instance is shared by consecutive tasks of the same function, so a batch pickles it once.

    In loky and multiprocessing workers, which run one batch at a time on their main thread
    and drop it before taking the next, the state is installed once per batch: later tasks
    of the batch only put back what the previous task changed, and the worker's own state is
    restored when the batch is released (or at once when a task raises). Everywhere else
    (threads, dask, ray, the parent) each task installs and restores the state itself.
    """

    __slots__ = (
        "__weakref__",
        "_gatherer",
        "_left",
        "_watching",
        "batch",
        "func",
        "snapshot",
        "target",
    )

    def __init__(self, func: Callable[..., Any], snapshot: Snapshot, batch: bool = False) -> None:
        self.func = func
        self.snapshot = snapshot
        self.batch = batch
        # In per-batch mode, while a batch runs: what was installed and what to check.
        self._watching: Watching | None = None
        self._left = 0  # tasks of the batch still to run, in per-batch mode
        # In per-batch mode: what the batch's tasks emit is gathered here (see Gathering).
        self._gatherer: Any = None
        # What runs under the installed state: the function itself, or the function with
        # the round trip around it (side channels; gathering for workerstate's Parallel).
        self.target: Callable[..., Any] = (
            Gathering(func, snapshot)
            if snapshot.collect or snapshot.side or snapshot._pending is not None
            else func
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        watching = self._watching
        if watching is None:
            if self.batch:
                return self._start_batch(args, kwargs)
            snapshot = self.snapshot
            undo = snapshot.enter()
            try:
                return self.target(*args, **kwargs)
            finally:
                snapshot.exit(undo)
        # In a batch: this runs before every task of every batch, so it is kept inline.
        live = watching.live
        if (
            watching.checks
            or (FILTERS_MODULE is not None and live is not None and FILTERS_MODULE.filters != live)
            or (FILTERS_MODULE is None and live is not None and not filters_equal(live))
        ):
            try:
                refresh(watching)
            except BaseException:
                self._release()
                raise
        gatherer = self._gatherer
        try:
            if gatherer is None:
                result = self.target(*args, **kwargs)
            else:
                result = self.func(*args, **kwargs)
                if gatherer.warnings or gatherer.records or self.snapshot.notes:
                    result = self.target.envelope(result)  # type: ignore[attr-defined]
        except BaseException as exc:
            if gatherer is not None:
                self.target.attach(exc)  # type: ignore[attr-defined]
            # joblib stops the batch at the first error: restore now.
            self._release()
            raise
        self._left -= 1
        if self._left <= 0:
            # The batch's last task: restore here, where a failing restore is reported as
            # this task's error, rather than when the batch is dropped.
            self._release(verify=True)
        return result

    def _start_batch(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The first task of a batch in per-batch mode: install the state, then run it."""
        left = (
            self._tasks_in_batch() if threading.current_thread() is threading.main_thread() else 0
        )
        if not left:
            # Not the one-batch-at-a-time main thread of a loky or multiprocessing worker,
            # or the batch holds other tasks that must not see this state: install and
            # restore around each task instead.
            self.batch = False
            return self(*args, **kwargs)
        snapshot = self.snapshot
        undo = snapshot.enter()
        try:
            watching = snapshot.watch(undo)
        except BaseException:
            snapshot.exit(undo)
            raise
        self._watching = watching
        self._left = left
        target = self.target
        if type(target) is Gathering:
            self._gatherer = target.begin_batch()
        return self(*args, **kwargs)

    def _tasks_in_batch(self) -> int:
        """How many tasks the joblib batch being run has, if every one of them is this object.

        Keeping the state between tasks is safe only then: a plain task batched in between
        must see the worker's own state. 0 when that cannot be established. Checked once per
        batch, on the batch's item list.
        """
        items = _joblib.batch_items(_getframe(3))
        if items is None:
            return 0
        try:
            functions = list(map(_first, items))
        except Exception:  # not a task: joblib reports it
            return 0
        # Identity in C: this runs over every task of every batch.
        return len(items) if all(map(operator.is_, functions, repeat(self))) else 0

    def _release(self, verify: bool = False) -> None:
        watching, self._watching = self._watching, None
        if watching is None:
            return
        if self._gatherer is not None:
            self._gatherer = None
            self.target.end_batch()  # type: ignore[attr-defined]
        try:
            if verify and watching.batch:
                _install.verify(watching)  # check="batch" callbacks: once, at the end
        finally:
            self.snapshot.exit(watching.undo)

    def __del__(self) -> None:
        # A safety net: a batch that did not run to its end (the worker was interrupted) is
        # restored when the worker drops it, before it takes the next one.
        if self._watching is not None:
            self._release()

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_call, (self.func, self.snapshot)

    @property
    def __name__(self) -> str:
        # What dask names a batch after (``batch_of_<name>_<n>_calls``), as for the function.
        return str(getattr(self.func, "__name__", type(self.func).__name__))

    @property
    def __wrapped__(self) -> Callable[..., Any]:
        return self.func

    def __repr__(self) -> str:
        return f"StatefulCall({self.func!r}, {self.snapshot!r})"


def _rebuild_call(func: Callable[..., Any], snapshot: Snapshot) -> StatefulCall:
    return StatefulCall(func, snapshot, batch=snapshot.local_workers)


def bind(snapshot: Snapshot, func: Callable[..., Any]) -> StatefulCall:
    """The task callable for ``func`` under ``snapshot``, reused while ``func`` repeats.

    Consecutive tasks of one function share one wrapper object, so pickle sends it once
    per batch.
    """
    last_func, last_call = snapshot.calls
    if last_func is func:
        call = last_call()
        if call is not None:
            return call  # type: ignore[no-any-return]
    call = StatefulCall(func, snapshot)
    # A weak reference: the snapshot must not keep its wrapper (which refers back to it)
    # alive, or only the cyclic garbage collector could free it and its published payload.
    snapshot.calls = (func, weakref.ref(call))
    return call


def capture_for(backend: Any, collect: bool = False, check: bool = True) -> Snapshot:
    """Capture the state for a call on ``backend``, shaped for how its workers get tasks.

    loky and multiprocessing run single-threaded worker processes on this machine (so the
    state can stay installed for a whole batch, and large values can go through a file);
    multiprocessing pickles tasks with ``pickle``, not cloudpickle. With ``check``, a backend
    whose workers are not threads gets the state pickled now, on the calling thread, so an
    unpicklable value is a StatePicklingError from the call rather than joblib's generic
    pickling error from one of its queue threads.
    """
    kind = _joblib.backend_kind(backend)
    snapshot = capture(
        local_workers=kind in ("loky", "multiprocessing"),
        # Another backend may pickle with the standard pickle: send what only cloudpickle
        # can pickle by value, which works under either.
        stdlib_pickle=kind in ("multiprocessing", "other"),
        collect=collect,
        remote=getattr(backend, "client", None) if kind == "dask" else None,
    )
    if check and not getattr(backend, "uses_threads", False):
        snapshot.payload_ref()
    return snapshot


class _Binding(threading.local):
    """Per thread: what tells a task being made which call it belongs to, without a lookup.

    ``parallel`` is a weak reference to the ``joblib.Parallel`` whose generator this thread
    last pulled a task from: reading the dispatching frame's locals costs more than a
    microsecond on Python < 3.13, so a task pulled from the same generator object while that
    call runs takes the call's snapshot from it instead.
    """

    parallel: weakref.ReferenceType[joblib.Parallel] | None = None


BINDING = _Binding()

#: The snapshot of the :class:`workerstate.parallel.Parallel` call whose iterable is being
#: pulled. Set only in the call's own copy of the caller's context, which every pull of the
#: call runs in, on whichever thread: tasks made meanwhile take it without a lookup, and
#: code outside the pulls (the tasks that joblib runs on the calling thread too) never sees it.
CALL_SNAPSHOT: contextvars.ContextVar[Snapshot | None] = contextvars.ContextVar(
    "workerstate_call_snapshot", default=None
)


def snapshot_for_new_task(frame: Any) -> Snapshot:
    """The snapshot for a task being made in ``frame`` (the code that calls ``delayed``).

    When ``frame`` is the running call's own generator, this thread remembers the call in
    ``BINDING.parallel``, so the generator's next tasks skip this lookup.
    """
    parallel = _joblib.call_making_task(frame)
    if parallel is None:
        # Not pulled by a running Parallel call: a list of tasks built up front, or n_jobs=1,
        # where joblib pulls every task on the calling thread. This thread's state, now.
        return capture()
    snapshot: Snapshot | None = _joblib.running_call_snapshot(parallel, frame)
    if snapshot is None:
        record = _joblib.stored_record(parallel)
        current = _joblib.call_id(parallel)
        if record is not None and record.snapshot is not None and record.call_id == current:
            snapshot = record.snapshot
        else:
            snapshot = _first_task_of_call(parallel, frame, current)
    if _joblib.pulls_generator(parallel, frame):
        BINDING.parallel = weakref.ref(parallel)
    return snapshot


def _first_task_of_call(parallel: joblib.Parallel, frame: Any, call_id: Any) -> Snapshot:
    if not _joblib.on_calling_thread(frame):
        warnings.warn(
            "workerstate.parallel.delayed made a task on joblib's dispatch thread for a call "
            "whose first tasks were made with another delayed; its state was captured on that "
            "thread, so thread-local state (such as scikit-learn's config) may not be the "
            "caller's. Use workerstate.parallel.delayed for every task of the call, or "
            "workerstate.parallel.Parallel.",
            RuntimeWarning,
            stacklevel=4,
        )
    snapshot = capture_for(_joblib.backend_of(parallel))
    if call_id is not None:
        record = _joblib.record_of(parallel)
        record.call_id, record.snapshot = call_id, snapshot
        _forget_with_generator(record, _joblib.call_iterator(parallel), snapshot)
    return snapshot


def _forget_with_generator(record: _joblib.CallRecord, iterator: Any, snapshot: Snapshot) -> None:
    """Drop the record's snapshot when the generator that the call pulls from is freed.

    joblib's Parallel and its backend refer to each other, so the Parallel is freed by the
    cyclic garbage collector, some time after the call; the snapshot (its values, its
    payload) need not wait with it. Only the call's generator makes tasks that look the
    snapshot up, and joblib holds the generator while the call pulls from it. An iterator
    that cannot be referenced weakly keeps the snapshot until the Parallel is freed.
    """
    if type(iterator) is not types.GeneratorType:
        return
    weakref.finalize(iterator, _forget, weakref.ref(record), snapshot)


def _forget(record_ref: weakref.ReferenceType[_joblib.CallRecord], snapshot: Snapshot) -> None:
    record = record_ref()
    if record is not None and record.snapshot is snapshot:
        record.snapshot = None


class DelayedFunction:
    """What :func:`delayed` returns: ``F(*args, **kwargs)`` makes a task triple.

    Looks like the wrapped function (``__name__``, ``__qualname__``, ``__doc__``,
    ``__wrapped__`` and its other attributes), as the function that :func:`joblib.delayed`
    returns does, without copying them for every task.
    """

    __slots__ = ("function",)

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
        snapshot = CALL_SNAPSHOT.get()
        if snapshot is None:
            # The common case inlined: a generator that joblib is pulling for a call that
            # already has its snapshot. The generator being run must be the call's own
            # iterator, so the snapshot is the one of the call that is pulling it.
            caller = _getframe(1)
            ref = BINDING.parallel
            parallel = None if ref is None else ref()
            if parallel is not None:
                snapshot = _joblib.running_call_snapshot(parallel, caller)
            if snapshot is None:
                snapshot = snapshot_for_new_task(caller)
        function = self.function
        last_func, last_call = snapshot.calls
        if last_func is function:
            call = last_call()
            if call is not None:
                return call, args, kwargs
        return bind(snapshot, function), args, kwargs

    @property
    def __wrapped__(self) -> Callable[..., Any]:
        return self.function

    @property
    def __doc__(self) -> str | None:  # type: ignore[override]
        return getattr(self.function, "__doc__", None)

    def __getattr__(self, name: str) -> Any:
        # Instances have no __name__ or __qualname__ of their own, so those come from here.
        if name == "function":  # not set yet (e.g. during copy): avoid recursing
            raise AttributeError(name)
        return getattr(self.function, name)

    def __repr__(self) -> str:
        return f"delayed({self.function!r})"


def delayed(function: Callable[..., Any]) -> DelayedFunction:
    """Capture the arguments of a function, and the registered state, for a parallel call.

    A drop-in replacement for :func:`joblib.delayed`: ``delayed(f)(*args, **kwargs)`` returns
    a ``(callable, args, kwargs)`` triple that any :class:`joblib.Parallel` accepts, on any
    backend. The callable installs the state of the registered callbacks and the parent's
    warning filters in the worker, calls ``f(*args, **kwargs)``, and restores the worker's
    previous state afterwards, also when ``f`` raises.

    Parameters
    ----------
    function : callable
        The function to call in the worker.

    Returns
    -------
    callable
        ``F`` such that ``F(*args, **kwargs)`` returns ``(task, args, kwargs)``.

    Notes
    -----
    The state is captured once per ``Parallel`` call, on the thread that calls ``Parallel``,
    when the first task of the call is made; every task of the call gets that same snapshot,
    also the tasks that joblib makes later on its own dispatch threads. Tasks made outside a
    running ``Parallel`` call (a list built up front) get the state of the thread that makes
    them, at that moment.

    Examples
    --------
    >>> from joblib import Parallel
    >>> from workerstate.parallel import delayed
    >>> Parallel(n_jobs=2, backend="threading")(delayed(abs)(-i) for i in range(3))
    [0, 1, 2]
    """

    return DelayedFunction(function)
