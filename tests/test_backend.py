"""The "workerstate" joblib backend: state in calls made inside other libraries."""

from __future__ import annotations

import threading
from typing import Any

import joblib
import numpy as np
import pytest
import sklearn
from sklearn.model_selection import GridSearchCV, cross_val_score, cross_validate

from tests import _state
from tests._backend_helpers import StateReadingClassifier
from tests._helpers import N_JOBS, loky_pids
from workerstate import parallel
from workerstate._backend import WorkerStateBackend, rebind
from workerstate._capture import capture
from workerstate._task import StatefulCall

X = np.zeros((24, 2))
Y = np.array([0, 1] * 12)
INNERS = ("loky", "multiprocessing", "threading")


def _register_state() -> None:
    """Register a process-global and a thread-local value, set after the pool started."""
    loky_pids()
    parallel.register_global_parallel_callback(_state.value_callback, name="value")
    parallel.register_global_parallel_callback(_state.local_callback, name="local")
    _state.set_value("run-time")
    _state.set_local("caller-local")


def _fits_seen(result: dict[str, Any]) -> set[tuple[Any, ...]]:
    return {est.seen_ for est in result["estimator"]}


@pytest.mark.parametrize("inner", INNERS)
def test_cross_validate_sees_the_state(inner: str) -> None:
    _register_state()
    with (
        sklearn.config_context(assume_finite=True),
        joblib.parallel_config(backend="workerstate", inner=inner),
    ):
        result = cross_validate(
            StateReadingClassifier(), X, Y, cv=4, n_jobs=N_JOBS, return_estimator=True
        )
    assert _fits_seen(result) == {("run-time", "caller-local", True)}


def test_without_the_backend_cross_validate_does_not_see_it() -> None:
    """The negative control: scikit-learn forwards its own config, not the user's state."""
    _register_state()
    with sklearn.config_context(assume_finite=True):
        result = cross_validate(
            StateReadingClassifier(), X, Y, cv=4, n_jobs=N_JOBS, return_estimator=True
        )
    assert _fits_seen(result) == {(_state.IMPORT_VALUE, _state.IMPORT_LOCAL, True)}


def test_cross_val_score_and_grid_search_from_a_worker_thread() -> None:
    """Thread-local state is the calling thread's, also when that is not the main thread."""
    _register_state()
    outcome: dict[str, Any] = {}

    def run() -> None:
        _state.set_local("other-thread-local")
        try:
            with joblib.parallel_config(backend="workerstate"):
                outcome["scores"] = cross_val_score(
                    StateReadingClassifier(expect_local="other-thread-local"),
                    X,
                    Y,
                    cv=3,
                    n_jobs=N_JOBS,
                )
                search = GridSearchCV(
                    StateReadingClassifier(expect_local="other-thread-local"),
                    {"c": [1, 2, 3]},
                    cv=3,
                    n_jobs=N_JOBS,
                ).fit(X, Y)
                outcome["grid"] = search.cv_results_["mean_test_score"]
        except BaseException as exc:  # reported in the main thread below
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(80)
    assert "error" not in outcome, outcome.get("error")
    # The classifier scores 1.0 only when its fit saw the registered state.
    assert list(outcome["scores"]) == [1.0, 1.0, 1.0]
    assert list(outcome["grid"]) == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("inner", INNERS)
def test_plain_joblib_calls_under_the_backend(inner: str) -> None:
    _register_state()
    with joblib.parallel_config(backend="workerstate", inner=inner):
        seen = joblib.Parallel(n_jobs=N_JOBS)(joblib.delayed(_state.report)(i) for i in range(12))
    assert {(s["value"], s["local"]) for s in seen} == {("run-time", "caller-local")}
    if inner == "loky":
        # Restored afterwards: the same reused workers, without the backend, see their own state.
        after = joblib.Parallel(n_jobs=N_JOBS)(joblib.delayed(_state.report)(i) for i in range(12))
        assert {s["value"] for s in after} == {_state.IMPORT_VALUE}
        assert {s["pid"] for s in after} <= {s["pid"] for s in seen} | loky_pids()


def test_dask_as_the_inner_backend(dask_client: Any) -> None:
    _register_state()
    with (
        sklearn.config_context(assume_finite=True),
        joblib.parallel_config(backend="workerstate", inner="dask"),
    ):
        result = cross_validate(
            StateReadingClassifier(), X, Y, cv=4, n_jobs=N_JOBS, return_estimator=True
        )
    assert {seen[0] for seen in _fits_seen(result)} == {"run-time"}
    assert {seen[2] for seen in _fits_seen(result)} == {True}


def test_tasks_from_workerstate_delayed_are_not_wrapped_twice() -> None:
    snapshot = capture()
    task = parallel.delayed(_state.report)(1)
    rebound = rebind(task, snapshot)
    assert type(rebound[0]) is StatefulCall
    assert rebound[0].func is _state.report
    assert rebound[0].snapshot is snapshot
    assert rebind(rebound, snapshot) is rebound


def test_workerstate_delayed_under_the_backend_runs_each_task_once() -> None:
    _register_state()
    with joblib.parallel_config(backend="workerstate"):
        seen = joblib.Parallel(n_jobs=N_JOBS)(parallel.delayed(_state.report)(i) for i in range(8))
    assert [s["i"] for s in seen] == list(range(8))
    assert {s["value"] for s in seen} == {"run-time"}


def test_unknown_inner_backend_is_named() -> None:
    with pytest.raises(ValueError, match="'no-such-backend'"):
        WorkerStateBackend(inner="no-such-backend")


def test_the_backend_looks_like_its_inner_backend() -> None:
    from joblib._parallel_backends import LokyBackend, ThreadingBackend

    backend = WorkerStateBackend(inner="threading")
    assert isinstance(backend, ThreadingBackend)
    assert not isinstance(backend, LokyBackend)
    assert backend.uses_threads


@pytest.mark.parametrize("inner", ["loky", "threading"])
def test_nested_calls_inside_tasks_get_the_state(inner: str) -> None:
    """joblib hands nested calls the backend's nested backend; the wrapper wraps that too,
    so plain joblib calls made inside tasks (as libraries make them) carry the state."""
    from tests._backend_helpers import nested_report

    _register_state()
    with joblib.parallel_config(backend="workerstate", inner=inner):
        nested = joblib.Parallel(n_jobs=N_JOBS)(joblib.delayed(nested_report)(i) for i in range(4))
    assert {pair for inner_seen in nested for pair in inner_seen} == {("run-time", "caller-local")}
