"""Reliability under load and faults: concurrent callers, killed workers, failing setters and
tasks, KeyboardInterrupt, timeouts, and a short soak run.

Each test checks two things: what every task saw (exactly its own caller's state, or the
worker's own state for what was not registered), and that the registry and the parent's
state are what they were before the fault. ``tests._reliability_helpers`` counts what the
tests did for docs/reliability.rst.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import joblib
import pytest
import sklearn
from joblib.externals.loky.process_executor import TerminatedWorkerError

from tests import _reliability_helpers as rh
from tests import _state
from tests._helpers import N_JOBS, loky_pids
from workerstate import parallel
from workerstate.parallel import SetterError, fresh_pool

REPO = Path(__file__).resolve().parents[1]
NAMES = ("slot-a", "slot-b")


@pytest.fixture(autouse=True)
def _clean_slots() -> Iterator[None]:
    yield
    rh.SLOTS.clear()
    rh.PICKY = rh.UNSET


@pytest.fixture(autouse=True, scope="module")
def _figures() -> Iterator[None]:
    yield
    rh.write_figures()


def _register(names: tuple[str, ...] = NAMES, local: bool = True) -> None:
    for name in names:
        parallel.register_global_parallel_callback(rh.SlotCallback(name), name=name)
    if local:
        parallel.register_global_parallel_callback(_state.local_callback, name="local")


def _set_parent_state(value: str, names: tuple[str, ...] = NAMES) -> None:
    for name in names:
        rh.set_slot(name, value)
    _state.set_local(f"{value}-local")


def _expect(value: str, names: tuple[str, ...] = NAMES) -> dict[str, Any]:
    return {"slots": dict.fromkeys(names, value), "local": f"{value}-local"}


# When joblib aborts a loky call while batches are in flight, loky's manager thread can hit a
# KeyError on a work item joblib already dropped; it happens with plain joblib too (see
# docs/reliability.rst) and changes nothing for the next call, which each test checks.
loky_abort_noise = pytest.mark.filterwarnings(
    "ignore:Exception in thread ExecutorManagerThread:pytest.PytestUnhandledThreadExceptionWarning"
)

WORKERS_OWN = {"slots": dict.fromkeys(NAMES, rh.UNSET), "local": _state.IMPORT_LOCAL}


def _report_tasks(names: tuple[str, ...] = NAMES, n: int = 12, delay: float = 0.01) -> Any:
    return lambda delayed: (delayed(rh.report_slots)(i, names, delay) for i in range(n))


def _check_recovered(api: str, section: str, value: str = "after-fault") -> set[int]:
    """A call after a fault: every task sees the parent's new state; plain tasks afterwards
    see the workers' own state. Returns the PIDs that ran the tasks."""
    _set_parent_state(value)
    results = rh.run_call(api, "loky", _report_tasks(), batch_size=1)
    plain = rh.run_call("plain joblib", "loky", _report_tasks(), batch_size=1)
    wrong = rh.wrong_tasks(results, lambda _: _expect(value))
    wrong += rh.wrong_tasks(plain, lambda _: WORKERS_OWN)
    rh.record(section, tasks=len(results) + len(plain), errors=len(wrong))
    assert wrong == []
    return {seen["pid"] for seen in results}


# -- concurrency: eight calling threads at once ------------------------------------------------
N_THREADS = 8
ROUNDS = 8
TASKS_PER_CALL = 16


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


