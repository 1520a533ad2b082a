"""
pandas display options in the workers
=====================================

pandas display options set in the parent, used by reports rendered in workers.

Workers render DataFrames as text. The parent shortened the output with
``pd.set_option``; ``presets.pandas_options`` makes the workers render exactly
what the parent would.

Run it from the root of the repository::

    python examples/pandas_option.py
"""

from __future__ import annotations

import os

import pandas as pd
from joblib import Parallel
from joblib import delayed as joblib_delayed

import _example_helpers as helpers
from workerstate import parallel, presets


def main() -> None:
    # Start the pool first: state changed before a fork-based pool starts is
    # copied into it.
    Parallel(n_jobs=2)(joblib_delayed(os.getpid)() for _ in range(2))

    pd.set_option("display.max_rows", 6)
    pd.set_option("display.precision", 2)
    frames = [
        pd.DataFrame({"fold": range(40), "score": [i / 7 for i in range(40)]})
    ] * 3
    expected = [repr(frame) for frame in frames]  # as the parent renders them

    plain = Parallel(n_jobs=2)(
        joblib_delayed(helpers.render)(f) for f in frames
    )
    with presets.registered(presets.pandas_options):
        carried = Parallel(n_jobs=2)(
            parallel.delayed(helpers.render)(f) for f in frames
        )

    # the workers used pandas' defaults: 60 rows, 6 decimals
    assert plain != expected
    assert carried == expected
    print(
        f"joblib.delayed:      {len(plain[0].splitlines())} lines per report"
    )
    print(
        "workerstate delayed: "
        f"{len(carried[0].splitlines())} lines per report, "
        "as in the parent:"
    )
    print(carried[0])


if __name__ == "__main__":
    main()
