"""A whole batch under one snapshot: how the workerstate backend's batches run in a worker.

loky and multiprocessing workers run one batch at a time on their main thread. For them the
backend sends joblib's batch as it is, with the call's snapshot beside it, instead of binding
every task of the batch to the snapshot: the tasks pickle as they do under plain joblib, and
the worker installs the state once, runs the tasks one after the other in one loop (putting
back, between two tasks, what the previous one changed), and restores its own state after the
last one. What each task sees is what :class:`workerstate._task.StatefulCall` gives it in its
per-batch mode.

Loading a large batch makes tens of thousands of containers (each task's tuple, its arguments)
that all stay alive until the batch has run. The cyclic garbage collector, which their
allocations set off, would traverse them again and again while they load, and every older
object of the worker in its full collections, and find nothing to free. So the worker loads
the batch with the collector paused; it runs again, as it was, before the first task starts,
and also when the load fails.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from typing import Any

from . import _install, _joblib
from ._install import Watching, refresh
from ._roundtrip import Gathering
from ._snapshot import Snapshot
from ._task import StatefulCall
from ._warnings import FILTERS_MODULE, filters_equal

__all__ = ["StatefulBatch"]


class StatefulBatch:
    """joblib's batch of tasks and the snapshot they all run under, sent as one callable.

    Calling it runs the batch the way joblib does, inside the batch's own nested-backend
    configuration, and returns the batch's list of results.
    """

    __slots__ = ("batch", "snapshot")

    def __init__(self, batch: Any, snapshot: Snapshot) -> None:
        self.batch = batch
        self.snapshot = snapshot

    def __call__(self) -> list[Any]:
        batch = self.batch
        items = _joblib.batch_task_list(batch)
        if items is None:  # a batch the parent could read always can be read here
            raise RuntimeError(f"workerstate cannot read the tasks of the batch {batch!r}")
        # joblib's batch calls the one task left in it inside its nested-backend context:
        # that task runs the batch's own tasks.
        _joblib.set_batch_task_list(batch, [(self._run, (items,), {})])
        try:
            return batch()[0]  # type: ignore[no-any-return]
        finally:
            _joblib.set_batch_task_list(batch, items)

    def _run(self, items: list[Any]) -> list[Any]:
        snapshot = self.snapshot
        if threading.current_thread() is not threading.main_thread():
            # Not a worker's main thread, which runs one batch at a time: the state must not
            # stay installed between tasks, so each task installs and restores it.
            return _each_task_on_its_own(items, snapshot)
        undo = snapshot.enter()
        try:
            watching = snapshot.watch(undo)
        except BaseException:
            snapshot.exit(undo)
            raise
        if snapshot.side:
            # Side channels are entered around every task.
            snapshot.exit(undo)
            return _each_task_on_its_own(items, snapshot)
        gathering = Gathering(_no_function, snapshot) if snapshot.collect else None
        gatherer = None if gathering is None else gathering.begin_batch()
        if gatherer is None:
            gathering = None
        try:
            results = _run_tasks(items, snapshot, watching, gathering, gatherer)
        except BaseException:
            _release(snapshot, watching, gathering, verify=False)
            raise
        # A failing restore, or a check="batch" callback whose state a task left changed,
        # is the batch's error, reported as the error of its last task.
        _release(snapshot, watching, gathering, verify=True)
        return results

    def __len__(self) -> int:
        return len(self.batch)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle loads the arguments in order: the pause first, then the batch under it.
        return _loaded_batch, (_PAUSE, self.batch, self.snapshot)

    def __repr__(self) -> str:
        return f"StatefulBatch({self.batch!r}, {self.snapshot!r})"


def _run_tasks(
    items: list[Any],
    snapshot: Snapshot,
    watching: Watching,
    gathering: Gathering | None,
    gatherer: Any,
) -> list[Any]:
    """The tasks' results, in order; each task after the first finds the installed state
    again. This loop runs for every task of every batch."""
    results: list[Any] = []
    append = results.append
    live = watching.live
    checks = watching.checks
    notes = snapshot.notes
    module = FILTERS_MODULE if live is not None else None
    first = True
    for func, args, kwargs in items:
        if first:
            first = False
        elif (
            checks
            or (module is not None and module.filters != live)
            or (module is None and live is not None and not filters_equal(live))
        ):
            refresh(watching)
        if gathering is None:
            append(func(*args, **kwargs))
            continue
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            gathering.attach(exc)
            raise
        if gatherer.warnings or gatherer.records or notes:
            result = gathering.envelope(result)
        append(result)
    return results


def _release(
    snapshot: Snapshot, watching: Watching, gathering: Gathering | None, verify: bool
) -> None:
    try:
        if gathering is not None:
            gathering.end_batch()
        if verify and watching.batch:
            _install.verify(watching)  # check="batch" callbacks: once, at the end
    finally:
        snapshot.exit(watching.undo)


def _each_task_on_its_own(items: list[Any], snapshot: Snapshot) -> list[Any]:
    results = []
    last_func: Any = None
    call: Callable[..., Any] | None = None
    for func, args, kwargs in items:
        if func is not last_func or call is None:
            last_func, call = func, StatefulCall(func, snapshot)
        results.append(call(*args, **kwargs))
    return results


def _no_function(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a batch's gathering runs its tasks itself")


class _CollectorPause:
    """Loading this pauses the cyclic garbage collector: see the module's docstring."""

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:
        return _Paused, ()

    def resume(self) -> None:
        """Nothing to resume: a copy of the batch, not loaded from a pickle."""


_PAUSE = _CollectorPause()


class _Paused:
    """The collector paused while a batch loads; :meth:`resume` puts it back as it was.

    A load that fails drops this object before it reaches :func:`_loaded_batch`: freeing
    it resumes the collector then.
    """

    __slots__ = ("paused",)

    def __init__(self) -> None:
        # A collector that is already off (a task or the worker's initializer turned it
        # off) stays off.
        self.paused = gc.isenabled()
        gc.disable()

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            gc.enable()

    def __del__(self) -> None:
        self.resume()


def _loaded_batch(paused: _Paused, batch: Any, snapshot: Snapshot) -> StatefulBatch:
    paused.resume()
    return StatefulBatch(batch, snapshot)
