"""Worker-side code shared by the examples.

Worker processes find functions by their module and name, so whatever a worker
runs lives in this importable module rather than in the example scripts
(``__main__``). The scripts put their own directory on ``sys.path``; loky
workers start with the parent's ``sys.path``.
"""

from __future__ import annotations

import logging
import os
import warnings

# -- pandas_option.py ---------------------------------------------------------


def render(frame):
    """Render a DataFrame as text, under this process's pandas options."""
    return repr(frame)


# -- runtime_cache.py ---------------------------------------------------------


def expensive_feature(x):
    """Stands for a slow computation worth caching."""
    import time

    time.sleep(0.2)
    return x**2 + 1


def feature_task(x):
    """Compute a feature through the module attribute, which a run-time patch
    may replace.

    Returns the value and whether the call was answered from a
    ``joblib.Memory`` cache."""
    function = (
        expensive_feature  # looked up now: the patched object if there is one
    )
    check = getattr(function, "check_call_in_cache", None)
    from_cache = bool(check is not None and check(x))
    return function(x), from_cache


# -- warnings_and_logs.py -----------------------------------------------------

log = logging.getLogger("examples.worker")


def noisy_task(i):
    """A task that warns and logs, as library code in a worker does."""
    if i % 2:
        warnings.warn(
            f"task {i}: few samples, the estimate is rough",
            UserWarning,
            stacklevel=1,
        )
    log.info("task %d done", i)
    log.debug("task %d details", i)
    return os.getpid()


# -- test_with_fresh_workers.py -----------------------------------------------

#: Application settings that the parent changes at run time.
SETTINGS: dict[str, str] = {"unit": "m"}


def settings_callback():
    """A parallel callback for SETTINGS: its value now, and its setter."""
    return dict(SETTINGS), set_settings


def set_settings(value):
    SETTINGS.clear()
    SETTINGS.update(value)


def unit(_):
    """Which unit the worker running this task uses."""
    return SETTINGS["unit"]


def switch_unit(_):
    """A careless task: it changes its worker's settings and leaves them."""
    import time

    time.sleep(0.2)  # long enough for every worker to take one
    SETTINGS["unit"] = "ft"
    return os.getpid()
