"""A joblib backend that carries the registered state into calls made by other libraries.

scikit-learn's ``cross_validate``, ``GridSearchCV`` and many others call ``joblib.Parallel``
with their own ``delayed``. Selecting this backend with ``joblib.parallel_config`` binds every
task of such a call to the state captured when the call starts, without touching joblib or
the other library: the backend wraps a real one ("loky" by default) and rewrites each batch
just before handing it over.
"""

from __future__ import annotations

import operator
import threading
import weakref
from itertools import repeat
from typing import Any

import joblib

from . import _joblib
from ._batch import StatefulBatch
from ._roundtrip import carries_gathered, reissue_from, unwrapping_batch
from ._snapshot import Snapshot
from ._task import StatefulCall, bind, capture_for

__all__ = ["BACKEND_NAME", "WorkerStateBackend", "bind_batch", "rebind", "register_backend"]

BACKEND_NAME = "workerstate"
_first = operator.itemgetter(0)


def rebind(task: Any, snapshot: Snapshot) -> Any:
    """``task`` (a ``(func, args, kwargs)`` triple) with ``func`` running under ``snapshot``.

    A task already made by workerstate's ``delayed`` is re-bound, never wrapped twice; anything
    that is not a triple is returned unchanged, for joblib to report as it always does.
    """
    if type(task) is not tuple or len(task) != 3:
        return task
    func = task[0]
    if type(func) is StatefulCall:
        if func.snapshot is snapshot:
            return task
        func = func.func
    return bind(snapshot, func), task[1], task[2]


def bind_batch(batch: Any, snapshot: Snapshot) -> Any:
    """What to hand to a joblib backend for ``batch`` so that its tasks run under ``snapshot``.

    For loky and multiprocessing workers, a batch of plain tasks goes as it is, beside the
    snapshot (:class:`workerstate._batch.StatefulBatch`); otherwise each task is bound.
    """
    items = _joblib.batch_task_list(batch)
    if items is None:
        raise RuntimeError(
            f"workerstate cannot read the tasks of joblib {joblib.__version__}'s batches "
            f"({type(batch).__name__}), so it cannot give them the registered state. Use a "
            "joblib version that workerstate supports, or workerstate.parallel.delayed for "
            "the tasks with a plain joblib.Parallel."
        )
    if snapshot.local_workers and _plain(items):
        # One batch at a time in each worker: sent as it is, beside the snapshot.
        return StatefulBatch(batch, snapshot)
    _joblib.set_batch_task_list(batch, _bound(items, snapshot))
    return batch


def _plain(items: list[Any]) -> bool:
    """Whether every item is a task triple whose function workerstate did not wrap."""
    return (
        bool(items)
        and set(map(type, items)) == {tuple}
        and set(map(len, items)) == {3}
        and StatefulCall not in set(map(type, map(_first, items)))
    )


def _bound(items: list[Any], snapshot: Snapshot) -> list[Any]:
    """The batch's tasks bound to ``snapshot``: this runs for every task of every call."""
    if items and set(map(type, items)) == {tuple} and set(map(len, items)) == {3}:
        func = items[0][0]
        if all(map(operator.is_, map(_first, items), repeat(func))):
            # The common batch: one function throughout, checked in C; one rebind().
            call = rebind(items[0], snapshot)[0]
            return [(call, args, kwargs) for _, args, kwargs in items]
    # One rebind() per run of tasks of the same function, rather than per task.
    bound: list[Any] = []
    last_func: Any = None
    last_call: Any = None
    for task in items:
        if type(task) is tuple and len(task) == 3:
            if task[0] is not last_func:
                last_func, last_call = task[0], rebind(task, snapshot)[0]
            bound.append((last_call, task[1], task[2]))
        else:
            bound.append(task)  # not a task: left for joblib to report
    return bound


