"""A 10 MB registered value and 1,000 tasks on a dask cluster and on Ray: time and bytes.

The question of the scale-out issue: does a large registered value travel once, or once per
task (10 GB for 10 MB x 1,000)? Each contender runs the same 1,000 trivial tasks on the same
cluster; each task returns the length of the value it sees, which is checked.

* ``joblib.delayed, no state``: the floor.
* ``joblib.delayed, value as argument``: the value passed to every task by hand.
* ``workerstate delayed`` with ``joblib.Parallel``, and ``workerstate Parallel``: the value
  registered with a callback.

Every repeat registers a new random value, so every timed call really ships it (nothing is
cached in the workers from the previous repeat); the best of the repeats is reported.

On dask, bytes are counted where distributed writes them: a wrapper around
``distributed.comm.tcp.TCP.write`` in this process (the client and the LocalCluster's
scheduler) and in each worker process adds up the bytes of every message it sends. The
figure is the total over all processes during the call. Ray gets times only. Run:

    python benchmarks/scaleout.py              # dask, then Ray if it is installed
    python benchmarks/scaleout.py --quick      # 200 tasks and 1 MB
    python benchmarks/scaleout.py --threads 2  # two threads per dask worker
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# Before any worker starts: dask's spawned workers get this sys.path and import this module.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import joblib

from workerstate import parallel as ws

HERE = os.path.dirname(os.path.abspath(__file__))
N_WORKERS = 2

# -- state and tasks; workers import this module as "scaleout" ---------------------------------
STATE: dict[str, Any] = {"value": b""}


def get_value() -> bytes:
    value: bytes = STATE["value"]
    return value


def set_value(value: bytes) -> None:
    STATE["value"] = value


def value_callback() -> tuple[bytes, Callable[[bytes], None]]:
    return STATE["value"], set_value


def registered_len(i: int) -> int:
    return len(STATE["value"])


def argument_len(i: int, value: bytes) -> int:
    return len(value)


# -- counting the bytes that dask's comms write -------------------------------------------------
COUNTER = {"bytes": 0}


def install_counter() -> int:
    """Wrap ``TCP.write`` in this process (once) so that it adds up what it sends."""
    from distributed.comm import tcp

    if not getattr(tcp.TCP.write, "_counting", False):
        original = tcp.TCP.write

        async def write(self: Any, *args: Any, **kwargs: Any) -> int:
            nbytes: int = await original(self, *args, **kwargs)
            COUNTER["bytes"] += nbytes
            return nbytes

        write._counting = True  # type: ignore[attr-defined]
        tcp.TCP.write = write
    return os.getpid()


def bytes_sent() -> int:
    return COUNTER["bytes"]


# -- the contenders -----------------------------------------------------------------------------
Runner = Callable[[Any, int], list[int]]


def _contenders(mod: Any) -> list[tuple[str, Runner]]:
    def plain(p: Any, n: int) -> list[int]:
        return p(joblib.delayed(mod.registered_len)(i) for i in range(n))

    def as_argument(p: Any, n: int) -> list[int]:
        value = mod.get_value()
        with warnings.catch_warnings():
            # distributed says so for every batch that carries the value: that is the point.
            warnings.filterwarnings("ignore", message="Sending large graph")
            return p(joblib.delayed(mod.argument_len)(i, value) for i in range(n))

    def ws_delayed(p: Any, n: int) -> list[int]:
        return p(ws.delayed(mod.registered_len)(i) for i in range(n))

    return [
        ("joblib.delayed, no state (floor)", plain),
        ("joblib.delayed, value as argument", as_argument),
        ("workerstate delayed + joblib.Parallel", ws_delayed),
        ("workerstate Parallel + delayed", ws_delayed),
    ]


def _measure(
    mod: Any,
    open_parallel: Callable[[type[joblib.Parallel]], Any],
    n_tasks: int,
    size: int,
    repeats: int,
    count_bytes: Callable[[], int] | None,
) -> list[tuple[str, float, int | None, bool]]:
    rows = []
    for name, runner in _contenders(mod):
        cls = ws.Parallel if name.startswith("workerstate Parallel") else joblib.Parallel
        best, sent, ok = float("inf"), None, True
        with open_parallel(cls) as p:
            runner(p, 20)  # warm: workers started, modules imported
            for _ in range(repeats):
                mod.set_value(os.urandom(size))
                expected = 0 if "no state" in name else size
                before = count_bytes() if count_bytes else 0
                start = time.perf_counter()
                out = runner(p, n_tasks)
                seconds = time.perf_counter() - start
                if count_bytes:
                    nbytes = count_bytes() - before
                    sent = nbytes if sent is None else min(sent, nbytes)
                ok = ok and out == [expected] * n_tasks
                best = min(best, seconds)
        rows.append((name, best, sent, ok))
    return rows


def _print(title: str, rows: list[tuple[str, float, int | None, bool]], n_tasks: int) -> None:
    floor = rows[0][1]
    print(f"\n{title}")
    print(f"{'contender':40} {'seconds':>8} {'ratio':>6} {'MB sent':>9} {'kB/task':>8}  correct")
    for name, seconds, sent, ok in rows:
        mb = f"{sent / 1e6:9.1f}" if sent is not None else f"{'-':>9}"
        per_task = f"{sent / n_tasks / 1e3:8.1f}" if sent is not None else f"{'-':>8}"
        print(f"{name:40} {seconds:8.3f} {seconds / floor:5.2f}x {mb} {per_task}  {ok}")


# -- dask -----------------------------------------------------------------------------------------
@contextmanager
def _local_cluster(threads: int) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Port \d+ is already in use")
        cluster = LocalCluster(
            n_workers=N_WORKERS,
            threads_per_worker=threads,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
    client = Client(cluster, set_as_default=False)
    try:
        client.wait_for_workers(N_WORKERS, timeout=60)
        yield client
    finally:
        client.close()
        cluster.close()


def run_dask(mod: Any, n_tasks: int, size: int, repeats: int, threads: int) -> None:
    import distributed

    with _local_cluster(threads) as client:
        mod.install_counter()
        client.run(mod.install_counter)

        def count_bytes() -> int:
            return int(mod.bytes_sent() + sum(client.run(mod.bytes_sent).values()))

        @contextmanager
        def open_parallel(cls: type[joblib.Parallel]) -> Iterator[Any]:
            yield cls()

        with joblib.parallel_config("dask", client=client):
            rows = _measure(mod, open_parallel, n_tasks, size, repeats, count_bytes)
    _print(
        f"dask {distributed.__version__}: LocalCluster, {N_WORKERS} worker processes x "
        f"{threads} thread(s), {n_tasks:,} tasks, a {size / 2**20:g} MiB value, "
        f"best of {repeats}",
        rows,
        n_tasks,
    )


# -- Ray ------------------------------------------------------------------------------------------
def run_ray(mod: Any, n_tasks: int, size: int, repeats: int) -> None:
    try:
        import ray
        from ray.util.joblib import register_ray
    except ImportError:
        print("\nRay: not installed; skipped")
        return
    # Ray's workers do not inherit sys.path: they import this module through PYTHONPATH.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        part for part in (HERE, os.environ.get("PYTHONPATH")) if part
    )
    ray.init(num_cpus=N_WORKERS, include_dashboard=False, log_to_driver=False)
    try:
        register_ray()

        @contextmanager
        def open_parallel(cls: type[joblib.Parallel]) -> Iterator[Any]:
            # One pool of actors per contender, kept for its repeats.
            with joblib.parallel_config(backend="ray"), cls(n_jobs=N_WORKERS) as pool:
                yield pool

        rows = _measure(mod, open_parallel, n_tasks, size, repeats, None)
    finally:
        ray.shutdown()
    _print(
        f"Ray {ray.__version__}: ray.util.joblib, {N_WORKERS} CPUs, {n_tasks:,} tasks, "
        f"a {size / 2**20:g} MiB value, best of {repeats} (bytes not counted)",
        rows,
        n_tasks,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 tasks and a 1 MiB value")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="threads per dask worker")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray section")
    args = parser.parse_args()
    n_tasks, size = (200, 2**20) if args.quick else (1000, 10 * 2**20)
    # The workers import the state and the tasks by this module's name, so this process
    # must use that module too, not __main__.
    mod = importlib.import_module("scaleout")
    ws.register_global_parallel_callback(mod.value_callback, name="big-value")
    print(
        f"Python {platform.python_version()}, joblib {joblib.__version__}, "
        f"{os.cpu_count()} CPUs, loopback"
    )
    print(
        f"Sending the value with every task would be {n_tasks * size / 1e6:,.0f} MB; "
        f"once, {size / 1e6:.1f} MB."
    )
    run_dask(mod, n_tasks, size, args.repeats, args.threads)
    if not args.no_ray:
        run_ray(mod, n_tasks, size, args.repeats)


if __name__ == "__main__":
    main()
