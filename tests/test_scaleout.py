"""Scale-out: state that follows tasks onto a dask cluster and a Ray instance.

The dask tests run twice: on a cluster started with the ``dask scheduler`` and ``dask worker``
command-line programs (as an operator starts one), and on ``LocalCluster(processes=True)``.
Both have two worker processes with two threads each; the processes live for the whole module
and are shared by every test and by more than one client, as a real cluster's are. The Ray
tests run through ``ray.util.joblib`` on a local Ray instance that this module starts.

Plain ``joblib.delayed`` is the control: it shows that a value does not reach the workers on
its own, and that a worker holds its own value again once workerstate's tasks are done.
"""

from __future__ import annotations

import concurrent.futures
import gc
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import joblib
import pytest

from tests import _scaleout_helpers as helpers
from tests import _state
from workerstate import parallel
from workerstate._task import capture_for
from workerstate._transport import FILE_THRESHOLD

# workerstate unpublishes a large payload from the dask scheduler when its snapshot is
# garbage-collected; when that happens on the client's event-loop thread, distributed hands
# back a coroutine that nobody awaits, and Python warns while the coroutine is destroyed.
# test_dask_published_payload_is_removed_when_freed_on_the_event_loop reports that bug; the
# other tests must not fail at random, whenever the collector happens to run on that thread.
pytestmark = pytest.mark.filterwarnings(
    "ignore:coroutine 'Client._unpublish_dataset' was never awaited:RuntimeWarning"
)

# The ways to use workerstate: (Parallel class, delayed).
APIS: dict[str, tuple[type[joblib.Parallel], Callable[..., Any]]] = {
    "joblib.Parallel+ws.delayed": (joblib.Parallel, parallel.delayed),
    "ws.Parallel+ws.delayed": (parallel.Parallel, parallel.delayed),
    "ws.Parallel+joblib.delayed": (parallel.Parallel, joblib.delayed),
}


def _values(results: list[dict[str, Any]], key: str = "value") -> set[Any]:
    return {seen[key] for seen in results}


def _register_value_and_local() -> None:
    parallel.register_global_parallel_callback(_state.value_callback, name="value")
    parallel.register_global_parallel_callback(_state.local_callback, name="local")


def _fresh(label: str) -> str:
    """A value no worker can have seen before (workers live for the whole module)."""
    return f"{label}-{uuid.uuid4().hex[:8]}"


# -- dask ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dask_cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``dask scheduler`` + two ``dask worker --nthreads 2`` processes on loopback."""
    with helpers.cli_cluster(tmp_path_factory.mktemp("dask-cli")) as client:
        yield client


@pytest.fixture(scope="module")
def dask_local() -> Iterator[Any]:
    """``LocalCluster(processes=True)``: two worker processes with two threads each."""
    with helpers.local_cluster() as client:
        yield client


@pytest.fixture(params=["cli", "local"])
def cluster(request: pytest.FixtureRequest) -> Any:
    """A client of one of the two clusters; every worker holds its import-time value."""
    client = request.getfixturevalue(f"dask_{request.param}")
    client.run(helpers.reset_worker)
    return client


def _worker_pids(client: Any) -> set[int]:
    return set(client.run(os.getpid).values())


def _worker_values(client: Any) -> set[Any]:
    return set(client.run(_state.get_value).values())


@pytest.mark.parametrize("api", list(APIS))
def test_dask_state_arrives(cluster: Any, api: str) -> None:
    parallel_cls, delayed = APIS[api]
    _register_value_and_local()
    with joblib.parallel_config("dask", client=cluster):
        control = joblib.Parallel(batch_size=1)(joblib.delayed(_state.report)(i) for i in range(8))
        value, local = _fresh("value"), _fresh("local")
        _state.set_value(value)
        _state.set_local(local)
        seen = parallel_cls(batch_size=1)(delayed(_state.report)(i) for i in range(16))
    assert [s["i"] for s in seen] == list(range(16))
    assert (_values(seen), _values(seen, "local")) == ({value}, {local})
    assert _values(seen, "pid") <= _worker_pids(cluster)
    assert os.getpid() not in _values(seen, "pid")
    assert (_values(control), _values(control, "local")) == (
        {_state.IMPORT_VALUE},
        {_state.IMPORT_LOCAL},
    )


