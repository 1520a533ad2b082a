"""Every joblib internal that ``workerstate._joblib`` reads, made unavailable in turn.

Each test makes one internal disappear, as a joblib release that renamed it would, and runs
real calls through real workers: the results, their order and the state every task sees must
stay right, and the ordinary paths must not warn.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import Any

import joblib
import pytest

from tests import _state
from tests._helpers import N_JOBS, loky_pids
from workerstate import _joblib, parallel

N_TASKS = 40


@pytest.fixture
def no_warnings() -> Iterator[list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Python 3.12+ says this whenever the multiprocessing backend forks from a process
        # with threads, with plain joblib too.
        warnings.filterwarnings(
            "ignore", r"This process \(pid=\d+\) is multi-threaded", DeprecationWarning
        )
        yield caught
    assert [str(w.message) for w in caught] == []


def _registered_value(value: str) -> None:
    parallel.register_global_parallel_callback(_state.value_callback, name="value")
    _state.set_value(value)


def _check(results: list[dict[str, Any]], value: str) -> None:
    assert [seen["i"] for seen in results] == list(range(len(results)))
    assert {seen["value"] for seen in results} == {value}


def _all_forms(backend: str, value: str, **kwargs: Any) -> None:
    """Every form of call, with tasks that change the state after reporting."""
    kwargs.setdefault("n_jobs", N_JOBS)
    calls = (
        lambda: joblib.Parallel(backend=backend, **kwargs)(
            parallel.delayed(_state.report_then_set)(i) for i in range(N_TASKS)
        ),
        lambda: parallel.Parallel(backend=backend, **kwargs)(
            joblib.delayed(_state.report_then_set)(i) for i in range(N_TASKS)
        ),
    )
    for call in calls:
        _check(call(), value)
    if kwargs["n_jobs"] == 1:
        return  # joblib runs such a call without any backend (docs/reliability.rst)
    with joblib.parallel_config(backend="workerstate", inner=backend):
        _check(
            joblib.Parallel(**kwargs)(
                joblib.delayed(_state.report_then_set)(i) for i in range(N_TASKS)
            ),
            value,
        )
    assert _state.get_value() == value  # the parent's own state is untouched


@pytest.mark.parametrize(
    "internal",
    ["_DISPATCH_CODE", "_START_CODE", "_SEQUENTIAL_CODE", "_DISPATCH_METHOD"],
)
@pytest.mark.parametrize("backend", ["loky", "threading"])
def test_a_method_joblib_renamed(
    internal: str, backend: str, monkeypatch: pytest.MonkeyPatch, no_warnings: Any
) -> None:
    loky_pids()
    monkeypatch.setattr(_joblib, internal, None)
    _registered_value("run-time")
    _all_forms(backend, "run-time")
    _all_forms(backend, "run-time", n_jobs=1)


@pytest.mark.parametrize(
    "internal",
    ["_CALL_ID", "_ITERATOR", "_RUNNING", "_BACKEND", "_CALLBACK_PARALLEL"],
)
@pytest.mark.parametrize("backend", ["loky", "multiprocessing", "threading"])
def test_an_attribute_joblib_renamed(
    internal: str, backend: str, monkeypatch: pytest.MonkeyPatch, no_warnings: Any
) -> None:
    loky_pids()
    monkeypatch.setattr(_joblib, internal, "_renamed_by_a_joblib_release")
    _registered_value("run-time")
    _all_forms(backend, "run-time")


def test_a_reused_parallel_object_without_call_ids(
    monkeypatch: pytest.MonkeyPatch, no_warnings: Any
) -> None:
    """Without ``_call_id``, calls on one ``Parallel`` object are still told apart."""
    monkeypatch.setattr(_joblib, "_CALL_ID", "_renamed_by_a_joblib_release")
    parallel.register_global_parallel_callback(_state.value_callback, name="value")
    with joblib.Parallel(n_jobs=N_JOBS, backend="loky") as run:
        for value in ("first", "second", "third"):
            _state.set_value(value)
            _check(run(parallel.delayed(_state.report)(i) for i in range(N_TASKS)), value)


def test_without_backend_class_names(monkeypatch: pytest.MonkeyPatch, no_warnings: Any) -> None:
    """Backends it cannot recognise get the per-task install, and functions that only
    cloudpickle can pickle go by value, which the multiprocessing backend needs."""
    loky_pids()
    monkeypatch.setattr(_joblib, "_KINDS", ())
    parallel.register_global_parallel_callback(_state.closure_callback, name="closure")
    _state.set_value("run-time")
    for backend in ("loky", "multiprocessing"):
        _all_forms(backend, "run-time", batch_size=4)


def test_without_the_backend_registry(monkeypatch: pytest.MonkeyPatch, no_warnings: Any) -> None:
    monkeypatch.setattr(_joblib, "_registered", dict)
    _registered_value("run-time")
    for backend in ("loky", "multiprocessing", "threading"):
        with joblib.parallel_config(backend="workerstate", inner=backend):
            _check(
                joblib.Parallel(n_jobs=N_JOBS)(
                    joblib.delayed(_state.report)(i) for i in range(N_TASKS)
                ),
                "run-time",
            )
    with pytest.raises(ValueError, match="'no-such-backend'"):
        parallel.WorkerStateBackend("no-such-backend")


def test_without_the_task_list_of_batches(
    monkeypatch: pytest.MonkeyPatch, no_warnings: Any
) -> None:
    """The backend and workerstate's Parallel refuse a call whose batches they cannot bind;
    workerstate's delayed needs no batch in the parent."""
    monkeypatch.setattr(_joblib, "_BATCH_ITEMS", "_renamed_by_a_joblib_release")
    _registered_value("run-time")
    with pytest.raises(RuntimeError, match="cannot read the tasks"):
        parallel.Parallel(n_jobs=N_JOBS)(joblib.delayed(_state.report)(i) for i in range(N_TASKS))
    with (
        pytest.raises(RuntimeError, match="cannot read the tasks"),
        joblib.parallel_config(backend="workerstate"),
    ):
        joblib.Parallel(n_jobs=N_JOBS)(joblib.delayed(_state.report)(i) for i in range(N_TASKS))
    _check(
        joblib.Parallel(n_jobs=N_JOBS)(parallel.delayed(_state.report)(i) for i in range(N_TASKS)),
        "run-time",
    )


