"""What reaches the workers, what stays there, and what the caller gets back.

Every test starts the workers first and changes the parent's state afterwards, so a worker
cannot simply inherit the new state; plain ``joblib.delayed`` is the control that shows the
state does not arrive on its own.
"""

from __future__ import annotations

import concurrent.futures
import os
import pickle
import re
import subprocess
import sys
import textwrap
import threading
import types
import warnings
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import sklearn

from tests import _state
from tests._helpers import N_JOBS, ONE_FAILING_TASK, loky_pids, open_parallel, run_script
from tests._lazy_warning_mod import LazyWarning
from workerstate import parallel
from workerstate.parallel import (
    CallbackError,
    SetterError,
    StatePicklingError,
    fresh_pool,
)

# The ways to use workerstate: (Parallel class, delayed).
APIS: dict[str, tuple[type[joblib.Parallel], Callable[..., Any]]] = {
    "joblib.Parallel+ws.delayed": (joblib.Parallel, parallel.delayed),
    "ws.Parallel+ws.delayed": (parallel.Parallel, parallel.delayed),
    "ws.Parallel+joblib.delayed": (parallel.Parallel, joblib.delayed),
}
CONTROL = (joblib.Parallel, joblib.delayed)


@pytest.fixture(params=list(APIS))
def api(request: pytest.FixtureRequest) -> tuple[type[joblib.Parallel], Callable[..., Any]]:
    return APIS[request.param]


def _values(results: list[dict[str, Any]], key: str = "value") -> set[Any]:
    return {seen[key] for seen in results}


def _register_value() -> None:
    parallel.register_global_parallel_callback(_state.value_callback, name="value")


def _register_value_and_local() -> None:
    """For tasks that change both (``set_and_*``): what is registered is put back after."""
    _register_value()
    parallel.register_global_parallel_callback(_state.local_callback, name="local")


# -- 1. run-time state reaches the workers ----------------------------------------------------
def test_runtime_state_reaches_workers(any_backend: str, api: Any) -> None:
    parallel_cls, delayed = api
    _register_value()
    with open_parallel(parallel_cls, any_backend, batch_size=1) as p:
        _state.set_value("run-time")
        results = p(delayed(_state.report)(i) for i in range(8))
    assert [seen["i"] for seen in results] == list(range(8))
    assert _values(results) == {"run-time"}
    if any_backend != "threading":
        assert os.getpid() not in _values(results, "pid")


def test_without_workerstate_the_state_does_not_arrive(process_backend: str) -> None:
    """The control: the same tasks with plain joblib see the workers' import-time value."""
    _register_value()
    with open_parallel(joblib.Parallel, process_backend, batch_size=1) as p:
        _state.set_value("run-time")
        results = p(joblib.delayed(_state.report)(i) for i in range(8))
    assert _values(results) == {_state.IMPORT_VALUE}
    assert os.getpid() not in _values(results, "pid")


def test_state_changes_between_calls_reach_the_same_workers(process_backend: str) -> None:
    _register_value()
    with open_parallel(joblib.Parallel, process_backend, batch_size=1) as p:
        seen = []
        for value in ("first", "second", "first", _state.IMPORT_VALUE, "third"):
            _state.set_value(value)
            seen.append(_values(p(parallel.delayed(_state.report)(i) for i in range(6))))
    assert seen == [{"first"}, {"second"}, {"first"}, {_state.IMPORT_VALUE}, {"third"}]


def test_a_generator_finished_by_a_second_call_gets_the_second_calls_state() -> None:
    """Tasks pulled from one generator object by two calls: each call's tasks carry the
    state of the call that pulls them, also on the threads that pulled for the first call."""
    _register_value()
    tasks = (parallel.delayed(_state.report)(i, 0.002) for i in range(60))
    first = joblib.Parallel(n_jobs=N_JOBS, batch_size=1, return_as="generator")
    _state.set_value("first")
    output = first(tasks)
    early = [next(output) for _ in range(5)]
    with warnings.catch_warnings():
        # joblib reports the results it computed for nothing; not what this test is about.
        warnings.simplefilter("ignore", UserWarning)
        output.close()  # abandon the first call with tasks left in the generator
    _state.set_value("second")
    rest = joblib.Parallel(n_jobs=N_JOBS, batch_size=1)(tasks)
    assert _values(early) == {"first"}
    assert rest and _values(rest) == {"second"}
    assert first is not None  # the first Parallel stays alive throughout


@pytest.mark.parametrize("kind", ["nested setter", "lambdas"])
def test_nested_setters_and_lambdas_work_on_every_backend(process_backend: str, kind: str) -> None:
    if kind == "lambdas":
        parallel.register_global_parallel_callback(
            lambda: (_state.VALUE, lambda value: _state.set_value(value)), name="value"
        )
    else:
        parallel.register_global_parallel_callback(_state.closure_callback, name="value")
    with open_parallel(joblib.Parallel, process_backend, batch_size=1) as p:
        _state.set_value("run-time")
        results = p(parallel.delayed(_state.report)(i) for i in range(6))
        after = p(joblib.delayed(_state.report)(i) for i in range(6))
    assert _values(results) == {"run-time"}
    assert _values(after) == {_state.IMPORT_VALUE}