def test_dask_workers_are_other_processes_and_send_warnings_back(cluster: Any) -> None:
    """The snapshot's capturing pid, not ``multiprocessing``, tells a task it runs elsewhere."""
    parallel.register_global_parallel_callback(_state.value_callback, name="value")
    value = _fresh("value")
    _state.set_value(value)
    with (
        joblib.parallel_config("dask", client=cluster),
        pytest.warns(UserWarning, match="warned in task") as caught,
    ):
        seen = parallel.Parallel(batch_size=1)(
            parallel.delayed(helpers.where_am_i)(i) for i in range(4)
        )
    assert _values(seen) == {value}
    assert sorted(str(w.message) for w in caught) == [f"warned in task {i}" for i in range(4)]


def test_dask_state_is_restored_after_each_task(cluster: Any) -> None:
    """Workers are long-lived and shared: after workerstate's tasks, a plain task on the same
    worker process and thread sees the worker's own values again, also when the task changed
    them itself."""
    cluster_pids = _worker_pids(cluster)
    with joblib.parallel_config("dask", client=cluster):
        # Thread-local state, many overlapping tasks on both threads of both workers.
        parallel.register_global_parallel_callback(_state.local_callback, name="local")
        local = _fresh("local")
        _state.set_local(local)
        changed = joblib.Parallel(batch_size=1)(
            parallel.delayed(helpers.set_local_and_report)(i, 0.02) for i in range(16)
        )
        assert _values(changed, "local") == {_state.TASK_VALUE}
        used = {(s["pid"], s["thread"]) for s in changed}
        checked: set[tuple[int, int]] = set()
        for _ in range(30):
            plain = joblib.Parallel(batch_size=1)(
                joblib.delayed(_state.report)(i, 0.02) for i in range(8)
            )
            assert _values(plain, "local") == {_state.IMPORT_LOCAL}
            checked |= {(s["pid"], s["thread"]) for s in plain}
            if used <= checked:
                break
        assert used <= checked, "no plain task ran on some thread that ran workerstate's tasks"

        # Process-global state, one task at a time, until each worker process ran one.
        parallel.register_global_parallel_callback(_state.value_callback, name="value")
        value = _fresh("value")
        _state.set_value(value)
        ran_in: set[int] = set()
        for _ in range(30):
            (seen,) = joblib.Parallel()(
                parallel.delayed(_state.report_then_set)(0) for _ in range(1)
            )
            assert seen["value"] == value
            assert _worker_values(cluster) == {_state.IMPORT_VALUE}
            ran_in.add(seen["pid"])
            if ran_in == cluster_pids:
                break
    assert ran_in == cluster_pids


@pytest.mark.parametrize("api", ["joblib.Parallel+ws.delayed", "ws.Parallel+ws.delayed"])
@pytest.mark.parametrize("where", ["main thread", "other thread"])
def test_dask_thread_local_state_with_two_threads_per_worker(
    cluster: Any, api: str, where: str
) -> None:
    """Every task thread of every worker gets the calling thread's thread-local value."""
    parallel_cls, delayed = APIS[api]
    parallel.register_global_parallel_callback(_state.local_callback, name="local")
    local = _fresh("local")

    def call() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        _state.set_local(local)
        with joblib.parallel_config("dask", client=cluster):
            seen = parallel_cls(batch_size=1)(delayed(_state.report)(i, 0.05) for i in range(16))
            plain = joblib.Parallel(batch_size=1)(
                joblib.delayed(_state.report)(i, 0.05) for i in range(16)
            )
        return seen, plain

    if where == "main thread":
        seen, plain = call()
    else:
        with concurrent.futures.ThreadPoolExecutor(1) as executor:
            seen, plain = executor.submit(call).result()
        assert _state.get_local() == _state.IMPORT_LOCAL  # this thread's own value is untouched
    assert _values(seen, "local") == {local}
    assert _values(plain, "local") == {_state.IMPORT_LOCAL}
    threads = {(s["pid"], s["thread"]) for s in seen}
    assert len({pid for pid, _ in threads}) == helpers.N_WORKERS
    # Tasks of one call really ran on more than one thread of the same worker process.
    assert len(threads) > helpers.N_WORKERS