class WorkerStateBackend:
    """Run joblib calls on another backend, with the registered state in every task.

    Select it with :func:`joblib.parallel_config` (it is registered under the name
    ``"workerstate"`` when :mod:`workerstate.parallel` is imported); ``inner`` names the
    backend that really runs the tasks, and any other keyword argument goes to that
    backend's constructor.

    Parameters
    ----------
    inner : str or joblib backend instance, default "loky"
        The backend that runs the tasks: "loky", "multiprocessing", "threading", "dask", or
        any other registered backend.
    **inner_kwargs
        Passed to the inner backend's constructor.

    Notes
    -----
    The state is captured when a ``Parallel`` call starts, on the calling thread (joblib
    configures its backend there), and every batch of the call is bound to it before the inner
    backend sends it, so tasks made with any ``delayed`` get it. The object passes
    ``isinstance`` checks for the inner backend's class, as joblib uses those to enable
    backend-specific features (loky's temporary folders for memory-mapped arrays).

    Examples
    --------
    >>> import joblib
    >>> from workerstate import parallel  # registers the backend
    >>> with joblib.parallel_config(backend="workerstate", inner="threading"):
    ...     joblib.Parallel(n_jobs=2)(joblib.delayed(abs)(-i) for i in range(3))
    [0, 1, 2]
    """

    def __init__(self, inner: Any = "loky", **inner_kwargs: Any) -> None:
        if isinstance(inner, str):
            factory = _joblib.backend_factory(inner)
            if factory is None:
                raise ValueError(
                    f"The workerstate backend cannot wrap {inner!r}: no joblib backend has that "
                    f"name. Registered backends: {_joblib.known_backends()}."
                )
            inner = factory(**inner_kwargs)
        elif not callable(getattr(inner, "configure", None)):
            raise TypeError(
                f"The workerstate backend wraps a joblib backend: pass inner= as a backend name "
                f"such as 'loky' or a joblib backend instance; got {type(inner).__name__} "
                f"{inner!r}."
            )
        elif inner_kwargs:
            raise ValueError("Keyword arguments for the inner backend need inner= as a name.")
        if isinstance(inner, WorkerStateBackend):
            inner = inner._inner
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_snapshot", None)
        object.__setattr__(self, "_parallel", None)
        # The records of the calls that this backend captured for and that have not ended.
        object.__setattr__(self, "_records", weakref.WeakSet())
        # Exceptions of failed batches, with what their tasks emitted before raising; joblib
        # retrieves them on its callback threads, they are re-issued on the calling thread.
        object.__setattr__(self, "_failed", [])
        object.__setattr__(self, "_failed_lock", threading.Lock())

    # -- look like the inner backend ----------------------------------------------------------
    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self._inner)

    def __getattr__(self, name: str) -> Any:
        if name == "_inner":  # during unpickling, before __init__ state exists
            raise AttributeError(name)
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return WorkerStateBackend, (self._inner,)

    def __repr__(self) -> str:
        return f"WorkerStateBackend(inner={self._inner!r})"

    # -- capture on the calling thread --------------------------------------------------------
    def configure(self, *args: Any, **kwargs: Any) -> Any:
        """Remember the ``Parallel`` object, then configure the inner backend."""
        object.__setattr__(self, "_parallel", kwargs.get("parallel"))
        return self._inner.configure(*args, **kwargs)

    def start_call(self) -> None:
        """Capture the state at the start of each call, on the calling thread.

        joblib calls this for every call that uses workers (from 1.3 on), also when a
        ``Parallel`` used as a context manager was configured once for all its calls; a call
        with ``n_jobs=1`` runs its tasks without the backend and needs no capture.
        """
        self._capture(self._parallel)
        start = getattr(self._inner, "start_call", None)
        if start is not None:
            start()

    def stop_call(self) -> None:
        """Re-issue what failed tasks emitted, on the calling thread; then the inner backend's
        ``stop_call``. joblib calls this when a call ends, also when it fails."""
        try:
            self._reissue_failed()
        finally:
            self._release_finished()
            stop = getattr(self._inner, "stop_call", None)
            if stop is not None:
                stop()

    def _capture(self, parallel: Any) -> None:
        # collect: what tasks emit comes back, as with workerstate's Parallel.
        snapshot = capture_for(self._inner, collect=True)
        object.__setattr__(self, "_snapshot", snapshot)
        if parallel is not None:
            # One backend object can serve several Parallel objects (parallel_config makes
            # one); the snapshot is kept per Parallel and found again from the batch callback.
            record = _joblib.record_of(parallel)
            record.backend_snapshot = snapshot
            self._records.add(record)

    def _release_finished(self) -> None:
        """Drop the snapshots of the calls that have ended.

        joblib's Parallel and its backend refer to each other, so they are freed by the cyclic
        garbage collector, some time later: a call's snapshot (its values, its payload) must
        not wait with them. joblib does not say which call a ``stop_call`` ends, and calls of
        several Parallel objects can share this backend: only those that have finished lose
        their snapshot.
        """
        for record in list(self._records):
            parallel = None if record.owner is None else record.owner()
            if parallel is None or _joblib.has_finished(parallel):
                if record.backend_snapshot is self._snapshot:
                    object.__setattr__(self, "_snapshot", None)
                record.backend_snapshot = None
                self._records.discard(record)

    # -- bind every batch -----------------------------------------------------------------------
    def _bind_batch(self, batch: Any, callback: Any) -> Any:
        """What to hand to the inner backend for ``batch``: its tasks bound to the state."""
        parallel = _joblib.parallel_of_callback(callback)
        record = None if parallel is None else _joblib.stored_record(parallel)
        snapshot = None if record is None else record.backend_snapshot
        if snapshot is None:
            snapshot = self._snapshot
        if snapshot is None:
            return batch
        return bind_batch(batch, snapshot)

    def submit(self, func: Any, callback: Any = None) -> Any:
        """Bind the batch to the call's state and submit it to the inner backend."""
        return self._inner.submit(self._bind_batch(func, callback), callback=callback)

    def apply_async(self, func: Any, callback: Any = None) -> Any:
        """Bind the batch to the call's state and hand it to the inner backend (joblib < 1.5)."""
        job = self._inner.apply_async(self._bind_batch(func, callback), callback=callback)
        if getattr(self._inner, "supports_retrieve_callback", False):
            return job
        # Without callbacks joblib < 1.5 calls job.get() on the consuming thread.
        return _UnwrappingJob(job)

    # -- the way back ---------------------------------------------------------------------------
    def retrieve_result_callback(self, out: Any) -> Any:
        """The batch's results from the inner backend, unwrapped as joblib hands them out."""
        try:
            results = self._inner.retrieve_result_callback(out)
        except BaseException as exc:
            self._remember_failed(exc)
            raise
        return unwrapping_batch(results)

    def retrieve_result(self, out: Any, timeout: Any = None) -> Any:
        """As :meth:`retrieve_result_callback`, for backends without callbacks (joblib >= 1.5);
        joblib calls it on the thread that consumes the results."""
        try:
            results = self._inner.retrieve_result(out, timeout=timeout)
        except BaseException as exc:
            reissue_from(exc)
            raise
        return unwrapping_batch(results)

    def _remember_failed(self, exc: BaseException) -> None:
        if carries_gathered(exc):
            with self._failed_lock:
                self._failed.append(exc)

    def _reissue_failed(self) -> None:
        with self._failed_lock:
            failed = self._failed[:]
            self._failed.clear()
        for exc in failed:
            reissue_from(exc)

    def get_nested_backend(self) -> Any:
        """The inner backend's choice for nested calls, wrapped so they carry the state too."""
        nested, n_jobs = self._inner.get_nested_backend()
        return WorkerStateBackend(nested), n_jobs


class _UnwrappingJob:
    """A job of a backend without result callbacks: ``get`` unwraps (joblib < 1.5)."""

    __slots__ = ("_job",)

    def __init__(self, job: Any) -> None:
        self._job = job

    def get(self, *args: Any, **kwargs: Any) -> Any:
        try:
            results = self._job.get(*args, **kwargs)
        except BaseException as exc:
            reissue_from(exc)
            raise
        return unwrapping_batch(results)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._job, name)


def register_backend() -> None:
    """Register :class:`WorkerStateBackend` with joblib under the name ``"workerstate"``."""
    from joblib import register_parallel_backend

    register_parallel_backend(BACKEND_NAME, WorkerStateBackend)