def test_array_value_reaches_workers() -> None:
    """Values whose ``==`` is elementwise (NumPy arrays) are set, not compared away."""
    _register_value()
    loky_pids()
    _state.set_value(np.arange(5))
    results = joblib.Parallel(n_jobs=N_JOBS, batch_size=1)(
        parallel.delayed(_state.get_value)() for _ in range(6)
    )
    for value in results:
        np.testing.assert_array_equal(value, np.arange(5))
    after = joblib.Parallel(n_jobs=N_JOBS, batch_size=1)(
        joblib.delayed(_state.get_value)() for _ in range(6)
    )
    assert after == [_state.IMPORT_VALUE] * 6


# -- 2. thread-local state is the calling thread's, in every task -----------------------------
def _thread_local_call(
    parallel_cls: type[joblib.Parallel], delayed: Callable[..., Any], backend: str
) -> tuple[list[dict[str, Any]], set[int]]:
    """Set thread-local state on this thread after the workers started; run 40 tasks."""
    parallel.register_global_parallel_callback(_state.sklearn_callback, name="sklearn")
    parallel.register_global_parallel_callback(_state.local_callback, name="local")
    pulled_on: set[int] = set()

    def tasks() -> Iterator[Any]:
        for i in range(40):
            pulled_on.add(threading.get_ident())
            yield delayed(_state.report_sklearn)(i)

    with open_parallel(parallel_cls, backend, batch_size=1) as p:
        _state.set_local("caller-local")
        with sklearn.config_context(assume_finite=True):
            results = p(tasks())
    _state.reset_local()
    return results, pulled_on - {threading.get_ident()}


def _wrong_tasks(results: list[dict[str, Any]]) -> list[int]:
    return [
        seen["i"]
        for seen in results
        if seen["assume_finite"] is not True or seen["local"] != "caller-local"
    ]


def test_thread_local_state_is_the_callers_in_every_task(any_backend: str, api: Any) -> None:
    results, other_threads = _thread_local_call(*api, any_backend)
    assert [seen["i"] for seen in results] == list(range(40))
    # joblib made some of the tasks on its own threads, where the thread-local state is
    # not the caller's: the case this test is about.
    assert other_threads
    assert _wrong_tasks(results) == []


def test_thread_local_state_without_workerstate(any_backend: str) -> None:
    """The control: no task sees the caller's thread-local state."""
    results, _ = _thread_local_call(*CONTROL, any_backend)
    assert _wrong_tasks(results) == list(range(40))
    assert _values(results, "assume_finite") == {False}
    assert _values(results, "local") == {_state.IMPORT_LOCAL}


@pytest.mark.parametrize("api_name", ["joblib.Parallel+ws.delayed", "ws.Parallel+joblib.delayed"])
def test_thread_local_state_when_called_from_another_thread(
    any_backend: str, api_name: str
) -> None:
    parallel_cls, delayed = APIS[api_name]
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
        caller = executor.submit(threading.get_ident).result()
        results, other_threads = executor.submit(
            _thread_local_call, parallel_cls, delayed, any_backend
        ).result(timeout=50)
    assert caller != threading.get_ident()
    assert other_threads - {caller}
    assert _wrong_tasks(results) == []
    # The main thread's own state was not touched.
    assert _state.get_local() == _state.IMPORT_LOCAL
    assert sklearn.get_config()["assume_finite"] is False


# -- 3. nothing leaks through reused workers --------------------------------------------------
BATCHINGS = {
    # One task per batch: every task installs and restores the state itself.
    "one task per batch": ({"batch_size": 1}, (1,)),
    # Batches of different functions.
    "mixed batches of four": ({"batch_size": 4, "pre_dispatch": "all"}, (1,)),
    # Batches of one function, whose tasks share one task callable: the state stays
    # installed for the batch and is put back between its tasks.
    "uniform batches of four": ({"batch_size": 4, "pre_dispatch": "all"}, ()),
}


def _wrapped_tasks(delayed: Callable[..., Any], n: int, setting: tuple[int, ...]) -> Iterator[Any]:
    # Every task changes the state: ``set_and_report`` before it reports (for i % 3 in
    # ``setting``), ``report_then_set`` after.
    for i in range(n):
        function = _state.set_and_report if i % 3 in setting else _state.report_then_set
        yield delayed(function)(i, 0.01)


def _check_wrapped(results: list[dict[str, Any]], setting: tuple[int, ...]) -> None:
    for seen in results:
        if seen["i"] % 3 in setting:  # the task set the state itself before reporting
            assert (seen["value"], seen["local"]) == (_state.TASK_VALUE, _state.TASK_VALUE)
        else:  # every other task gets the call's state, whatever ran before it
            assert (seen["value"], seen["local"]) == ("run-time", "caller-local"), seen