def test_dask_two_clients_share_the_workers(dask_cli: Any) -> None:
    """Two clients of one scheduler, each called from its own thread with its own thread-local
    value, at the same time: each client's tasks see their caller's value, and the shared
    workers hold their own values afterwards."""
    from distributed import Client

    parallel.register_global_parallel_callback(_state.local_callback, name="local")
    dask_cli.run(helpers.reset_worker)
    scheduler = dask_cli.scheduler.address
    barrier = threading.Barrier(2, timeout=30)

    def call(client: Any, local: str) -> list[dict[str, Any]]:
        _state.set_local(local)
        barrier.wait()
        with joblib.parallel_config("dask", client=client):
            return joblib.Parallel(batch_size=1)(
                parallel.delayed(_state.report)(i, 0.05) for i in range(12)
            )

    other = Client(scheduler, set_as_default=False)
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as executor:
            first = executor.submit(call, dask_cli, "first-client")
            second = executor.submit(call, other, "second-client")
            seen_first, seen_second = first.result(), second.result()
        with joblib.parallel_config("dask", client=other):
            plain = joblib.Parallel(batch_size=1)(
                joblib.delayed(_state.report)(i, 0.05) for i in range(12)
            )
    finally:
        other.close()
    assert _values(seen_first, "local") == {"first-client"}
    assert _values(seen_second, "local") == {"second-client"}
    assert _values(plain, "local") == {_state.IMPORT_LOCAL}
    assert _values(seen_first, "pid") | _values(seen_second, "pid") <= _worker_pids(dask_cli)


@pytest.mark.parametrize("inner", ["threading", "loky"])
def test_dask_nested_parallel_in_a_task(
    cluster: Any, request: pytest.FixtureRequest, inner: str
) -> None:
    """A task starts its own ``Parallel``; state registered only in the top-level parent
    reaches the inner tasks (the worker processes never registered anything).

    The command-line cluster's workers are not daemonic, so a nested loky call there starts
    its own processes; LocalCluster's are daemonic (dask's default), and joblib runs the
    nested loky call with n_jobs=1 in the task's thread, with a warning.
    """
    _register_value_and_local()
    value, local = _fresh("value"), _fresh("local")
    _state.set_value(value)
    _state.set_local(local)
    report = helpers.nested_threading_report if inner == "threading" else helpers.nested_loky_report
    with joblib.parallel_config("dask", client=cluster):
        (result,) = joblib.Parallel()(parallel.delayed(report)(6) for _ in range(1))
    outer, nested = result["outer"], result["inner"]
    assert (outer["value"], outer["local"]) == (value, local)
    assert outer["pid"] in _worker_pids(cluster)
    assert [s["i"] for s in nested] == list(range(6))
    assert (_values(nested), _values(nested, "local")) == ({value}, {local})
    if inner == "threading":
        assert _values(nested, "pid") == {outer["pid"]}
        assert outer["thread"] not in _values(nested, "thread")
    elif request.node.callspec.params["cluster"] == "cli":
        assert result["warnings"] == []
        # The inner tasks ran in the dask worker's own loky processes.
        assert not _values(nested, "pid") & {outer["pid"], os.getpid()}
    else:
        assert any("daemon=True, setting n_jobs=1" in w for w in result["warnings"])
        assert _values(nested, "thread") == {outer["thread"]}
    assert _worker_values(cluster) == {_state.IMPORT_VALUE}


