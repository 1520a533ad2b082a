"""Parent-side helpers shared by the test modules."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import joblib

from tests import _state

N_JOBS = 2
PROCESS_BACKENDS = ("loky", "multiprocessing", "dask")
ALL_BACKENDS = (*PROCESS_BACKENDS, "threading")

# Calls that are meant to fail in a worker send a single task. When a multiprocessing pool is
# aborted while another worker is still sending its result, the killed worker can keep the
# result queue's lock and ``Pool.terminate()`` then waits forever (CPython gh-96995, seen as
# joblib#1034). One task means nothing else is being sent when the parent aborts.
ONE_FAILING_TASK = 1


@contextmanager
def open_parallel(
    parallel_cls: type[joblib.Parallel], backend: str, **kwargs: Any
) -> Iterator[joblib.Parallel]:
    """A ``Parallel`` whose workers are already running when the block starts.

    Tests change the parent's state only inside the block, after the workers started: a
    worker forked after the change would show the new state without any help.
    """
    config = joblib.parallel_config("dask") if backend == "dask" else nullcontext()
    with config:
        kwargs.setdefault("n_jobs", N_JOBS)
        parallel = parallel_cls(backend=None if backend == "dask" else backend, **kwargs)
        with parallel:
            parallel(joblib.delayed(os.getpid)() for _ in range(2 * N_JOBS))
            yield parallel


def loky_pids() -> set[int]:
    """Start joblib's reusable loky pool if needed; the PIDs of all its workers.

    Repeats a short call until every worker answered: a worker that is still starting
    would otherwise show up only in the test's own calls.
    """
    pids: set[int] = set()
    for _ in range(50):
        seen = joblib.Parallel(n_jobs=N_JOBS, backend="loky", batch_size=1)(
            joblib.delayed(_state.report)(i, 0.02) for i in range(2 * N_JOBS)
        )
        pids |= {s["pid"] for s in seen}
        if len(pids) >= N_JOBS:
            return pids
    raise AssertionError(f"only {len(pids)} of {N_JOBS} loky workers answered")
