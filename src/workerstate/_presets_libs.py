"""Readers and setters behind the library presets of :mod:`workerstate.presets`.

Every state here is a dict of the settings that differ from the library's defaults, so a
library at its defaults and a library that is not imported both read as ``{}``: nothing is
captured for it, and a worker that has not imported it compares equal without importing it.
A setter imports its library only to install a non-empty state, and installs the defaults
for every setting that the state leaves out, so reading after setting gives the state back.

This module imports none of the libraries at import time.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = [
    "raw_sklearn_config",
    "read_numpy_errstate",
    "read_numpy_printoptions",
    "read_pandas_options",
    "read_sklearn_config",
    "read_threadpool_limits",
    "set_numpy_errstate",
    "set_numpy_printoptions",
    "set_pandas_options",
    "set_sklearn_config",
    "set_threadpool_limits",
]

State = dict[str, Any]


def load(name: str) -> Any:
    """Import ``name``: for the libraries without type information, typed as ``Any``."""
    return importlib.import_module(name)


def differs(a: Any, b: Any) -> bool:
    """Whether two setting values differ: another type, or unequal (errors count as unequal)."""
    if a is b:
        return False
    if type(a) is not type(b):
        return True
    try:
        return bool(a != b)
    except Exception:
        return True


def changed(current: State, defaults: State) -> State:
    """The items of ``current`` that are missing from ``defaults`` or differ from them."""
    return {
        key: value
        for key, value in current.items()
        if key not in defaults or differs(value, defaults[key])
    }


# -- scikit-learn ------------------------------------------------------------------------------
_thread_defaults: dict[str, State] = {}
_thread_defaults_lock = threading.Lock()


def _read_on_new_thread(key: str, read: Callable[[], State]) -> State:
    """``read()`` on a new thread, once per process: the defaults of thread-local state."""
    cached = _thread_defaults.get(key)
    if cached is not None:
        return cached
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = read()
        except BaseException as exc:  # re-raised on the calling thread
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"workerstate-{key}-defaults", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    with _thread_defaults_lock:
        return _thread_defaults.setdefault(key, dict(box["value"]))


def _sklearn_defaults() -> State:
    import sklearn

    # scikit-learn keeps its config per thread; a new thread starts from the defaults.
    return _read_on_new_thread("sklearn", sklearn.get_config)


def raw_sklearn_config() -> State | None:
    """``sklearn.get_config()`` (a new dict each time), or None when it is not imported."""
    sklearn = sys.modules.get("sklearn")
    return None if sklearn is None else sklearn.get_config()


def read_sklearn_config() -> State:
    if "sklearn" not in sys.modules:
        return {}
    import sklearn

    return changed(sklearn.get_config(), _sklearn_defaults())


def set_sklearn_config(value: State) -> None:
    if not value and "sklearn" not in sys.modules:
        return
    import sklearn

    current = sklearn.get_config()
    target = {**_sklearn_defaults(), **value}
    updates = {key: val for key, val in target.items() if differs(current.get(key), val)}
    if updates:
        sklearn.set_config(**updates)


# -- pandas ------------------------------------------------------------------------------------
def _pandas_defaults() -> State:
    """Default value of each registered, not deprecated pandas option."""
    cf = load("pandas._config.config")

    registered = getattr(cf, "_registered_options", None)
    if not isinstance(registered, dict):  # pragma: no cover - every pandas since 0.x has it
        raise RuntimeError(
            "workerstate.presets.pandas_options cannot list the options of this pandas version."
        )
    deprecated = getattr(cf, "_deprecated_options", {})
    return {key: opt.defval for key, opt in list(registered.items()) if key not in deprecated}


def read_pandas_options() -> State:
    if "pandas" not in sys.modules:
        return {}
    pd = load("pandas")

    return {
        key: value
        for key, default in _pandas_defaults().items()
        if differs(value := pd.get_option(key), default)
    }


def set_pandas_options(value: State) -> None:
    if not value and "pandas" not in sys.modules:
        return
    pd = load("pandas")

    for key, default in _pandas_defaults().items():
        target = value.get(key, default)
        if differs(pd.get_option(key), target):
            pd.set_option(key, target)
    # Options in ``value`` that this process has not registered (a module that registers
    # them is not imported here) are skipped, as documented.


# -- NumPy -------------------------------------------------------------------------------------
#: ``np.geterr()`` of a new process (unchanged since NumPy 1.0).
NUMPY_ERR_DEFAULTS: State = {"divide": "warn", "over": "warn", "under": "ignore", "invalid": "warn"}
#: ``np.get_printoptions()`` of a new process, as documented by ``np.set_printoptions``.
NUMPY_PRINT_DEFAULTS: State = {
    "edgeitems": 3,
    "threshold": 1000,
    "floatmode": "maxprec",
    "precision": 8,
    "suppress": False,
    "linewidth": 75,
    "nanstr": "nan",
    "infstr": "inf",
    "sign": "-",
    "formatter": None,
    "legacy": False,
    "override_repr": None,
}


def read_numpy_errstate() -> State:
    if "numpy" not in sys.modules:
        return {}
    import numpy as np

    return changed(dict(np.geterr()), NUMPY_ERR_DEFAULTS)


def set_numpy_errstate(value: State) -> None:
    if not value and "numpy" not in sys.modules:
        return
    import numpy as np

    current = dict(np.geterr())
    target = {key: value.get(key, NUMPY_ERR_DEFAULTS.get(key, old)) for key, old in current.items()}
    if target != current:
        np.seterr(**target)


def read_numpy_printoptions() -> State:
    if "numpy" not in sys.modules:
        return {}
    import numpy as np

    return changed(dict(np.get_printoptions()), NUMPY_PRINT_DEFAULTS)


def set_numpy_printoptions(value: State) -> None:
    if not value and "numpy" not in sys.modules:
        return
    import numpy as np

    current = dict(np.get_printoptions())
    # Options that this NumPy does not document a default for are always part of the state
    # (see ``changed``), so ``value`` has them.
    target = {
        key: value.get(key, NUMPY_PRINT_DEFAULTS.get(key, old)) for key, old in current.items()
    }
    if any(differs(current[key], val) for key, val in target.items()):
        np.set_printoptions(**target)


# -- threadpoolctl -----------------------------------------------------------------------------
_THREAD_VARIABLES = {
    "openblas": "OPENBLAS_NUM_THREADS",
    "mkl": "MKL_NUM_THREADS",
    "blis": "BLIS_NUM_THREADS",
    "flexiblas": "FLEXIBLAS_NUM_THREADS",
}


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _env_threads(internal_api: str) -> int:
    for name in (_THREAD_VARIABLES.get(internal_api), "OMP_NUM_THREADS"):
        raw = os.environ.get(name) if name else None
        if raw:
            try:
                count = int(raw.split(",")[0])
            except ValueError:
                continue
            if count > 0:
                return count
    return _cpu_count()


#: The highest thread count seen for each library (by file path) in this process.
_seen_threads: dict[str, int] = {}


def default_threads(lib: dict[str, Any]) -> int:
    """The thread count that a library runs with in this process when nothing limits it.

    The count from its environment variable (``OPENBLAS_NUM_THREADS``...), else from
    ``OMP_NUM_THREADS``, else the number of usable CPUs; or the highest count seen for the
    library in this process, if higher (the variables can change after the library loaded:
    dask's ``LocalCluster`` sets them to 1 in its parent). joblib's loky and multiprocessing
    workers start with these variables set to their share of the CPUs.
    """
    seen = _seen_threads.get(str(lib.get("filepath")), 0)
    return max(_env_threads(str(lib.get("internal_api"))), seen)


def _limited(info: list[dict[str, Any]]) -> dict[str, int]:
    limits: dict[str, int] = {}
    for lib in info:
        count = lib.get("num_threads")
        api = lib.get("user_api")
        if not isinstance(count, int) or not isinstance(api, str):
            continue
        path = str(lib.get("filepath"))
        if count > _seen_threads.get(path, 0):
            _seen_threads[path] = count
        if count < default_threads(lib):
            limits[api] = min(count, limits.get(api, count))
    return limits


_controller: tuple[int, Any] | None = None


def _threadpool_controller() -> Any:
    """A ``threadpoolctl.ThreadpoolController``, made again when a module was imported.

    Making one looks up every loaded shared library (milliseconds); asking one for the
    thread counts takes microseconds. New libraries come with imports, so the number of
    imported modules tells when to look again.
    """
    global _controller
    threadpoolctl = load("threadpoolctl")
    count = len(sys.modules)
    cached = _controller
    if cached is None or cached[0] != count:
        cached = _controller = (count, threadpoolctl.ThreadpoolController())
    return cached[1]


def read_threadpool_limits() -> dict[str, int]:
    if "threadpoolctl" not in sys.modules:
        return {}
    return _limited(_threadpool_controller().info())


def set_threadpool_limits(value: dict[str, int]) -> None:
    if not value and "threadpoolctl" not in sys.modules:
        return
    controller = _threadpool_controller()
    info = controller.info()
    now = _limited(info)
    apis = sorted({str(lib["user_api"]) for lib in info} | set(value))
    for api in apis:
        if now.get(api) == value.get(api):
            continue
        targets: dict[str, int] = {}
        for lib in info:
            if lib["user_api"] == api:
                default = default_threads(lib)
                targets[str(lib["filepath"])] = (
                    min(value[api], default) if api in value else default
                )
        if len(set(targets.values())) == 1:
            # The usual case: every library of the API gets the same count.
            controller.limit(limits=next(iter(targets.values())), user_api=api)
            continue
        for lib in info:
            path = str(lib["filepath"])
            if path in targets and lib["num_threads"] != targets[path]:
                controller.select(filepath=path).limit(limits=targets[path])
