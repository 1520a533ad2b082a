"""A stand-in for your own package: settings changed at run time, and the tasks
that use them.

Worker processes find functions by module and name, so what a worker runs lives
in this importable module, not in the scripts of the user guide (which run as
``__main__``).
"""

from __future__ import annotations

import contextvars
import os
import sys
import time

#: Application settings, which the parent changes at run time.
SETTINGS: dict[str, str] = {"unit": "m"}


def settings_callback():
    """The parallel callback for SETTINGS: their value now, and how a worker
    installs it."""
    return dict(SETTINGS), set_settings


def set_settings(value):
    SETTINGS.clear()
    SETTINGS.update(value)


def unit(_):
    """A task: which unit does the worker running it use?"""
    return SETTINGS["unit"]


# -- worker reuse -------------------------------------------------------------


def unit_and_pid(_):
    return SETTINGS["unit"], os.getpid()


def careless(_):
    """A careless task: it changes its worker's settings, never puts them back."""
    time.sleep(0.2)  # long enough for every worker to take some
    SETTINGS["unit"] = "ft"
    return os.getpid()


# -- run-time patching --------------------------------------------------------


def slow_square(x):
    """Stands for an expensive computation."""
    time.sleep(0.05)
    return x * x


def square_in_worker(x):
    """Call slow_square as the worker finds it now; say whether it is a patched
    wrapper."""
    return slow_square(x), hasattr(slow_square, "__wrapped__")


# -- import cost --------------------------------------------------------------


def imported(names):
    """Which of the modules ``names`` this worker has imported."""
    return sorted(name for name in names if name in sys.modules)


def summarize(n):
    """A task that needs pandas: the first in each new worker pays the import."""
    import pandas as pd

    return int(pd.Series(range(n)).sum())


# -- thread-local state -------------------------------------------------------

#: The request being served; each thread and asyncio task has its own value.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "REQUEST_ID", default=None
)


def request_id(_):
    return REQUEST_ID.get()


def assume_finite(_):
    """scikit-learn's ``assume_finite`` setting, as the thread running the task
    sees it."""
    import sklearn

    return sklearn.get_config()["assume_finite"]


# -- nested calls -------------------------------------------------------------


def nested_units(n, backend=None):
    """A task that makes its own parallel call: which units do inner tasks see?"""
    from joblib import Parallel

    from workerstate.parallel import delayed

    return Parallel(n_jobs=2, backend=backend)(
        delayed(unit_and_pid)(i) for i in range(n)
    )
