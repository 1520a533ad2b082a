"""No reference cycles on the hot path: what workerstate makes per call and per task is
freed by reference counting, in the parent and in the workers.

Each test keeps what the cyclic garbage collector finds (``gc.DEBUG_SAVEALL``) instead of
letting it free it, runs a call with tasks that warn, collects, and looks at what was found.
joblib's own ``Parallel`` and its backend refer to each other, so an unmanaged ``Parallel``
is cyclic garbage after every call, with what hangs off it: the snapshots of the calls that
ended must not be among that.
"""

from __future__ import annotations

import gc
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import joblib
import pytest

from tests import _garbage_helpers as gh
from tests._helpers import N_JOBS
from workerstate import parallel as ws
from workerstate._snapshot import Snapshot

APIS = ("ws.delayed", "ws.Parallel", "backend")
N_TASKS = 2_000


@pytest.fixture
def registered() -> None:
    """One callback, so that every task installs and restores state."""
    value = {"parent": 1}
    ws.register_global_parallel_callback(lambda: (value, lambda v: None), name="value")


@contextmanager
def _saving_garbage() -> Iterator[list[object]]:
    """Keep what the cyclic collector finds in the block; the list is filled at its end."""
    found: list[object] = []
    gc.collect()
    gc.garbage.clear()
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.disable()
    try:
        yield found
        gc.collect()
        found += gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@contextmanager
def _warned() -> Iterator[list[warnings.WarningMessage]]:
    """Every warning the tasks emit comes back to the parent and is recorded here."""
    with warnings.catch_warnings(record=True) as emitted:
        warnings.simplefilter("always")
        yield emitted


@contextmanager
def _managed(api: str, backend: str) -> Iterator[joblib.Parallel]:
    if api == "backend":
        with (
            joblib.parallel_config(backend="workerstate", inner=backend),
            joblib.Parallel(n_jobs=N_JOBS) as parallel,
        ):
            yield parallel
        return
    cls = ws.Parallel if api == "ws.Parallel" else joblib.Parallel
    with cls(n_jobs=N_JOBS, backend=backend) as parallel:
        yield parallel


def _tasks(api: str, n: int = N_TASKS) -> Iterator[Any]:
    delayed = ws.delayed if api == "ws.delayed" else joblib.delayed
    return (delayed(gh.task)(i, _round_trip(api)) for i in range(n))


def _round_trip(api: str) -> bool:
    # Under a plain joblib.Parallel, what tasks emit stays in the workers.
    return api != "ws.delayed"


def _expected_warnings(api: str, n: int = N_TASKS, backend: str = "loky") -> int:
    if backend == "threading" and _separate_thread_warnings():
        return 0
    return len(range(0, n, gh.WARN_EVERY)) if _round_trip(api) else 0


def _separate_thread_warnings() -> bool:
    # With context-aware warnings (3.14), a thread that does not inherit its starter's
    # context records into its own context: the caller's catch_warnings sees none of what
    # joblib's threads emit, under plain joblib as under workerstate.
    return getattr(sys.flags, "context_aware_warnings", False) and not getattr(
        sys.flags, "thread_inherit_context", False
    )


@pytest.mark.parametrize("backend", ["loky", "multiprocessing", "threading"])
@pytest.mark.parametrize("api", APIS)
@pytest.mark.usefixtures("registered")
def test_a_call_leaves_no_cyclic_garbage_in_the_parent(api: str, backend: str) -> None:
    with _managed(api, backend) as parallel, _warned() as emitted:
        parallel(_tasks(api, 10))  # the workers start, the pool's objects are made
        with _saving_garbage() as found:
            assert parallel(_tasks(api)) == list(range(1, N_TASKS + 1))
        # The Parallel is still alive: nothing of the call may be cyclic garbage.
        assert gh.workerstate_types(found) == []
    assert len(emitted) == (
        _expected_warnings(api, 10, backend) + _expected_warnings(api, backend=backend)
    )


@pytest.mark.parametrize("api", APIS)
@pytest.mark.usefixtures("registered")
def test_an_ended_call_keeps_no_snapshot_on_joblibs_garbage(api: str) -> None:
    with _warned() as emitted, _saving_garbage() as found:
        if api == "backend":
            with joblib.parallel_config(backend="workerstate"):
                joblib.Parallel(n_jobs=N_JOBS)(_tasks(api))
        else:
            cls = ws.Parallel if api == "ws.Parallel" else joblib.Parallel
            cls(n_jobs=N_JOBS)(_tasks(api))
    # joblib's Parallel was freed by the collector; the call's snapshot must have been let
    # go of before, by reference counting.
    assert any(type(obj).__name__ == "Parallel" for obj in found)
    holders = [
        type(obj).__qualname__
        for obj in found
        if any(type(ref) is Snapshot for ref in gc.get_referents(obj))
    ]
    assert holders == []
    assert len(emitted) == _expected_warnings(api)


@pytest.mark.parametrize("backend", ["loky", "multiprocessing"])
@pytest.mark.parametrize("check", ["task", "batch"])
@pytest.mark.parametrize("api", APIS)
def test_a_call_leaves_no_cyclic_garbage_in_the_workers(api: str, backend: str, check: str) -> None:
    value = {"parent": 1}
    ws.register_global_parallel_callback(lambda: (value, lambda v: None), name="value", check=check)
    with _managed(api, backend) as parallel:
        # One arming task per worker: each sleeps while the other worker takes the other.
        armed = set(parallel(joblib.delayed(gh.arm)(0.5) for _ in range(N_JOBS)))
        try:
            with _warned() as emitted:
                assert parallel(_tasks(api)) == list(range(1, N_TASKS + 1))
        finally:
            reports = parallel(joblib.delayed(gh.report)(0.5) for _ in range(N_JOBS))
    assert len(armed) == N_JOBS
    assert {pid for pid, _, _ in reports} == armed
    assert all(was_armed for _, was_armed, _ in reports)
    assert [found for _, _, found in reports] == [[]] * N_JOBS
    assert len(emitted) == _expected_warnings(api)
