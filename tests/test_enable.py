"""``workerstate.enable()``: every joblib call in the process carries the registered state.

Workers are started before the parent changes its state, and plain joblib (or the state
after ``disable()``) is the control that shows the state does not arrive on its own.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, cross_val_score

import workerstate
from tests import _state
from tests._backend_helpers import StateReadingClassifier
from tests._helpers import N_JOBS, loky_pids
from workerstate import _joblib, parallel
from workerstate._enable import _Wrapping


@pytest.fixture(autouse=True)
def _always_disabled_after() -> Iterator[None]:
    registry = _joblib.registered_backends()
    default = _joblib.default_backend_name()
    try:
        yield
    finally:
        workerstate.disable()
        after = _joblib.registered_backends()
        # Exactly what was there; a backend joblib registered meanwhile on first use (dask)
        # is joblib's own.
        assert {name: after[name] for name in registry} == registry
        assert not any(isinstance(factory, _Wrapping) for factory in after.values())
        assert _joblib.default_backend_name() == default


@pytest.fixture
def registered() -> None:
    loky_pids()  # the workers exist before the state changes
    parallel.register_global_parallel_callback(_state.value_callback, name="value")
    parallel.register_global_parallel_callback(_state.local_callback, name="local")
    _state.set_value("run-time")
    _state.set_local("caller-local")


def _plain(n: int = 8, **kwargs: Any) -> list[dict[str, Any]]:
    kwargs.setdefault("n_jobs", N_JOBS)
    return joblib.Parallel(**kwargs)(joblib.delayed(_state.report)(i) for i in range(n))


def _values(results: list[dict[str, Any]]) -> set[tuple[Any, Any]]:
    return {(seen["value"], seen["local"]) for seen in results}


def test_plain_joblib_calls_carry_the_state_until_disabled(registered: None) -> None:
    assert _values(_plain()) == {(_state.IMPORT_VALUE, _state.IMPORT_LOCAL)}  # the control
    workerstate.enable()
    assert workerstate.is_enabled()
    assert _values(_plain()) == {("run-time", "caller-local")}
    workerstate.disable()
    assert not workerstate.is_enabled()
    assert _values(_plain()) == {(_state.IMPORT_VALUE, _state.IMPORT_LOCAL)}


def test_from_another_thread(registered: None) -> None:
    workerstate.enable()
    out: list[Any] = []

    def call() -> None:
        _state.set_local("thread-local")
        out.extend(_plain())

    thread = threading.Thread(target=call)
    thread.start()
    thread.join(60)
    assert _values(out) == {("run-time", "thread-local")}


@pytest.mark.parametrize("backend", ["loky", "multiprocessing", "threading"])
def test_calls_that_name_their_backend(registered: None, backend: str) -> None:
    workerstate.enable()
    assert _values(_plain(backend=backend)) == {("run-time", "caller-local")}
    with joblib.parallel_config(backend=backend):
        assert _values(_plain()) == {("run-time", "caller-local")}


def test_dask_registered_on_first_use(registered: None, dask_client: Any) -> None:
    workerstate.enable()
    with joblib.parallel_config(backend="dask"):
        assert _values(_plain()) == {("run-time", "caller-local")}


def test_inner_chooses_the_default_backend(registered: None) -> None:
    workerstate.enable(inner="threading")
    main = threading.get_ident()
    seen = _plain()
    assert _values(seen) == {("run-time", "caller-local")}
    assert all(s["thread"] != main for s in seen)  # pool threads, not processes
    workerstate.enable()  # back to the default backend
    assert _values(_plain()) == {("run-time", "caller-local")}


def test_scikit_learn_calls(registered: None) -> None:
    X = np.arange(40, dtype=float).reshape(20, 2)
    y = np.array([0, 1] * 10)
    assert set(cross_val_score(StateReadingClassifier(), X, y, cv=4, n_jobs=N_JOBS)) == {0.0}
    with workerstate.enabled():
        scores = cross_val_score(StateReadingClassifier(), X, y, cv=4, n_jobs=N_JOBS)
        search = GridSearchCV(StateReadingClassifier(), {"c": [1, 2]}, cv=3, n_jobs=N_JOBS)
        search.fit(X, y)
    assert set(scores) == {1.0}
    assert set(search.cv_results_["mean_test_score"]) == {1.0}


def test_warnings_of_tasks_reach_the_parent(registered: None) -> None:
    workerstate.enable()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        joblib.Parallel(n_jobs=N_JOBS)(joblib.delayed(_state.warn_other)(i) for i in range(4))
    assert len([w for w in caught if "something else" in str(w.message)]) == 4, [
        str(w.message) for w in caught
    ]


def test_idempotent_and_safe_from_threads() -> None:
    registry = _joblib.registered_backends()
    workerstate.enable()
    workerstate.enable()
    errors: list[BaseException] = []

    def toggle(k: int) -> None:
        try:
            for i in range(50):
                (workerstate.enable if (i + k) % 2 else workerstate.disable)()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=toggle, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    workerstate.disable()
    workerstate.disable()
    assert _joblib.registered_backends() == registry


def test_enabled_block_restores_what_was_in_effect() -> None:
    with workerstate.enabled():
        with workerstate.enabled(inner="threading"):
            pass
        assert workerstate.is_enabled()
    assert not workerstate.is_enabled()


def test_importable_from_the_package() -> None:
    from workerstate import disable, enable, enabled, fresh_pool  # noqa: F401
