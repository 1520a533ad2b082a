"""Parent-side helpers shared by the test modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
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


REPO = Path(__file__).resolve().parents[1]


def run_script(tmp_path: Path, source: str, *args: str, timeout: float = 90) -> dict[str, Any]:
    """Run ``source`` as a ``__main__`` script in a new interpreter; its last line, as JSON.

    The repository is on the script's path, so it imports ``tests`` and ``workerstate``
    as the tests do.
    """
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out