@pytest.mark.parametrize("api", ["joblib.Parallel+ws.delayed", "ws.Parallel+ws.delayed"])
def test_dask_large_value_reaches_every_task(cluster: Any, api: str) -> None:
    """A 10 MB registered value and 1,000 tasks: every task sees the whole value, and the
    value is published once on the scheduler.

    (How much this sends, and how long it takes against plain joblib, is measured in
    benchmarks/scaleout.py; tests do not time.)
    """
    parallel_cls, delayed = APIS[api]
    parallel.register_global_parallel_callback(_state.local_callback, name="local")
    big = os.urandom(helpers.BIG_SIZE)
    _state.set_local(big)
    before = set(cluster.list_datasets())
    with joblib.parallel_config("dask", client=cluster):
        seen = parallel_cls()(delayed(helpers.big_report)(i) for i in range(1000))
    assert [s["i"] for s in seen] == list(range(1000))
    assert _values(seen, "size") == {helpers.BIG_SIZE}
    assert _values(seen, "ends") == {(big[:16], big[-16:])}
    assert _values(seen, "pid") == _worker_pids(cluster)
    published = set(cluster.list_datasets()) - before
    assert len(published) == 1
    assert next(iter(published)).startswith("workerstate-")


def test_dask_large_value_is_loaded_once_per_worker_process(cluster: Any) -> None:
    """Each worker process fetches and unpickles a published payload once, and every task
    there uses that one copy; its threads do not each fetch their own.

    Tasks report ``id()`` of the value they see: one object per process means one copy.
    """
    parallel.register_global_parallel_callback(_state.local_callback, name="local")
    _state.set_local(os.urandom(helpers.BIG_SIZE))
    with joblib.parallel_config("dask", client=cluster):
        seen = joblib.Parallel(batch_size=1)(
            parallel.delayed(helpers.big_report)(i) for i in range(16)
        )
    assert _values(seen, "size") == {helpers.BIG_SIZE}
    copies: dict[int, set[int]] = {}
    for s in seen:
        copies.setdefault(s["pid"], set()).add(s["object"])
    assert {pid: len(objects) for pid, objects in copies.items()} == dict.fromkeys(copies, 1), (
        "worker processes hold more than one copy of the payload (one per thread that "
        "started a task before the first fetch finished)"
    )


def test_dask_concurrent_tasks_in_one_worker_keep_process_global_state(cluster: Any) -> None:
    """Two tasks of one call run at once on the two threads of one worker process.

    The first to start installs the value; the second finds it in place and leaves it. When
    the first ends it puts the worker's own value back while the second is still running,
    and when the second ends it "restores" the parent's value, which then stays in the
    worker for every later task of every client. Expected: the second task sees the parent's
    value throughout, and the worker holds its own value afterwards.
    """
    parallel.register_global_parallel_callback(helpers.applying_callback, name="value")
    address = sorted(cluster.scheduler_info()["workers"])[0]
    value = _fresh("value")
    _state.set_value(value)
    with joblib.parallel_config("dask", client=cluster, workers=[address]):
        seen = joblib.Parallel(batch_size=1)(
            parallel.delayed(helpers.overlapping_report)(i) for i in range(2)
        )
    assert all(s["together"] for s in seen), "the two tasks did not run at the same time"
    assert sorted(s["installed_here"] for s in seen) == [False, True]
    after = cluster.run(_state.get_value, workers=[address])[address]
    assert (_values(seen), after) == ({value}, _state.IMPORT_VALUE), (
        f"tasks saw {sorted(_values(seen))}; afterwards the worker holds {after!r} "
        f"(expected {value!r} in both tasks and {_state.IMPORT_VALUE!r} after)"
    )


@pytest.mark.filterwarnings("ignore:coroutine 'Client._unpublish_dataset':RuntimeWarning")
def test_dask_published_payload_is_removed_when_freed_on_the_event_loop(
    dask_local: Any,
) -> None:
    """A large payload is published on the scheduler and unpublished when its snapshot is
    garbage-collected. A snapshot is only freed by the cyclic collector, which runs on
    whichever thread happens to allocate, often the client's event-loop thread (where
    joblib's dask backend handles results). There ``client.unpublish_dataset`` returns a
    coroutine that is never awaited, and the payload stays on the shared scheduler."""
    client = dask_local
    parallel.register_global_parallel_callback(_state.local_callback, name="local")
    names = []
    with joblib.parallel_config("dask", client=client):
        for k in range(2):
            before = set(client.list_datasets())
            _state.set_local(bytes([k + 1]) * (2 * FILE_THRESHOLD))
            joblib.Parallel()(parallel.delayed(_state.report)(i) for i in range(4))
            (name,) = set(client.list_datasets()) - before
            names.append(name)
    # The second call's snapshot replaced the first as this thread's latest capture, so the
    # first one is garbage now. Collect it on the event-loop thread.
    collected = threading.Event()

    def collect() -> None:
        gc.collect()
        collected.set()

    client.loop.add_callback(collect)
    assert collected.wait(20)
    deadline = time.monotonic() + 10
    while names[0] in client.list_datasets() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert names[0] not in client.list_datasets(), (
        f"{names[0]} is still published on the scheduler after its snapshot was freed"
    )


