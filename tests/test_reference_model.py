"""Random programs run through workerstate and through a reference model of its contract.

The reference model is the simplest correct implementation: for every task, in the process
that runs it, read what every registered callback returns there, call every setter with the
parent's value, run the task, and call the setters with what was read, in reverse order; no
batching, no comparisons. It runs on simulated processes (a dict of slots per worker PID,
the parent's own dict for threads), so it predicts what every task sees and what the worker
holds after it.

A program registers live, captured and None-returning callbacks, changes the parent's live
state (also to ``==``-equal values: another key order, float sign, number type or dtype) and
runs calls through ``workerstate.parallel.delayed``, ``workerstate.parallel.Parallel`` and the
``workerstate`` backend on loky, multiprocessing and threads, with tasks that only report,
that change a live slot and that raise after changing it. Every task's view is compared with
the model's by exact fingerprint, never by ``==``. The single rules of the contract are then
tested one by one through real workers.
"""

from __future__ import annotations

import itertools
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import joblib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import _model_helpers as mh
from tests._helpers import N_JOBS, loky_pids
from workerstate import parallel as ws
from workerstate._registry import default_registry

APIS = ("joblib.Parallel+ws.delayed", "ws.Parallel+joblib.delayed", "workerstate backend")
#: A program's plain joblib.Parallel calls whose tasks catch what the inner task raises.
CAUGHT = "caught"
BATCH_SIZES = (1, "auto", 4)
PROCESS_BACKENDS = ("loky", "multiprocessing")
_names = itertools.count()
#: How many programs ran and how many task views were compared with the model.
TALLY: Counter[str] = Counter()


# -- values -----------------------------------------------------------------------------------
def _array(dtype: str, values: list[Any]) -> np.ndarray:
    return np.array(values, dtype=dtype)


ARRAY_ITEMS = {
    "int32": st.sampled_from([0, 1, -2, 3]),
    "int64": st.sampled_from([0, 1, -2, 3]),
    "float32": st.sampled_from([0.0, -0.0, 1.5, math.nan, -math.inf]),
    "float64": st.sampled_from([0.0, -0.0, 1.5, math.nan, -math.inf]),
    "bool": st.booleans(),
}
ARRAYS = st.sampled_from(sorted(ARRAY_ITEMS)).flatmap(
    lambda dtype: st.builds(_array, st.just(dtype), st.lists(ARRAY_ITEMS[dtype], max_size=3))
)
FLOATS = st.sampled_from([0.0, -0.0, math.nan, -math.nan, math.inf, -math.inf, 1.0, 2.5])
SCALARS = st.one_of(
    st.sampled_from([1, True, 1.0, 0, False, None, "", "a"]), FLOATS, st.text(max_size=2)
)
# Keys are strings: keys of equal value and another type (1, True, 1.0) are a case of their
# own below, test_dict_keys_keep_their_type.
DICTS = st.lists(
    st.tuples(st.sampled_from("abc"), st.one_of(SCALARS, ARRAYS)),
    unique_by=lambda item: item[0],
    max_size=3,
).map(dict)
VALUES = st.one_of(
    SCALARS,
    ARRAYS,
    DICTS,
    st.lists(SCALARS, max_size=3),
    st.lists(SCALARS, max_size=3).map(tuple),
)


# -- the reference model ----------------------------------------------------------------------
@dataclass(frozen=True)
class ModelCallback:
    """A registered callback as the model sees it: what it reads and what its setter does."""

    kind: str  # "live", "captured" or "none"
    name: str
    payload: Any = None  # the captured value, or the marker that a None-callback applies

    def read(self, slots: dict[str, Any]) -> Any:
        if self.kind == "live":
            return slots.get(self.name, mh.IMPORT_VALUE)
        return self.payload if self.kind == "captured" else None

    def set(self, slots: dict[str, Any], value: Any) -> None:
        slots[self.name] = self.payload if self.kind == "none" else value

    def real(self) -> Callable[[], tuple[Any, Any]]:
        if self.kind == "live":
            return mh.LiveCallback(self.name)
        if self.kind == "none":
            return mh.none_callback(self.name, self.payload)
        return mh.captured_lambda(self.name, self.payload)


