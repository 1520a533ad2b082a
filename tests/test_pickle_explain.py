"""Pickling explanations through real workers: every backend's error, several failing parts.

The multiprocessing backend pickles tasks with the standard pickle, whose error for a class
defined inside a function is ``AttributeError`` up to Python 3.13 and ``PicklingError`` on
3.14; loky's is always ``PicklingError``. Whichever it is, ``workerstate.parallel.Parallel``
raises a ``TaskPicklingError`` that is also of the pickler's type.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest

from tests import _diagnose_helpers as helpers
from workerstate.diagnose import explain_pickling
from workerstate.parallel import Parallel, TaskPicklingError, delayed


def make_local() -> Any:
    class Local:
        pass

    return Local()


def _raised(backend: str, tasks: list[Any]) -> BaseException:
    with pytest.raises(Exception) as info:
        Parallel(n_jobs=2, backend=backend)(tasks)
    return info.value


def test_local_class_on_multiprocessing_is_explained() -> None:
    error = _raised("multiprocessing", [delayed(helpers.length)([make_local()]) for _ in range(2)])
    assert isinstance(error, TaskPicklingError), repr(error)
    cause = error.__cause__
    assert cause is not None and not isinstance(cause, TaskPicklingError)
    # The caller's except clause for the pickler's own error still catches it.
    assert isinstance(error, type(cause))
    if sys.version_info < (3, 14):
        assert isinstance(error, AttributeError)
    assert error.report.path == "task.args[0][0]"
    assert error.report.trap == "local_class"
    assert "a class defined inside a function" in str(error)
    assert "Define the class at module level" in str(error)
    loaded = pickle.loads(pickle.dumps(error))
    assert type(loaded) is type(error) and str(loaded) == str(error)


def test_lock_on_multiprocessing_is_a_type_error_too() -> None:
    error = _raised(
        "multiprocessing", [delayed(helpers.length)({"guard": threading.Lock()}) for _ in range(2)]
    )
    assert isinstance(error, TaskPicklingError), repr(error)
    assert isinstance(error, type(error.__cause__))
    assert error.report.path == "task.args[0]['guard']"
    assert error.report.trap == "lock"


def test_same_explanation_as_loky() -> None:
    tasks = [delayed(helpers.length)({"guard": threading.Lock()}) for _ in range(2)]
    loky, mp = _raised("loky", tasks), _raised("multiprocessing", tasks)
    for error in (loky, mp):
        assert isinstance(error, TaskPicklingError), repr(error)
    assert (loky.report.path, loky.report.trap) == (mp.report.path, mp.report.trap)


def test_a_task_error_that_mentions_pickling_is_not_rewritten() -> None:
    error = _raised("multiprocessing", [delayed(helpers.refuse_pickling)(i) for i in range(2)])
    assert type(error) is TypeError
    assert "cannot pickle the weather" in str(error)


def test_several_unpicklable_parts_are_listed() -> None:
    with open(os.devnull, "w") as buffer:
        value = {"ok": 1, "guard": threading.Lock(), "log": buffer, "again": threading.RLock()}
        report = explain_pickling(value, name="state")
        assert not report.picklable
        assert report.path == "state['guard']"
        assert [other.path for other in report.others] == ["state['log']", "state['again']"]
        assert [other.trap for other in report.others] == ["open_file", "lock"]
        text = str(report)
        assert "also:  state['log'] (_io.TextIOWrapper): an open file" in text
        assert "also:  state['again'] (_thread.RLock)" in text


def test_at_most_three_parts_and_each_object_once() -> None:
    lock = threading.Lock()
    report = explain_pickling([lock, lock, threading.Lock(), threading.Lock(), threading.Lock()])
    assert [report.path, *(other.path for other in report.others)] == [
        "obj[0]",
        "obj[2]",
        "obj[3]",
    ]


def test_several_parts_of_a_task_through_loky() -> None:
    tasks = [delayed(helpers.first)([threading.Lock(), 2, threading.Event()]) for _ in range(2)]
    error = _raised("loky", tasks)
    assert isinstance(error, TaskPicklingError), repr(error)
    assert error.report.path.startswith("task.args[0][0]")
    assert [other.path[: len("task.args[0][2]")] for other in error.report.others] == [
        "task.args[0][2]"
    ]
    assert "It also holds task.args[0][2]" in str(error)


SCRIPT = """
import sys
from workerstate.parallel import Parallel, TaskPicklingError, delayed


def make():
    class Local:
        pass

    return Local()


if __name__ == "__main__":
    try:
        Parallel(n_jobs=2, backend="multiprocessing")(delayed(len)([make()]) for _ in range(2))
    except AttributeError as exc:  # what plain joblib raises there up to Python 3.13
        print("caught as AttributeError", isinstance(exc, TaskPicklingError), exc.report.trap)
    except TaskPicklingError as exc:
        print("caught as TaskPicklingError", exc.report.trap)
"""


def test_local_class_in_a_script(tmp_path: Any) -> None:
    script = tmp_path / "local_class.py"
    script.write_text(textwrap.dedent(SCRIPT))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    if sys.version_info < (3, 14):
        assert done.stdout.strip() == "caught as AttributeError True local_class"
    else:
        assert done.stdout.strip() == "caught as TaskPicklingError local_class"