@pytest.mark.parametrize("batching", list(BATCHINGS))
def test_no_leak_into_later_plain_tasks_in_reused_loky_workers(api: Any, batching: str) -> None:
    parallel_cls, delayed = api
    kwargs, setting = BATCHINGS[batching]
    _register_value_and_local()
    workers = loky_pids()
    _state.set_value("run-time")
    _state.set_local("caller-local")
    wrapped = parallel_cls(n_jobs=N_JOBS, **kwargs)(_wrapped_tasks(delayed, 24, setting))
    _check_wrapped(wrapped, setting)
    plain = joblib.Parallel(n_jobs=N_JOBS, batch_size=1)(
        joblib.delayed(_state.report)(i, 0.01) for i in range(12)
    )
    # Same pool, and the plain tasks ran in workers that had run wrapped tasks.
    assert _values(wrapped, "pid") <= workers
    assert _values(plain, "pid") <= _values(wrapped, "pid")
    assert _values(plain) == {_state.IMPORT_VALUE}
    assert _values(plain, "local") == {_state.IMPORT_LOCAL}


def test_no_leak_into_plain_tasks_batched_with_wrapped_tasks() -> None:
    """A plain task that shares a batch with workerstate tasks sees the worker's own state."""
    _register_value_and_local()
    workers = loky_pids()
    _state.set_value("run-time")

    def tasks() -> Iterator[Any]:
        for i in range(0, 16, 2):
            yield parallel.delayed(_state.set_and_report)(i)
            yield joblib.delayed(_state.report)(i + 1)

    results = joblib.Parallel(n_jobs=N_JOBS, batch_size=4, pre_dispatch="all")(tasks())
    assert _values(results, "pid") <= workers
    wrapped, plain = results[0::2], results[1::2]
    assert _values(wrapped) == {_state.TASK_VALUE}
    assert [seen["value"] for seen in plain] == [_state.IMPORT_VALUE] * len(plain)
    assert [seen["local"] for seen in plain] == [_state.IMPORT_LOCAL] * len(plain)


@pytest.mark.parametrize("made", ["during the call", "before the call"])
def test_no_leak_when_the_wrapped_task_raises_in_a_loky_worker(made: str) -> None:
    """joblib kills the loky pool when a task's error reaches it, so the task's exception
    is caught in the worker here; the worker's state must already be back."""
    _register_value_and_local()
    workers = loky_pids()
    _state.set_value("run-time")
    if made == "before the call":
        tasks = [
            joblib.delayed(_state.call_and_catch)(parallel.delayed(_state.set_and_fail)(i))
            for i in range(8)
        ]
    else:
        tasks = (
            joblib.delayed(_state.call_and_catch)(parallel.delayed(_state.set_and_fail)(i))
            for i in range(8)
        )
    caught = joblib.Parallel(n_jobs=N_JOBS, batch_size=1)(tasks)
    assert all("after setting the state" in seen["error"] for seen in caught)
    assert _values(caught) == {_state.IMPORT_VALUE}
    assert _values(caught, "local") == {_state.IMPORT_LOCAL}
    plain = joblib.Parallel(n_jobs=N_JOBS, batch_size=1)(
        joblib.delayed(_state.report)(i, 0.01) for i in range(8)
    )
    assert _values(caught, "pid") <= workers
    assert _values(plain, "pid") <= workers
    assert _values(plain) == {_state.IMPORT_VALUE}


def test_no_leak_when_the_wrapped_task_raises_in_a_dask_worker(dask_client: Any) -> None:
    """dask keeps its workers when a task fails: a later plain task in the failing worker."""
    _register_value_and_local()
    cluster_pids = set(dask_client.run(os.getpid).values())
    assert len(cluster_pids) == 2
    with joblib.parallel_config("dask"):
        _state.set_value("run-time")
        with pytest.raises(_state.TaskError, match="after setting the state") as info:
            joblib.Parallel(n_jobs=N_JOBS)(
                parallel.delayed(_state.set_and_fail)(0) for _ in range(1)
            )
        failed_in = int(str(info.value).split(" in ")[1].split()[0])
        seen_pids: set[int] = set()
        for _ in range(20):
            plain = joblib.Parallel(n_jobs=N_JOBS, batch_size=1)(
                joblib.delayed(_state.report)(i, 0.02) for i in range(6)
            )
            assert _values(plain) == {_state.IMPORT_VALUE}
            assert _values(plain, "local") == {_state.IMPORT_LOCAL}
            seen_pids |= _values(plain, "pid")
            if failed_in in seen_pids:
                break
    assert failed_in in cluster_pids
    assert failed_in in seen_pids  # a later plain task ran in the worker where it failed
    assert set(dask_client.run(os.getpid).values()) == cluster_pids  # no worker restarted


# -- 4. nested parallelism --------------------------------------------------------------------
def test_nested_parallel_in_a_loky_worker_gets_the_top_parents_state() -> None:
    _register_value()
    workers = loky_pids()
    _state.set_value("run-time")
    (result,) = joblib.Parallel(n_jobs=N_JOBS)(
        parallel.delayed(_state.nested_report)(6) for _ in range(1)
    )
    outer, inner = result["outer"], result["inner"]
    assert outer["value"] == "run-time"
    assert outer["pid"] in workers
    assert [seen["i"] for seen in inner] == list(range(6))
    assert _values(inner) == {"run-time"}
    # The inner tasks really ran in other processes: the outer worker's children.
    assert not _values(inner, "pid") & {outer["pid"], os.getpid()}


