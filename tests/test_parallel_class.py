"""``workerstate.parallel.Parallel``: one capture per call, bound to every task of the call."""

from __future__ import annotations

import os
import types
from contextlib import nullcontext
from typing import Any

import joblib
import pytest

from tests import _state
from tests._helpers import ALL_BACKENDS, N_JOBS, loky_pids, open_parallel
from workerstate import parallel
from workerstate.parallel import Parallel


def _values(results: list[dict[str, Any]], key: str = "value") -> set[Any]:
    return {seen[key] for seen in results}


def _parent_calls() -> int:
    """How many times ``recording_callback`` ran in this process (any thread)."""
    return sum(1 for pid, _ in _state.CALLBACK_CALLS if pid == os.getpid())


def test_is_a_joblib_parallel() -> None:
    p = Parallel(n_jobs=3, backend="threading", batch_size=2, return_as="generator")
    assert isinstance(p, joblib.Parallel)
    assert (p.n_jobs, p.batch_size, p.return_generator) == (3, 2, True)


def test_binds_tasks_made_with_plain_joblib_delayed(process_backend: str) -> None:
    parallel.register_global_parallel_callback(_state.value_callback, name="value")
    with open_parallel(Parallel, process_backend, batch_size=1) as p:
        _state.set_value("run-time")
        results = p(joblib.delayed(_state.report)(i) for i in range(10))
    assert [seen["i"] for seen in results] == list(range(10))
    assert _values(results) == {"run-time"}
    assert os.getpid() not in _values(results, "pid")


def test_binds_a_mix_of_both_delayed_kinds_and_functions() -> None:
    parallel.register_global_parallel_callback(_state.value_callback, name="value")
    parallel.register_global_parallel_callback(_state.local_callback, name="local")
    loky_pids()
    _state.set_value("run-time")
    tasks = []
    for i in range(12):
        delayed = parallel.delayed if i % 2 else joblib.delayed
        function = _state.set_and_report if i % 3 == 0 else _state.report
        tasks.append(delayed(function)(i))
    results = Parallel(n_jobs=N_JOBS, batch_size=4, pre_dispatch="all")(tasks)
    for seen in results:
        expected = _state.TASK_VALUE if seen["i"] % 3 == 0 else "run-time"
        assert seen["value"] == expected, seen


@pytest.mark.parametrize("backend", ["loky", "multiprocessing", "dask"])
@pytest.mark.parametrize("delayed_kind", ["joblib.delayed", "ws.delayed"])
def test_captures_once_per_call(
    backend: str, delayed_kind: str, request: pytest.FixtureRequest
) -> None:
    if backend == "dask":
        request.getfixturevalue("dask_client")
    delayed = joblib.delayed if delayed_kind == "joblib.delayed" else parallel.delayed
    parallel.register_global_parallel_callback(_state.recording_callback, name="recording")
    with open_parallel(Parallel, backend, batch_size=1) as p:
        _state.set_value("run-time")
        _state.CALLBACK_CALLS.clear()
        counts = []
        for n_tasks in (1, 5, 30):
            before = _parent_calls()
            results = p(delayed(_state.report)(i) for i in range(n_tasks))
            counts.append(_parent_calls() - before)
            assert _values(results) == {"run-time"}
    # The callback also runs in each worker (to read what to restore), but in the parent
    # it runs exactly once per call, however many tasks the call has.
    assert counts == [1, 1, 1]


def test_plain_joblib_parallel_with_ws_delayed_captures_once_per_call() -> None:
    parallel.register_global_parallel_callback(_state.recording_callback, name="recording")
    loky_pids()
    _state.set_value("run-time")
    counts = []
    for n_tasks in (1, 5, 30):
        before = _parent_calls()
        results = joblib.Parallel(n_jobs=N_JOBS, batch_size=1)(
            parallel.delayed(_state.report)(i) for i in range(n_tasks)
        )
        counts.append(_parent_calls() - before)
        assert _values(results) == {"run-time"}
    assert counts == [1, 1, 1]


@pytest.mark.parametrize("delayed_kind", ["joblib.delayed", "ws.delayed"])
def test_captures_once_per_call_on_the_threading_backend(delayed_kind: str) -> None:
    """On threads the workers' calls are in this process too: count the calling thread's."""
    delayed = joblib.delayed if delayed_kind == "joblib.delayed" else parallel.delayed
    parallel.register_global_parallel_callback(_state.recording_callback, name="recording")
    _state.set_value("run-time")
    results = Parallel(n_jobs=N_JOBS, backend="threading", batch_size=1)(
        delayed(_state.report)(i) for i in range(30)
    )
    assert _values(results) == {"run-time"}
    assert _state.parent_callback_calls() == 1


