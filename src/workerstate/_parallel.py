"""``Parallel``: the ``joblib.Parallel`` subclass that captures the state once per call."""

from __future__ import annotations

import contextvars
import pickle
from collections import deque
from collections.abc import Iterable, Iterator
from itertools import repeat
from typing import Any

import joblib

from . import _joblib
from ._backend import bind_batch, rebind
from ._roundtrip import reissue_from, unwrap_all, unwrapping
from ._snapshot import Snapshot
from ._task import CALL_SNAPSHOT, capture_for

__all__ = ["Parallel"]

#: How many of its latest tasks a call keeps, to name the one that failed to pickle. A small
#: window: the kept tasks' arguments stay alive until the call ends.
_RECENT_TASKS = 64


class _BoundTasks:
    """The caller's tasks, pulled in the call's context and bound to the call's snapshot.

    When joblib runs the call in batches for loky or multiprocessing workers, the tasks go
    out as the caller made them and :meth:`Parallel._dispatch` sends each batch beside the
    snapshot instead (``batched``); otherwise, as when joblib runs the call task after task on
    the calling thread, each task is bound.
    """

    __slots__ = (
        "_context",
        "_iterable",
        "_parallel",
        "_previous_id",
        "batched",
        "recent",
        "snapshot",
    )

    def __init__(
        self, iterable: Iterable[Any], snapshot: Snapshot, parallel: Parallel | None
    ) -> None:
        self._iterable = iterable
        self.snapshot = snapshot
        self.recent: deque[Any] = deque(maxlen=_RECENT_TASKS)
        # joblib pulls the later tasks on its own threads, in their contexts: the caller's
        # generator runs in (a copy of) the caller's context instead, on every thread, so a
        # ContextVar it reads has the caller's value. joblib pulls under its own lock, so
        # the context is never entered twice at once.
        self._context = contextvars.copy_context()
        self._context.run(CALL_SNAPSHOT.set, snapshot)
        self._parallel = parallel
        # joblib gives the call a new id before it pulls a task if, and only if, it runs
        # the call in batches through _dispatch.
        self._previous_id = _joblib.started_call_id(parallel)
        self.batched = False

    def __iter__(self) -> Iterator[Any]:
        iterator = iter(self._iterable)
        current_id = _joblib.started_call_id(self._parallel)
        self.batched = (
            self.snapshot.local_workers
            and _joblib.dispatches_batches()
            and current_id is not None
            and current_id != self._previous_id
        )
        self._parallel = None  # not needed any more: no reference from here to joblib's cycle
        # Each task pulled in the call's context, by C code: StopIteration ends the map.
        pull = map(self._context.run, repeat(next), repeat(iterator))
        if self.batched:
            return pull  # Parallel._dispatch binds each batch and keeps its tasks in recent
        return self._each_bound(pull)

    def _each_bound(self, pull: Iterator[Any]) -> Iterator[Any]:
        snapshot = self.snapshot
        recent = self.recent
        last_func: Any = None
        last_call: Any = None
        for task in pull:
            if type(task) is tuple and len(task) == 3:
                # One rebind() per run of tasks of the same function.
                func = task[0]
                if func is not last_func:
                    last_func, last_call = func, rebind(task, snapshot)[0]
                if last_call is not func:
                    task = (last_call, task[1], task[2])
            recent.append(task)
            yield task


class _SizedTasks(_BoundTasks):
    """:class:`_BoundTasks` of an iterable with a length, which joblib may ask for."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self._iterable)  # type: ignore[arg-type]


class Parallel(joblib.Parallel):  # type: ignore[misc]
    """:class:`joblib.Parallel` that hands the registered state to every task of a call.

    Takes exactly the arguments of :class:`joblib.Parallel` and returns exactly what it
    returns. Each call captures the registered callbacks' state and the warning filters once,
    on the calling thread, and every task of that call runs under that state, whether it was
    made with :func:`workerstate.parallel.delayed` or with :func:`joblib.delayed`.

    Notes
    -----
    Capture happens at the start of ``__call__``, before any task is pulled from the
    iterable, so errors in callbacks and unpicklable values are raised here, in the parent,
    before anything is sent to a worker. Tasks made before the call get the call's state
    too, not the state at the time they were made.

    Examples
    --------
    >>> from workerstate.parallel import Parallel, delayed
    >>> Parallel(n_jobs=2, backend="threading")(delayed(pow)(i, 2) for i in range(4))
    [0, 1, 4, 9]
    """

    #: The running call's tasks, while joblib may dispatch batches of them.
    _workerstate_tasks: _BoundTasks | None = None

    def __call__(self, iterable: Iterable[Any]) -> Any:
        backend = _joblib.backend_of(self)
        snapshot = capture_for(backend, collect=True, check=self._needs_pickling())
        # joblib iterates the tasks once it knows how it runs the call.
        kind = _SizedTasks if hasattr(iterable, "__len__") else _BoundTasks
        bound = kind(iterable, snapshot, self)
        self._workerstate_tasks = bound
        try:
            output = super().__call__(bound)
        except BaseException as exc:
            self._workerstate_tasks = None
            reissue_from(exc)
            _raise_explained(exc, bound)
            raise
        if self.return_generator:
            return _explaining(unwrapping(output), bound, self)
        self._workerstate_tasks = None
        return unwrap_all(output)

    def _dispatch(self, batch: Any) -> Any:
        # joblib hands every batch of a call it runs in batches to this method.
        bound = self._workerstate_tasks
        if bound is not None and bound.batched:
            items = _joblib.batch_task_list(batch)
            if items is not None:
                bound.recent.extend(items[-_RECENT_TASKS:])
            batch = bind_batch(batch, bound.snapshot)
        return super()._dispatch(batch)

    def _needs_pickling(self) -> bool:
        return _joblib.runs_in_workers(self)


def _raise_explained(exc: BaseException, bound: _BoundTasks) -> None:
    """Raise an explanation of a task that failed to pickle, chained from joblib's error.

    The pickler's error is a ``PicklingError`` (loky's "Could not pickle the task", Python
    3.14's pickle), an ``AttributeError`` ("Can't pickle local object" on the multiprocessing
    backend up to 3.13) or a ``TypeError``; the explanation is a ``TaskPicklingError`` that is
    also of that type, so the ``except`` clause a caller wrote for joblib's error still
    catches it. Any other error, or one whose tasks all pickle, is re-raised as it is.
    """
    if isinstance(exc, (pickle.PicklingError, AttributeError, TypeError)):
        from .diagnose import explain_pickling_error

        explained = explain_pickling_error(exc, list(bound.recent))
        if explained is not None:
            raise explained from exc


def _explaining(results: Iterator[Any], bound: _BoundTasks, parallel: Parallel) -> Iterator[Any]:
    try:
        yield from results
    except Exception as exc:
        _raise_explained(exc, bound)
        raise
    finally:
        if parallel._workerstate_tasks is bound:
            parallel._workerstate_tasks = None
