"""Debugging, step one: run the same job in this process, on threads, and on
processes."""

import os

from joblib import Parallel
from joblib import delayed as joblib_delayed

import myapp

# start the workers
Parallel(n_jobs=2)(joblib_delayed(os.getpid)() for _ in range(2))
myapp.SETTINGS["unit"] = "km"

results = {
    "n_jobs=1": Parallel(n_jobs=1)(
        joblib_delayed(myapp.unit)(i) for i in range(4)
    ),
    "threading": Parallel(n_jobs=2, backend="threading")(
        joblib_delayed(myapp.unit)(i) for i in range(4)
    ),
    "loky": Parallel(n_jobs=2)(
        joblib_delayed(myapp.unit)(i) for i in range(4)
    ),
}
for label, units in results.items():
    print(f"{label:10} {units}")
# n_jobs=1 and threads share this process's globals; loky workers have their
# own. Right in the first two, wrong in the last: the state does not reach the
# workers.
assert results["n_jobs=1"] == results["threading"] == ["km"] * 4
assert results["loky"] == ["m"] * 4
