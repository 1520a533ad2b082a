"""Clusters for the scale-out tests, and the functions their workers run.

dask and Ray worker processes import this module by name (the repository root is on their
``PYTHONPATH``), so every module-level value here starts at its import-time default in a
worker.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests import _state

REPO_ROOT = Path(__file__).resolve().parents[1]
N_WORKERS = 2
THREADS_PER_WORKER = 2
BIG_SIZE = 10 * 1024 * 1024  # the "10 MB registered value" of the scale-out issue


def path_with_repo(current: str | None) -> str:
    """``PYTHONPATH`` with the repository root first, so workers can import ``tests.*``."""
    parts = [str(REPO_ROOT), *(current.split(os.pathsep) if current else [])]
    return os.pathsep.join(dict.fromkeys(part for part in parts if part))


# -- a dask cluster started with the command-line programs ------------------------------------
def _dask_command(program: str) -> list[str]:
    executable = Path(sys.executable).with_name("dask")
    if executable.exists():
        return [str(executable), program]
    module = {"scheduler": "dask_scheduler", "worker": "dask_worker"}[program]
    return [sys.executable, "-m", f"distributed.cli.{module}"]


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


def process_gone(pid: int) -> bool:
    """Whether ``pid`` no longer runs (a zombie that nobody reaps counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False


def descendants(pids: list[int]) -> list[int]:
    """Every process below ``pids`` (children, grandchildren, ...), read from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = list(pids)
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop_nested_pools() -> int:
    """Run with ``client.run``: stop the loky pool that nested calls started in a worker."""
    from workerstate.parallel import fresh_pool

    fresh_pool()
    return os.getpid()


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = [pid for pid in pids if not process_gone(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if not process_gone(pid)]
    return alive


@contextmanager
def cli_cluster(
    directory: Path, n_workers: int = N_WORKERS, nthreads: int = THREADS_PER_WORKER
) -> Iterator[Any]:
    """``dask scheduler`` and ``dask worker`` processes on loopback; yields a connected client.

    The processes are started as an operator would start them, from the command line, with
    the repository root on their ``PYTHONPATH``. On exit the client is closed, the workers
    and then the scheduler get SIGTERM, and every process (the worker processes that the
    nannies started included) must be gone within 30 s.
    """
    from distributed import Client

    scheduler_file = directory / "sched.json"
    env = dict(os.environ, PYTHONPATH=path_with_repo(os.environ.get("PYTHONPATH")))
    # Non-daemonic worker processes may start processes of their own (a nested loky call);
    # daemonic ones make joblib fall back to n_jobs=1 inside a task.
    env["DASK_DISTRIBUTED__WORKER__DAEMON"] = "False"
    logs = [directory / "scheduler.log", *(directory / f"worker{i}.log" for i in range(n_workers))]
    commands = [
        [
            *_dask_command("scheduler"),
            *("--host", "127.0.0.1", "--port", "0", "--no-dashboard"),
            *("--scheduler-file", str(scheduler_file)),
        ],
        *(
            [
                *_dask_command("worker"),
                *("--scheduler-file", str(scheduler_file)),
                *("--nthreads", str(nthreads), "--nworkers", "1"),
                *("--no-dashboard", "--host", "127.0.0.1"),
            ]
            for _ in range(n_workers)
        ),
    ]
    processes: list[subprocess.Popen[bytes]] = []
    client = None
    worker_pids: list[int] = []
    try:
        for command, log in zip(commands, logs, strict=True):
            with open(log, "wb") as handle:
                processes.append(
                    subprocess.Popen(
                        command, env=env, cwd=REPO_ROOT, stdout=handle, stderr=subprocess.STDOUT
                    )
                )
            if len(processes) == 1:
                # The workers read the scheduler's address from the file it writes.
                _wait_for_file(scheduler_file, processes[0], logs[0])
        client = Client(scheduler_file=str(scheduler_file), set_as_default=False)
        try:
            client.wait_for_workers(n_workers, timeout=60)
        except Exception as exc:
            tails = "\n".join(f"--- {log.name}\n{_log_tail(log)}" for log in logs)
            raise RuntimeError(f"dask workers did not connect: {exc}\n{tails}") from exc
        worker_pids = sorted(client.run(os.getpid).values())
        yield client
    finally:
        if client is not None:
            # Pools that nested calls started inside the workers are the workers' own: a
            # worker process does not stop them when it exits.
            with contextlib.suppress(Exception):
                client.run(stop_nested_pools)
            client.close()
        below = descendants([process.pid for process in processes])
        # Workers first, so they do not try to reconnect to a scheduler that is gone.
        for process in processes[1:]:
            process.send_signal(signal.SIGTERM)
        codes = [_wait_code(process) for process in processes[1:]]
        if processes:
            processes[0].send_signal(signal.SIGTERM)
            codes.insert(0, _wait_code(processes[0]))
        stuck = [p.pid for p, code in zip(processes, codes, strict=True) if code is None]
        orphans = _wait_gone(sorted({*worker_pids, *below}), 30)
        for pid in stuck + orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if stuck or orphans:
            raise AssertionError(
                f"dask processes did not exit after SIGTERM: {stuck} (command-line programs), "
                f"{orphans} (processes they started)"
            )
        failed = {log.name: code for log, code in zip(logs, codes, strict=False) if code}
        if failed:
            tails = "\n".join(f"--- {name}\n{_log_tail(directory / name)}" for name in failed)
            raise AssertionError(f"dask programs exited with an error: {failed}\n{tails}")


def _wait_for_file(path: Path, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"dask scheduler did not start:\n{_log_tail(log)}")
        time.sleep(0.05)


def _wait_code(process: subprocess.Popen[bytes]) -> int | None:
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        return None


@contextmanager
def local_cluster(n_workers: int = N_WORKERS, threads: int = THREADS_PER_WORKER) -> Iterator[Any]:
    """``LocalCluster(processes=True)`` on loopback; yields a client that is not the default."""
    from distributed import Client, LocalCluster

    with warnings.catch_warnings():
        # As in tests/conftest.py: dashboard_address=None still starts the HTTP server on
        # port 8787, and distributed warns and takes another port when 8787 is in use.
        warnings.filterwarnings(
            "ignore", message=r"Port \d+ is already in use", category=UserWarning
        )
        warnings.filterwarnings("ignore", message="unclosed <socket", category=ResourceWarning)
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
        gc.collect()
    client = Client(cluster, set_as_default=False)
    try:
        client.wait_for_workers(n_workers, timeout=60)
        yield client
    finally:
        client.close()
        cluster.close()


def reset_worker(value: Any = _state.IMPORT_VALUE) -> int:
    """Run with ``client.run``: put the process-global test value back; return the pid."""
    _state.set_value(value)
    _OVERLAP.applied_on.clear()
    return os.getpid()


# -- what the tasks run -----------------------------------------------------------------------
def big_report(i: int = 0) -> dict[str, Any]:
    """What a task sees of a large thread-local test value, without sending it back."""
    value = _state.get_local()
    sized = isinstance(value, (bytes, str))
    return {
        "i": i,
        "pid": os.getpid(),
        "thread": threading.get_ident(),
        "size": len(value) if sized else None,
        "ends": (value[:16], value[-16:]) if sized else value,
        "object": id(value),
    }


def nested_threading_report(n: int = 4) -> dict[str, Any]:
    """Run workerstate's ``Parallel`` with the threading backend inside a worker's task."""
    from workerstate.parallel import Parallel, delayed

    inner = Parallel(n_jobs=2, backend="threading")(delayed(_state.report)(i) for i in range(n))
    return {"outer": _state.report(), "inner": inner}


def nested_loky_report(n: int = 4) -> dict[str, Any]:
    """A nested loky ``Parallel`` inside a worker's task, with warnings recorded."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seen = _state.nested_report(n)
    seen["warnings"] = [str(w.message) for w in caught]
    return seen


def set_local_and_report(i: int = 0, delay: float = 0.0) -> dict[str, Any]:
    """Change the thread-local test value in the task, then report."""
    _state.set_local(_state.TASK_VALUE)
    return _state.report(i, delay)


def where_am_i(i: int = 0) -> dict[str, Any]:
    """Report, with what ``multiprocessing`` says about this process, and warn once."""
    import multiprocessing

    seen = _state.report(i)
    seen["has_parent_process"] = multiprocessing.parent_process() is not None
    warnings.warn(f"warned in task {i}", UserWarning, stacklevel=1)
    return seen


# -- two tasks of one call running at once in one worker process --------------------------------
class _Overlap:
    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.running = 0
        self.applied_on: dict[int, Any] = {}


_OVERLAP = _Overlap()


def applying_setter(value: Any) -> None:
    """Set the process-global test value; remember which thread did."""
    _OVERLAP.applied_on[threading.get_ident()] = value
    _state.set_value(value)


def applying_callback() -> tuple[Any, Any]:
    return _state.VALUE, applying_setter


def overlapping_report(i: int = 0, hold: float = 0.3) -> dict[str, Any]:
    """Run alongside another task of this process; the task whose thread installed the
    state returns at once, the other one reports after ``hold`` seconds.

    That is the order in which two tasks that start together usually end, made certain.
    """
    installed_here = _OVERLAP.applied_on.pop(threading.get_ident(), None) is not None
    overlap = _OVERLAP
    with overlap.condition:
        overlap.running += 1
        overlap.condition.notify_all()
        together = overlap.condition.wait_for(lambda: overlap.running >= 2, timeout=20)
    try:
        if not installed_here:
            time.sleep(hold)
        seen = _state.report(i)
        seen["installed_here"] = installed_here
        seen["together"] = together
        return seen
    finally:
        with overlap.condition:
            overlap.running -= 1
