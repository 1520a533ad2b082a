"""Cost of the way back per task: plain joblib, workerstate's Parallel and the backend.

Two workloads on the same warmed loky pool (n_jobs=2, auto batching), nothing registered:
20,000 tasks that emit nothing, and 2,000 tasks that each emit one warning and one log record.
With workerstate both come back to the parent and are re-issued there (the parent's filter is
``"always"``, its handler a ``NullHandler``, so the re-issue itself is timed, not the
printing); plain joblib's workers print them on their own standard error instead, so run with
``2>/dev/null`` for a readable table. Each contender takes turns; garbage is collected before
every timed run, and the table shows the best of the runs. Run:

    python benchmarks/roundtrip.py 2>/dev/null
    python benchmarks/roundtrip.py --quick 2>/dev/null   # a tenth of the tasks
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

LOG = logging.getLogger("bench.roundtrip")


class BenchWarning(UserWarning):
    pass


def emit_nothing(i: int) -> int:
    return i


def emit_one_each(i: int) -> int:
    warnings.warn("one warning", BenchWarning, stacklevel=1)
    LOG.warning("one record %d", i)
    return i


def _contenders() -> dict[str, Callable[[Callable[..., Any], int], list[Any]]]:
    import joblib

    from workerstate import parallel as ws

    def plain(func: Callable[..., Any], n: int) -> list[Any]:
        return joblib.Parallel(n_jobs=2)(joblib.delayed(func)(i) for i in range(n))  # type: ignore[no-any-return]

    def ws_parallel(func: Callable[..., Any], n: int) -> list[Any]:
        return ws.Parallel(n_jobs=2)(joblib.delayed(func)(i) for i in range(n))  # type: ignore[no-any-return]

    def backend(func: Callable[..., Any], n: int) -> list[Any]:
        with joblib.parallel_config(backend="workerstate", inner="loky"):
            return joblib.Parallel(n_jobs=2)(joblib.delayed(func)(i) for i in range(n))  # type: ignore[no-any-return]

    return {"joblib": plain, "workerstate Parallel": ws_parallel, "backend": backend}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the tasks")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per contender")
    options = parser.parse_args()
    # The task functions from this module by name, not rebuilt by value from __main__.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import roundtrip as tasks

    scale = 10 if options.quick else 1
    workloads = [
        ("emit nothing", tasks.emit_nothing, 20_000 // scale),
        ("1 warning + 1 record", tasks.emit_one_each, 2_000 // scale),
    ]
    contenders = _contenders()
    LOG.addHandler(logging.NullHandler())
    LOG.propagate = False
    warnings.simplefilter("always")
    warnings.showwarning = lambda *args, **kwargs: None
    contenders["joblib"](tasks.emit_nothing, 100)  # start the pool
    print(f"Python {sys.version.split()[0]}, n_jobs=2, best of {options.runs} runs")
    print(f"{'workload':<22} {'tasks':>6} {'contender':<22} {'us/task':>8} {'x joblib':>8}")
    for label, func, n in workloads:
        best: dict[str, float] = {}
        for _ in range(options.runs):
            for name, run in contenders.items():
                gc.collect()
                start = time.perf_counter()
                results = run(func, n)
                elapsed = time.perf_counter() - start
                assert results == list(range(n)), name
                best[name] = min(best.get(name, elapsed), elapsed)
        for name, seconds in best.items():
            ratio = seconds / best["joblib"]
            print(f"{label:<22} {n:>6} {name:<22} {seconds / n * 1e6:>8.1f} {ratio:>8.2f}")


if __name__ == "__main__":
    main()