def _forget_batches() -> int:
    # Runs in a worker: as if this joblib's BatchedCalls.__call__ could not be recognised.
    _joblib._BATCH_CALL_CODE = None
    return os.getpid()


def test_without_recognising_batches_in_workers(fresh_workers: Any, no_warnings: Any) -> None:
    """Workers that cannot see the batch install and restore around every task."""
    pids: set[int] = set()
    for _ in range(50):
        pids |= set(
            joblib.Parallel(n_jobs=N_JOBS, batch_size=1)(
                joblib.delayed(_forget_batches)() for _ in range(2 * N_JOBS)
            )
        )
        if len(pids) >= N_JOBS:
            break
    assert len(pids) == N_JOBS
    _registered_value("run-time")
    _all_forms("loky", "run-time", batch_size=4)
    plain = joblib.Parallel(n_jobs=N_JOBS, batch_size=1)(
        joblib.delayed(_state.report)(i) for i in range(4 * N_JOBS)
    )
    assert {seen["value"] for seen in plain} == {_state.IMPORT_VALUE}


def test_without_the_reusable_executor_attribute(
    monkeypatch: pytest.MonkeyPatch, no_warnings: Any
) -> None:
    """fresh_pool() still gives new workers."""
    before = loky_pids()
    monkeypatch.setattr(_joblib, "_EXECUTOR", "_renamed_by_a_joblib_release")
    parallel.fresh_pool()
    assert not loky_pids() & before


def test_the_adapter_is_the_only_reader_of_joblib_internals() -> None:
    """No other module of the package imports a private joblib name or reads frames."""
    import pathlib
    import re

    package = pathlib.Path(_joblib.__file__).parent
    private = re.compile(
        r"from joblib(\.\w+)* import _\w|joblib\._(?!_)|_parallel_backends|externals\.loky\."
        r"(reusable_executor|backend)|sys\._getframe|f_locals|f_back|\.__dict__\["
    )
    offenders = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(package.glob("*.py"))
        if path.name != "_joblib.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if private.search(line) and not line.lstrip().startswith("#")
    ]
    assert offenders == []