@pytest.mark.timeout(150)
@pytest.mark.parametrize("backend", ["loky", "threading"])
def test_eight_calling_threads_each_see_their_own_state(backend: str) -> None:
    """Eight threads run their own calls at the same time. Each has its own thread-local
    values (scikit-learn's config and a plain ``threading.local``) and registers and removes
    its own process-global slots between calls; every task of every call must see exactly
    its own caller's state, and on loky nothing of another call."""
    parallel.register_global_parallel_callback(_state.sklearn_callback, name="sklearn")
    parallel.register_global_parallel_callback(_state.local_callback, name="local")
    main_memory = sklearn.get_config()["working_memory"]
    if backend == "loky":
        loky_pids()
    barrier = threading.Barrier(N_THREADS)
    lock = threading.Lock()
    wrong: list[tuple[int, int, Any]] = []
    crashed: list[BaseException] = []
    intervals: list[tuple[float, float]] = []
    tasks_run = [0]

    def caller(k: int) -> None:
        names = tuple(f"thread{k}-slot{j}" for j in range(3))
        registered: set[str] = set()
        if backend == "threading":
            # The pool threads share the process with every caller: a slot keeps one value
            # per caller thread (see docs/reliability.rst on process-global state).
            for j, name in enumerate(names):
                rh.set_slot(name, f"t{k}-s{j}")
        try:
            barrier.wait(timeout=60)
            for r in range(ROUNDS):
                # Every subset of the three slots comes up once, in a different order per thread.
                wanted = {name for j, name in enumerate(names) if (r + k) >> j & 1}
                for name in sorted(registered - wanted):
                    parallel.remove_global_parallel_callback(name)
                for name in sorted(wanted - registered):
                    parallel.register_global_parallel_callback(rh.SlotCallback(name), name=name)
                registered = wanted
                if backend == "loky":
                    for j, name in enumerate(names):
                        rh.set_slot(name, f"t{k}-r{r}-s{j}")
                local = f"t{k}-r{r}-local"
                memory = 1000 * (k + 1) + r
                _state.set_local(local)
                api = rh.API_NAMES[(k + r) % len(rh.API_NAMES)]
                batch_size = (1, 4, "auto")[(k + r) % 3]
                with sklearn.config_context(working_memory=memory):
                    start = time.monotonic()
                    results = rh.run_call(
                        api,
                        backend,
                        lambda delayed, names=names: (
                            delayed(rh.report_slots_sklearn)(i, names)
                            for i in range(TASKS_PER_CALL)
                        ),
                        batch_size=batch_size,
                    )
                    end = time.monotonic()
                expected = {
                    "slots": {
                        name: rh.get_slot(name)
                        if name in wanted or backend == "threading"
                        else rh.UNSET
                        for name in names
                    },
                    "local": local,
                    "working_memory": memory,
                }
                bad: list[Any] = rh.wrong_tasks(results, lambda _, expected=expected: expected)
                if [seen["i"] for seen in results] != list(range(TASKS_PER_CALL)):
                    bad.append(("results out of order", [seen["i"] for seen in results]))
                with lock:
                    intervals.append((start, end))
                    tasks_run[0] += len(results)
                    if bad:
                        wrong.append((k, r, bad[:3]))
        except BaseException as exc:
            with lock:
                crashed.append(exc)
        finally:
            for name in sorted(registered):
                parallel.remove_global_parallel_callback(name)
            _state.reset_local()

    threads = [
        threading.Thread(target=caller, args=(k,), name=f"caller-{k}") for k in range(N_THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=140)
    assert not any(thread.is_alive() for thread in threads)
    rh.record("concurrency", cases=1, tasks=tasks_run[0], errors=len(wrong))
    assert crashed == []
    assert wrong == []
    assert tasks_run[0] == N_THREADS * ROUNDS * TASKS_PER_CALL
    assert _max_overlap(intervals) >= 2  # the calls really ran at the same time
    assert parallel.registered_callbacks() == ("sklearn", "local")
    # The main thread's own thread-local state was never touched.
    assert sklearn.get_config()["working_memory"] == main_memory
    assert _state.get_local() == _state.IMPORT_LOCAL


# -- workers that die in the middle of a task --------------------------------------------------
@pytest.mark.parametrize(
    ("how", "recovery", "api"),
    [
        ("os._exit", "automatic", "joblib.Parallel+ws.delayed"),
        ("os._exit", "fresh_pool", "ws.Parallel+joblib.delayed"),
        ("SIGKILL", "automatic", "workerstate backend"),
        ("SIGKILL", "fresh_pool", "ws.Parallel+ws.delayed"),
    ],
)
@loky_abort_noise
def test_worker_killed_mid_task(how: str, recovery: str, api: str) -> None:
    _register()
    before_pids = loky_pids()
    _set_parent_state("before-fault")
    registry = rh.registry_state()
    with pytest.raises(TerminatedWorkerError, match="unexpectedly terminated"):
        rh.run_call(
            api,
            "loky",
            lambda delayed: (delayed(rh.die_mid_task)(i, NAMES, 3, how) for i in range(8)),
            batch_size=1,
        )
    rh.record("faults", cases=1, faults=1)
    # The parent is untouched: the same registrations, the same state.
    assert rh.registry_state() == registry
    assert {name: rh.get_slot(name) for name in NAMES} == dict.fromkeys(NAMES, "before-fault")
    assert _state.get_local() == "before-fault-local"
    if recovery == "fresh_pool":
        fresh_pool()
    pids = _check_recovered(api, "faults")
    assert not pids & before_pids  # a new pool, with none of the killed pool's workers


# -- a setter that fails on one worker only ----------------------------------------------------
def _picky_setup() -> tuple[int, int]:
    """Register a slot, then the picky callback (which fails in one worker only)."""
    _register(NAMES[:1], local=False)
    parallel.register_global_parallel_callback(rh.picky_callback, name="picky")
    pids = sorted(loky_pids())
    victim, healthy = pids[0], pids[-1]
    rh.set_slot(NAMES[0], "run-time")
    rh.PICKY = {"value": "picky-run-time", "fail_in": victim}
    return victim, healthy


def test_setter_failing_on_one_worker_rolls_back_there_and_works_elsewhere() -> None:
    """Seen from inside the workers: on the failing worker the task does not run and the
    setter that already ran is undone; the other worker runs its tasks with the state."""
    victim, healthy = _picky_setup()
    names = NAMES[:1]
    seen: list[dict[str, Any]] = []
    for _ in range(10):  # until both workers took a task
        seen += joblib.Parallel(n_jobs=N_JOBS, batch_size=1)(
            joblib.delayed(rh.catch_and_report)(
                parallel.delayed(rh.report_slots)(i, names, 0.02), names
            )
            for i in range(8)
        )
        if {s["pid"] for s in seen} >= {victim, healthy}:
            break
    failed = [s for s in seen if s["error"] is not None]
    ran = [s for s in seen if s["error"] is None]
    rh.record("faults", cases=1, tasks=len(seen), faults=len(failed))
    assert failed
    assert ran
    assert {s["pid"] for s in failed} == {victim}
    assert {s["pid"] for s in ran} == {healthy}
    for s in failed:
        assert s["error_type"] == "SetterError"
        assert "'picky'" in s["error"]
        assert f"refuses to run in process {victim}" in s["error"]
        # The slot's setter ran before the picky one failed, and was undone.
        assert (s["slots"], s["picky"]) == ({names[0]: rh.UNSET}, rh.UNSET)
    wrong = rh.wrong_tasks(
        ran, lambda _: {"slots": {names[0]: "run-time"}, "picky": rh.PICKY}
    ) + rh.wrong_tasks(
        [s["after"] for s in ran], lambda _: {"slots": {names[0]: rh.UNSET}, "picky": rh.UNSET}
    )
    rh.record("faults", errors=len(wrong))
    assert wrong == []


@loky_abort_noise
@pytest.mark.parametrize("api", ["joblib.Parallel+ws.delayed", "ws.Parallel+joblib.delayed"])
def test_setter_failing_on_one_worker_raises_setter_error_in_the_parent(api: str) -> None:
    victim, _ = _picky_setup()
    registry = rh.registry_state()
    with pytest.raises(SetterError, match=f"'picky' raised RuntimeError.*process {victim}"):
        rh.run_call(api, "loky", _report_tasks(NAMES[:1], n=16, delay=0.02), batch_size=1)
    rh.record("faults", cases=1, faults=1)
    assert rh.registry_state() == registry
    # Once the setter accepts every worker, the next call works with the right state.
    rh.PICKY = {"value": "fixed", "fail_in": None}
    rh.set_slot(NAMES[0], "after-fault")
    results = rh.run_call(api, "loky", _report_tasks(NAMES[:1]), batch_size=1)
    wrong = rh.wrong_tasks(
        results, lambda _: {"slots": {NAMES[0]: "after-fault"}, "picky": rh.PICKY}
    )
    rh.record("faults", tasks=len(results), errors=len(wrong))
    assert wrong == []


@pytest.mark.parametrize(("backend", "batch_size"), [("threading", 1), ("loky", 1), ("loky", 4)])
def test_setter_failing_when_putting_the_state_back(
    backend: str, batch_size: int, request: pytest.FixtureRequest
) -> None:
    """The setter works for the caller's value but raises when the worker's own value is put
    back after the task: the parent must hear of it as a SetterError naming the callback,
    not get the setter's bare exception, or nothing at all."""
    if backend == "loky":
        request.getfixturevalue("fresh_workers")  # this test leaves its workers unrestored
    parallel.register_global_parallel_callback(rh.install_only_callback, name="install-only")
    registry = rh.registry_state()
    rh.set_other_local("run-time")
    rh.record("faults", cases=1, faults=1)
    try:
        with pytest.raises(SetterError, match=r"'install-only'.*cannot put the previous state"):
            parallel.Parallel(n_jobs=N_JOBS, backend=backend, batch_size=batch_size)(
                parallel.delayed(rh.report_model)(i, NAMES) for i in range(8)
            )
    finally:
        rh.reset_other_local()
    assert rh.registry_state() == registry


# -- a task that raises after changing the registered state ------------------------------------
@pytest.mark.parametrize("where", ["threading", "n_jobs=1", "loky"])
def test_task_raising_after_changing_state_is_restored(where: str) -> None:
    # On threads, the slots are process-global and shared with the caller: tasks that change
    # them race with each other, so only thread-local state is changed there.
    names = () if where == "threading" else NAMES
    _register(names)
    _set_parent_state("run-time", names)
    registry = rh.registry_state()

    def failing(delayed: Any) -> Iterator[Any]:
        return (delayed(rh.mutate_then_fail)(i, names, 2) for i in range(6))

    if where == "loky":
        loky_pids()
        # joblib replaces the loky pool when an error reaches it, so the error is caught in
        # the worker to look at the worker's state right after it.
        seen = joblib.Parallel(n_jobs=N_JOBS, batch_size=1)(
            joblib.delayed(rh.catch_and_report)(task, names) for task in failing(parallel.delayed)
        )
        errors = [s for s in seen if s["error"] is not None]
        assert [s["error_type"] for s in errors] == ["TaskError"]
        after = [s if s["error"] else s["after"] for s in seen]
        wrong = rh.wrong_tasks(after, lambda _: WORKERS_OWN)
        tasks = len(seen)
    else:
        n_jobs = 1 if where == "n_jobs=1" else N_JOBS
        with joblib.Parallel(n_jobs=n_jobs, backend="threading", batch_size=1) as p:
            p(joblib.delayed(rh.report_slots)(i, names) for i in range(4))  # threads exist now
            with pytest.raises(_state.TaskError, match="task 2 failed after changing"):
                # The failing task alone: on Python 3.13 and 3.14, joblib can hand a result
                # of another task of an aborted call to the next call on the same Parallel
                # (plain joblib too).
                p([parallel.delayed(rh.mutate_then_fail)(2, names, 2)])
            plain = p(joblib.delayed(rh.report_slots)(i, names, 0.005) for i in range(8))
        # The pool's threads (or the caller itself, for n_jobs=1) hold their own state again.
        own_local = "run-time-local" if n_jobs == 1 else _state.IMPORT_LOCAL
        wrong = rh.wrong_tasks(
            plain,
            lambda _: {"slots": dict.fromkeys(names, "run-time"), "local": own_local},
        )
        tasks = 1 + len(plain)
    rh.record("faults", cases=1, tasks=tasks, faults=1, errors=len(wrong))
    assert wrong == []
    assert rh.registry_state() == registry
    assert {name: rh.get_slot(name) for name in names} == dict.fromkeys(names, "run-time")
    assert _state.get_local() == "run-time-local"


_PARENT = (dict.fromkeys(NAMES, "run-time"), "run-time-local")


@pytest.mark.parametrize("api", rh.API_NAMES)
def test_n_jobs_1_undoes_what_a_task_changed(api: str) -> None:
    """With n_jobs=1 the tasks run on the calling thread; what they change in the registered
    state is put back after each task, as on every other backend."""
    _register()
    _set_parent_state("run-time")
    results = rh.run_call(
        api,
        "loky",
        lambda delayed: (delayed(rh.report_then_mutate)(i, NAMES) for i in range(3)),
        n_jobs=1,
    )
    after = {name: rh.get_slot(name) for name in NAMES}, _state.get_local()
    if api == "workerstate backend":
        # Documented limit: with n_jobs=1 joblib runs the tasks itself, on the calling
        # thread, without handing them to any backend, so the backend cannot put back what a
        # task changed; the tasks do see the caller's state, which is their own thread's.
        assert results[0]["slots"] == dict.fromkeys(NAMES, "run-time")
        assert after != _PARENT
        return
    wrong = rh.wrong_tasks(results, lambda _: _expect("run-time"))
    rh.record("faults", cases=1, tasks=len(results), errors=len(wrong) + (after != _PARENT))
    assert wrong == []
    assert after == _PARENT


def _batch(func: Any, n: int, names: tuple[str, ...], **kwargs: Any) -> Any:
    """A joblib batch of ``n`` tasks of one workerstate task object, as a loky worker gets it."""
    from joblib.parallel import BatchedCalls

    from workerstate._capture import capture
    from workerstate._task import StatefulCall

    call = StatefulCall(func, capture(local_workers=True))
    batch = BatchedCalls([(call, (i, names), kwargs) for i in range(n)], ("sequential", 1))
    batch = pickle.loads(cloudpickle.dumps(batch))
    first = batch.items[0][0]
    assert first.batch and all(item[0] is first for item in batch.items)
    return batch


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="the state is kept per batch only on a process's main thread",
)
def test_batch_restores_at_once_when_a_task_raises_and_else_on_release() -> None:
    """The per-batch mode of loky workers, run here on the main thread: state installed once
    for the batch, put back between tasks, restored after the batch's last task, and at once
    when one of its tasks raises (the worker may be killed before it drops the batch)."""
    _register()
    _set_parent_state("captured")
    good = _batch(rh.report_then_mutate, 4, NAMES)
    bad = _batch(rh.mutate_then_fail, 4, NAMES, fail_at=2)
    _set_parent_state("own")  # what "the worker" holds before the batches

    seen = good()
    # Every task saw the captured state, although each one changed it after reporting.
    wrong = rh.wrong_tasks(seen, lambda _: _expect("captured"))
    # Restored right after the batch's last task, before the batch is even released, so a
    # failing restore is reported as that task's error.
    assert {name: rh.get_slot(name) for name in NAMES} == dict.fromkeys(NAMES, "own")
    assert _state.get_local() == "own-local"
    del good
    assert {name: rh.get_slot(name) for name in NAMES} == dict.fromkeys(NAMES, "own")

    with pytest.raises(_state.TaskError, match="task 2 failed"):
        bad()
    # Restored before the batch is released.
    assert {name: rh.get_slot(name) for name in NAMES} == dict.fromkeys(NAMES, "own")
    assert _state.get_local() == "own-local"
    del bad
    assert {name: rh.get_slot(name) for name in NAMES} == dict.fromkeys(NAMES, "own")
    rh.record("faults", cases=1, tasks=len(seen) + 3, faults=1, errors=len(wrong))
    assert wrong == []


