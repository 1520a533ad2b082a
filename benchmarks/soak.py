"""Soak test: many tiny tasks through one loky pool, with three registered callbacks.

Every call sets new values for the three pieces of state (a module global, a thread-local
value and scikit-learn's config), and every task checks that it sees exactly the values of
its own call. The calls rotate through the three ways of using workerstate. At the end the
script prints the resident memory of the parent and of each worker at the start and at the
end, how many snapshots and task wrappers are still alive, and how many tasks saw the wrong
state. Run:

    python benchmarks/soak.py                   # 200,000 tasks
    python benchmarks/soak.py --tasks 20000     # a shorter run
    python benchmarks/soak.py --json            # one JSON object instead of the table

Memory is read from /proc/<pid>/status (Linux).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import threading
import time
from typing import Any

import joblib
import sklearn

from workerstate import parallel as ws

N_JOBS = 2
API_NAMES = ("joblib.Parallel+ws.delayed", "ws.Parallel+joblib.delayed", "workerstate backend")
#: joblib's automatic batching, batches of 16 tasks, and one task per batch (where every task
#: brings its own wrapper to the worker).
BATCH_SIZES: tuple[int | str, ...] = ("auto", 16, 1)

# -- the three pieces of state, as a worker sees them ------------------------------------------
GLOBAL_VALUE: Any = None
_LOCAL = threading.local()


def get_global() -> Any:
    return GLOBAL_VALUE


def set_global(value: Any) -> None:
    global GLOBAL_VALUE
    GLOBAL_VALUE = value


def global_callback() -> tuple[Any, Any]:
    return GLOBAL_VALUE, set_global


def get_local() -> Any:
    return getattr(_LOCAL, "value", None)


def set_local(value: Any) -> None:
    _LOCAL.value = value


def local_callback() -> tuple[Any, Any]:
    return get_local(), set_local


def set_sklearn(config: dict[str, Any]) -> None:
    sklearn.set_config(**config)


def sklearn_callback() -> tuple[Any, Any]:
    return sklearn.get_config(), set_sklearn


def check(round_id: int) -> int:
    """1 if this task sees the state of call ``round_id``, else 0."""
    return int(
        get_global() == f"global-{round_id}"
        and get_local() == f"local-{round_id}"
        and sklearn.get_config()["working_memory"] == 64 + round_id
    )


def worker_report() -> tuple[int, int, int]:
    """(pid, live snapshots, live task wrappers) in this worker."""
    from workerstate._snapshot import Snapshot
    from workerstate._task import StatefulCall

    gc.collect()
    objects = gc.get_objects()
    snapshots = sum(1 for obj in objects if type(obj) is Snapshot)
    calls = sum(1 for obj in objects if type(obj) is StatefulCall)
    time.sleep(0.05)  # long enough that every worker answers one of them
    return os.getpid(), snapshots, calls


# -- measuring ----------------------------------------------------------------------------------
def rss_mb(pid: int | str = "self", field: str = "VmRSS") -> float:
    """Resident memory of ``pid`` in MB, from /proc (``VmHWM`` is the peak)."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def _worker_reports() -> dict[int, tuple[int, int]]:
    reports: dict[int, tuple[int, int]] = {}
    for _ in range(20):
        for pid, snapshots, calls in joblib.Parallel(n_jobs=N_JOBS, batch_size=1)(
            joblib.delayed(worker_report)() for _ in range(2 * N_JOBS)
        ):
            reports[pid] = (snapshots, calls)
        if len(reports) >= N_JOBS:
            break
    return reports


def _parent_live_objects() -> tuple[int, int]:
    from workerstate._snapshot import Snapshot
    from workerstate._task import StatefulCall

    gc.collect()
    objects = gc.get_objects()
    return (
        sum(1 for obj in objects if type(obj) is Snapshot),
        sum(1 for obj in objects if type(obj) is StatefulCall),
    )


def _one_call(api: str, batch_size: int | str, round_id: int, n: int) -> int:
    """Run ``n`` tasks of one call under the state of ``round_id``; return how many were right."""
    set_global(f"global-{round_id}")
    set_local(f"local-{round_id}")
    with sklearn.config_context(working_memory=64 + round_id):
        if api == "joblib.Parallel+ws.delayed":
            results = joblib.Parallel(n_jobs=N_JOBS, batch_size=batch_size)(
                ws.delayed(check)(round_id) for _ in range(n)
            )
        elif api == "ws.Parallel+joblib.delayed":
            results = ws.Parallel(n_jobs=N_JOBS, batch_size=batch_size)(
                joblib.delayed(check)(round_id) for _ in range(n)
            )
        elif api == "plain joblib":  # the control: no state reaches the workers
            results = joblib.Parallel(n_jobs=N_JOBS, batch_size=batch_size)(
                joblib.delayed(check)(round_id) for _ in range(n)
            )
        else:
            with joblib.parallel_config(backend="workerstate", inner="loky"):
                results = joblib.Parallel(n_jobs=N_JOBS, batch_size=batch_size)(
                    joblib.delayed(check)(round_id) for _ in range(n)
                )
    return sum(results)


