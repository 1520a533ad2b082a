"""How a call's batches reach loky and multiprocessing workers.

Under workerstate's ``Parallel`` and the workerstate backend, a batch of tasks that
``joblib.delayed`` made travels as joblib made it, beside the call's snapshot, and the worker
installs the state once for the batch; elsewhere (threads, ``n_jobs=1``, tasks that
workerstate's ``delayed`` made) each task is bound. Either way every task sees the parent's
state, also after an earlier task of its batch changed it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import joblib
import pytest
from joblib import parallel as joblib_parallel

from tests import _state
from tests._helpers import N_JOBS
from workerstate import parallel as ws

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
