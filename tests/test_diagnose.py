"""workerstate.diagnose: pickling explanations for each known trap, task errors, worker cost.

Every explanation is checked against what really happens: the objects are pickled for real,
and the task errors come from real joblib calls on loky and multiprocessing workers.
"""

from __future__ import annotations

import functools
import json
import pickle
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import cloudpickle
import joblib
import pytest

from tests import _diagnose_helpers as helpers
from tests import _state
from tests._helpers import loky_pids
from workerstate import parallel
from workerstate.diagnose import (
    TRAPS,
    ModuleImport,
    PicklingReport,
    TaskPicklingError,
    WorkerCost,
    explain_pickling,
    explain_pickling_error,
    worker_cost,
)
from workerstate.parallel import StatePicklingError, WorkerStateError

ROOT = Path(__file__).resolve().parents[1]


def fields(report: PicklingReport) -> tuple[Any, ...]:
    return report.picklable, report.stdlib_picklable, report.by_value, report.path, report.trap


def flat(obj: object) -> str:
    """``str(obj)`` with its line wrapping undone."""
    return " ".join(str(obj).split())


def run_python(code: str, tmp_path: Path) -> Any:
    """Run ``code`` as a script (its own ``__main__``) and return the JSON it prints."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    done = subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


# What the standard pickle raises for a function or class defined inside a function.
LOCAL_OBJECT_ERROR: tuple[type[Exception], str] = (
    (pickle.PicklingError, "Can't pickle local object")
    if sys.version_info >= (3, 14)
    else (AttributeError, "Can't get local object")
    if sys.version_info >= (3, 13)
    else (AttributeError, "Can't pickle local object")
)


def joblib_error(tasks: list[Any], **kwargs: Any) -> BaseException:
    """The exception that a real joblib call over ``tasks`` raises."""
    kwargs.setdefault("n_jobs", 2)
    with pytest.raises(Exception) as info:
        joblib.Parallel(**kwargs)(tasks)
    return info.value


# -- the traps -------------------------------------------------------------------------------
def test_clean_value_is_not_reported() -> None:
    report = explain_pickling({"alpha": 0.5, "tags": ["a", "b"], "func": helpers.scale})
    assert fields(report) == (True, True, False, None, None)
    assert not report.fragile
    assert report.size is not None and report.size > 0
    assert "every process backend can send it" in flat(report)


def test_lock_inside_an_object() -> None:
    report = explain_pickling({"model": helpers.Model()}, name="state")
    assert fields(report) == (False, False, False, "state['model']._lock", "lock")
    assert report.type_name == "_thread.lock"
    assert report.error == "TypeError: cannot pickle '_thread.lock' object"
    text = str(report)
    assert text.splitlines()[0] == (
        "state cannot be pickled, so it cannot be sent to worker processes."
    )
    for label in ("part:", "error:", "trap:", "fix:"):
        assert label in text
    assert TRAPS["lock"][1] in flat(report)


@pytest.mark.parametrize(
    "make", [threading.RLock, threading.Event, threading.Condition, threading.Semaphore]
)
def test_other_synchronisation_objects(make: Any) -> None:
    report = explain_pickling(helpers.Holder(sync=make()), name="value")
    assert not report.picklable
    assert report.trap == "lock"
    assert report.path is not None and report.path.startswith("value.sync")


def test_instance_of_a_class_defined_in_a_function() -> None:
    class Local:
        def __init__(self) -> None:
            self.size = 3

    report = explain_pickling(helpers.Holder(item=Local()), name="value")
    # cloudpickle sends the class by value; the standard pickle cannot find it.
    assert fields(report) == (True, False, True, "value.item", "local_class")
    assert report.type_name is not None and "<locals>.Local" in report.type_name
    assert "module level" in flat(report)
    with pytest.raises(LOCAL_OBJECT_ERROR[0], match=LOCAL_OBJECT_ERROR[1]):
        pickle.dumps(Local())


def test_local_class_holding_a_lock_is_blamed_on_the_lock() -> None:
    class Local:
        def __init__(self) -> None:
            self.guard = threading.Lock()

    report = explain_pickling([Local()], name="value")
    assert fields(report) == (False, False, False, "value[0].guard", "lock")


def test_lambda_and_nested_function_under_standard_pickle() -> None:
    def nested(x: int) -> int:
        return x + 1

    for func in (lambda x: x, nested):
        report = explain_pickling({"func": func}, name="value")
        assert fields(report) == (True, False, True, "value['func']", "lambda")
        assert "multiprocessing backend cannot" in flat(report)
        assert "functools.partial" in flat(report)


def test_nested_function_closing_over_a_lock() -> None:
    guard = threading.Lock()

    def locked() -> bool:
        return guard.locked()

    report = explain_pickling(locked, name="func")
    assert fields(report) == (False, False, False, "func.<closure guard>", "lock")


def test_replaced_function(monkeypatch: pytest.MonkeyPatch) -> None:
    original = helpers.scale
    monkeypatch.setattr(helpers, "scale", helpers.length)
    report = explain_pickling(original, name="func")
    assert fields(report) == (True, False, True, "func", "replaced_global")
    assert report.error is not None and "not the same object" in report.error
    assert "monkey-patched" in flat(report)


def test_replaced_class(monkeypatch: pytest.MonkeyPatch) -> None:
    point = helpers.Point(1)
    monkeypatch.setattr(helpers, "Point", type("Point", (), {}))
    report = explain_pickling({"origin": point}, name="value")
    assert fields(report) == (True, False, True, "value['origin']", "replaced_global")
    assert report.type_name == "tests._diagnose_helpers.Point"


def test_wrapper_patched_over_a_function_arrives_unpatched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(helpers, "scale", helpers.traced(helpers.scale))
    report = explain_pickling(helpers.scale, name="func")
    assert fields(report) == (True, True, False, "func", "patched_wrapper")
    assert "the original, unpatched function" in flat(report)
    # What the report warns about: a worker gets the module's own, undecorated function.
    arrived = joblib.Parallel(n_jobs=2)(
        joblib.delayed(helpers.is_wrapped)(helpers.scale) for _ in range(2)
    )
    assert arrived == [False, False]
    # A decorator applied in the source is no trap.
    assert explain_pickling(helpers.decorated, name="func").trap is None


def test_cache_patched_over_a_function(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(helpers, "square", functools.cache(helpers.square))
    report = explain_pickling({"score": helpers.square}, name="value")
    assert fields(report) == (True, True, False, "value['score']", "patched_wrapper")
    assert pickle.loads(pickle.dumps(helpers.square)) is helpers.square  # sent by name


def test_open_files(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    with open(path, "w") as writing:
        report = explain_pickling({"out": writing}, name="value")
    assert fields(report) == (False, False, False, "value['out']", "open_file")
    assert "send the path" in flat(report)
    with open(path) as reading:
        report = explain_pickling({"in": reading}, name="value")
    # cloudpickle copies a file opened for reading: it pickles, by value.
    assert fields(report) == (True, False, True, "value['in']", "open_file")


def test_socket() -> None:
    with socket.socket() as sock:
        report = explain_pickling(helpers.Holder(conn=sock), name="client")
    assert fields(report) == (False, False, False, "client.conn", "socket")
    assert "address" in flat(report)


def test_database_connection() -> None:
    connection = sqlite3.connect(":memory:")
    try:
        report = explain_pickling({"db": connection}, name="value")
    finally:
        connection.close()
    assert fields(report) == (False, False, False, "value['db']", "db_connection")
    assert "connection parameters" in flat(report)


def test_generator() -> None:
    report = explain_pickling({"rows": (i for i in range(3))}, name="value")
    assert fields(report) == (False, False, False, "value['rows']", "generator")


def test_reduce_that_raises() -> None:
    report = explain_pickling([1, helpers.Refuses()], name="value")
    assert fields(report) == (False, False, False, "value[1]", "reduce_raises")
    assert report.error == (
        "RuntimeError: Refuses objects hold a native handle and cannot be copied"
    )
    assert "__reduce__" in flat(report)


def test_path_follows_what_reduce_returns() -> None:
    report = explain_pickling(helpers.Rebuilt(threading.Lock()), name="value")
    assert fields(report) == (False, False, False, "value.<__reduce__ arg 0>", "lock")


def test_module_object() -> None:
    report = explain_pickling({"json": json}, name="value")
    assert fields(report) == (True, False, True, "value['json']", "module")


def test_main_module_objects(tmp_path: Path) -> None:
    """Functions and classes of ``__main__``: by value, fragile, and only blamed when they fail."""
    out = run_python(
        """
        import json, threading
        import joblib
        from workerstate.diagnose import explain_pickling, explain_pickling_error

        LOCK = threading.Lock()

        def add_one(x):
            return x + 1

        def uses_lock(x):
            with LOCK:
                return x

        class Thing:
            pass

        def fields(report):
            return [report.picklable, report.stdlib_picklable, report.by_value, report.path,
                    report.trap]

        def explain(tasks):
            try:
                joblib.Parallel(n_jobs=2)(tasks)
            except Exception as exc:
                error = explain_pickling_error(exc, tasks)
                return [error.report.path, error.report.trap, error.task_index, str(error)]

        if __name__ == "__main__":
            out = {
                "function": fields(explain_pickling(add_one, name="f")),
                "instance": fields(explain_pickling({"thing": Thing()}, name="v")),
                "uses_lock": fields(explain_pickling(uses_lock, name="f")),
                # cloudpickle sends the function by value and it runs: nothing to explain
                "results": joblib.Parallel(n_jobs=2)(joblib.delayed(add_one)(i) for i in range(3)),
                "lock_arg": explain(
                    [joblib.delayed(add_one)(1), joblib.delayed(add_one)(threading.Lock())]
                ),
                "lock_global": explain([joblib.delayed(uses_lock)(1)]),
            }
            print(json.dumps(out))
        """,
        tmp_path,
    )
    assert out["function"] == [True, True, True, "f", "main_module"]
    assert out["instance"] == [True, True, True, "v['thing']", "main_module"]
    assert out["uses_lock"] == [False, True, False, "f.<global LOCK>", "lock"]
    assert out["results"] == [1, 2, 3]
    path, trap, index, message = out["lock_arg"]
    assert (path, trap, index) == ("task.args[0]", "lock", 1)  # not the __main__ function
    assert "add_one(<unlocked _thread.lock" in message
    assert out["lock_global"][:3] == ["task.func.<global LOCK>", "lock", 0]


def test_main_module_advice_is_in_the_report() -> None:
    assert "__main__" in TRAPS["main_module"][0]
    assert "Move them into a module" in TRAPS["main_module"][1]


# -- task pickling errors from real joblib calls ---------------------------------------------
def test_explains_loky_task_error() -> None:
    tasks = [
        joblib.delayed(helpers.length)([1, 2]),
        joblib.delayed(helpers.length)(helpers.Holder(model=helpers.Model())),
    ]
    exc = joblib_error(tasks)
    assert "Could not pickle the task" in str(exc)
    error = explain_pickling_error(exc, tasks)
    assert isinstance(error, TaskPicklingError)
    assert isinstance(error, pickle.PicklingError)
    assert isinstance(error, WorkerStateError)
    assert error.__cause__ is exc
    assert error.task_index == 1
    assert error.report is not None
    assert error.report.path == "task.args[0].model._lock"
    message = str(error)
    assert message.startswith("The task length(<tests._diagnose_helpers.Holder")
    assert "task.args[0].model._lock is a _thread.lock that cannot be pickled" in message
    assert "create a new one" in message
    assert "threading backend" in message
    with pytest.raises(TaskPicklingError) as info:
        raise error from exc
    assert info.value.__cause__ is exc


def test_explains_keyword_arguments_and_workerstate_tasks() -> None:
    tasks = [parallel.delayed(helpers.first)([1]), parallel.delayed(_state.combine)(1, b=2)]
    tasks.append(parallel.delayed(_state.combine)(1, scale={"rows": (i for i in range(2))}))
    exc = joblib_error(tasks)
    error = explain_pickling_error(exc, tasks)
    assert error is not None and error.report is not None
    # workerstate's wrapper is looked through: the path is about the user's task.
    assert (error.report.path, error.report.trap) == ("task.kwargs['scale']['rows']", "generator")
    assert "combine(1, scale={'rows': <generator" in flat(error)


def test_explains_workerstate_parallel_task_error() -> None:
    parallel.register_global_parallel_callback(_state.value_callback, name="value")
    tasks = [joblib.delayed(helpers.length)([i]) for i in range(3)]
    tasks.append(joblib.delayed(helpers.length)([helpers.Refuses()]))
    # workerstate's Parallel raises the explanation itself, chained from joblib's error.
    with pytest.raises(parallel.TaskPicklingError) as info:
        parallel.Parallel(n_jobs=2)(tasks)
    error = info.value
    assert isinstance(error, pickle.PicklingError)
    assert isinstance(error.__cause__, pickle.PicklingError)
    assert error.report is not None
    assert (error.report.path, error.report.trap, error.task_index) == (
        "task.args[0][0]",
        "reduce_raises",
        3,
    )
    assert "RuntimeError: Refuses objects hold a native handle" in flat(error)
    # Already explained: nothing more to add.
    assert explain_pickling_error(error, tasks) is None


def test_explains_lambda_on_the_multiprocessing_backend() -> None:
    tasks = [joblib.delayed(lambda x: x * 2)(i) for i in range(3)]
    exc = joblib_error(tasks, backend="multiprocessing")
    error = explain_pickling_error(exc, tasks)
    assert error is not None and error.report is not None
    assert (error.report.path, error.report.trap) == ("task.func", "lambda")
    assert "standard pickle; the loky backend (cloudpickle) can send this one" in flat(error)
    assert (error.report.picklable, error.report.by_value) == (True, True)
    # A lock fails under both picklers: the standard pickle is asked for, and blamed.
    cause = TypeError("cannot pickle '_thread.lock' object")
    locked = explain_pickling_error(cause, [(len, (threading.Lock(),), {})], pickler="pickle")
    assert locked is not None and locked.report is not None
    assert (locked.report.picklable, locked.report.trap) == (False, "lock")
    assert "threading backend" in flat(locked)
    # loky sends the same tasks by value: nothing to explain there.
    assert joblib.Parallel(n_jobs=2)(tasks) == [0, 2, 4]


# Every wording of "cannot be pickled" that Python 3.10-3.14 and cloudpickle use.
PICKLER_ERRORS = [
    pickle.PicklingError("Could not pickle the task to send it to the workers."),  # loky
    pickle.PicklingError("Can't pickle <function <lambda>>: attribute lookup <lambda> failed"),
    pickle.PicklingError("Can't pickle local object <function f.<locals>.g>"),  # 3.14
    AttributeError("Can't pickle local object 'f.<locals>.g'"),  # up to 3.12
    AttributeError("Can't get local object 'f.<locals>.g'"),  # 3.13
    TypeError("cannot pickle '_thread.lock' object"),
    TypeError("cannot pickle 'TextIOWrapper' instances"),
]


@pytest.mark.parametrize("cause", PICKLER_ERRORS, ids=lambda exc: f"{type(exc).__name__}: {exc}")
def test_every_wording_of_a_pickling_failure_is_explained(cause: BaseException) -> None:
    error = explain_pickling_error(cause, [(len, (threading.Lock(),), {})])
    assert error is not None and error.report is not None
    assert error.report.trap == "lock"
    assert error.__cause__ is cause


def _local_objects() -> dict[str, tuple[Any, Any, str]]:
    """Per name: a task function, its argument and the trap the standard pickle meets."""

    class Local:
        pass

    def nested(x: int) -> int:
        return x

    return {
        "lambda": (lambda x: x, 1, "lambda"),
        "nested_function": (nested, 1, "lambda"),
        "local_class_instance": (helpers.length, [Local()], "local_class"),
        "lock": (helpers.length, [threading.Lock()], "lock"),
    }


@pytest.mark.parametrize("backend", ["loky", "multiprocessing"])
@pytest.mark.parametrize("name", list(_local_objects()))
def test_explains_what_the_backend_cannot_pickle(backend: str, name: str) -> None:
    """Whatever the running Python raises for it, the task error gets its explanation."""
    func, arg, trap = _local_objects()[name]
    tasks = [joblib.delayed(func)(arg)]
    if backend == "loky" and trap != "lock":
        # cloudpickle sends functions and classes defined in a function by value.
        assert joblib.Parallel(n_jobs=2, backend=backend)(tasks) == [func(arg)]
        return
    exc = joblib_error(tasks, backend=backend)
    error = explain_pickling_error(exc, tasks)
    assert error is not None and error.report is not None
    assert error.report.trap == trap
    assert error.__cause__ is exc


def test_not_explained() -> None:
    """Other errors, workerstate's own, and errors no task accounts for are left alone."""
    tasks = [joblib.delayed(_state.fail)(i) for i in range(2)]
    with pytest.raises(_state.TaskError) as info:
        joblib.Parallel(n_jobs=2)(tasks)
    assert explain_pickling_error(info.value, tasks) is None

    state_error = StatePicklingError("The state of parallel callback 'x' cannot be sent")
    assert explain_pickling_error(state_error, [(len, (threading.Lock(),), {})]) is None

    fine = [joblib.delayed(helpers.length)([i]) for i in range(2)]
    loky_error = pickle.PicklingError("Could not pickle the task to send it to the workers.")
    assert explain_pickling_error(loky_error, fine) is None
    assert explain_pickling_error(loky_error, []) is None