# -- 5. warning filters -----------------------------------------------------------------------
def _neutral_filters() -> None:
    """Ignore all warnings; also what a worker forked from here starts with."""
    warnings.resetwarnings()
    warnings.simplefilter("ignore")


def _boom_filter() -> None:
    warnings.filterwarnings("error", category=UserWarning, message=_state.BOOM)


def test_warning_filters_reach_workers(any_backend: str, api: Any) -> None:
    parallel_cls, delayed = api
    _neutral_filters()
    with open_parallel(parallel_cls, any_backend, batch_size=1) as p:
        _boom_filter()
        results = p(delayed(_state.report_filters)(i) for i in range(6))
    assert _values(results, "boom") == {True}
    assert _values(results, "boom_raises") == {True}


def test_warning_filters_without_workerstate(process_backend: str) -> None:
    _neutral_filters()
    with open_parallel(joblib.Parallel, process_backend, batch_size=1) as p:
        _boom_filter()
        results = p(joblib.delayed(_state.report_filters)(i) for i in range(6))
    assert _values(results, "boom_raises") == {False}


def test_a_task_that_warns_raises_in_the_worker(any_backend: str) -> None:
    _neutral_filters()
    with open_parallel(joblib.Parallel, any_backend) as p:
        _boom_filter()
        with pytest.raises(UserWarning, match="boom"):
            p(parallel.delayed(_state.warn_boom)(i) for i in range(ONE_FAILING_TASK))
        # Other warnings are not errors.
        assert p(parallel.delayed(_state.warn_other)(i) for i in range(2)) == [0, 1]


def test_warning_filters_are_restored_after_the_task() -> None:
    loky_pids()
    baseline = joblib.Parallel(n_jobs=N_JOBS, batch_size=1)(
        joblib.delayed(_state.report_filters)(i, 0.01) for i in range(8)
    )
    _neutral_filters()
    _boom_filter()
    wrapped = joblib.Parallel(n_jobs=N_JOBS, batch_size=1)(
        parallel.delayed(_state.add_filter_and_report if i % 2 else _state.report_filters)(i, 0.01)
        for i in range(8)
    )
    assert _values(wrapped, "boom_raises") == {True}
    # Tasks that share a batch: the filter the previous task added is gone.
    batched = joblib.Parallel(n_jobs=N_JOBS, batch_size=4, pre_dispatch="all")(
        parallel.delayed(_state.report_then_add_filter)(i) for i in range(16)
    )
    assert _values(batched, "boom_raises") == {True}
    assert not any("added-by-task" in str(f) for seen in batched for f in seen["filters"])
    after = joblib.Parallel(n_jobs=N_JOBS, batch_size=1)(
        joblib.delayed(_state.report_filters)(i, 0.01) for i in range(8)
    )
    assert _values(after, "pid") <= _values(wrapped, "pid") | _values(batched, "pid")
    assert _values(after, "boom_raises") == {False}
    filters_before = {seen["pid"]: seen["filters"] for seen in baseline}
    assert _values(after, "pid") & set(filters_before)
    for seen in after:
        assert not any("added-by-task" in str(f) for f in seen["filters"])
        if seen["pid"] in filters_before:
            assert seen["filters"] == filters_before[seen["pid"]]


def test_filter_naming_a_category_the_worker_has_not_imported(fresh_workers: None) -> None:
    loky_pids()
    warnings.resetwarnings()
    warnings.simplefilter("ignore")
    warnings.filterwarnings("error", category=LazyWarning)
    seen = joblib.Parallel(n_jobs=N_JOBS, batch_size=1)(
        parallel.delayed(_state.report_filters)(i, 0.01) for i in range(6)
    )
    after = joblib.Parallel(n_jobs=N_JOBS, batch_size=1)(
        joblib.delayed(_state.report_filters)(i, 0.01) for i in range(6)
    )
    # Sending the filter did not import the category's module in the workers ...
    assert _values(seen, "lazy_imported") == {False}
    assert _values(after, "lazy_imported") == {False}
    # ... and the filter only matches its own category.
    assert joblib.Parallel(n_jobs=N_JOBS)(
        parallel.delayed(_state.warn_other)(i) for i in range(4)
    ) == [0, 1, 2, 3]
    # Once a task imports the module, the filter applies to the real class.
    with pytest.raises(LazyWarning, match="lazy"):
        joblib.Parallel(n_jobs=N_JOBS)(parallel.delayed(_state.warn_lazy)() for _ in range(2))
    # The control: without workerstate the warning is ignored by the worker's filters.
    warnings.resetwarnings()
    assert (
        joblib.Parallel(n_jobs=N_JOBS)(joblib.delayed(_state.warn_lazy)() for _ in range(2))
        == ["not raised"] * 2
    )


