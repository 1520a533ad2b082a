"""Workers are reused: what one task changes leaks into later calls, unless it
is undone."""

from joblib import Parallel
from joblib import delayed as joblib_delayed

import myapp
from workerstate import parallel
from workerstate.parallel import fresh_pool


def units_seen():
    """What later, innocent tasks see: one unit per worker process."""
    rows = Parallel(n_jobs=2, batch_size=1)(
        joblib_delayed(myapp.unit_and_pid)(i) for i in range(8)
    )
    return {pid: unit for unit, pid in rows}


# 1. With joblib.delayed, the careless tasks change their workers for good.
fresh_pool()
Parallel(n_jobs=2, batch_size=1)(
    joblib_delayed(myapp.careless)(i) for i in range(6)
)
leaked = units_seen()

# 2. fresh_pool() kills the workers: the next call starts new processes.
fresh_pool()
clean = units_seen()

# 3. With the state registered, workerstate puts it back after every task.
parallel.register_global_parallel_callback(myapp.settings_callback)
Parallel(n_jobs=2, batch_size=1)(
    parallel.delayed(myapp.careless)(i) for i in range(6)
)
restored = units_seen()

print("after careless tasks (joblib.delayed):    ", leaked)
print("after fresh_pool():                       ", clean)
print("after careless tasks (workerstate delayed):", restored)
assert "ft" in leaked.values()
assert set(clean.values()) == {"m"} and set(restored.values()) == {"m"}