# -- KeyboardInterrupt -------------------------------------------------------------------------
def _no_binding_left() -> bool:
    from workerstate._task import CALL_SNAPSHOT

    return CALL_SNAPSHOT.get() is None


@pytest.mark.parametrize("api", rh.API_NAMES)
def test_keyboard_interrupt_in_a_callback_at_capture(api: str, tmp_path: Path) -> None:
    """A callback in the middle of the registry raises KeyboardInterrupt while the state is
    captured: it propagates as is, no task runs, and the next call captures afresh."""
    _register(NAMES[:1], local=False)
    interrupt = {"on": True}

    def interrupting() -> tuple[Any, Any]:
        if interrupt["on"]:
            raise KeyboardInterrupt
        return "fine", print

    parallel.register_global_parallel_callback(interrupting, name="interrupting")
    _register(NAMES[1:], local=True)
    loky_pids()
    _set_parent_state("run-time")
    registry = rh.registry_state()
    marker = tmp_path / "ran"
    with pytest.raises(KeyboardInterrupt):
        rh.run_call(api, "loky", lambda d: (d(_state.touch)(str(marker)) for _ in range(4)))
    rh.record("faults", cases=1, faults=1)
    assert rh.registry_state() == registry
    assert not marker.exists()
    assert _no_binding_left()
    interrupt["on"] = False
    _check_recovered(api, "faults", "after-interrupt")


