"""A decorator applied at run time: workers import the original function,
unless told."""

import functools
import os

from joblib import Parallel
from joblib import delayed as joblib_delayed

import myapp
from workerstate import parallel, presets

# start the workers
Parallel(n_jobs=2)(joblib_delayed(os.getpid)() for _ in range(2))

# Patched at run time, in the parent only: workers that import myapp get the
# original.
myapp.slow_square = functools.lru_cache(maxsize=None)(myapp.slow_square)

plain = Parallel(n_jobs=2)(
    joblib_delayed(myapp.square_in_worker)(x) for x in range(4)
)
with presets.registered(presets.runtime_patch("myapp:slow_square")):
    patched = Parallel(n_jobs=2)(
        parallel.delayed(myapp.square_in_worker)(x) for x in range(4)
    )
after = Parallel(n_jobs=2)(
    joblib_delayed(myapp.square_in_worker)(x) for x in range(4)
)

print("patched in the worker? joblib.delayed:", [p for _, p in plain])
print("                       runtime_patch: ", [p for _, p in patched])
print("                       later tasks:   ", [p for _, p in after])
assert not any(p for _, p in plain) and all(p for _, p in patched)
assert not any(p for _, p in after)  # the worker's own function was put back
