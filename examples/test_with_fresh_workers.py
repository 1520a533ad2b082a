"""Tests that use the ``fresh_workers`` fixture, which installing workerstate
provides.

loky reuses its worker processes across ``Parallel`` calls, so what one test
leaves behind in a worker can change the result of the next one.
``fresh_workers`` starts each test on a new pool and shuts it down afterwards.

Run: python -m pytest examples/test_with_fresh_workers.py -q -p
no:cacheprovider (or python examples/test_with_fresh_workers.py)
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from joblib import Parallel
from joblib import delayed as joblib_delayed

import _example_helpers as helpers
from workerstate import parallel


def test_setting_reaches_the_workers(fresh_workers, monkeypatch):
    # fresh_workers shut the old pool down; start the new one before changing
    # the setting.
    Parallel(n_jobs=2)(joblib_delayed(os.getpid)() for _ in range(2))
    # undone after the test
    monkeypatch.setitem(helpers.SETTINGS, "unit", "km")
    with parallel.global_parallel_callback(helpers.settings_callback):
        units = Parallel(n_jobs=2)(
            parallel.delayed(helpers.unit)(i) for i in range(4)
        )
    assert units == ["km"] * 4


def test_careless_tasks_change_their_workers():
    # Without the fixture: the changed workers stay in joblib's pool after this
    # test.
    Parallel(n_jobs=2, batch_size=1)(
        joblib_delayed(helpers.switch_unit)(i) for i in range(4)
    )
    units = Parallel(n_jobs=2)(
        joblib_delayed(helpers.unit)(i) for i in range(4)
    )
    # left behind in the workers, for whoever uses them next
    assert units == ["ft"] * 4


def test_next_test_starts_clean(fresh_workers):
    # Run after the previous test, this would see "ft" without the fixture.
    units = Parallel(n_jobs=2)(
        joblib_delayed(helpers.unit)(i) for i in range(4)
    )
    assert units == ["m"] * 4


if __name__ == "__main__":  # run the tests in a pytest process of their own
    import subprocess

    command = [
        sys.executable,
        "-m",
        "pytest",
        __file__,
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    sys.exit(subprocess.call(command))