def _interrupting_tasks(delayed: Any, at: int) -> Iterator[Any]:
    for i in range(at):
        yield delayed(rh.report_slots)(i, NAMES, 0.05)
    raise KeyboardInterrupt


@loky_abort_noise
@pytest.mark.parametrize("backend", ["loky", "threading"])
@pytest.mark.parametrize("api", rh.API_NAMES)
def test_keyboard_interrupt_from_the_task_iterable(backend: str, api: str) -> None:
    """The caller's iterable raises KeyboardInterrupt after some tasks were sent.

    joblib pulls the first tasks on the calling thread and the rest on its own threads,
    where joblib itself does not pass a KeyboardInterrupt on (loky) or hangs (threading)
    with or without workerstate; ``pre_dispatch="all"`` keeps the pull on the calling thread.
    """
    _register()
    loky_pids()
    _set_parent_state("run-time")
    registry = rh.registry_state()
    with pytest.raises(KeyboardInterrupt):
        rh.run_call(
            api,
            backend,
            lambda delayed: _interrupting_tasks(delayed, 3),
            batch_size=1,
            pre_dispatch="all",
        )
    rh.record("faults", cases=1, faults=1)
    assert rh.registry_state() == registry
    assert _no_binding_left()
    assert {name: rh.get_slot(name) for name in NAMES} == dict.fromkeys(NAMES, "run-time")
    _check_recovered(api, "faults", "after-interrupt")


