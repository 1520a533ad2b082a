"""Thread-local state: scikit-learn's config and context variables stay on
their thread."""

import os

import sklearn
from joblib import Parallel
from joblib import delayed as joblib_delayed

import myapp
from workerstate import parallel, presets


def seen(delayed, backend=None, n=4):
    """What n tasks saw, as (assume_finite values, request ids)."""
    run = Parallel(n_jobs=2, backend=backend)
    finite = set(run(delayed(myapp.assume_finite)(i) for i in range(n)))
    requests = set(run(delayed(myapp.request_id)(i) for i in range(n)))
    return finite, requests


# start the workers
Parallel(n_jobs=2)(joblib_delayed(os.getpid)() for _ in range(2))

with sklearn.config_context(assume_finite=True):  # on this thread only
    token = myapp.REQUEST_ID.set("req-42")  # in this context only
    # Threads of this very process start with the defaults.
    plain = seen(joblib_delayed, backend="threading")
    with presets.registered(
        presets.sklearn_config, presets.context_var(myapp.REQUEST_ID)
    ):
        threads = seen(parallel.delayed, backend="threading")
        # With 500 tasks, joblib makes most of them on its own dispatch
        # threads, where the config is at its defaults. workerstate captured it
        # once, on this thread.
        processes = seen(parallel.delayed, n=500)
    myapp.REQUEST_ID.reset(token)

for label, (finite, requests) in [
    ("threading, joblib.delayed:      ", plain),
    ("threading, workerstate delayed: ", threads),
    ("loky (500), workerstate delayed:", processes),
]:
    print(label, "assume_finite", finite, " request", requests)
assert plain == ({False}, {None})
assert threads == processes == ({True}, {"req-42"})
