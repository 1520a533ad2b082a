"""Nested calls: a task that starts its own Parallel call forwards the state it
received."""

import os

from joblib import Parallel
from joblib import delayed as joblib_delayed

import myapp
from workerstate import parallel

# start the workers
Parallel(n_jobs=2)(joblib_delayed(os.getpid)() for _ in range(2))
myapp.SETTINGS["unit"] = "km"
# in this process only
parallel.register_global_parallel_callback(myapp.settings_callback)

# Each outer task runs an inner call on its own loky workers: grandchildren of
# this process.
outer = Parallel(n_jobs=2)(
    parallel.delayed(myapp.nested_units)(3, "loky") for _ in range(2)
)
plain = Parallel(n_jobs=2)(
    joblib_delayed(myapp.nested_units)(3, "loky") for _ in range(2)
)

inner = [row for rows in outer for row in rows]
print("inner tasks, outer workerstate delayed:", sorted({u for u, _ in inner}))
print(
    "inner tasks, outer joblib.delayed:     ",
    sorted({u for rows in plain for u, _ in rows}),
)
assert {u for u, _ in inner} == {"km"}
assert {u for rows in plain for u, _ in rows} == {
    "m"
}  # nothing registered in the worker