@loky_abort_noise
@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="SIGINT goes to main"
)
def test_ctrl_c_during_a_loky_call() -> None:
    """SIGINT arrives while the caller waits for results, as with Ctrl-C in a terminal."""
    _register()
    loky_pids()
    _set_parent_state("run-time")
    registry = rh.registry_state()
    timer = threading.Timer(0.4, os.kill, (os.getpid(), signal.SIGINT))
    # Python's own Ctrl-C handler, also when the suite was started with SIGINT ignored (a
    # shell's background job is).
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            timer.start()
            joblib.Parallel(n_jobs=N_JOBS, batch_size=1)(
                parallel.delayed(rh.report_slots)(i, NAMES, 0.1) for i in range(100)
            )
    finally:
        timer.cancel()
        timer.join()
        signal.signal(signal.SIGINT, handler)
    rh.record("faults", cases=1, faults=1)
    assert time.monotonic() - started < 4.0  # interrupted, not run to the end (5 s)
    assert rh.registry_state() == registry
    assert _no_binding_left()
    assert _state.get_local() == "run-time-local"
    _check_recovered("joblib.Parallel+ws.delayed", "faults", "after-interrupt")


def test_keyboard_interrupt_inside_a_scoped_registration() -> None:
    _register()
    registry = rh.registry_state()
    with (
        pytest.raises(KeyboardInterrupt),
        parallel.global_parallel_callback(rh.SlotCallback("scoped"), name="scoped"),
    ):
        assert parallel.registered_callbacks()[-1] == "scoped"
        raise KeyboardInterrupt
    assert rh.registry_state() == registry
    # Also when the interrupt comes from a call inside the block.
    with (
        pytest.raises(KeyboardInterrupt),
        parallel.global_parallel_callback(rh.SlotCallback("scoped"), name="scoped"),
    ):
        parallel.Parallel(n_jobs=1)(
            joblib.delayed(rh.mutate_then_interrupt)(i, NAMES) for i in range(2)
        )
    rh.record("faults", cases=1, faults=2)
    assert rh.registry_state() == registry