# -- 6. a __main__ script on the multiprocessing backend --------------------------------------
_SCRIPT_HEAD = """
import json
import sys
import multiprocessing

import joblib
from workerstate import parallel
"""

_SCRIPT_OWN_STATE = (
    _SCRIPT_HEAD
    + """
STATE = {"value": "import-time"}


def callback():
    return STATE["value"], set_state


def set_state(value):
    STATE["value"] = value


def task(i):
    return STATE["value"]


if __name__ == "__main__":
    multiprocessing.set_start_method(sys.argv[1])
    with joblib.Parallel(n_jobs=2, backend="multiprocessing") as p:
        p(joblib.delayed(task)(i) for i in range(2))  # the workers exist from here on
        STATE["value"] = "run-time"
        parallel.register_global_parallel_callback(callback, name="script-state")
        out = {
            "plain": p(joblib.delayed(task)(i) for i in range(4)),
            "delayed": p(parallel.delayed(task)(i) for i in range(4)),
        }
    with parallel.Parallel(n_jobs=2, backend="multiprocessing") as p:
        out["Parallel"] = p(joblib.delayed(task)(i) for i in range(4))
    print(json.dumps(out))
"""
)

_SCRIPT_IMPORTED_STATE = (
    _SCRIPT_HEAD
    + """
from tests import _state


def task(i):
    return _state.VALUE


if __name__ == "__main__":
    multiprocessing.set_start_method(sys.argv[1])
    with joblib.Parallel(n_jobs=2, backend="multiprocessing") as p:
        p(joblib.delayed(task)(i) for i in range(2))  # the workers exist from here on
        _state.set_value("run-time")
        parallel.register_global_parallel_callback(_state.value_callback, name="value")
        out = {
            "plain": p(joblib.delayed(task)(i) for i in range(4)),
            "delayed": p(parallel.delayed(task)(i) for i in range(4)),
        }
    with parallel.Parallel(n_jobs=2, backend="multiprocessing") as p:
        out["Parallel"] = p(joblib.delayed(task)(i) for i in range(4))
    print(json.dumps(out))
"""
)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
@pytest.mark.parametrize("script", ["callback in __main__", "callback imported"])
def test_multiprocessing_with_functions_defined_in_main(
    tmp_path: Path, start_method: str, script: str
) -> None:
    source = _SCRIPT_OWN_STATE if script == "callback in __main__" else _SCRIPT_IMPORTED_STATE
    out = run_script(tmp_path, source, start_method)
    assert out["plain"] == ["import-time"] * 4  # the control
    assert out["delayed"] == ["run-time"] * 4
    assert out["Parallel"] == ["run-time"] * 4


# -- 7. bad input: errors raised in the parent, naming the callback ---------------------------
@pytest.mark.parametrize(
    "returned",
    [42, None, (1, 2), (1, print, 3), [1, print], "value"],
    ids=["int", "None", "setter-not-callable", "triple", "list", "str"],
)
def test_callback_not_returning_a_pair(api: Any, returned: object, tmp_path: Path) -> None:
    parallel_cls, delayed = api
    parallel.register_global_parallel_callback(lambda: returned, name="bad-pair")
    marker = tmp_path / "ran"
    with pytest.raises(CallbackError, match=r"'bad-pair'.*must return a \(value, setter\) pair"):
        parallel_cls(n_jobs=N_JOBS, backend="threading")(
            delayed(_state.touch)(str(marker)) for _ in range(4)
        )
    assert not marker.exists()


def test_callback_not_returning_a_pair_on_loky(api: Any, tmp_path: Path) -> None:
    parallel_cls, delayed = api
    loky_pids()
    parallel.register_global_parallel_callback(lambda: "no setter", name="bad-pair")
    marker = tmp_path / "ran"
    with pytest.raises(CallbackError, match="'bad-pair'"):
        parallel_cls(n_jobs=N_JOBS)(delayed(_state.touch)(str(marker)) for _ in range(4))
    assert not marker.exists()


def test_callback_raising(api: Any, tmp_path: Path) -> None:
    parallel_cls, delayed = api
    original = KeyError("no such setting")

    def raising() -> tuple[Any, Any]:
        raise original

    parallel.register_global_parallel_callback(raising, name="raising-callback")
    marker = tmp_path / "ran"
    with pytest.raises(CallbackError, match="'raising-callback' raised KeyError") as info:
        parallel_cls(n_jobs=N_JOBS, backend="threading")(
            delayed(_state.touch)(str(marker)) for _ in range(4)
        )
    assert info.value.__cause__ is original
    assert isinstance(info.value, TypeError)  # CallbackError is also a TypeError
    assert not marker.exists()


@pytest.mark.parametrize("backend", ["loky", "multiprocessing"])
def test_unpicklable_value_raises_state_pickling_error(
    backend: str, api: Any, tmp_path: Path
) -> None:
    parallel_cls, delayed = api
    _register_value()
    marker = tmp_path / "ran"
    with open_parallel(parallel_cls, backend) as p:
        _state.set_value({"setting": 1, "lock": threading.Lock()})
        with pytest.raises(StatePicklingError) as info:
            p(delayed(_state.touch)(str(marker)) for _ in range(4))
    message = str(info.value)
    assert "'value'" in message
    assert "value['lock']" in message
    assert "_thread.lock" in message
    assert isinstance(info.value, pickle.PicklingError)
    assert not marker.exists()


