"""How a call's batches reach loky and multiprocessing workers.

Under workerstate's ``Parallel`` and the workerstate backend, a batch of tasks that
``joblib.delayed`` made travels as joblib made it, beside the call's snapshot, and the worker
installs the state once for the batch; elsewhere (threads, ``n_jobs=1``, tasks that
workerstate's ``delayed`` made) each task is bound. Either way every task sees the parent's
state, also after an earlier task of its batch changed it.
"""

from __future__ import annotations

import copy
import gc
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import joblib
import pytest
from joblib import parallel as joblib_parallel

from tests import _state
from tests._helpers import N_JOBS
from workerstate import parallel as ws
from workerstate._batch import StatefulBatch
from workerstate._capture import capture

N_TASKS, BATCH = 16, 4


@pytest.fixture
def submitted(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The type names of what joblib's own backends are handed to run."""
    seen: set[str] = set()
    for cls in (
        joblib_parallel.LokyBackend,
        joblib_parallel.MultiprocessingBackend,
        joblib_parallel.ThreadingBackend,
    ):
        for method in ("submit", "apply_async"):  # joblib >= 1.5, and before
            original = getattr(cls, method, None)
            if original is None:
                continue

            def handing(
                self: Any, func: Any, *args: Any, _original: Any = original, **kwargs: Any
            ) -> Any:
                seen.add(type(func).__name__)
                return _original(self, func, *args, **kwargs)

            monkeypatch.setattr(cls, method, handing)
    return seen


@pytest.fixture(autouse=True)
def registered() -> None:
    ws.register_global_parallel_callback(_state.value_callback, name="value")
    _state.set_value("run-time")


@contextmanager
def _parallel(api: str, backend: str, **kwargs: Any) -> Iterator[joblib.Parallel]:
    kwargs.setdefault("n_jobs", N_JOBS)
    if api == "backend":
        with joblib.parallel_config(backend="workerstate", inner=backend):
            yield joblib.Parallel(batch_size=BATCH, **kwargs)
        return
    yield ws.Parallel(backend=backend, batch_size=BATCH, **kwargs)


def _check(results: list[dict[str, Any]]) -> None:
    assert [seen["i"] for seen in results] == list(range(N_TASKS))
    assert {seen["value"] for seen in results} == {"run-time"}
    assert _state.get_value() == "run-time"


@pytest.mark.parametrize("backend", ["loky", "multiprocessing"])
@pytest.mark.parametrize("api", ["ws.Parallel", "backend"])
def test_batches_of_joblibs_tasks_travel_beside_the_snapshot(
    api: str, backend: str, submitted: set[str]
) -> None:
    with _parallel(api, backend) as parallel:
        _check(parallel(joblib.delayed(_state.report_then_set)(i) for i in range(N_TASKS)))
    assert submitted == {"StatefulBatch"}


@pytest.mark.parametrize("api", ["ws.Parallel", "backend"])
def test_batches_with_workerstates_tasks_bind_each_task(api: str, submitted: set[str]) -> None:
    with _parallel(api, "loky") as parallel:
        _check(parallel(ws.delayed(_state.report_then_set)(i) for i in range(N_TASKS)))
    assert submitted == {"BatchedCalls"}


@pytest.mark.parametrize("api", ["ws.Parallel", "backend"])
def test_batches_on_threads_bind_each_task(api: str, submitted: set[str]) -> None:
    with _parallel(api, "threading") as parallel:
        results = parallel(joblib.delayed(_state.report)(i) for i in range(N_TASKS))
    _check(results)
    assert submitted == {"BatchedCalls"}


def test_a_call_without_batches_binds_each_task(submitted: set[str]) -> None:
    # joblib runs n_jobs=1 on the calling thread, task after task, handing nothing out.
    with _parallel("ws.Parallel", "loky", n_jobs=1) as parallel:
        _check(parallel(joblib.delayed(_state.report)(i) for i in range(N_TASKS)))
        _state.set_value("changed")
        assert {
            seen["value"] for seen in parallel(joblib.delayed(_state.report)(i) for i in range(2))
        } == {"changed"}
    assert submitted == set()


# -- the collector while a batch loads ----------------------------------------------------------
#: Whether the cyclic garbage collector ran, each time a _Probe was loaded.
LOADED: list[bool] = []


class _Probe:
    """A task argument that records, as it is loaded, whether the collector runs."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _probe_loaded, ()


def _probe_loaded() -> str:
    LOADED.append(gc.isenabled())
    return "probe"


class _Unloadable:
    def __reduce__(self) -> tuple[Any, ...]:
        return _fail_to_load, ()


def _fail_to_load() -> None:
    raise ValueError("this argument cannot be loaded")


def _stateful_batch(*args: Any) -> StatefulBatch:
    tasks = [(_state.report, (arg,), {}) for arg in args]
    batch = joblib_parallel.BatchedCalls(tasks, (joblib_parallel.LokyBackend(), 1))
    return StatefulBatch(batch, capture(local_workers=True))


@pytest.fixture
def collector() -> Iterator[None]:
    LOADED.clear()
    enabled = gc.isenabled()
    gc.enable()
    yield
    if enabled:
        gc.enable()
    else:
        gc.disable()


@pytest.mark.parametrize("backend", ["loky", "multiprocessing"])
@pytest.mark.parametrize("api", ["ws.Parallel", "backend"])
def test_tasks_of_a_batch_run_with_the_collector_on(
    api: str, backend: str, submitted: set[str]
) -> None:
    with _parallel(api, backend) as parallel:
        running = parallel(joblib.delayed(_state.collector_enabled)(i) for i in range(N_TASKS))
    assert running == [True] * N_TASKS
    assert submitted == {"StatefulBatch"}


def test_a_batch_loads_with_the_collector_paused(collector: None) -> None:
    loaded = pickle.loads(pickle.dumps(_stateful_batch(_Probe(), _Probe())))
    assert LOADED == [False, False]
    assert gc.isenabled()
    assert [seen["i"] for seen in loaded()] == ["probe", "probe"]


def test_a_collector_that_was_off_stays_off_after_a_batch_loads(collector: None) -> None:
    gc.disable()
    pickle.loads(pickle.dumps(_stateful_batch(_Probe())))
    assert LOADED == [False]
    assert not gc.isenabled()


def test_a_batch_that_fails_to_load_resumes_the_collector(collector: None) -> None:
    data = pickle.dumps(_stateful_batch(_Probe(), _Unloadable(), _Probe()))
    with pytest.raises(ValueError, match="cannot be loaded"):
        pickle.loads(data)
    assert LOADED == [False]
    assert gc.isenabled()


@pytest.mark.parametrize("copier", [copy.copy, copy.deepcopy])
def test_a_copied_batch_leaves_the_collector_on(collector: None, copier: Any) -> None:
    batch = _stateful_batch(_Probe())
    copied = copier(batch)
    assert isinstance(copied, StatefulBatch)
    assert gc.isenabled()
