"""Worker-visible state for the tests, and the functions the workers run.

Worker processes import this module by name, so every value here starts at its import-time
default in a worker; a value changed in the parent at run time reaches a worker only if
something carries it there. The ``report*`` functions say what a task sees.
"""

from __future__ import annotations

import gc
import os
import re
import sys
import threading
import time
import warnings
from typing import Any

IMPORT_VALUE = "import-time"
IMPORT_LOCAL = "import-time-local"
TASK_VALUE = "set-by-task"
LAZY_MODULE = "tests._lazy_warning_mod"

# -- a module-level global --------------------------------------------------------------------
VALUE: Any = IMPORT_VALUE


def get_value() -> Any:
    return VALUE


def set_value(value: Any) -> None:
    global VALUE
    VALUE = value


def value_callback() -> tuple[Any, Any]:
    return VALUE, set_value


# The same global, with a callback that lets other threads run while it reads.
def yielding_callback() -> tuple[Any, Any]:
    time.sleep(0.0002)
    return VALUE, set_value


# The same global, with a nested setter (only cloudpickle can pickle it by value).
def closure_callback() -> tuple[Any, Any]:
    def setter(value: Any) -> None:
        set_value(value)

    return VALUE, setter


# The same global, with a setter that counts how often it runs in this process.
SETTER_CALLS = 0


def counting_setter(value: Any) -> None:
    global SETTER_CALLS
    SETTER_CALLS += 1
    set_value(value)


def counting_callback() -> tuple[Any, Any]:
    return VALUE, counting_setter


# The same global, with a callback that records where it was called: (pid, thread id).
CALLBACK_CALLS: list[tuple[int, int]] = []


def recording_callback() -> tuple[Any, Any]:
    CALLBACK_CALLS.append((os.getpid(), threading.get_ident()))
    return VALUE, set_value


def parent_callback_calls() -> int:
    """How many times ``recording_callback`` ran in this process on this thread."""
    here = (os.getpid(), threading.get_ident())
    return sum(1 for call in CALLBACK_CALLS if call == here)


# A setter that always raises, and a callback that only works where it was enabled.
def failing_setter(value: Any) -> None:
    raise RuntimeError(f"setter exploded on {value!r}")


def failing_setter_callback() -> tuple[Any, Any]:
    return VALUE, failing_setter


CALLBACK_WORKS = False  # the parent enables it at run time; workers keep the default


def parent_only_callback() -> tuple[Any, Any]:
    if not CALLBACK_WORKS:
        raise LookupError("this process has no state to read")
    return VALUE, set_value


# -- a thread-local value ---------------------------------------------------------------------
_LOCAL = threading.local()


def get_local() -> Any:
    return getattr(_LOCAL, "value", IMPORT_LOCAL)


def set_local(value: Any) -> None:
    _LOCAL.value = value


def local_callback() -> tuple[Any, Any]:
    return get_local(), set_local


def reset_local() -> None:
    _LOCAL.__dict__.clear()


# -- scikit-learn's (thread-local) config -----------------------------------------------------
def set_sklearn_config(config: dict[str, Any]) -> None:
    import sklearn

    sklearn.set_config(**config)


def sklearn_callback() -> tuple[Any, Any]:
    import sklearn

    return sklearn.get_config(), set_sklearn_config


def assume_finite() -> bool:
    import sklearn

    return bool(sklearn.get_config()["assume_finite"])


# -- warning filters --------------------------------------------------------------------------
BOOM = "boom"


def active_filters() -> list[Any]:
    """The warning filters :mod:`warnings` consults here.

    Python 3.14 with context-aware warnings keeps them in a context variable, read through a
    private accessor; ``warnings.filters`` is then not what applies.
    """
    getter = getattr(warnings, "_get_filters", None)
    if getter is not None and getattr(sys.flags, "context_aware_warnings", False):
        return list(getter())
    return list(warnings.filters)


def boom_filter_active() -> bool:
    """Whether the filters turn ``UserWarning("boom")`` raised here into an error.

    Matches the filters the way :mod:`warnings` does, without warning.
    """
    for action, message, category, module, lineno in active_filters():
        if message is not None and not re.compile(message).match(BOOM):
            continue
        if not issubclass(UserWarning, category):
            continue
        if (module is not None and not re.compile(module).match(__name__)) or lineno:
            continue
        return bool(action == "error")
    return False


def boom_raises() -> bool:
    """Whether ``warnings.warn("boom", UserWarning)`` raises here (without printing anything)."""
    with warnings.catch_warnings(record=True):
        try:
            warnings.warn(BOOM, UserWarning, stacklevel=1)
        except UserWarning:
            return True
    return False


