"""Large state on its way to the workers: files that are fork-safe, freed at once, private,
written again when removed, bounded in the workers, and a clear error when no folder has room.
"""

from __future__ import annotations

import gc
import json
import os
import pickle
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator

import joblib
import pytest
from joblib._parallel_backends import LokyBackend

from tests import _transport_helpers as h
from workerstate import _transport
from workerstate._task import bind, capture_for
from workerstate.parallel import (
    Parallel,
    StatePicklingError,
    delayed,
    fresh_pool,
    register_global_parallel_callback,
)

MB = 1_000_000


@pytest.fixture
def big() -> Iterator[None]:
    """The callback of ``tests._transport_helpers`` registered, with a value to set."""
    register_global_parallel_callback(h.read_big, name="big")
    h.CURRENT[0] = h.big_value(0, MB)
    yield
    h.CURRENT[0] = b""


def _run_delayed(n: int = 4) -> list[object]:
    return joblib.Parallel(n_jobs=2)(delayed(h.received_marker)(i) for i in range(n))


def test_payload_files_are_private_and_reread_after_removal(big: None) -> None:
    assert _run_delayed() == [(h.CURRENT[0][:16], MB)] * 4
    files = h.payload_files()
    assert len(files) == 1
    assert stat.S_IMODE(os.stat(files[0]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(files[0])).st_mode) == 0o700
    # Removed between calls with unchanged state: written again, not a broken pool.
    os.unlink(files[0])
    assert _run_delayed() == [(h.CURRENT[0][:16], MB)] * 4
    assert h.payload_files() == files
    fresh_pool()  # new workers hold nothing: they must read the file
    os.unlink(files[0])
    assert _run_delayed() == [(h.CURRENT[0][:16], MB)] * 4
    # Even the folder may go.
    os.unlink(files[0])
    os.rmdir(os.path.dirname(files[0]))
    fresh_pool()
    assert _run_delayed() == [(h.CURRENT[0][:16], MB)] * 4


def test_a_file_removed_during_a_call_fails_the_task_naming_the_callback(big: None) -> None:
    h.CURRENT[0] = h.big_value(7, MB)  # a new snapshot: no worker holds its token yet
    snapshot = capture_for(LokyBackend())  # as for a loky call: the payload in a file
    data = pickle.dumps((bind(snapshot, h.received_marker), (0,), {}))
    (path,) = h.payload_files()
    with joblib.Parallel(n_jobs=2) as parallel:
        (message,) = parallel([joblib.delayed(h.run_pickled_task)(data, path)])
    assert message.startswith("StateTransportError: The state of parallel callback(s) 'big'")
    assert "was removed" in message
    # The next call writes it again.
    assert _run_delayed() == [(h.CURRENT[0][:16], MB)] * 4


@pytest.mark.parametrize("mode", ["delayed", "Parallel", "backend"])
def test_payload_files_go_without_the_garbage_collector(big: None, mode: str) -> None:
    counts = []
    before = set(h.payload_files())  # the files earlier calls of other modes may reuse
    gc.disable()
    try:
        for i in range(50):
            h.CURRENT[0] = h.big_value(i, MB)
            tasks = (delayed(h.received_marker)(k) for k in range(4))
            if mode == "delayed":
                out = joblib.Parallel(n_jobs=2)(tasks)
            elif mode == "Parallel":
                out = Parallel(n_jobs=2)(tasks)
            else:
                plain = (joblib.delayed(h.received_marker)(k) for k in range(4))
                with joblib.parallel_config(backend="workerstate", inner="loky"):
                    out = joblib.Parallel(n_jobs=2)(plain)
            assert out == [(h.CURRENT[0][:16], MB)] * 4
            counts.append(len(set(h.payload_files()) - before))
    finally:
        gc.enable()
    # No call runs between calls: only the file the next call may reuse is left.
    assert max(counts) <= 1, counts


def test_a_running_generator_call_keeps_its_file_while_others_start(big: None) -> None:
    h.CURRENT[0] = h.big_value(1, MB)
    first = joblib.Parallel(n_jobs=2, return_as="generator", pre_dispatch=2, batch_size=1)
    results = first(delayed(h.received_marker)(k) for k in range(40))
    head = next(results)
    for i in range(2, 6):  # other calls with other state on the same thread meanwhile
        h.CURRENT[0] = h.big_value(i, MB)
        assert _run_delayed(2) == [(h.CURRENT[0][:16], MB)] * 2
    rest = list(results)
    assert [head, *rest] == [(h.big_value(1, MB)[:16], MB)] * 40


