"""Every new worker imports what its tasks need; workerstate imports no library
for you."""

import sys
import time

from joblib import Parallel
from joblib import delayed as joblib_delayed

import myapp
from workerstate import parallel, presets
from workerstate.diagnose import worker_cost
from workerstate.parallel import fresh_pool

HEAVY = ["pandas", "sklearn"]
# the parent uses neither
assert not any(name in sys.modules for name in HEAVY)

# The presets import a library only in processes where the parent had imported
# it.
fresh_pool()
with presets.registered(presets.pandas_options, presets.sklearn_config):
    seen = Parallel(n_jobs=2)(
        parallel.delayed(myapp.imported)(HEAVY) for _ in range(4)
    )
print("heavy modules in the workers:", seen[0])
assert seen == [[]] * 4


def timed(n):
    start = time.perf_counter()
    Parallel(n_jobs=2)(joblib_delayed(myapp.summarize)(i) for i in range(n))
    return time.perf_counter() - start


fresh_pool()
# the first call starts the workers and imports pandas
cold, warm = (timed(4), timed(4))
print(
    f"4 tiny tasks: {cold:.2f} s on new workers, "
    f"{warm:.3f} s on the same workers again"
)

# What one new worker costs before its first task, import by import:
print(worker_cost(myapp.summarize, modules=["pandas"]))