@pytest.mark.parametrize("delayed_kind", ["joblib.delayed", "ws.delayed"])
def test_tasks_built_before_the_call_get_the_calls_state(
    process_backend: str, delayed_kind: str
) -> None:
    delayed = joblib.delayed if delayed_kind == "joblib.delayed" else parallel.delayed
    parallel.register_global_parallel_callback(_state.value_callback, name="value")
    with open_parallel(Parallel, process_backend, batch_size=1) as p:
        _state.set_value("when-built")
        tasks = [delayed(_state.report)(i) for i in range(8)]
        _state.set_value("when-called")
        first = p(tasks)
        _state.set_value("when-called-again")
        second = p(tasks)  # the same task list, run again
    assert _values(first) == {"when-called"}
    assert _values(second) == {"when-called-again"}


def test_plain_joblib_parallel_gives_prebuilt_ws_tasks_their_build_time_state() -> None:
    """The documented counterpart: outside a call, ``delayed`` captures when the task is made."""
    parallel.register_global_parallel_callback(_state.value_callback, name="value")
    loky_pids()
    _state.set_value("when-built")
    tasks = [parallel.delayed(_state.report)(i) for i in range(8)]
    _state.set_value("when-called")
    results = joblib.Parallel(n_jobs=N_JOBS, batch_size=1)(tasks)
    assert _values(results) == {"when-built"}


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_context_manager_sees_state_changes_between_calls(
    backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "dask":
        request.getfixturevalue("dask_client")
    parallel.register_global_parallel_callback(_state.value_callback, name="value")
    parallel.register_global_parallel_callback(_state.local_callback, name="local")
    config = joblib.parallel_config("dask") if backend == "dask" else nullcontext()
    with config, Parallel(n_jobs=N_JOBS, backend=None if backend == "dask" else backend) as p:
        warm = p(joblib.delayed(_state.report)(i) for i in range(4))  # the workers exist
        _state.set_value("first")
        _state.set_local("first-local")
        first = p(joblib.delayed(_state.report)(i) for i in range(6))
        _state.set_value("second")
        _state.set_local("second-local")
        second = p(parallel.delayed(_state.report)(i) for i in range(6))
    assert _values(warm) == {_state.IMPORT_VALUE}
    assert (_values(first), _values(first, "local")) == ({"first"}, {"first-local"})
    assert (_values(second), _values(second, "local")) == ({"second"}, {"second-local"})
    if backend != "threading":
        # One set of workers for the whole block.
        pids = _values(warm, "pid") | _values(first, "pid") | _values(second, "pid")
        assert len(pids) <= N_JOBS
        assert os.getpid() not in pids


def test_generator_output_and_length() -> None:
    parallel.register_global_parallel_callback(_state.value_callback, name="value")
    loky_pids()
    _state.set_value("run-time")
    output = Parallel(n_jobs=N_JOBS, return_as="generator")(
        joblib.delayed(_state.report)(i) for i in range(5)
    )
    assert isinstance(output, types.GeneratorType)
    results = list(output)
    assert [seen["i"] for seen in results] == list(range(5))
    assert _values(results) == {"run-time"}
    # A sized iterable keeps its size for joblib (n_tasks), an unsized one works too.
    # A sized iterable keeps its size for joblib (n_tasks, from joblib 1.4 on), an unsized
    # one works too: the same as plain joblib for the same input.
    sizes = {}
    for make in (list, iter):
        ours, theirs = Parallel(n_jobs=N_JOBS), joblib.Parallel(n_jobs=N_JOBS)
        assert ours(make([joblib.delayed(_state.square)(i) for i in range(3)])) == [0, 1, 4]
        theirs(make([joblib.delayed(_state.square)(i) for i in range(3)]))
        sizes[make] = getattr(ours, "n_tasks", "absent")
        assert sizes[make] == getattr(theirs, "n_tasks", "absent")
    if sizes[list] != "absent":
        assert (sizes[list], sizes[iter]) == (3, None)


def test_items_that_are_not_tasks_fail_as_in_joblib() -> None:
    with pytest.raises(TypeError) as control:
        joblib.Parallel(n_jobs=N_JOBS, backend="threading")([1, 2, 3])
    with pytest.raises(type(control.value)) as info:
        Parallel(n_jobs=N_JOBS, backend="threading")([1, 2, 3])
    assert str(info.value) == str(control.value)


def test_capture_errors_are_raised_before_any_task_runs(tmp_path: Any) -> None:
    calls = []

    def bad() -> Any:
        calls.append(1)
        return "no setter"

    parallel.register_global_parallel_callback(bad, name="bad")
    marker = tmp_path / "ran"
    p = Parallel(n_jobs=N_JOBS)
    with pytest.raises(parallel.CallbackError, match="'bad'"):
        p(joblib.delayed(_state.touch)(str(marker)) for _ in range(3))
    assert calls == [1]
    assert not marker.exists()
    # The same object works once the callback is fixed.
    parallel.remove_global_parallel_callback("bad")
    assert p(joblib.delayed(_state.square)(i) for i in range(3)) == [0, 1, 4]