def test_unpicklable_value_is_fine_on_the_threading_backend(api: Any) -> None:
    parallel_cls, delayed = api
    _register_value()
    lock = threading.Lock()
    with open_parallel(parallel_cls, "threading") as p:
        _state.set_value({"setting": 1, "lock": lock})
        results = p(delayed(_state.get_value)() for _ in range(6))
    assert all(value["lock"] is lock for value in results)


@pytest.mark.parametrize(
    ("api_name", "backend"),
    [
        ("joblib.Parallel+ws.delayed", "loky"),
        ("ws.Parallel+joblib.delayed", "loky"),
        ("joblib.Parallel+ws.delayed", "multiprocessing"),
        ("joblib.Parallel+ws.delayed", "dask"),
    ],
)
def test_setter_raising_in_the_worker(
    api_name: str, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "dask":
        request.getfixturevalue("dask_client")
    parallel_cls, delayed = APIS[api_name]
    marker = tmp_path / "ran"
    with open_parallel(parallel_cls, backend) as p:
        parallel.register_global_parallel_callback(
            _state.failing_setter_callback, name="bad-setter"
        )
        with pytest.raises(SetterError, match="setter of parallel callback 'bad-setter'") as info:
            p(delayed(_state.touch)(str(marker)) for _ in range(ONE_FAILING_TASK))
    assert "setter exploded" in str(info.value)
    assert "task was not run" in str(info.value)
    assert not marker.exists()


def test_callback_raising_in_the_worker_still_delivers_its_state(process_backend: str) -> None:
    """The callback runs in the worker only to read what to put back: when that read raises,
    the task still runs with the parent's value, and the parent hears once per call that
    the worker keeps it."""
    with open_parallel(parallel.Parallel, process_backend) as p:
        parallel.register_global_parallel_callback(_state.parent_only_callback, name="parent-only")
        _state.CALLBACK_WORKS = True
        _state.set_value("run-time")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            seen = p(joblib.delayed(_state.report)(i) for i in range(8))
    assert _values(seen) == {"run-time"}
    notes = [w for w in caught if issubclass(w.category, parallel.StateRestoreWarning)]
    assert len(notes) == 1, [str(w.message) for w in caught]
    text = str(notes[0].message)
    assert "'parent-only' raised LookupError: this process has no state to read" in text
    assert "keeps it" in text
    assert "fresh process" in text


def test_callback_raising_in_the_worker_under_plain_joblib_parallel(process_backend: str) -> None:
    """With a plain joblib.Parallel nothing comes back to the parent: the tasks still get
    the state."""
    parallel.register_global_parallel_callback(_state.parent_only_callback, name="parent-only")
    with open_parallel(joblib.Parallel, process_backend) as p:
        _state.CALLBACK_WORKS = True
        _state.set_value("run-time")
        seen = p(parallel.delayed(_state.report)(i) for i in range(8))
    assert _values(seen) == {"run-time"}


# -- 8. fresh_pool() --------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_fresh_pool_gives_new_workers() -> None:
    before = loky_pids()
    assert loky_pids() <= before  # without it the pool is reused
    assert repr(fresh_pool()) == "<fresh_pool>"
    assert not any(_alive(pid) for pid in before)  # it waited for the old workers to exit
    after = loky_pids()
    assert after
    assert not after & before


def test_fresh_pool_as_a_context_manager() -> None:
    before = loky_pids()
    with fresh_pool() as pool:
        assert isinstance(pool, fresh_pool)
        inside = loky_pids()
    assert not inside & before
    assert not any(_alive(pid) for pid in inside)
    assert not loky_pids() & (before | inside)


def test_fresh_pool_twice_and_without_a_pool() -> None:
    loky_pids()
    fresh_pool()
    fresh_pool()  # the pool is already gone: nothing to do
    # In a new interpreter with no pool at all, it starts none.
    code = textwrap.dedent(
        """
        from joblib.externals.loky import reusable_executor
        from workerstate.parallel import fresh_pool
        fresh_pool()
        with fresh_pool():
            pass
        print(reusable_executor._executor)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "None"


@pytest.fixture
def _pool_before_fresh_workers() -> Iterator[dict[str, set[int]]]:
    """Set up before ``fresh_workers`` and torn down after it (fixtures unwind in reverse)."""
    pids = {"before": loky_pids(), "during": set()}
    yield pids
    assert pids["during"]
    assert not any(_alive(pid) for pid in pids["during"]), "fresh_workers left workers behind"


def test_fresh_workers_fixture(
    _pool_before_fresh_workers: dict[str, set[int]], fresh_workers: None
) -> None:
    pids = _pool_before_fresh_workers
    assert not any(_alive(pid) for pid in pids["before"])
    pids["during"] = loky_pids()
    assert not pids["during"] & pids["before"]


# -- 9. the threading backend -----------------------------------------------------------------
def test_threading_backend_applies_and_restores_thread_local_state() -> None:
    parallel.register_global_parallel_callback(_state.local_callback, name="local")
    parallel.register_global_parallel_callback(_state.sklearn_callback, name="sklearn")
    with joblib.Parallel(n_jobs=N_JOBS, backend="threading", batch_size=1) as p:
        p(joblib.delayed(_state.report)(i) for i in range(4))  # the threads exist now
        _state.set_local("caller-local")
        with sklearn.config_context(assume_finite=True):
            wrapped = p(parallel.delayed(_state.report_sklearn)(i, 0.005) for i in range(12))
            plain = p(joblib.delayed(_state.report_sklearn)(i, 0.005) for i in range(12))
    assert threading.get_ident() not in _values(wrapped, "thread")
    assert _values(wrapped, "local") == {"caller-local"}
    assert _values(wrapped, "assume_finite") == {True}
    # The same threads, after the wrapped tasks: their own state again.
    assert _values(plain, "thread") <= _values(wrapped, "thread")
    assert _values(plain, "local") == {_state.IMPORT_LOCAL}
    assert _values(plain, "assume_finite") == {False}


def test_threading_backend_restores_what_the_task_changed() -> None:
    parallel.register_global_parallel_callback(_state.local_callback, name="local")
    with joblib.Parallel(n_jobs=N_JOBS, backend="threading", batch_size=1) as p:
        p(joblib.delayed(_state.report)(i) for i in range(4))
        _state.set_local("caller-local")
        wrapped = p(parallel.delayed(_state.set_and_report)(i, 0.005) for i in range(8))
        plain = p(joblib.delayed(_state.report)(i, 0.005) for i in range(8))
    assert _values(wrapped, "local") == {_state.TASK_VALUE}
    assert _values(plain, "thread") <= _values(wrapped, "thread")
    assert _values(plain, "local") == {_state.IMPORT_LOCAL}
    assert _state.get_local() == "caller-local"


@pytest.mark.parametrize("api_name", list(APIS))
def test_threading_backend_does_not_reset_a_process_global_already_in_place(
    api_name: str,
) -> None:
    parallel_cls, delayed = APIS[api_name]
    parallel.register_global_parallel_callback(_state.counting_callback, name="counting")
    _state.set_value("run-time")
    results = parallel_cls(n_jobs=N_JOBS, backend="threading", batch_size=1)(
        delayed(_state.report)(i) for i in range(10)
    )
    assert _values(results) == {"run-time"}
    assert _state.SETTER_CALLS == 0
    assert _state.VALUE == "run-time"


def test_process_workers_do_run_the_setter() -> None:
    """The counterpart: a worker holding another value runs the setter."""
    parallel.register_global_parallel_callback(_state.counting_callback, name="counting")
    loky_pids()
    _state.set_value("run-time")

    def calls_and_value() -> tuple[int, Any]:
        return _state.SETTER_CALLS, _state.VALUE

    results = joblib.Parallel(n_jobs=N_JOBS)(parallel.delayed(calls_and_value)() for _ in range(4))
    assert all(calls >= 1 and value == "run-time" for calls, value in results)
    assert _state.SETTER_CALLS == 0  # not in the parent


# -- 10. results, order, generators and exceptions are joblib's -------------------------------
RESULT_BACKENDS = ["loky", "threading", "multiprocessing", "dask"]
GENERATOR_BACKENDS = ["loky", "threading", "dask"]


def _combine_tasks(delayed: Callable[..., Any]) -> Iterator[Any]:
    for i in range(15):
        yield delayed(_state.combine)(i, b=i % 4, scale=3)


def _slow_tasks(delayed: Callable[..., Any]) -> Iterator[Any]:
    for i in range(6):
        yield delayed(_state.slow_square)(i, 0.06 if i < 2 else 0.0)


def _run(
    parallel_cls: type[joblib.Parallel],
    delayed: Callable[..., Any],
    backend: str,
    tasks: Callable[[Callable[..., Any]], Iterator[Any]],
    **kwargs: Any,
) -> Any:
    config = joblib.parallel_config("dask") if backend == "dask" else nullcontext()
    with config:
        result = parallel_cls(
            n_jobs=N_JOBS, backend=None if backend == "dask" else backend, **kwargs
        )(tasks(delayed))
        if isinstance(result, types.GeneratorType):
            return "generator", list(result)
        return type(result).__name__, result


@pytest.fixture(params=RESULT_BACKENDS)
def result_backend(request: pytest.FixtureRequest) -> str:
    if request.param == "dask":
        request.getfixturevalue("dask_client")
    backend: str = request.param
    return backend


def test_results_and_order_are_joblibs(result_backend: str, api: Any) -> None:
    _register_value()
    expected = _run(*CONTROL, result_backend, _combine_tasks)
    assert expected == ("list", [_state.combine(i, b=i % 4, scale=3) for i in range(15)])
    assert _run(*api, result_backend, _combine_tasks) == expected
    # Tasks that finish out of order still come back in order.
    assert _run(*api, result_backend, _slow_tasks) == ("list", [i * i for i in range(6)])


def _outcome(api: Any, backend: str, **kwargs: Any) -> tuple[Any, ...]:
    """What a call returns, or the error it raises (joblib versions differ in what they
    support: dask generators and "generator_unordered" are newer than joblib 1.3)."""
    try:
        return ("returned", *_run(*api, backend, _slow_tasks, **kwargs))
    except ValueError as exc:
        return ("raised", type(exc), re.sub(r"0x[0-9a-f]+", "0x...", str(exc)))


@pytest.mark.parametrize("backend", GENERATOR_BACKENDS)
def test_return_as_generator(backend: str, api: Any, request: pytest.FixtureRequest) -> None:
    if backend == "dask":
        request.getfixturevalue("dask_client")
    _register_value()
    expected = _outcome(CONTROL, backend, return_as="generator")
    if expected[0] == "returned":
        assert expected == ("returned", "generator", [i * i for i in range(6)])
    assert _outcome(api, backend, return_as="generator") == expected


@pytest.mark.parametrize("backend", GENERATOR_BACKENDS)
def test_return_as_generator_unordered(
    backend: str, api: Any, request: pytest.FixtureRequest
) -> None:
    if backend == "dask":
        request.getfixturevalue("dask_client")
    _register_value()
    control = _outcome(CONTROL, backend, return_as="generator_unordered")
    got = _outcome(api, backend, return_as="generator_unordered")
    if control[0] == "raised":  # this joblib does not have it: the same error
        assert got == control
        return
    assert (control[1], got[1]) == ("generator", "generator")
    assert sorted(got[2]) == sorted(control[2]) == [i * i for i in range(6)]


def test_return_as_generator_unsupported_is_joblibs_error(api: Any) -> None:
    parallel_cls, delayed = api
    with pytest.raises(ValueError) as control:
        joblib.Parallel(n_jobs=N_JOBS, backend="multiprocessing", return_as="generator")(
            joblib.delayed(_state.square)(i) for i in range(3)
        )
    with pytest.raises(type(control.value)) as info:
        parallel_cls(n_jobs=N_JOBS, backend="multiprocessing", return_as="generator")(
            delayed(_state.square)(i) for i in range(3)
        )

    def without_addresses(error: BaseException) -> str:
        return re.sub(r"0x[0-9a-f]+", "0x...", str(error))

    assert without_addresses(info.value) == without_addresses(control.value)


@pytest.mark.parametrize("backend", ["loky", "threading", "dask"])
def test_exceptions_are_joblibs(backend: str, api: Any, request: pytest.FixtureRequest) -> None:
    if backend == "dask":
        request.getfixturevalue("dask_client")
    _register_value()

    def tasks(delayed: Callable[..., Any]) -> Iterator[Any]:
        return (delayed(_state.fail_on)(i, 5) for i in range(8))

    with pytest.raises(_state.TaskError) as control:
        _run(*CONTROL, backend, tasks)
    with pytest.raises(_state.TaskError) as info:
        _run(*api, backend, tasks)
    assert type(info.value) is type(control.value) is _state.TaskError
    assert str(info.value) == str(control.value) == "task 5 failed"
    assert info.value.args == control.value.args


@pytest.mark.parametrize("backend", ["loky", "threading"])
def test_n_jobs_1(backend: str, api: Any) -> None:
    parallel_cls, delayed = api
    _register_value()
    parallel.register_global_parallel_callback(_state.local_callback, name="local")
    _state.set_value("run-time")
    _state.set_local("caller-local")
    results = parallel_cls(n_jobs=1, backend=backend)(delayed(_state.report)(i) for i in range(5))
    assert [seen["i"] for seen in results] == list(range(5))
    assert _values(results) == {"run-time"}
    assert _values(results, "local") == {"caller-local"}
    assert _values(results, "pid") == {os.getpid()}
    assert parallel_cls(n_jobs=1, backend=backend)(
        delayed(_state.combine)(i, b=1, scale=2) for i in range(4)
    ) == [_state.combine(i, b=1, scale=2) for i in range(4)]
    with pytest.raises(_state.TaskError, match=r"^task 2 failed$"):
        parallel_cls(n_jobs=1, backend=backend)(delayed(_state.fail_on)(i, 2) for i in range(4))
    assert _state.VALUE == "run-time"
    assert _state.get_local() == "caller-local"


@pytest.mark.parametrize("api_name", ["joblib.Parallel+ws.delayed", "ws.Parallel+ws.delayed"])
def test_state_is_captured_once_per_call_with_a_generator_output(api_name: str) -> None:
    """Changing the parent's state while a call's results are consumed does not change the
    state of the call's remaining tasks."""
    parallel_cls, delayed = APIS[api_name]
    _register_value()
    loky_pids()
    _state.set_value("at-call")
    output = parallel_cls(n_jobs=N_JOBS, batch_size=1, return_as="generator")(
        delayed(_state.report)(i, 0.01) for i in range(16)
    )
    first = next(output)
    _state.set_value("changed-later")
    rest = list(output)
    assert _values([first, *rest]) == {"at-call"}