def test_a_forked_child_leaves_the_parents_folder_alone() -> None:
    out = h.run_script(
        h.SCRIPT_HEAD
        + """
def call(tag):
    h.CURRENT[0] = h.big_value(tag, 2_000_000)
    out = joblib.Parallel(n_jobs=2)(delayed(h.received_marker)(i) for i in range(4))
    assert out == [(h.CURRENT[0][:16], 2_000_000)] * 4, out

call(1)
folders = sorted(_transport._folders.values())
for how in ("exit", "_exit"):
    pid = os.fork()
    if pid == 0:
        from workerstate._capture import _LAST
        # The child's own payloads go to its own folder, never to the parent's.
        for snapshot in list(_LAST.by_mode.values()):
            ref = snapshot.payload_ref()
            assert ref.kind != "file" or not any(ref.data.startswith(f) for f in folders)
        if how == "exit":
            sys.exit(0)
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    assert all(os.path.isdir(f) for f in folders), folders
    call(1)  # unchanged state: the same file
    call(2)  # new state
print("ok")
"""
    )
    assert out.strip().endswith("ok")


def test_a_new_process_removes_the_folders_of_dead_ones(tmp_path: object) -> None:
    script = (
        h.SCRIPT_HEAD
        + """
h.CURRENT[0] = h.big_value(1, 2_000_000)
joblib.Parallel(n_jobs=2)(delayed(h.received_marker)(i) for i in range(2))
import json; print(json.dumps(sorted(_transport._folders.values())), flush=True)
time.sleep(60)
"""
    )
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as handle:
        handle.write(script)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    victim = subprocess.Popen(
        [sys.executable, handle.name], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        folders = json.loads(victim.stdout.readline())
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        victim.stdout.close()
        os.unlink(handle.name)
    assert folders and all(os.path.isdir(f) for f in folders)
    # Folders a new process must leave: a live process's, and a name not of workerstate.
    live = os.path.join("/dev/shm", f"workerstate-{os.getpid()}-keepme")
    other = os.path.join("/dev/shm", f"workerstate-x{victim.pid}-keepme")
    os.makedirs(live, exist_ok=True)
    os.makedirs(other, exist_ok=True)
    try:
        h.run_script(
            h.SCRIPT_HEAD
            + """
h.CURRENT[0] = h.big_value(2, 2_000_000)
joblib.Parallel(n_jobs=2)(delayed(h.received_marker)(i) for i in range(2))
"""
        )
        assert not any(os.path.exists(f) for f in folders), folders
        assert os.path.isdir(live) and os.path.isdir(other)
    finally:
        os.rmdir(live)
        os.rmdir(other)


_SMALL_SHM = ["unshare", "-m", "sh", "-c"]
_MOUNT_SHM = "mount -t tmpfs -o size=4m tmpfs /dev/shm"


def test_a_small_dev_shm_falls_back_then_fails_clearly() -> None:
    # A private mount namespace: a 4 MB /dev/shm here, and then a 4 MB temporary folder.
    source = (
        h.SCRIPT_HEAD
        + """
import tempfile
import numpy as np
from workerstate._errors import StateTransportError

def call(size, tag):
    h.CURRENT[0] = h.big_value(tag, size)
    out = joblib.Parallel(n_jobs=2)(delayed(h.received_marker)(i) for i in range(4))
    assert out == [(h.CURRENT[0][:16], size)] * 4, out
    return out

def leftovers():
    found = []
    for base in ("/dev/shm", tempfile.gettempdir()):
        for name in os.listdir(base):
            if _transport._FOLDER_PATTERN.match(name):
                found += os.listdir(os.path.join(base, name))
    return found

call(8_000_000, 1)  # /dev/shm is too small: the temporary folder takes it
assert leftovers() == [h.payload_files()[0].rsplit("/", 1)[1]], leftovers()
assert not any(p.startswith("/dev/shm") for p in h.payload_files())
# /dev/shm was left empty, so plain joblib still memory-maps there.
joblib.Parallel(n_jobs=2, max_nbytes=1000)(joblib.delayed(np.sum)(np.ones(10_000)) for _ in range(2))
os.environ["TMPDIR"] = sys.argv[1]
tempfile.tempdir = None
_transport._folders.clear()
call(8_000_000, 2)  # no folder takes it: inline in the batches
call(2_000_000, 3)  # fits in /dev/shm again
try:
    call(20_000_000, 4)
except StateTransportError as exc:
    message = str(exc)
else:
    raise AssertionError("no error")
for part in ("'big'", "20.0 MB", "/dev/shm", sys.argv[1], "WORKERSTATE_TEMP_FOLDER", "smaller value"):
    assert part in message, (part, message)
assert not [f for f in leftovers() if f != h.payload_files()[0].rsplit("/", 1)[1]], leftovers()
print("ok")
"""
    )
    tiny = "/tmp/workerstate-test-tiny-tmp"
    line = f"{_MOUNT_SHM} && mkdir -p {tiny} && mount -t tmpfs -o size=4m tmpfs {tiny} && {{python}} {{script}} {tiny}"
    try:
        out = h.run_script(source, wrap=[*_SMALL_SHM, line])
    finally:
        subprocess.run(["rmdir", tiny], check=False)
    assert out.strip().endswith("ok")


def test_worker_memory_stays_within_the_cache_budget(big: None) -> None:
    fresh_pool()
    h.CURRENT[0] = h.big_value(0, 10 * MB)
    with joblib.Parallel(n_jobs=2) as parallel:
        parallel(delayed(h.received_marker)(i) for i in range(4))
        start = dict(parallel(joblib.delayed(h.worker_rss_mb)(i) for i in range(8)))
        for i in range(1, 25):
            h.CURRENT[0] = h.big_value(i, 10 * MB)
            out = parallel(delayed(h.received_marker)(k) for k in range(4))
            assert out == [(h.CURRENT[0][:16], 10 * MB)] * 4
        end = dict(parallel(joblib.delayed(h.worker_rss_mb)(i) for i in range(8)))
    base = min(start.values())  # a worker that has decoded one value
    growth = {pid: mb - base for pid, mb in end.items()}
    print(f"worker RSS MB at start {start}, after 24 values {end}")
    # The default budget is 64 MB per worker; 24 values would be 240 MB.
    assert all(mb < 110 for mb in growth.values()), growth


def test_a_value_larger_than_the_budget_is_used_and_dropped(
    big: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_transport.WORKER_CACHE_ENV, "5")
    fresh_pool()  # workers read the budget from their environment
    try:
        with joblib.Parallel(n_jobs=2) as parallel:
            for i in range(6):
                h.CURRENT[0] = h.big_value(i, 8 * MB)
                out = parallel(delayed(h.received_marker)(k) for k in range(6))
                assert out == [(h.CURRENT[0][:16], 8 * MB)] * 6
            sizes = parallel(joblib.delayed(_cache_sizes)(k) for k in range(4))
    finally:
        monkeypatch.delenv(_transport.WORKER_CACHE_ENV)
        fresh_pool()
    assert all(cached == 0 and oversized <= 1 for cached, oversized in sizes), sizes


def _cache_sizes(_: object) -> tuple[int, int]:
    return len(_transport._worker_cache), len(_transport._oversized)


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def __hash__(self) -> int:
        return 1


def test_a_value_whose_repr_raises_gets_an_error_naming_the_callback() -> None:
    value = {_BadRepr(): threading.Lock()}
    register_global_parallel_callback(lambda: (value, h.set_big), name="bad-repr")
    with pytest.raises(StatePicklingError, match="'bad-repr'"):
        joblib.Parallel(n_jobs=2)(delayed(abs)(i) for i in range(2))


def test_the_worker_cache_budget_reads_its_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_transport.WORKER_CACHE_ENV, "1.5")
    assert _transport.worker_cache_budget() == 1_500_000
    monkeypatch.setenv(_transport.WORKER_CACHE_ENV, "many")
    assert _transport.worker_cache_budget() == 64 * MB
    monkeypatch.delenv(_transport.WORKER_CACHE_ENV)
    assert _transport.worker_cache_budget() == 64 * MB
