"""``check="batch"``: state that tasks leave as they found it is read once per batch.

Through real workers: a batch whose tasks leave such state changed fails the call with
:class:`StateChangedError` and still puts the worker back; tasks that put it back themselves
run as with the default; the default ``check="task"`` handles the same changing tasks
without an error. The random programs of ``test_reference_model`` mix both kinds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import joblib
import pytest

from tests import _model_helpers as mh
from tests._helpers import N_JOBS, run_script
from workerstate import parallel as ws
from workerstate._registry import CallbackRegistry, default_registry

NAME = "live0"
PARENT = {"parent": 1}
#: One batch of four tasks: a batch of several tasks, and no other batch in flight when it
#: fails (a multiprocessing pool aborted while another worker sends a result can hang).
TASKS, BATCH = 4, 4


@pytest.fixture
def parent_state() -> Iterator[None]:
    mh.reset()
    mh.set_slot(NAME, PARENT)
    try:
        yield
    finally:
        mh.reset()


@contextmanager
def _pool(backend: str, api: str) -> Iterator[Any]:
    """A managed ``Parallel`` that runs a call's tasks in one batch, the way ``api`` says."""
    if api == "backend":
        # The Parallel is made inside parallel_config, which chooses its backend.
        with (
            joblib.parallel_config(backend="workerstate", inner=backend),
            joblib.Parallel(n_jobs=N_JOBS, batch_size=BATCH) as parallel,
        ):
            yield parallel
        return
    cls = ws.Parallel if api == "ws.Parallel" else joblib.Parallel
    with cls(n_jobs=N_JOBS, backend=backend, batch_size=BATCH) as parallel:
        yield parallel


def _delayed(api: str) -> Callable[..., Any]:
    return ws.delayed if api == "ws.delayed" else joblib.delayed


def _own_values(parallel: Any) -> set[Any]:
    """What the pool's workers hold for the slot, read by plain tasks, nothing registered."""
    if NAME in default_registry.names():
        default_registry.remove(NAME)
    seen = parallel(joblib.delayed(mh.report)(i, [NAME]) for i in range(2 * BATCH))
    return {s["slots"][NAME] for s in seen}


APIS = ("ws.delayed", "ws.Parallel", "backend")
BACKENDS = ("loky", "multiprocessing")


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.usefixtures("parent_state")
def test_a_task_that_leaves_it_changed_fails_the_call(backend: str, api: str) -> None:
    delayed = _delayed(api)
    changes = {NAME: mh.OTHER_VALUE}
    with default_registry.preserved(), _pool(backend, api) as parallel:
        own = _own_values(parallel)  # before: loky, fork and forkserver workers differ
        ws.register_global_parallel_callback(mh.LiveCallback(NAME), name=NAME, check="batch")
        with pytest.raises(ws.StateChangedError) as info:
            parallel(delayed(mh.task)(i, [NAME], changes if i == 0 else None) for i in range(TASKS))
        message = str(info.value)
        assert repr(NAME) in message and "check='batch'" in message and "check='task'" in message
        # The worker was put back all the same.
        assert _own_values(parallel) == own


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.usefixtures("parent_state")
def test_tasks_that_put_it_back_see_the_parent_state(backend: str, api: str) -> None:
    delayed = _delayed(api)
    with default_registry.preserved(), _pool(backend, api) as parallel:
        own = _own_values(parallel)  # before: loky, fork and forkserver workers differ
        ws.register_global_parallel_callback(mh.LiveCallback(NAME), name=NAME, check="batch")
        out = parallel(delayed(mh.changed_and_put_back)(i, [NAME]) for i in range(TASKS))
        assert [s["slots"][NAME] for s in out] == [mh.fingerprint(PARENT)] * TASKS
        assert all(s["inside"][NAME] == mh.fingerprint(mh.OTHER_VALUE) for s in out)
        assert _own_values(parallel) == own


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.usefixtures("parent_state")
def test_the_default_puts_back_what_a_task_left_before_the_next(backend: str, api: str) -> None:
    delayed = _delayed(api)
    changes = {NAME: mh.OTHER_VALUE}
    with default_registry.preserved(), _pool(backend, api) as parallel:
        own = _own_values(parallel)  # before: loky, fork and forkserver workers differ
        ws.register_global_parallel_callback(mh.LiveCallback(NAME), name=NAME)
        out = parallel(
            delayed(mh.task)(i, [NAME], changes if i == 0 else None) for i in range(TASKS)
        )
        assert [s["slots"][NAME] for s in out] == [mh.fingerprint(PARENT)] * TASKS
        assert _own_values(parallel) == own


@pytest.mark.usefixtures("parent_state")
def test_threads_install_per_task_and_need_no_check() -> None:
    with default_registry.preserved():
        ws.register_global_parallel_callback(mh.LiveCallback(NAME), name=NAME, check="batch")
        changes = {NAME: mh.OTHER_VALUE}
        out = ws.Parallel(n_jobs=1, backend="threading")(
            ws.delayed(mh.task)(i, [NAME], changes) for i in range(TASKS)
        )
    assert [s["slots"][NAME] for s in out] == [mh.fingerprint(PARENT)] * TASKS
    assert mh.get_slot(NAME) is PARENT


def test_an_unknown_check_is_refused_naming_the_callback() -> None:
    registry = CallbackRegistry()
    with pytest.raises(ValueError, match=r"check= of 'mine' must be 'task' .* got 'always'"):
        registry.register(mh.LiveCallback(NAME), name="mine", check="always")
    assert registry.names() == ()


def test_removing_forgets_the_check() -> None:
    registry = CallbackRegistry()
    registry.register(mh.LiveCallback(NAME), name="mine", check="batch")
    assert registry.per_batch() == {"mine"}
    registry.remove("mine")
    registry.register(mh.LiveCallback(NAME), name="mine")
    assert registry.per_batch() == frozenset()


SCRIPT = """
import json, sys
import joblib
from workerstate import parallel as ws

STATE = {"value": "import-time"}

def read():
    return STATE["value"], write

def write(value):
    STATE["value"] = value

def task(i, leave_changed):
    seen = STATE["value"]
    if leave_changed and i == 0:
        STATE["value"] = "changed-by-task"
    return seen

if __name__ == "__main__":
    ws.register_global_parallel_callback(read, name="script-state", check="batch")
    write("from-parent")
    backend = sys.argv[1]
    p = ws.Parallel(n_jobs=2, backend=backend, batch_size=4)
    seen = p(ws.delayed(task)(i, False) for i in range(4))
    try:
        p(ws.delayed(task)(i, True) for i in range(4))
        error = ""
    except ws.StateChangedError as exc:
        error = str(exc)
    print(json.dumps({"seen": seen, "error": error}))
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_main_script_callback_with_check_batch(tmp_path: Path, backend: str) -> None:
    out = run_script(tmp_path, SCRIPT, backend)
    assert out["seen"] == ["from-parent"] * 4
    assert "'script-state'" in out["error"]