def test_task_pickling_error_round_trips() -> None:
    tasks = [(helpers.length, (threading.Lock(),), {})]
    cause = pickle.PicklingError("Could not pickle the task to send it to the workers.")
    error = explain_pickling_error(cause, tasks, pickler="cloudpickle")
    assert error is not None
    for dumps in (pickle.dumps, cloudpickle.dumps):
        loaded = pickle.loads(dumps(error))
        assert type(loaded) is TaskPicklingError
        assert str(loaded) == str(error)
        assert loaded.report == error.report
    assert TaskPicklingError("message only").args == ("message only",)


def test_state_pickling_error_names_the_trap() -> None:
    """Registered values go through the same explanations (via _pickling)."""
    parallel.register_global_parallel_callback(_state.value_callback, name="value")
    _state.set_value({"rows": (i for i in range(3))})
    with pytest.raises(StatePicklingError) as info:
        parallel.Parallel(n_jobs=2)(joblib.delayed(_state.square)(i) for i in range(2))
    message = str(info.value)
    assert "value['rows'] is a generator that cannot be pickled" in message
    assert ": a generator. Generators cannot be pickled" in message


# -- worker cost -----------------------------------------------------------------------------
def test_worker_cost_measures_a_new_worker_and_leaves_the_pool_alone() -> None:
    before = loky_pids()
    parallel.register_global_parallel_callback(_state.value_callback, name="value")
    cost = worker_cost(helpers.length, modules=["json", "no_such_module_here"])
    modules = [item.module for item in cost.imports]
    assert modules == [
        "workerstate.parallel",
        "tests._state",
        "tests._diagnose_helpers",
        "json",
        "no_such_module_here",
    ]
    assert 0 < cost.start_seconds < 30
    by_name = {item.module: item for item in cost.imports}
    assert not by_name["tests._diagnose_helpers"].already_imported
    assert by_name["tests._diagnose_helpers"].seconds > 0
    assert [item.module for item in cost.failed] == ["no_such_module_here"]
    text = str(cost)
    assert text.startswith("A new worker process starts in")
    assert "no_such_module_here" in text and "FAILS in the worker" in text
    assert loky_pids() == before


def test_worker_cost_says_when_imports_dominate() -> None:
    cost = WorkerCost(
        0.3,
        (ModuleImport("sklearn.ensemble", 1.4), ModuleImport("json", 0.0, already_imported=True)),
    )
    assert cost.total_seconds == pytest.approx(1.7)
    text = str(cost)
    assert "sklearn.ensemble" in text.splitlines()[1]  # slowest first
    assert "already imported at start-up" in text
    assert "tasks shorter than that are dominated by it" in text
    assert "dominated" not in str(WorkerCost(0.3, (ModuleImport("json", 0.01),)))


def test_importing_diagnose_is_light() -> None:
    code = (
        "import sys, workerstate.diagnose as d; d.explain_pickling([1]);"
        # joblib comes with the package, which registers its backend with joblib on import.
        "heavy = {'sklearn', 'pandas', 'dask', 'distributed', 'ray'} & set(sys.modules);"
        "print(sorted(heavy))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
