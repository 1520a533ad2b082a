"""
A plugin registry filled at run time
====================================

A plugin registry filled at run time, seen by every loky worker.

Run it from the root of the repository::

    python examples/registry_in_workers.py
"""

from __future__ import annotations

import os

from joblib import Parallel
from joblib import delayed as joblib_delayed

# The registry lives in an importable module (here the demo's). Reach it
# through its module: a callback defined in a script is pickled by value, and a
# global it names directly would travel as a copy, so the setter would fill the
# copy, not the registry.
from workerstate import _demo as plugins
from workerstate import parallel


def registry_callback():
    def setter(value):
        plugins.SCORERS.clear()
        plugins.SCORERS.update(value)

    return dict(plugins.SCORERS), setter


def main() -> None:
    # Start the pool first: state changed before a fork-based pool starts is
    # copied into it.
    Parallel(n_jobs=2)(joblib_delayed(os.getpid)() for _ in range(2))
    plugins.SCORERS["my_metric"] = "registered at run time"

    without = Parallel(n_jobs=2)(
        joblib_delayed(plugins.score_fold)(i) for i in range(4)
    )
    with parallel.global_parallel_callback(registry_callback, name="scorers"):
        with_state = Parallel(n_jobs=2)(
            parallel.delayed(plugins.score_fold)(i) for i in range(4)
        )

    assert all("my_metric" not in row["scorers"] for row in without), without
    assert all("my_metric" in row["scorers"] for row in with_state), with_state
    print("joblib.delayed:      ", without[0]["scorers"])
    print("workerstate delayed: ", with_state[0]["scorers"])


if __name__ == "__main__":
    main()