@dataclass(frozen=True)
class ClosureCallback(ModelCallback):
    def real(self) -> Callable[[], tuple[Any, Any]]:
        return mh.captured_closure(self.name, self.payload)


@dataclass
class ReferenceModel:
    callbacks: list[ModelCallback]
    parent: dict[str, Any] = field(default_factory=dict)
    workers: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: Names registered with check="batch"; the model treats them as the others.
    per_batch: set[str] = field(default_factory=set)

    def capture(self) -> list[Any]:
        return [cb.read(self.parent) for cb in self.callbacks]

    def run_task(
        self, captured: list[Any], pid: int, changes: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """What the task sees, and the live slots of its process after it."""
        # A worker holds only what its own tasks left: forked workers were started before the
        # program changed anything, so they start with the import-time values too.
        slots = self.parent if pid == os.getpid() else self.workers.setdefault(pid, {})
        before = [cb.read(slots) for cb in self.callbacks]
        for cb, value in zip(self.callbacks, captured, strict=True):
            cb.set(slots, value)
        seen = {name: mh.fingerprint(slots.get(name, mh.IMPORT_VALUE)) for name in self.names}
        slots.update(changes)  # what the task does, raising or not
        for cb, value in reversed(list(zip(self.callbacks, before, strict=True))):
            cb.set(slots, value)
        after = {name: mh.fingerprint(slots.get(name, mh.IMPORT_VALUE)) for name in mh.LIVE}
        return seen, after

    @property
    def names(self) -> tuple[str, ...]:
        return (*mh.LIVE, *(cb.name for cb in self.callbacks if cb.kind != "live"))


# -- programs ---------------------------------------------------------------------------------
CALLBACKS = st.tuples(
    st.lists(st.booleans(), min_size=3, max_size=3),  # which live slots are registered
    st.lists(st.tuples(st.sampled_from(["lambda", "closure"]), VALUES), max_size=2),
    st.integers(0, 2),  # None-returning callbacks
).flatmap(lambda spec: st.permutations(_callback_specs(*spec)))
ACTIONS = st.tuples(
    st.sampled_from(["report", "report", "equal", "other", "raise"]), st.integers(0, 2)
)
RUN = st.tuples(
    st.just("run"),
    st.sampled_from(APIS),
    st.sampled_from(BATCH_SIZES),
    st.lists(ACTIONS, min_size=1, max_size=8),
)
OPERATIONS = st.one_of(
    RUN,
    RUN,
    st.tuples(st.just("set"), st.integers(0, 2), VALUES),
    st.tuples(st.just("set equal"), st.integers(0, 2)),
    st.tuples(st.just("set equal"), st.integers(0, 2)),
)
# The parent's live values when the program starts, set after the workers started.
INITIAL = st.lists(VALUES, min_size=3, max_size=3)
# Which callbacks, by position, are registered with check="batch": read once per batch in a
# worker. The model holds for them as long as no task leaves their state changed, which is
# what check="batch" says, so tasks change only the other live slots.
PER_BATCH = st.lists(st.booleans(), min_size=6, max_size=6)
PROGRAMS = st.tuples(CALLBACKS, INITIAL, st.lists(OPERATIONS, min_size=2, max_size=8), PER_BATCH)


def _callback_specs(
    live: list[bool], captured: list[tuple[str, Any]], nones: int
) -> list[tuple[Any, ...]]:
    specs: list[tuple[Any, ...]] = [("live", i) for i, on in enumerate(live) if on]
    specs += [("captured", kind, value) for kind, value in captured]
    specs += [("none",)] * nones
    return specs


def _model_callbacks(specs: Iterable[tuple[Any, ...]]) -> list[ModelCallback]:
    callbacks: list[ModelCallback] = []
    for spec in specs:
        # Fresh names for the slots of captured and None-callbacks: workers keep those
        # values after a call (nothing can read their own state back), and a value left by an
        # earlier example must not stand in for a setter that did not run.
        n = next(_names)
        if spec[0] == "live":
            callbacks.append(ModelCallback("live", mh.LIVE[spec[1]]))
        elif spec[0] == "none":
            callbacks.append(ModelCallback("none", f"none{n}", f"applied-{n}"))
        else:
            cls = ClosureCallback if spec[1] == "closure" else ModelCallback
            callbacks.append(cls("captured", f"captured{n}", spec[2]))
    return callbacks


class Calls:
    """Runs a program's calls; on multiprocessing, on pools started before the program ran.

    A multiprocessing pool forks its workers from the parent when it starts: one started
    after the parent's state changed would show the new state without any help. So a
    program opens one managed ``Parallel`` per kind and batch size it uses, first. loky's
    pool is reused across calls and started by ``loky_pids``; threads need nothing.
    """

    def __init__(self, backend: str, stack: ExitStack, keys: set[tuple[str, Any]]) -> None:
        self.backend = backend
        self.pools: dict[tuple[str, Any], Any] = {}
        if backend == "multiprocessing":
            for kind, batch_size in sorted(keys, key=repr):
                pool = self._make(kind, batch_size, N_JOBS)
                stack.enter_context(pool)
                _every_worker(lambda pool=pool: pool, mh.LIVE)
                self.pools[kind, batch_size] = pool
        elif backend == "loky":
            loky_pids()

    def _make(self, kind: str, batch_size: Any, n_jobs: int) -> Any:
        if kind == "backend":
            with joblib.parallel_config(backend="workerstate", inner=self.backend):
                return joblib.Parallel(n_jobs=n_jobs, batch_size=batch_size)
        cls = ws.Parallel if kind == "ws" else joblib.Parallel
        return cls(n_jobs=n_jobs, backend=self.backend, batch_size=batch_size)

    def parallel(self, kind: str, batch_size: Any, n_jobs: int = N_JOBS) -> Any:
        pool = self.pools.get((kind, batch_size)) if n_jobs == N_JOBS else None
        return pool if pool is not None else self._make(kind, batch_size, n_jobs)


def _kind_and_delayed(api: str) -> tuple[str, Callable[..., Any]]:
    if api == "joblib.Parallel+joblib.delayed":  # plain joblib, for tasks that wrap their own
        return "joblib", joblib.delayed
    if api == "joblib.Parallel+ws.delayed":
        return "joblib", ws.delayed
    if api == "ws.Parallel+joblib.delayed":
        return "ws", joblib.delayed
    return "backend", joblib.delayed


def _every_worker(make: Callable[[], Any], names: Iterable[str]) -> list[dict[str, Any]]:
    """Reports of plain tasks until every worker of the pool answered."""
    names = tuple(names)
    reports: list[dict[str, Any]] = []
    for _ in range(50):
        reports += make()(joblib.delayed(mh.report)(i, names) for i in range(4 * N_JOBS))
        if len({r["pid"] for r in reports}) >= N_JOBS:
            return reports
    raise AssertionError("not every worker answered")


@dataclass
class Program:
    backend: str
    model: ReferenceModel
    calls: Calls
    objects: dict[str, Any]  # the very objects the program set in the parent
    tasks: int = 0
    errors: list[Any] = field(default_factory=list)

    def compare(self, what: str, i: int, got: Any, want: Any) -> None:
        if got != want:
            self.errors.append({"task": i, what: got, "model": want})


def _plan(
    backend: str, api: str, actions: list[tuple[str, int]], registered: set[str], parent: dict
) -> tuple[str, int, list[tuple[dict[str, Any], bool]]]:
    """The API, n_jobs and each task's (changes, fail) for one run on ``backend``."""
    tasks = []
    for action, slot in actions:
        name = mh.LIVE[slot]
        # Only registered state is restored; changing other state would rightly stay.
        changes: dict[str, Any] = {}
        if name in registered and action in ("equal", "other", "raise"):
            current = parent.get(name, mh.IMPORT_VALUE)
            changes[name] = mh.equal_variant(current) if action == "equal" else mh.OTHER_VALUE
        tasks.append((changes, action == "raise"))
    changing = any(changes or fail for changes, fail in tasks)
    if backend != "threading":
        # joblib kills process workers after a task raised, so the worker's state after a
        # raising task is read in the task's own worker, by a plain task around it.
        return (CAUGHT if any(fail for _, fail in tasks) else api), N_JOBS, tasks
    if not changing:
        return api, N_JOBS, tasks
    # Pool threads share the process-global slots: a change made by one task would be seen
    # by a task running at the same time on another thread, which no implementation can
    # prevent. So calls whose tasks change the state run on the calling thread (n_jobs=1).
    # There the workerstate backend is not used by joblib at all (documented), so its calls
    # only report.
    if api == "workerstate backend":
        return api, N_JOBS, [({}, False) for _ in tasks]
    return api, 1, tasks


def _run(program: Program, api: str, batch_size: Any, actions: list[tuple[str, int]]) -> None:
    model = program.model
    registered = {
        cb.name for cb in model.callbacks if cb.kind == "live" and cb.name not in model.per_batch
    }
    api, n_jobs, tasks = _plan(program.backend, api, actions, registered, model.parent)
    captured = model.capture()
    names = model.names
    if api == CAUGHT:
        parallel = program.calls.parallel("joblib", batch_size)
        results = parallel(
            joblib.delayed(mh.caught)(ws.delayed(mh.task)(i, names, changes, fail), mh.LIVE)
            for i, (changes, fail) in enumerate(tasks)
        )
        for i, result in enumerate(results):
            seen, after = model.run_task(captured, result["pid"], tasks[i][0])
            program.compare("seen", i, result["seen"]["slots"], seen)
            program.compare("after", i, result["after"], after)
            program.compare("error", i, result["error"], "TaskFailedError" if tasks[i][1] else None)
        program.tasks += len(tasks)
        return
    kind, delayed = _kind_and_delayed(api)
    parallel = program.calls.parallel(kind, batch_size, n_jobs)
    make = (delayed(mh.task)(i, names, changes, fail) for i, (changes, fail) in enumerate(tasks))
    failing = next((i for i, (_, fail) in enumerate(tasks) if fail), None)
    if failing is None:
        results = parallel(make)
    else:  # threads, n_jobs=1: the call stops at the first raising task
        with pytest.raises(mh.TaskFailedError) as info:
            parallel(make)
        results = [None] * failing + [info.value.args[0]]
    for i, result in enumerate(results):
        if result is None:  # ran, but its result is lost with the call's exception
            model.run_task(captured, os.getpid(), tasks[i][0])
            continue
        seen, _ = model.run_task(captured, result["pid"], tasks[i][0])
        program.compare("seen", i, result["slots"], seen)
        program.tasks += 1


def _check_parent(program: Program) -> None:
    """The parent holds the very objects the program set: tasks on its threads changed them,
    and putting them back means these objects, not equal ones."""
    for name in mh.LIVE:
        assert mh.get_slot(name) is program.objects.get(name, mh.IMPORT_VALUE), name
    for cb in program.model.callbacks:
        if cb.kind != "live":
            want = mh.fingerprint(program.model.parent[cb.name])
            assert mh.fingerprint(mh.get_slot(cb.name)) == want, cb.name


def _pool_keys(operations: list[tuple[Any, ...]]) -> set[tuple[str, Any]]:
    keys = set()
    for op in operations:
        if op[0] == "run":
            kind = "joblib" if any(a == "raise" for a, _ in op[3]) else _kind_and_delayed(op[1])[0]
            keys.add((kind, op[2]))
    return keys


def _run_program(
    backend: str,
    specs: list[tuple[Any, ...]],
    initial: list[Any],
    operations: list[Any],
    per_batch: Sequence[bool] = (),
) -> Program:
    mh.reset()
    try:
        with ExitStack() as stack:
            calls = Calls(backend, stack, _pool_keys(operations))
            program = Program(backend, ReferenceModel(_model_callbacks(specs)), calls, {})
            model = program.model
            for op in zip(itertools.repeat("set"), range(len(mh.LIVE)), initial, strict=False):
                _set(program, op)
            with default_registry.preserved():
                for i, cb in enumerate(model.callbacks):
                    batch = bool(per_batch) and per_batch[i % len(per_batch)]
                    check = "batch" if batch else "task"
                    if batch:
                        model.per_batch.add(cb.name)
                    ws.register_global_parallel_callback(cb.real(), name=cb.name, check=check)
                    if cb.kind != "live":
                        # The parent applied what it hands out, as tpcp's users do: in the
                        # parent's own process the state is in place already.
                        value, setter = cb.real()()
                        setter(value)
                        cb.set(model.parent, cb.payload)
                for op in operations:
                    if op[0] == "run":
                        _run(program, *op[1:])
                    else:
                        _set(program, op)
                    _check_parent(program)
            if backend != "threading":
                _check_nothing_left(program)
    finally:
        mh.reset()
    return program


def _set(program: Program, op: tuple[Any, ...]) -> None:
    name = mh.LIVE[op[1]]
    parent = program.model.parent
    value = op[2] if op[0] == "set" else mh.equal_variant(parent.get(name, mh.IMPORT_VALUE))
    mh.set_slot(name, value)
    parent[name] = program.objects[name] = value


def _check_nothing_left(program: Program) -> None:
    """After the program, with nothing registered: every worker holds its import-time values."""
    if program.backend == "loky":
        makers = [lambda: joblib.Parallel(n_jobs=N_JOBS, backend="loky", batch_size=1)]
    else:
        makers = [lambda pool=pool: pool for pool in program.calls.pools.values()]
    for make in makers:
        for seen in _every_worker(make, mh.LIVE):
            program.tasks += 1
            program.compare("left", seen["i"], seen["slots"], _import_values())


def _import_values() -> dict[str, Any]:
    return {name: mh.fingerprint(mh.IMPORT_VALUE) for name in mh.LIVE}


PROPERTY = settings(
    max_examples=20,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("backend", [*PROCESS_BACKENDS, "threading"])
@PROPERTY
@given(program=PROGRAMS)
def test_random_programs_match_the_reference_model(
    backend: str, program: tuple[list[tuple[Any, ...]], list[Any], list[Any], list[bool]]
) -> None:
    result = _run_program(backend, *program)
    TALLY.update(programs=1, tasks=result.tasks)
    assert result.errors == []


# -- the rules one by one, through real workers ------------------------------------------------
Run = Callable[[Callable[[Callable[..., Any]], Iterable[Any]]], Any]


@contextmanager
def _calls(api: str, backend: str, **kwargs: Any) -> Iterator[tuple[Run, Any]]:
    """``run(make_tasks)`` through ``api`` on workers started before the block, and the
    ``Parallel`` object itself (plain ``joblib.delayed`` tasks through a ``joblib.Parallel``
    reach the same workers without any state)."""
    kind, delayed = _kind_and_delayed(api)
    if kind == "backend":
        with joblib.parallel_config(backend="workerstate", inner=backend):
            parallel = joblib.Parallel(n_jobs=N_JOBS, **kwargs)
    else:
        cls = ws.Parallel if kind == "ws" else joblib.Parallel
        parallel = cls(n_jobs=N_JOBS, backend=backend, **kwargs)
    with parallel:
        if backend != "threading":  # threads share this process's PID and state
            _every_worker(lambda: parallel, mh.LIVE)
        yield (lambda make: parallel(make(delayed))), parallel


@contextmanager
def _fresh_slot() -> Iterator[str]:
    """A slot that no worker has seen; reset in this process afterwards."""
    name = f"slot{next(_names)}"
    try:
        yield name
    finally:
        mh.SLOTS.pop(name, None)


def _on_every_worker(parallel: Any, func: Callable[..., int], *args: Any) -> None:
    """Run ``func(*args)`` (which returns its PID) as plain tasks until every worker did."""
    pids: set[int] = set()
    for _ in range(50):
        pids |= set(parallel(joblib.delayed(func)(*args) for _ in range(4 * N_JOBS)))
        if len(pids) >= N_JOBS:
            return
    raise AssertionError("not every worker answered")


def _seen(results: Iterable[dict[str, Any]], name: str) -> list[Any]:
    return [r["slots"][name] for r in results]


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_none_returning_callback_reaches_every_task(backend: str) -> None:
    with _fresh_slot() as name, _calls("joblib.Parallel+ws.delayed", backend) as (run, _):
        ws.register_global_parallel_callback(mh.none_callback(name, "patched"), name=name)
        results = run(lambda delayed: (delayed(mh.task)(i, [name]) for i in range(4)))
    assert _seen(results, name) == [mh.fingerprint("patched")] * 4


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
@pytest.mark.parametrize("make_callback", [mh.captured_lambda, mh.captured_closure])
def test_captured_value_reaches_every_task(
    backend: str, api: str, make_callback: Callable[[str, Any], Any]
) -> None:
    value = {"b": -0.0, "a": np.array([1, 2], dtype="int32")}
    with _fresh_slot() as name, _calls(api, backend, batch_size=1) as (run, _):
        ws.register_global_parallel_callback(make_callback(name, value), name=name)
        results = run(lambda delayed: (delayed(mh.task)(i, [name]) for i in range(8)))
    assert _seen(results, name) == [mh.fingerprint(value)] * 8


@pytest.mark.parametrize(
    ("worker_value", "parent_value"),
    [({"a": 2, "b": 1}, {"b": 1, "a": 2}), (0.0, -0.0), (np.zeros(2), -np.zeros(2))],
    ids=["key order", "float sign", "array sign"],
)
@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_equal_state_in_the_worker_is_replaced_and_put_back(
    backend: str, worker_value: Any, parent_value: Any
) -> None:
    with _fresh_slot() as name, _calls("joblib.Parallel+ws.delayed", backend) as (run, pool):
        _on_every_worker(pool, mh.plant, name, worker_value)
        try:
            with ws.global_parallel_callback(mh.LiveCallback(name), name=name):
                mh.set_slot(name, parent_value)
                results = run(lambda delayed: (delayed(mh.task)(i, [name]) for i in range(8)))
            after = _seen(_every_worker(lambda: pool, [name]), name)
        finally:
            _on_every_worker(pool, mh.forget_slot, name)
    assert _seen(results, name) == [mh.fingerprint(parent_value)] * 8
    # Put back exactly: the worker's own key order and sign, not the parent's equal value.
    assert set(after) == {mh.fingerprint(worker_value)}


@pytest.mark.parametrize(
    "parent_value",
    [{"b": 1, "a": 2}, -0.0, 1, np.array([-0.0, 1.0])],
    ids=["key order", "float sign", "int", "array"],
)
@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_equal_change_in_a_batch_is_undone_for_the_next_task(
    backend: str, parent_value: Any
) -> None:
    change = {"live0": mh.equal_variant(parent_value)}
    assert mh.fingerprint(change["live0"]) != mh.fingerprint(parent_value)
    # Eight tasks sent at once go as two batches of four, one per worker; the first task of
    # each batch changes the state.
    batches = {"batch_size": 4, "pre_dispatch": "all"}
    with _calls("joblib.Parallel+ws.delayed", backend, **batches) as (run, pool):
        try:
            with ws.global_parallel_callback(mh.LiveCallback("live0"), name="live0"):
                mh.set_slot("live0", parent_value)
                results = run(
                    lambda delayed: (
                        delayed(mh.task)(i, ["live0"], change if i % 4 == 0 else None)
                        for i in range(8)
                    )
                )
        finally:
            mh.reset()
        after = _seen(_every_worker(lambda: pool, ["live0"]), "live0")
    assert [len({r["pid"] for r in results[k : k + 4]}) for k in (0, 4)] == [1, 1]
    assert _seen(results, "live0") == [mh.fingerprint(parent_value)] * 8
    assert set(after) == {mh.fingerprint(mh.IMPORT_VALUE)}


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_nothing_stays_in_the_worker_after_a_raising_task(backend: str) -> None:
    parent_value, change = {"b": 1, "a": 0.0}, {"live0": {"a": 0.0, "b": 1}}
    with _calls("joblib.Parallel+joblib.delayed", backend) as (run, _):
        try:
            with ws.global_parallel_callback(mh.LiveCallback("live0"), name="live0"):
                mh.set_slot("live0", parent_value)
                results = run(
                    lambda delayed: (
                        delayed(mh.caught)(
                            ws.delayed(mh.task)(i, ["live0"], change, True), ["live0"]
                        )
                        for i in range(4)
                    )
                )
        finally:
            mh.reset()
    assert [r["error"] for r in results] == ["TaskFailedError"] * 4
    assert [r["seen"]["slots"]["live0"] for r in results] == [mh.fingerprint(parent_value)] * 4
    assert [r["after"]["live0"] for r in results] == [mh.fingerprint(mh.IMPORT_VALUE)] * 4


@pytest.mark.parametrize("n_jobs", [1, 2])
@pytest.mark.parametrize("copy", [False, True], ids=["same object", "equal copy"])
def test_threads_skip_the_setter_only_for_the_very_object(n_jobs: int, copy: bool) -> None:
    """With ``copy`` the callback returns a new, strictly equal dict each time it is called,
    so the parent's captured object is never the one in place."""
    value = {"b": 1, "a": 2}
    with _fresh_slot() as name:
        mh.set_slot(name, value)
        try:
            with ws.global_parallel_callback(mh.counting_callback(name, copy), name=name):
                results = joblib.Parallel(n_jobs=n_jobs, backend="threading")(
                    ws.delayed(mh.task)(i, [name]) for i in range(4)
                )
            setter_calls = len(mh.SETTER_CALLS)
        finally:
            mh.SETTER_CALLS.clear()
        assert mh.SLOTS[name] == value
    assert _seen(results, name) == [mh.fingerprint(value)] * 4
    if copy:
        # Sequential tasks each install the copy and put the found one back; on two threads
        # tasks running at the same time may share one installation.
        assert setter_calls >= (8 if n_jobs == 1 else 2)
    else:
        assert setter_calls == 0


@pytest.mark.parametrize("backend", [*PROCESS_BACKENDS, "threading"])
@pytest.mark.parametrize(
    ("first", "second"),
    [({1: "x"}, {True: "x"}), ({0.0: "x"}, {-0.0: "x"}), ({1.0: "x"}, {1: "x"})],
    ids=["int then bool", "float sign", "float then int"],
)
def test_dict_keys_keep_their_type(backend: str, first: Any, second: Any) -> None:
    """Keys of equal value and another type make another state, as values do."""
    with _calls("joblib.Parallel+ws.delayed", backend) as (run, _):
        try:
            with ws.global_parallel_callback(mh.LiveCallback("live0"), name="live0"):
                seen = []
                for value in (first, second):
                    mh.set_slot("live0", value)
                    results = run(
                        lambda delayed: (delayed(mh.task)(i, ["live0"]) for i in range(2))
                    )
                    seen.append(set(_seen(results, "live0")))
        finally:
            mh.reset()
    assert seen == [{mh.fingerprint(first)}, {mh.fingerprint(second)}]
