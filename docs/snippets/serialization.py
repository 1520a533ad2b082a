"""Serialization traps: a callback defined in a script, and a value that cannot
be pickled."""

import os
import threading

from joblib import Parallel
from joblib import delayed as joblib_delayed

import myapp
from myapp import SETTINGS  # the same dict as myapp.SETTINGS, in this process
from workerstate import parallel
from workerstate.diagnose import explain_pickling

# start the workers
Parallel(n_jobs=2)(joblib_delayed(os.getpid)() for _ in range(2))
myapp.SETTINGS["unit"] = "km"


# Trap: this callback lives in __main__, so it is pickled by value together
# with the globals it names. SETTINGS travels as a copy, and the setter fills
# the copy.
def copied_callback():
    def setter(value):
        SETTINGS.clear()
        SETTINGS.update(value)

    return dict(SETTINGS), setter


# Fix: reach the shared object through its module; a module pickles by name.
def module_callback():
    def setter(value):
        myapp.SETTINGS.clear()
        myapp.SETTINGS.update(value)

    return dict(myapp.SETTINGS), setter


with parallel.global_parallel_callback(copied_callback):
    trap = Parallel(n_jobs=2)(
        parallel.delayed(myapp.unit)(i) for i in range(2)
    )
with parallel.global_parallel_callback(module_callback):
    fixed = Parallel(n_jobs=2)(
        parallel.delayed(myapp.unit)(i) for i in range(2)
    )
print("setter fills a copy:", trap, "  through the module:", fixed)
assert trap == ["m", "m"] and fixed == ["km", "km"]


# Trap: a value that cannot be pickled. workerstate reports it in the parent,
# before anything is sent, and names the callback.
def client_callback():
    return {"retries": 3, "lock": threading.Lock()}, print


with parallel.global_parallel_callback(client_callback, name="client"):
    try:
        Parallel(n_jobs=2)(parallel.delayed(myapp.unit)(i) for i in range(2))
    except parallel.StatePicklingError as exc:
        print("StatePicklingError:", str(exc).split(" (")[0], "(...)")
    else:
        raise AssertionError("the lock was sent")

# Before a run, workerstate.diagnose.explain_pickling finds the part that
# fails, and why.
report = explain_pickling(client_callback()[0], name="value")
print(report)
assert not report.picklable and report.path == "value['lock']"
