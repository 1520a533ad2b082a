"""Where workerstate must behave as joblib (and tpcp) do: each point through real workers."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import joblib
import pytest

from tests import _dropin_helpers as helpers
from tests import _state
from tests._helpers import N_JOBS
from workerstate import parallel


def _threading_call(form: str) -> Callable[[Any], Any]:
    if form == "delayed":
        return lambda tasks: joblib.Parallel(
            n_jobs=N_JOBS, backend="threading", return_as="generator"
        )(parallel.delayed(helpers.wait_for_release)(i) for i in tasks)
    if form == "Parallel":
        return lambda tasks: parallel.Parallel(
            n_jobs=N_JOBS, backend="threading", return_as="generator"
        )(joblib.delayed(helpers.wait_for_release)(i) for i in tasks)
    if form == "backend":

        def under_backend(tasks: Any) -> Any:
            with joblib.parallel_config(backend="workerstate", inner="threading"):
                return joblib.Parallel(n_jobs=N_JOBS, return_as="generator")(
                    joblib.delayed(helpers.wait_for_release)(i) for i in tasks
                )

        return under_backend
    return lambda tasks: joblib.Parallel(n_jobs=N_JOBS, backend="threading", return_as="generator")(
        joblib.delayed(helpers.wait_for_release)(i) for i in tasks
    )


@pytest.fixture
def released() -> Iterator[None]:
    helpers.RELEASE.clear()
    try:
        yield
    finally:
        helpers.RELEASE.set()


@pytest.mark.parametrize("form", ["joblib", "delayed", "Parallel", "backend"])
def test_a_filter_the_parent_adds_during_a_threaded_task_stays(form: str, released: Any) -> None:
    parallel.register_global_parallel_callback(_state.value_callback, name="value")
    results = _threading_call(form)(range(2 * N_JOBS))
    # The tasks are running (waiting) on the pool's threads now.
    warnings.simplefilter("error", DeprecationWarning)
    added = warnings.filters[0] if hasattr(warnings, "filters") else None
    helpers.RELEASE.set()
    assert list(results) == list(range(2 * N_JOBS))
    with pytest.raises(DeprecationWarning):
        warnings.warn("still an error", DeprecationWarning, stacklevel=1)
    if added is not None:
        assert warnings.filters[0] is added


@pytest.mark.parametrize("parallel_cls", [joblib.Parallel, parallel.Parallel])
def test_a_nested_multiprocessing_call_warns_once(parallel_cls: type[joblib.Parallel]) -> None:
    counts = joblib.Parallel(n_jobs=N_JOBS, backend="loky")(
        joblib.delayed(helpers.nested_multiprocessing_warnings)(parallel_cls) for _ in range(2)
    )
    assert counts == [1, 1]


def test_dask_names_batches_after_the_function(dask_client: Any) -> None:
    from distributed import get_task_stream

    parallel.register_global_parallel_callback(_state.value_callback, name="value")
    with joblib.parallel_config(backend="dask"), get_task_stream(dask_client) as stream:
        joblib.Parallel()(parallel.delayed(_state.square)(i) for i in range(8))
    keys = {str(task["key"]) for task in stream.data}
    assert keys, "the task stream recorded nothing"
    assert all(key.startswith("batch_of_square_") for key in keys), keys


def _reductions(delayed: Any) -> int:
    helpers.REDUCED = 0
    with joblib.parallel_config(backend="dask"):
        assert (
            joblib.Parallel(batch_size=2)(
                delayed(helpers.takes)(helpers.Counted()) for _ in range(8)
            )
            == [1] * 8
        )
    return helpers.REDUCED


def test_dask_pickles_every_argument_as_often_as_for_plain_joblib(dask_client: Any) -> None:
    """distributed pickles a task again with cloudpickle when its pickle names __main__
    (Python's default warning filters do): the captured filters must not."""
    from distributed.protocol import pickle as dask_pickle

    parallel.register_global_parallel_callback(_state.value_callback, name="value")
    tasks = [parallel.delayed(helpers.takes)(helpers.Counted()) for _ in range(4)]
    helpers.REDUCED = 0
    dask_pickle.dumps(tasks)
    assert helpers.REDUCED == 4
    assert _reductions(parallel.delayed) == _reductions(joblib.delayed)


def test_the_backend_name_is_known_in_workers(fresh_workers: Any) -> None:
    results = joblib.Parallel(n_jobs=N_JOBS, backend="loky")(
        joblib.delayed(helpers.backend_by_name_in_a_worker)() for _ in range(2)
    )
    assert results == [[0, 1, 2], [0, 1, 2]]


def test_closures_from_one_factory_get_names_of_their_own() -> None:
    def make_callback(value: int) -> Callable[[], tuple[int, Any]]:
        def callback() -> tuple[int, Any]:
            return value, print

        return callback

    first, second = make_callback(1), make_callback(2)
    name_1 = parallel.register_global_parallel_callback(first)
    name_2 = parallel.register_global_parallel_callback(second)
    assert name_1.endswith("make_callback.<locals>.callback")
    assert name_2 == f"{name_1}-2"
    with pytest.raises(ValueError, match="already registered"):
        parallel.register_global_parallel_callback(second)
    parallel.remove_global_parallel_callback(name_1)
    assert parallel.register_global_parallel_callback(make_callback(3)) == name_1


def _context_tasks(n: int) -> Iterator[Any]:
    for i in range(n):
        yield joblib.delayed(_state.square)(i), helpers.REQUEST.get()


@pytest.mark.parametrize("backend", ["loky", "threading"])
def test_the_generator_runs_in_the_callers_context(backend: str) -> None:
    seen: list[str] = []

    def tasks() -> Iterator[Any]:
        for task, request in _context_tasks(200):
            seen.append(request)
            yield task

    token = helpers.REQUEST.set("caller")
    try:
        results = parallel.Parallel(n_jobs=N_JOBS, backend=backend, batch_size=1)(tasks())
    finally:
        helpers.REQUEST.reset(token)
    assert results == [i * i for i in range(200)]
    assert set(seen) == {"caller"}