def warn_boom(i: int = 0) -> int:
    warnings.warn(BOOM, UserWarning, stacklevel=1)
    return i


def warn_other(i: int = 0) -> int:
    warnings.warn("something else", UserWarning, stacklevel=1)
    return i


def filters_summary() -> list[tuple[Any, ...]]:
    """The active warning filters in a comparable, picklable form."""
    return [
        (
            action,
            getattr(message, "pattern", message),
            f"{category.__module__}.{category.__qualname__}",
            getattr(module, "pattern", module),
            lineno,
        )
        for action, message, category, module, lineno in active_filters()
    ]


def add_filter_and_report(i: int = 0, delay: float = 0.0) -> dict[str, Any]:
    """Add a warning filter in the task itself, then report."""
    warnings.filterwarnings("error", message="added-by-task")
    return report_filters(i, delay)


def report_then_add_filter(i: int = 0, delay: float = 0.0) -> dict[str, Any]:
    """Report, then add a warning filter: the next task must not see it."""
    seen = report_filters(i, delay)
    warnings.filterwarnings("error", message="added-by-task")
    return seen


def lazy_module_imported() -> bool:
    return LAZY_MODULE in sys.modules


def warn_lazy() -> str:
    from tests import _lazy_warning_mod

    _lazy_warning_mod.warn("lazy")
    return "not raised"


def report_filters(i: int = 0, delay: float = 0.0) -> dict[str, Any]:
    if delay:
        time.sleep(delay)
    return {
        "i": i,
        "pid": os.getpid(),
        "boom": boom_filter_active(),
        "boom_raises": boom_raises(),
        "filters": filters_summary(),
        "lazy_imported": lazy_module_imported(),
    }


# -- what a task sees -------------------------------------------------------------------------
def report(i: int = 0, delay: float = 0.0) -> dict[str, Any]:
    if delay:
        time.sleep(delay)
    return {
        "i": i,
        "pid": os.getpid(),
        "thread": threading.get_ident(),
        "value": VALUE,
        "local": get_local(),
    }


def collector_enabled(i: int = 0) -> bool:
    """Whether the cyclic garbage collector runs in the task's process."""
    return gc.isenabled()


def report_sklearn(i: int = 0, delay: float = 0.0) -> dict[str, Any]:
    seen = report(i, delay)
    seen["assume_finite"] = assume_finite()
    return seen


def set_and_report(i: int = 0, delay: float = 0.0) -> dict[str, Any]:
    """Change the state itself, then report."""
    set_value(TASK_VALUE)
    set_local(TASK_VALUE)
    return report(i, delay)


def report_then_set(i: int = 0, delay: float = 0.0) -> dict[str, Any]:
    """Report, then change the state: the next task must not see the change."""
    seen = report(i, delay)
    set_value(TASK_VALUE)
    set_local(TASK_VALUE)
    return seen


class TaskError(ValueError):
    """Raised by the failing tasks."""


def fail(i: int = 0) -> None:
    raise TaskError(f"task {i} failed in {os.getpid()}")


def set_and_fail(i: int = 0) -> None:
    set_value(TASK_VALUE)
    set_local(TASK_VALUE)
    raise TaskError(f"task {i} failed in {os.getpid()} after setting the state")


def call_and_catch(task: tuple[Any, tuple[Any, ...], dict[str, Any]]) -> dict[str, Any]:
    """Run a ``delayed`` triple here; catch the ``TaskError`` it raises and report after it."""
    func, args, kwargs = task
    try:
        func(*args, **kwargs)
    except TaskError as exc:
        seen = report()
        seen["error"] = str(exc)
        return seen
    raise AssertionError("the task did not raise")


def square(i: int) -> int:
    return i * i


def combine(a: int, b: int = 0, *, scale: int = 1) -> tuple[int, int]:
    return a, (a + b) * scale


def slow_square(i: int, delay: float) -> int:
    time.sleep(delay)
    return i * i


def fail_on(i: int, bad: int) -> int:
    if i == bad:
        raise TaskError(f"task {i} failed")
    return i * i


def touch(path: str) -> str:
    with open(path, "w") as handle:
        handle.write("ran")
    return path


def nested_report(n: int = 4) -> dict[str, Any]:
    """Run a nested loky ``Parallel`` from inside a worker, with workerstate's ``delayed``."""
    import joblib

    from workerstate.parallel import delayed

    inner = joblib.Parallel(n_jobs=2, backend="loky")(delayed(report)(i) for i in range(n))
    return {"outer": report(), "inner": inner}