@pytest.mark.parametrize("api", ["joblib.Parallel+ws.delayed", "ws.Parallel+joblib.delayed"])
def test_keyboard_interrupt_raised_by_a_task_in_the_caller(api: str) -> None:
    """With n_jobs=1 the tasks run on the calling thread: a task that changes the state and
    is interrupted leaves the caller's state as it was."""
    _register()
    _set_parent_state("run-time")
    registry = rh.registry_state()
    with pytest.raises(KeyboardInterrupt):
        rh.run_call(
            api,
            "loky",
            lambda delayed: (delayed(rh.mutate_then_interrupt)(i, NAMES) for i in range(3)),
            n_jobs=1,
        )
    rh.record("faults", cases=1, tasks=1, faults=1)
    assert rh.registry_state() == registry
    assert {name: rh.get_slot(name) for name in NAMES} == dict.fromkeys(NAMES, "run-time")
    assert _state.get_local() == "run-time-local"


# -- timeout= ------------------------------------------------------------------------------------
def _timeout_tasks(delayed: Any) -> Iterator[Any]:
    for i in range(4):
        yield delayed(_state.slow_square)(i, 10.0 if i == 1 else 0.0)


@loky_abort_noise
@pytest.mark.parametrize("api", rh.API_NAMES)
def test_timeout_still_fires(api: str) -> None:
    _register()
    loky_pids()
    _set_parent_state("run-time")
    registry = rh.registry_state()
    with pytest.raises(Exception) as control:
        rh.run_call("plain joblib", "loky", _timeout_tasks, timeout=0.5, batch_size=1)
    started = time.monotonic()
    with pytest.raises(type(control.value)):
        rh.run_call(api, "loky", _timeout_tasks, timeout=0.5, batch_size=1)
    elapsed = time.monotonic() - started
    rh.record("faults", cases=1, faults=2)
    assert "TimeoutError" in type(control.value).__name__
    assert elapsed < 8.0  # it did not wait for the slow task (10 s)
    assert rh.registry_state() == registry
    _check_recovered(api, "faults")


