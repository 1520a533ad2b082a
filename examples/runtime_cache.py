"""
A cache decorator applied at run time
=====================================

A joblib.Memory cache decorator applied at run time, used by the workers.

The application decides at run time to cache an expensive function:
``module.f = memory.cache(module.f)``. Workers import the module and get the
original, uncached function; ``presets.runtime_patch`` hands them the cached
one, which shares its disk cache with the parent, so a second run computes
nothing.

Run it from the root of the repository::

    python examples/runtime_cache.py
"""

from __future__ import annotations

import os
import tempfile
import time

import joblib
from joblib import Parallel
from joblib import delayed as joblib_delayed

import _example_helpers as helpers
from workerstate import parallel, presets

INPUTS = range(8)


def run(delayed):
    start = time.perf_counter()
    rows = Parallel(n_jobs=2)(delayed(helpers.feature_task)(x) for x in INPUTS)
    return (
        [value for value, _ in rows],
        [hit for _, hit in rows],
        time.perf_counter() - start,
    )


def main() -> None:
    # Start the pool first: state changed before a fork-based pool starts is
    # copied into it.
    Parallel(n_jobs=2)(joblib_delayed(os.getpid)() for _ in range(2))

    with tempfile.TemporaryDirectory() as cache_dir:
        memory = joblib.Memory(cache_dir, verbose=0)
        # at run time
        helpers.expensive_feature = memory.cache(helpers.expensive_feature)

        # the workers' own, uncached function
        _, plain_hits, _ = run(joblib_delayed)
        with presets.registered(
            presets.runtime_patch("_example_helpers:expensive_feature")
        ):
            # computes, fills the cache
            first, first_hits, first_s = run(parallel.delayed)
            # answered from the cache
            second, second_hits, second_s = run(parallel.delayed)
        entries = sum(
            1
            for x in INPUTS
            if helpers.expensive_feature.check_call_in_cache(x)
        )

    assert not any(plain_hits)
    assert first == second == [x**2 + 1 for x in INPUTS]
    assert not any(first_hits) and all(second_hits)
    assert entries == len(INPUTS)  # the workers wrote to the parent's cache
    print(f"first run:  computed {len(INPUTS)} values in {first_s:.2f} s")
    print(
        f"second run: {sum(second_hits)} of {len(INPUTS)} from the cache "
        f"in {second_s:.2f} s"
    )


if __name__ == "__main__":
    main()