def _plan(calls: int, control: bool = False) -> tuple[str, int | str]:
    """The API and batch size of call number ``calls``: every pairing comes up in turn."""
    api = "plain joblib" if control else API_NAMES[calls % len(API_NAMES)]
    return api, BATCH_SIZES[calls // len(API_NAMES) % len(BATCH_SIZES)]


def run_soak(tasks: int = 200_000, chunk: int = 1_000, control: bool = False) -> dict[str, Any]:
    """Run ``tasks`` tasks in calls of ``chunk``; return the figures.

    With ``control=True`` the calls use plain joblib, so every task should count as a state
    error: that shows the check can fail.
    """
    names = [
        ws.register_global_parallel_callback(global_callback, name="soak-global"),
        ws.register_global_parallel_callback(local_callback, name="soak-local"),
        ws.register_global_parallel_callback(sklearn_callback, name="soak-sklearn"),
    ]
    try:
        # Warm up: start the pool, import everything in the workers, fill the caches; the
        # "start" figures are taken after this.
        for i in range(len(API_NAMES) * len(BATCH_SIZES)):
            _one_call(*_plan(i), -1 - i, min(chunk, tasks, 200))
        gc.collect()
        start_reports = _worker_reports()
        workers = sorted(start_reports)
        parent_start = rss_mb()
        worker_start = {pid: rss_mb(pid) for pid in workers}

        started = time.perf_counter()
        done = errors = calls = 0
        while done < tasks:
            n = min(chunk, tasks - done)
            right = _one_call(*_plan(calls, control), calls, n)
            errors += n - right
            done += n
            calls += 1
        seconds = time.perf_counter() - started

        gc.collect()
        parent_end = rss_mb()
        end_reports = _worker_reports()
        worker_end = {pid: rss_mb(pid) for pid in workers if pid in end_reports}
        worker_peak = {pid: rss_mb(pid, "VmHWM") for pid in workers if pid in end_reports}
        parent_snapshots, parent_calls = _parent_live_objects()
    finally:
        for name in names:
            ws.remove_global_parallel_callback(name)
    return {
        "tasks": done,
        "control": control,
        "calls": calls,
        "n_jobs": N_JOBS,
        "seconds": seconds,
        "errors": errors,
        "parent_rss_start_mb": parent_start,
        "parent_rss_end_mb": parent_end,
        "parent_rss_peak_mb": rss_mb("self", "VmHWM"),
        "workers": [
            {
                "pid": pid,
                "rss_start_mb": worker_start[pid],
                "rss_end_mb": worker_end.get(pid),
                "rss_peak_mb": worker_peak.get(pid),
                "live_snapshots": end_reports.get(pid, (None, None))[0],
                "live_wrappers": end_reports.get(pid, (None, None))[1],
            }
            for pid in workers
        ],
        "same_workers_at_end": sorted(end_reports) == workers,
        "parent_live_snapshots": parent_snapshots,
        "parent_live_wrappers": parent_calls,
    }


def format_table(figures: dict[str, Any]) -> str:
    def mb(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    rows = [
        ("tasks", f"{figures['tasks']:,} in {figures['calls']:,} calls"),
        ("seconds", f"{figures['seconds']:.1f} ({figures['tasks'] / figures['seconds']:,.0f}/s)"),
        (
            "parent RSS MB",
            f"start {mb(figures['parent_rss_start_mb'])}  end {mb(figures['parent_rss_end_mb'])}"
            f"  peak {mb(figures['parent_rss_peak_mb'])}",
        ),
    ]
    for worker in figures["workers"]:
        rows.append(
            (
                f"worker {worker['pid']} RSS MB",
                f"start {mb(worker['rss_start_mb'])}  end {mb(worker['rss_end_mb'])}"
                f"  peak {mb(worker['rss_peak_mb'])}",
            )
        )
    rows += [
        ("same workers at end", "yes" if figures["same_workers_at_end"] else "no"),
        (
            "live snapshots/wrappers",
            f"parent {figures['parent_live_snapshots']}/{figures['parent_live_wrappers']}, "
            + ", ".join(
                f"worker {w['pid']} {w['live_snapshots']}/{w['live_wrappers']}"
                for w in figures["workers"]
            ),
        ),
        ("state errors", f"{figures['errors']}"),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200_000, help="tasks in all (200,000)")
    parser.add_argument("--chunk", type=int, default=1_000, help="tasks per Parallel call")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--control",
        action="store_true",
        help="use plain joblib instead (every task must then count as a state error)",
    )
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.chunk < 1:
        parser.error("--tasks and --chunk must be positive")
    figures = run_soak(args.tasks, args.chunk, args.control)
    if args.json:
        print(json.dumps(figures))
    else:
        print(
            f"workerstate soak{' (control: plain joblib)' if args.control else ''}: "
            f"{N_JOBS} loky workers, 3 callbacks, "
            f"Python {sys.version.split()[0]}, joblib {joblib.__version__}"
        )
        print(format_table(figures))
    if args.control:
        return 0 if figures["errors"] == figures["tasks"] else 1
    return 1 if figures["errors"] else 0


if __name__ == "__main__":
    # Run as the module "soak", not "__main__", so the workers import the task functions by
    # name from this file (loky gives them the parent's sys.path) instead of receiving
    # copies whose globals are not this module's.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import soak

    sys.exit(soak.main())