@pytest.mark.parametrize("api", rh.API_NAMES)
def test_timeout_not_reached_changes_nothing(api: str) -> None:
    _register()
    loky_pids()
    _set_parent_state("run-time")
    results = rh.run_call(api, "loky", _report_tasks(), timeout=30, batch_size=2)
    wrong = rh.wrong_tasks(results, lambda _: _expect("run-time"))
    rh.record("faults", cases=1, tasks=len(results), errors=len(wrong))
    assert wrong == []


# -- soak ------------------------------------------------------------------------------------------
SOAK_TASKS = 20_000


def _soak(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "soak.py"), "--json", *args],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    figures: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return figures


@pytest.mark.timeout(170)
def test_soak_memory_stays_flat_and_every_task_sees_its_state() -> None:
    figures = _soak("--tasks", str(SOAK_TASKS))
    rh.record("soak", cases=1, tasks=figures["tasks"], errors=figures["errors"])
    assert figures["tasks"] == SOAK_TASKS
    assert figures["errors"] == 0
    assert figures["same_workers_at_end"]  # the same pool all along
    assert figures["parent_rss_end_mb"] - figures["parent_rss_start_mb"] < 30
    for worker in figures["workers"]:
        assert worker["rss_end_mb"] - worker["rss_start_mb"] < 20, worker
        # Nothing of the finished batches is kept in the workers ...
        assert (worker["live_snapshots"], worker["live_wrappers"]) == (0, 0), worker
    # ... and the parent keeps at most the last capture of each kind and its task wrapper.
    assert figures["parent_live_snapshots"] <= 4
    assert figures["parent_live_wrappers"] <= 4


def test_soak_check_fails_without_workerstate() -> None:
    """The control: with plain joblib, the soak's check counts every task as wrong."""
    figures = _soak("--tasks", "3000", "--control")
    assert figures["control"]
    assert figures["errors"] == figures["tasks"] == 3000
