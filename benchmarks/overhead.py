"""Per-task overhead of workerstate against plain joblib and other wrappers, in one run.

Every contender runs on the same warmed loky pool (n_jobs=2, auto batching) with the same
registered state: one scikit-learn config callback and one custom callback. Each task reports
which propagated state it saw, and the table says whether every task saw what its contender
promises. The contenders take turns, and garbage is collected in the parent and in every
worker before every timed run: otherwise a full collection of what an earlier contender left
behind (tpcp's per-task closures, above all) lands in whichever run comes next and adds tens
of milliseconds to it. Collection stays on during a run, so a contender that allocates more
pays for its own collections. As with timeit, a timed run repeats the call several times and
reports the mean per call; the table shows the best of the runs. Run:

    python benchmarks/overhead.py            # all workloads
    python benchmarks/overhead.py --quick    # fewer tasks, one call per run: a smoke run
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_tasks
import joblib
import sklearn
from sklearn.utils import parallel as sk_parallel

from workerstate import parallel as ws

try:
    from tpcp import parallel as tpcp_parallel
except ImportError:  # tpcp is optional: pip install -e ".[bench]"
    tpcp_parallel = None

N_JOBS = 2
#: A timed run repeats the call until plain joblib would take at least this many seconds.
MIN_RUN = 0.25
ALL_STATE = 1 | 2 | 4


def _contenders() -> list[tuple[str, int, Callable[[Callable[..., Any], int, str], list[int]]]]:
    """(name, the state bits it promises, runner)."""

    def plain(func: Callable[..., Any], n: int, token: str) -> list[int]:
        return joblib.Parallel(n_jobs=N_JOBS)(joblib.delayed(func)(token) for _ in range(n))

    def sklearn_wrapper(func: Callable[..., Any], n: int, token: str) -> list[int]:
        return sk_parallel.Parallel(n_jobs=N_JOBS)(
            sk_parallel.delayed(func)(token) for _ in range(n)
        )

    def ws_delayed(func: Callable[..., Any], n: int, token: str) -> list[int]:
        return joblib.Parallel(n_jobs=N_JOBS)(ws.delayed(func)(token) for _ in range(n))

    def ws_parallel(func: Callable[..., Any], n: int, token: str) -> list[int]:
        return ws.Parallel(n_jobs=N_JOBS)(ws.delayed(func)(token) for _ in range(n))

    def ws_backend(func: Callable[..., Any], n: int, token: str) -> list[int]:
        with joblib.parallel_config(backend="workerstate"):
            return joblib.Parallel(n_jobs=N_JOBS)(joblib.delayed(func)(token) for _ in range(n))

    found: list[tuple[str, int, Callable[[Callable[..., Any], int, str], list[int]]]] = [
        ("joblib.delayed, no state (floor)", 0, plain),
        ("sklearn.utils.parallel (own config)", 1 | 4, sklearn_wrapper),
    ]
    if tpcp_parallel is not None:

        def tpcp_delayed(func: Callable[..., Any], n: int, token: str) -> list[int]:
            return joblib.Parallel(n_jobs=N_JOBS)(
                tpcp_parallel.delayed(func)(token) for _ in range(n)
            )

        found.append(("tpcp.parallel.delayed", 1 | 2, tpcp_delayed))
    found += [
        ("workerstate delayed + joblib.Parallel", ALL_STATE, ws_delayed),
        ("workerstate Parallel + delayed", ALL_STATE, ws_parallel),
        ("joblib.delayed, workerstate backend", ALL_STATE, ws_backend),
    ]
    return found


def _register() -> None:
    ws.register_global_parallel_callback(bench_tasks.sklearn_callback, name="sklearn")
    ws.register_global_parallel_callback(bench_tasks.state_callback, name="custom")
    if tpcp_parallel is not None:
        tpcp_parallel.register_global_parallel_callback(bench_tasks.sklearn_callback)
        tpcp_parallel.register_global_parallel_callback(bench_tasks.state_callback)


def _collect_garbage() -> None:
    """Collect garbage in every worker of the pool, then in the parent."""
    for _ in range(10):
        pids = joblib.Parallel(n_jobs=N_JOBS, batch_size=1)(
            joblib.delayed(bench_tasks.collect_garbage)(0.02) for _ in range(N_JOBS)
        )
        if len(set(pids)) == N_JOBS:  # one task per worker: each one collected
            break
    gc.collect()


def run(
    workloads: list[tuple[str, Callable[..., Any], int, int]], repeats: int, number: int = 0
) -> None:
    contenders = _contenders()
    _register()
    sklearn.set_config(assume_finite=True)
    warnings.filterwarnings("ignore", message=bench_tasks.MARKER)
    # Warm the pool and the workers' imports with every contender once.
    for _, _, runner in contenders:
        runner(bench_tasks.trivial, 50, "warm")

    print(
        f"Python {platform.python_version()}, joblib {joblib.__version__}, "
        f"scikit-learn {sklearn.__version__}, {os.cpu_count()} CPUs, n_jobs={N_JOBS}, loky"
    )
    for title, func, n_tasks, state_bytes in workloads:
        token = uuid.uuid4().hex
        bench_tasks.set_state({"token": token, "blob": b"x" * state_bytes})
        calls = number or _calls_per_run(contenders[0][2], func, n_tasks, token)
        best = {name: float("inf") for name, _, _ in contenders}
        verdict = {}
        for _ in range(repeats):
            # Round robin, so drift of the machine hits every contender alike.
            for name, promised, runner in contenders:
                _collect_garbage()
                outputs = []
                start = time.perf_counter()
                for _ in range(calls):
                    outputs.append(runner(func, n_tasks, token))
                best[name] = min(best[name], (time.perf_counter() - start) / calls)
                ok = all(
                    len(out) == n_tasks and all((mask & promised) == promised for mask in out)
                    for out in outputs
                )
                verdict[name] = verdict.get(name, True) and ok
        floor = best[contenders[0][0]]
        per_run = f"mean of {calls} calls" if calls > 1 else "one call"
        runs = f"best of {repeats} runs" if repeats > 1 else "one run"
        print(f"\n{title} (seconds per call: {per_run} per run, {runs})")
        print(
            f"{'contender':40} {'seconds':>8} {'us/task':>8} {'ratio':>6}  state seen in every task"
        )
        for name, promised, _ in contenders:
            seconds = best[name]
            what = "nothing promised" if not promised else ("yes" if verdict[name] else "NO")
            print(
                f"{name:40} {seconds:8.3f} {seconds / n_tasks * 1e6:8.1f} "
                f"{seconds / floor:5.2f}x  {what}"
            )


def _calls_per_run(
    floor: Callable[[Callable[..., Any], int, str], list[int]],
    func: Callable[..., Any],
    n_tasks: int,
    token: str,
) -> int:
    """How many calls make a timed run of at least MIN_RUN seconds of plain joblib.

    joblib's calling thread looks for finished batches every 10 ms, so one short call lasts a
    whole number of those periods: a call of 15 ms of work takes 20 ms or 30 ms depending
    on where the periods fall. Averaging over several calls per run, as timeit does, keeps
    that rounding from deciding the ratio.
    """
    _collect_garbage()
    start = time.perf_counter()
    floor(func, n_tasks, token)
    once = time.perf_counter() - start
    return max(1, math.ceil(MIN_RUN / once))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tasks and repeats")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per contender")
    parser.add_argument(
        "--number",
        type=int,
        default=0,
        help="calls per timed run (default: enough for 0.25 s of plain joblib)",
    )
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    workloads = [
        (f"{20_000 // scale:,} trivial tasks", bench_tasks.trivial, 20_000 // scale, 64),
        (
            f"{2_000 // scale:,} tasks, 1 MB state value",
            bench_tasks.trivial,
            2_000 // scale,
            1 << 20,
        ),
        (f"{200 // scale:,} tasks of 5 ms", bench_tasks.busy, 200 // scale, 64),
    ]
    run(workloads, 1 if args.quick else args.repeats, 1 if args.quick else args.number)


if __name__ == "__main__":
    main()
