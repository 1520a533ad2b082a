"""A setting changed at run time does not reach loky workers; workerstate
carries it."""

import os

from joblib import Parallel
from joblib import delayed as joblib_delayed

import myapp
from workerstate import parallel

# Start the workers first: state changed before a fork-based pool starts is
# copied into it.
Parallel(n_jobs=2)(joblib_delayed(os.getpid)() for _ in range(2))

myapp.SETTINGS["unit"] = "km"  # changed at run time, in the parent only

plain = Parallel(n_jobs=2)(joblib_delayed(myapp.unit)(i) for i in range(4))
parallel.register_global_parallel_callback(myapp.settings_callback)
carried = Parallel(n_jobs=2)(parallel.delayed(myapp.unit)(i) for i in range(4))

# ['m', 'm', 'm', 'm']: the import-time value
print("joblib.delayed:     ", plain)
print("workerstate delayed:", carried)  # ['km', 'km', 'km', 'km']
assert plain == ["m"] * 4 and carried == ["km"] * 4