# -- Ray ----------------------------------------------------------------------------------------
class _DropRayNotices(logging.Filter):
    """Ray's two expected notices here. They are log records, not Python warnings, so the
    ``filterwarnings = error`` setting never sees them; they are dropped only to keep the
    output of failing tests readable."""

    NOTICES = (
        ("ray._private.authentication.authentication_token_setup", "Token authentication is"),
        ("ray.util.multiprocessing.pool", "The 'context' argument is not supported"),
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(
            record.name == name and record.getMessage().startswith(start)
            for name, start in self.NOTICES
        )


@pytest.fixture(scope="module")
def ray_backend() -> Iterator[Any]:
    """A local Ray instance (2 CPUs, no dashboard) with joblib's ``"ray"`` backend registered.

    Ray's workers do not inherit this process's ``sys.path``, so the repository root goes on
    ``PYTHONPATH`` before Ray starts. Ray's joblib backend makes joblib's ``PicklingPool``
    inherit from Ray's pool for good; that is undone at the end, with the registration.
    """
    ray = pytest.importorskip("ray")
    from joblib.pool import PicklingPool
    from ray.util.joblib import register_ray

    notices = _DropRayNotices()
    for name, _ in notices.NOTICES:
        logging.getLogger(name).addFilter(notices)
    saved_path = os.environ.get("PYTHONPATH")
    saved_bases = PicklingPool.__bases__
    saved_backends = dict(joblib.parallel.BACKENDS)
    os.environ["PYTHONPATH"] = helpers.path_with_repo(saved_path)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        register_ray()
        yield ray
    finally:
        ray.shutdown()
        PicklingPool.__bases__ = saved_bases
        joblib.parallel.BACKENDS.clear()
        joblib.parallel.BACKENDS.update(saved_backends)
        for name, _ in notices.NOTICES:
            logging.getLogger(name).removeFilter(notices)
        if saved_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved_path


@pytest.fixture
def ray_pool(ray_backend: Any) -> Iterator[Callable[..., joblib.Parallel]]:
    """Make ``Parallel`` objects on the "ray" backend; ``with`` one keeps its actors."""
    with joblib.parallel_config(backend="ray"):
        yield lambda cls=joblib.Parallel, **kwargs: cls(n_jobs=2, **kwargs)


@pytest.mark.parametrize("api", list(APIS))
def test_ray_state_arrives(ray_pool: Any, api: str) -> None:
    parallel_cls, delayed = APIS[api]
    _register_value_and_local()
    with ray_pool(parallel_cls, batch_size=1) as p:
        control = p(joblib.delayed(_state.report)(i) for i in range(4))
        value, local = _fresh("value"), _fresh("local")
        _state.set_value(value)
        _state.set_local(local)
        seen = p(delayed(_state.report)(i) for i in range(8))
    assert [s["i"] for s in seen] == list(range(8))
    assert (_values(seen), _values(seen, "local")) == ({value}, {local})
    assert os.getpid() not in _values(seen, "pid")
    assert (_values(control), _values(control, "local")) == (
        {_state.IMPORT_VALUE},
        {_state.IMPORT_LOCAL},
    )


def test_ray_workers_are_not_multiprocessing_children(ray_pool: Any) -> None:
    """``multiprocessing.parent_process()`` is None in a Ray worker; workerstate still knows
    the task runs in another process and sends its warnings back to the caller."""
    parallel.register_global_parallel_callback(_state.value_callback, name="value")
    value = _fresh("value")
    _state.set_value(value)
    with pytest.warns(UserWarning, match="warned in task") as caught:
        seen = ray_pool(parallel.Parallel, batch_size=1)(
            parallel.delayed(helpers.where_am_i)(i) for i in range(4)
        )
    assert _values(seen) == {value}
    assert _values(seen, "has_parent_process") == {False}
    assert sorted(str(w.message) for w in caught) == [f"warned in task {i}" for i in range(4)]


def test_ray_state_is_restored_after_each_task(ray_pool: Any) -> None:
    _register_value_and_local()
    with ray_pool(batch_size=1) as p:
        actors = _values(p(joblib.delayed(_state.report)(i, 0.02) for i in range(4)), "pid")
        value, local = _fresh("value"), _fresh("local")
        _state.set_value(value)
        _state.set_local(local)
        changed = p(parallel.delayed(_state.report_then_set)(i) for i in range(6))
        plain = p(joblib.delayed(_state.report)(i, 0.02) for i in range(6))
        mixed = p(
            (parallel.delayed if i % 2 else joblib.delayed)(_state.report)(i) for i in range(8)
        )
    assert (_values(changed), _values(changed, "local")) == ({value}, {local})
    assert _values(changed, "pid") | _values(plain, "pid") <= actors  # the same processes
    assert (_values(plain), _values(plain, "local")) == (
        {_state.IMPORT_VALUE},
        {_state.IMPORT_LOCAL},
    )
    assert [(s["value"], s["local"]) for s in mixed] == [
        (value, local) if i % 2 else (_state.IMPORT_VALUE, _state.IMPORT_LOCAL) for i in range(8)
    ]


def test_ray_thread_local_state_from_another_parent_thread(ray_pool: Any) -> None:
    parallel.register_global_parallel_callback(_state.local_callback, name="local")
    local = _fresh("local")

    def call() -> list[dict[str, Any]]:
        _state.set_local(local)
        with joblib.parallel_config(backend="ray"):
            return joblib.Parallel(n_jobs=2, batch_size=1)(
                parallel.delayed(_state.report)(i) for i in range(6)
            )

    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        seen = executor.submit(call).result()
    assert _values(seen, "local") == {local}
    assert _state.get_local() == _state.IMPORT_LOCAL


def test_ray_nested_parallel_in_a_task(ray_pool: Any) -> None:
    _register_value_and_local()
    value, local = _fresh("value"), _fresh("local")
    _state.set_value(value)
    _state.set_local(local)
    (result,) = ray_pool()(parallel.delayed(helpers.nested_threading_report)(6) for _ in range(1))
    outer, nested = result["outer"], result["inner"]
    assert (outer["value"], outer["local"]) == (value, local)
    assert outer["pid"] != os.getpid()
    assert [s["i"] for s in nested] == list(range(6))
    assert (_values(nested), _values(nested, "local")) == ({value}, {local})
    assert _values(nested, "pid") == {outer["pid"]}


def test_ray_large_value_reaches_every_task(ray_pool: Any) -> None:
    parallel.register_global_parallel_callback(_state.local_callback, name="local")
    big = os.urandom(helpers.BIG_SIZE)
    _state.set_local(big)
    seen = ray_pool()(parallel.delayed(helpers.big_report)(i) for i in range(200))
    assert _values(seen, "size") == {helpers.BIG_SIZE}
    assert _values(seen, "ends") == {(big[:16], big[-16:])}


def test_ray_large_value_does_not_need_the_callers_filesystem(ray_pool: Any) -> None:
    """Ray's workers may run on other machines. ``ray.util.joblib``'s backend subclasses
    joblib's multiprocessing backend, and workerstate takes it for workers on this machine:
    a payload over FILE_THRESHOLD is written to a file here and batches carry only its path,
    which a worker on another node cannot open."""
    parallel.register_global_parallel_callback(_state.local_callback, name="local")
    _state.set_local(b"x" * (2 * FILE_THRESHOLD))
    backend = ray_pool()._backend
    ref = capture_for(backend).payload_ref()
    assert ref[0] != "file", (
        f"{type(backend).__name__} sends the state as a path on the caller's machine: {ref[1]}"
    )
