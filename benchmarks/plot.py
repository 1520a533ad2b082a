"""Per-task cost of each form of workerstate against plain joblib, as a plot.

Two short sweeps on one warmed loky pool (n_jobs=2, joblib's automatic
batching), with trivial tasks:

* the number of tasks per call, with two registered callbacks (scikit-learn's
  configuration and a custom one);
* the number of registered callbacks (environment variables), with 2,000 tasks
  per call.

Each point is the best of a few timed calls, divided by the number of tasks.
The contenders take turns and garbage is collected before every timed call,
as in ``overhead.py``. The figure and the data it is drawn from are written
next to each other, by default into ``docs/_static/``::

    python benchmarks/plot.py              # about a minute on 2 cores
    python benchmarks/plot.py --out DIR    # somewhere else
    python benchmarks/plot.py --replot     # redraw from the saved data

Needs matplotlib (``pip install -e ".[docs]"``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_tasks
import joblib
import sklearn

import workerstate
from workerstate import parallel as ws
from workerstate import presets

N_JOBS = 2
TASK_COUNTS = (100, 300, 1_000, 3_000, 10_000)
CALLBACK_COUNTS = (0, 1, 2, 4, 8, 16)
TASKS_FOR_CALLBACKS = 2_000
ROOT = Path(__file__).resolve().parent.parent

Runner = Callable[[int, str], list[int]]


def _plain(n: int, token: str) -> list[int]:
    return joblib.Parallel(n_jobs=N_JOBS)(
        joblib.delayed(bench_tasks.trivial)(token) for _ in range(n)
    )


def _ws_delayed(n: int, token: str) -> list[int]:
    return joblib.Parallel(n_jobs=N_JOBS)(ws.delayed(bench_tasks.trivial)(token) for _ in range(n))


def _ws_parallel(n: int, token: str) -> list[int]:
    return ws.Parallel(n_jobs=N_JOBS)(ws.delayed(bench_tasks.trivial)(token) for _ in range(n))


def _ws_backend(n: int, token: str) -> list[int]:
    with joblib.parallel_config(backend="workerstate"):
        return _plain(n, token)


CONTENDERS: dict[str, Runner] = {
    "joblib, no state": _plain,
    "workerstate delayed": _ws_delayed,
    "workerstate Parallel": _ws_parallel,
    "workerstate backend": _ws_backend,
}


def _collect_garbage() -> None:
    """Collect garbage in every worker of the pool, then in the parent."""
    for _ in range(10):
        pids = joblib.Parallel(n_jobs=N_JOBS, batch_size=1)(
            joblib.delayed(bench_tasks.collect_garbage)(0.02) for _ in range(N_JOBS)
        )
        if len(set(pids)) == N_JOBS:  # one task per worker: each collected
            break
    gc.collect()


def _per_task_us(runner: Runner, n: int, token: str) -> float:
    _collect_garbage()
    start = time.perf_counter()
    runner(n, token)
    return (time.perf_counter() - start) / n * 1e6


def _sweep(
    points: tuple[int, ...],
    setup: Callable[[int], contextlib.AbstractContextManager[int]],
    repeats: int,
) -> dict[str, list[float]]:
    """Best per-task time of every contender at every point, in µs."""
    best = {name: [float("inf")] * len(points) for name in CONTENDERS}
    for i, point in enumerate(points):
        with setup(point) as n_tasks:
            token = uuid.uuid4().hex
            bench_tasks.set_state({"token": token})
            for _ in range(repeats):
                # Round robin, so drift of the machine hits every contender.
                for name, runner in CONTENDERS.items():
                    cost = _per_task_us(runner, n_tasks, token)
                    best[name][i] = min(best[name][i], cost)
        print(f"  {point:>6}: " + ", ".join(f"{name} {v[i]:.1f}" for name, v in best.items()))
    return best


@contextlib.contextmanager
def _tasks(n: int) -> Iterator[int]:
    with (
        ws.global_parallel_callback(bench_tasks.sklearn_callback, name="sk"),
        ws.global_parallel_callback(bench_tasks.state_callback, name="state"),
    ):
        yield n


@contextlib.contextmanager
def _callbacks(k: int) -> Iterator[int]:
    with contextlib.ExitStack() as stack:
        for i in range(k):
            name = f"WORKERSTATE_BENCH_{i}"
            os.environ[name] = str(i)
            stack.callback(os.environ.pop, name, None)
            stack.enter_context(ws.global_parallel_callback(presets.environ(name), name=name))
        yield TASKS_FOR_CALLBACKS


def _plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    for name in CONTENDERS:
        style = "--" if name.startswith("joblib") else "-"
        left.plot(data["tasks"]["x"], data["tasks"][name], style, marker="o")
        right.plot(
            data["callbacks"]["x"],
            data["callbacks"][name],
            style,
            marker="o",
            label=name,
        )
    left.set_xscale("log")
    left.set_yscale("log")  # a call's fixed cost spreads over its tasks
    left.set_xlabel("tasks per call (2 callbacks)")
    left.set_ylabel("time per task (µs)")
    right.set_xlabel(f"registered callbacks ({TASKS_FOR_CALLBACKS} tasks)")
    right.legend(frameon=False)
    right.set_ylim(bottom=0)
    for axes in (left, right):
        axes.grid(alpha=0.3, which="both")
    fig.suptitle(data["machine"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "_static")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--replot", action="store_true", help="redraw from the saved data only")
    args = parser.parse_args(argv)
    if args.replot:
        saved = (args.out / "benchmark.json").read_text(encoding="utf-8")
        _plot(json.loads(saved), args.out / "benchmark.png")
        return

    sklearn.set_config(assume_finite=True)
    for runner in CONTENDERS.values():  # warm the pool and the imports
        runner(200, "warm")
    machine = (
        f"Python {platform.python_version()}, joblib {joblib.__version__}, "
        f"workerstate {workerstate.__version__}, {os.cpu_count()} CPUs, "
        f"n_jobs={N_JOBS}, loky"
    )
    print(machine)
    print("time per task (µs) by tasks per call:")
    by_tasks = _sweep(TASK_COUNTS, _tasks, args.repeats)
    print("time per task (µs) by registered callbacks:")
    by_callbacks = _sweep(CALLBACK_COUNTS, _callbacks, args.repeats)

    data = {
        "machine": machine,
        "unit": "microseconds per task, best of runs",
        "repeats": args.repeats,
        "tasks": {"x": list(TASK_COUNTS), **by_tasks},
        "callbacks": {"x": list(CALLBACK_COUNTS), **by_callbacks},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmark.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    _plot(data, args.out / "benchmark.png")
    print(f"wrote {args.out / 'benchmark.png'} and benchmark.json")


if __name__ == "__main__":
    main()
