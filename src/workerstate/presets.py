"""Ready parallel callbacks for common run-time state, each enabled with one line.

>>> from workerstate import parallel, presets
>>> parallel.register_global_parallel_callback(presets.sklearn_config)
'workerstate.presets.sklearn_config'
>>> parallel.remove_global_parallel_callback("workerstate.presets.sklearn_config")

or several at once with :func:`register`, or for a block with :func:`registered`.

=================================  ======================================================
Preset                             State carried into the workers
=================================  ======================================================
:func:`sklearn_config`             ``sklearn.set_config`` settings (per thread)
:func:`pandas_options`             pandas options changed from their defaults
:func:`numpy_errstate`             ``np.seterr`` / ``np.errstate``
:func:`numpy_printoptions`         ``np.set_printoptions`` / ``np.printoptions``
:func:`threadpool_limits`          BLAS / OpenMP thread limits (``threadpoolctl``)
:func:`logging_levels`             levels of the root logger and of named loggers
:func:`decimal_context`            ``decimal`` precision, rounding and traps
:func:`environ` ``(*names)``       the named environment variables, set or unset
:func:`context_var` ``(var)``      the value of a module-level ``contextvars.ContextVar``
:func:`runtime_patch` ``(path)``   the object at ``module:attr``, e.g. a cached function
=================================  ======================================================

Like any callback, a preset sets its state in the worker before a task and puts back the
worker's own state after it. The library presets capture the settings that differ from the
library's defaults, so a library at its defaults costs nothing, and a library that the parent
has not imported is not imported in the workers either: importing this module imports none
of scikit-learn, pandas, NumPy or threadpoolctl. The last three presets are factories: call
them to get the callback, whose name (e.g. ``workerstate.presets.environ[OMP_NUM_THREADS]``)
is its default registration name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

from . import _presets_libs as _libs
from . import _presets_std as _std
from ._registry import Callback

__all__ = [
    "context_var",
    "decimal_context",
    "environ",
    "logging_levels",
    "numpy_errstate",
    "numpy_printoptions",
    "pandas_options",
    "register",
    "registered",
    "runtime_patch",
    "sklearn_config",
    "threadpool_limits",
]

Settings = dict[str, Any]


def sklearn_config() -> tuple[Settings, Callable[[Settings], None]]:
    """The scikit-learn configuration (``sklearn.set_config``) changed from its defaults.

    The value is the dict of ``sklearn.get_config()`` items that differ from the defaults,
    ``{}`` when scikit-learn is not imported. scikit-learn keeps its configuration per
    thread: the value is read on the thread that calls ``Parallel``, and installed on the
    thread that runs each task, so it is also right with the threading backend. The
    defaults are the configuration that a new thread starts with.

    Returns
    -------
    value : dict
        Changed ``sklearn.get_config()`` items.
    setter : callable
        Makes the calling thread's config the defaults updated with a value.

    Examples
    --------
    >>> import sklearn
    >>> from joblib import Parallel
    >>> from workerstate import parallel, presets
    >>> def assume_finite():
    ...     return sklearn.get_config()["assume_finite"]
    >>> with presets.registered(presets.sklearn_config), sklearn.config_context(assume_finite=True):
    ...     Parallel(n_jobs=2, backend="threading")(
    ...         parallel.delayed(assume_finite)() for _ in range(2))
    [True, True]
    """
    return _libs.read_sklearn_config(), _libs.set_sklearn_config


# Between tasks, workers compare this raw reading (a copy) instead of deriving the value.
sklearn_config._workerstate_raw = _libs.raw_sklearn_config  # type: ignore[attr-defined]


def pandas_options() -> tuple[Settings, Callable[[Settings], None]]:
    """The pandas options that differ from their defaults, e.g. ``display.max_rows``.

    The value maps option names to values, ``{}`` when pandas is not imported; in the worker
    every other option is at its default during the task.

    Returns
    -------
    value : dict
        Changed options, by full name.
    setter : callable
        Sets the options of a value and resets every other option to its default.

    Notes
    -----
    Not exact in these cases:

    * Deprecated options are not carried, since reading or setting them warns. In pandas 3
      these include ``mode.copy_on_write`` (Copy-on-Write is always on and setting the
      option has no effect), ``mode.chained_assignment`` and ``future.infer_string``.
    * An option at its default in the parent keeps the worker's default, which can differ
      where pandas derives it from the process (``display.max_columns`` and
      ``display.width`` in a terminal and in a notebook).
    * Options that the worker has not registered (registered by a module that the worker
      has not imported) are skipped.

    Examples
    --------
    >>> import pandas as pd
    >>> from workerstate import presets
    >>> with pd.option_context("display.max_rows", 5):
    ...     value, setter = presets.pandas_options()
    >>> value
    {'display.max_rows': 5}
    >>> setter(value)  # what a worker runs before a task
    >>> pd.get_option("display.max_rows")
    5
    >>> setter({})  # every option at its default again
    >>> pd.get_option("display.max_rows")
    60
    """
    return _libs.read_pandas_options(), _libs.set_pandas_options


def numpy_errstate() -> tuple[Settings, Callable[[Settings], None]]:
    """NumPy's floating-point error handling (``np.seterr``, ``np.errstate``).

    The value holds the ``np.geterr()`` items that differ from NumPy's defaults. The error
    callback of ``np.seterrcall`` is not carried. NumPy keeps this state per thread (per
    context since NumPy 2), which the threading backend respects.

    Returns
    -------
    value : dict
        Changed ``np.geterr()`` items.
    setter : callable
        Installs a value, the other items at their defaults, on the calling thread.

    Examples
    --------
    >>> import numpy as np
    >>> from joblib import Parallel
    >>> from workerstate import parallel, presets
    >>> def divide_mode():
    ...     return np.geterr()["divide"]
    >>> with presets.registered(presets.numpy_errstate), np.errstate(divide="raise"):
    ...     Parallel(n_jobs=2, backend="threading")(
    ...         parallel.delayed(divide_mode)() for _ in range(2))
    ['raise', 'raise']
    """
    return _libs.read_numpy_errstate(), _libs.set_numpy_errstate


def numpy_printoptions() -> tuple[Settings, Callable[[Settings], None]]:
    """NumPy's print options (``np.set_printoptions``, ``np.printoptions``).

    The value holds the ``np.get_printoptions()`` items that differ from the defaults that
    ``np.set_printoptions`` documents. A ``formatter`` travels with cloudpickle, so it may
    be a lambda. NumPy 2 keeps print options per context, which the threading backend
    respects.

    Returns
    -------
    value : dict
        Changed ``np.get_printoptions()`` items.
    setter : callable
        Installs a value, the other options at their defaults, in the current context.

    Examples
    --------
    >>> import numpy as np
    >>> from joblib import Parallel
    >>> from workerstate import parallel, presets
    >>> def shown():
    ...     return str(np.array([1 / 3]))
    >>> with presets.registered(presets.numpy_printoptions), np.printoptions(precision=2):
    ...     Parallel(n_jobs=2, backend="threading")(parallel.delayed(shown)() for _ in range(2))
    ['[0.33]', '[0.33]']
    """
    return _libs.read_numpy_printoptions(), _libs.set_numpy_printoptions


def threadpool_limits() -> tuple[dict[str, int], Callable[[dict[str, int]], None]]:
    """BLAS and OpenMP thread limits set with ``threadpoolctl`` in the parent.

    The value maps a ``user_api`` (``"blas"``, ``"openmp"``) to the lowest thread count of
    its libraries, for the APIs whose libraries run below their default count; ``{}`` when
    threadpoolctl is not imported or nothing is limited. A library's default count is the
    count from its environment variable (``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``...),
    else from ``OMP_NUM_THREADS``, else the number of usable CPUs; or the highest count that
    the preset has seen for the library in the process, if higher. The worker applies the
    value as ``threadpoolctl.threadpool_limits(limits=..., user_api=...)`` does, through a
    ``ThreadpoolController`` that it keeps until the next import.

    Returns
    -------
    value : dict
        The lowest thread count per limited ``user_api``.
    setter : callable
        Caps each API at a value's count and at its default; unlimits the others.

    Notes
    -----
    The limit is carried as a cap, not as an exact count: a worker runs each library with
    the parent's limit or its own default, whichever is lower. joblib starts loky workers
    with their share of the CPUs (``OMP_NUM_THREADS`` and the like set to
    ``cpu_count // n_jobs``) to avoid oversubscription, and the parent's limit never raises
    that. Also:

    * libraries of one API are limited together, to one count;
    * libraries that the task loads after the limit is installed (a BLAS imported by the
      task itself) start with their defaults;
    * thread limits are per process, so the threading backend shares the parent's.

    Examples
    --------
    >>> import threadpoolctl
    >>> from workerstate import presets
    >>> with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
    ...     value, setter = presets.threadpool_limits()
    >>> value.get("blas", 1)  # 1 (a machine with one CPU has no limit to report)
    1
    """
    return _libs.read_threadpool_limits(), _libs.set_threadpool_limits


def logging_levels() -> tuple[dict[str, int], Callable[[dict[str, int]], None]]:
    """The levels of the root logger and of the named loggers that have one.

    The value maps logger names to levels: every logger of ``logging.root.manager.loggerDict``
    whose level is not ``NOTSET``, and ``"root"`` when the root logger is not at its default
    ``WARNING``. In the worker the loggers get exactly these levels for the task: a logger
    that has a level in the worker but not in the parent is set to ``NOTSET``, also one
    whose level a library set when the worker imported it, and put back after the task.
    Handlers, filters, ``propagate`` and ``logging.disable`` are not carried.

    Returns
    -------
    value : dict
        Levels by logger name, ``"root"`` for the root logger.
    setter : callable
        Gives the loggers exactly a value's levels, ``NOTSET`` to the others.

    Examples
    --------
    >>> import logging
    >>> from workerstate import presets
    >>> logging.getLogger("myapp").setLevel(logging.DEBUG)
    >>> value, setter = presets.logging_levels()
    >>> value["myapp"]
    10
    >>> logging.getLogger("myapp").setLevel(logging.NOTSET)
    """
    return _std.read_logging_levels(), _std.set_logging_levels


def decimal_context() -> tuple[Settings, Callable[[Settings], None]]:
    """The settings of the current ``decimal`` context: precision, rounding, traps...

    The value holds the settings among ``prec``, ``rounding``, ``Emin``, ``Emax``,
    ``capitals``, ``clamp`` and ``traps`` (a sorted tuple of signal names) that differ from
    Python's default context. The worker changes its current context in place. The
    ``flags``, which record what happened in past operations, are not carried. The decimal
    context is per thread, which the threading backend respects.

    Returns
    -------
    value : dict
        Changed settings of ``decimal.getcontext()``.
    setter : callable
        Changes the current context in place to a value, the rest at the defaults.

    Examples
    --------
    >>> import decimal
    >>> from joblib import Parallel
    >>> from workerstate import parallel, presets
    >>> def third():
    ...     return str(decimal.Decimal(1) / 3)
    >>> with presets.registered(presets.decimal_context), decimal.localcontext() as ctx:
    ...     ctx.prec = 5
    ...     Parallel(n_jobs=2, backend="threading")(parallel.delayed(third)() for _ in range(2))
    ['0.33333', '0.33333']
    """
    return _std.read_decimal_context(), _std.set_decimal_context


def environ(*names: str) -> Callback:
    """A callback for the environment variables ``names``, set or unset.

    The value maps each name to its value in the parent, or to ``None`` when the parent does
    not have it; the worker then removes it for the task. That includes the thread limits
    that joblib sets in loky workers (``OMP_NUM_THREADS`` and the like) when you name them
    and the parent does not have them. Libraries that read a variable only once, when they
    load, do not see a change made later.

    Parameters
    ----------
    *names : str
        The variable names. Repeated names are kept once.

    Returns
    -------
    callable
        The callback, named ``environ[NAME1,NAME2,...]``.

    Examples
    --------
    >>> import os
    >>> from workerstate import presets
    >>> callback = presets.environ("MY_FLAG")
    >>> callback.__qualname__
    'environ[MY_FLAG]'
    >>> os.environ["MY_FLAG"] = "1"
    >>> value, setter = callback()
    >>> value
    {'MY_FLAG': '1'}
    >>> del os.environ["MY_FLAG"]
    >>> setter(value)  # what a worker runs before a task
    >>> os.environ["MY_FLAG"]
    '1'
    >>> setter({"MY_FLAG": None})  # how a variable that was unset is put back
    >>> "MY_FLAG" in os.environ
    False
    """
    if not names:
        raise TypeError("environ() needs at least one variable name.")
    for name in names:
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise ValueError(f"Not an environment variable name: {name!r}.")
    unique = tuple(dict.fromkeys(names))

    def read() -> dict[str, str | None]:
        return _std.read_environ(unique)

    return _std.make_callback(f"environ[{','.join(unique)}]", read, _std.set_environ)


def context_var(var: ContextVar[Any] | str) -> Callback:
    """A callback for the value of a module-level ``contextvars.ContextVar``.

    The worker finds the variable by its import path and sets it for the task with
    ``var.set``; afterwards it resets it to the worker's previous value. A variable that the
    parent has not set is unset in the worker too, with the token of the worker's own
    ``set``. The value must pickle.

    Parameters
    ----------
    var : contextvars.ContextVar or str
        The variable, which must be held by an imported module (its module is found by
        searching ``sys.modules`` once, now), or its path as ``"package.module:NAME"``.

    Returns
    -------
    callable
        The callback, named ``context_var[package.module:NAME]``.

    Notes
    -----
    Worker threads and processes start with empty contexts, so the variable needs this
    callback with every backend. A value that the task sets itself in a worker that had the
    variable unset stays set after the task (only ``var.reset`` with the task's own token
    can unset it), unless a value from the parent was installed first.

    Examples
    --------
    >>> import contextvars, sys, types
    >>> from joblib import Parallel
    >>> from workerstate import parallel, presets
    >>> myapp = types.ModuleType("myapp")  # stands for a module of yours
    >>> myapp.REQUEST_ID = contextvars.ContextVar("REQUEST_ID", default=None)
    >>> sys.modules["myapp"] = myapp
    >>> callback = presets.context_var(myapp.REQUEST_ID)
    >>> callback.__qualname__
    'context_var[myapp:REQUEST_ID]'
    >>> token = myapp.REQUEST_ID.set("req-42")
    >>> with presets.registered(callback):
    ...     Parallel(n_jobs=2, backend="threading")(
    ...         parallel.delayed(myapp.REQUEST_ID.get)() for _ in range(2))
    ['req-42', 'req-42']
    >>> myapp.REQUEST_ID.reset(token)
    >>> del sys.modules["myapp"]
    """
    if isinstance(var, ContextVar):
        module_name, attr = _std.locate(var)
    elif isinstance(var, str):
        module_name, attr = _std.split_target(var)
    else:
        raise TypeError(
            f"context_var() needs a contextvars.ContextVar or a 'module:NAME' path; "
            f"got {type(var).__name__} {var!r}."
        )

    def read() -> Any:
        return _std.read_context_var(module_name, attr)

    def setter(value: Any) -> None:
        _std.set_context_var(module_name, attr, value)

    return _std.make_callback(f"context_var[{module_name}:{attr}]", read, setter)


def runtime_patch(target: str) -> Callback:
    """A callback that carries a run-time patch: the object now at ``target``.

    For a function wrapped at run time (``mod.func = memory.cache(mod.func)``) or any other
    ``module.attr = replacement``, the worker imports the module by name, assigns the
    parent's object for the task, and puts back its own object afterwards. When the parent
    has not patched the attribute, its object is the one the worker imports, and nothing is
    set.

    Parameters
    ----------
    target : str
        ``"package.module:attr"`` (or ``"package.module:Class.attr"``). The dotted form
        ``"package.module.attr"`` also works: the longest imported module prefix is taken
        as the module.

    Returns
    -------
    callable
        The callback, named ``runtime_patch[package.module:attr]``.

    Notes
    -----
    The object must pickle (with cloudpickle). A ``joblib.Memory`` cached function does,
    and shares its disk cache with the workers. Two kinds of wrapper would pickle as a
    reference to their own path, where a worker finds its own, unpatched object, so they are
    sent differently: a function that copies the patched function's name (``functools.wraps``)
    is sent by value, and a ``functools.lru_cache`` wrapper as its function and parameters,
    rebuilt in the worker with an empty cache. Other objects that pickle by name, under the
    patched name, do not reach the worker: give them a name of their own. Code that copied
    the attribute before the patch (``from module import attr``) keeps the old object, in
    the worker as in the parent.

    Examples
    --------
    >>> import functools, sys, types
    >>> from workerstate import presets
    >>> mylib = types.ModuleType("mylib")  # stands for a module of yours
    >>> mylib.square = lambda x: x * x
    >>> sys.modules["mylib"] = mylib
    >>> callback = presets.runtime_patch("mylib:square")
    >>> callback.__qualname__
    'runtime_patch[mylib:square]'
    >>> original = mylib.square
    >>> mylib.square = functools.lru_cache(maxsize=None)(original)  # patched at run time
    >>> value, setter = callback()
    >>> mylib.square = original
    >>> setter(value)  # what a worker runs before a task
    >>> mylib.square.cache_info().currsize
    0
    >>> setter(original)  # and after it
    >>> mylib.square is original
    True
    >>> del sys.modules["mylib"]
    """
    module_name, attr = _std.split_target(target)

    def read() -> Any:
        return _std.read_patch(module_name, attr)

    def setter(value: Any) -> None:
        _std.set_patch(module_name, attr, value)

    return _std.make_callback(f"runtime_patch[{module_name}:{attr}]", read, setter)


def register(*callbacks: Callback, check: str = "task") -> tuple[str, ...]:
    """Register several callbacks under their default names; return the names.

    All or nothing: if one cannot be registered (e.g. its name is taken), the ones
    registered before it are removed again and the error is raised.

    Parameters
    ----------
    *callbacks : callable
        Presets, or any parallel callbacks.
    check : {"task", "batch"}, default "task"
        For all of them, as in
        :func:`workerstate.parallel.register_global_parallel_callback`.

    Returns
    -------
    tuple of str
        The registration names, in order; remove them with
        :func:`workerstate.parallel.remove_global_parallel_callback`.

    Examples
    --------
    >>> from workerstate import parallel, presets
    >>> names = presets.register(presets.numpy_errstate, presets.environ("MY_FLAG"))
    >>> names
    ('workerstate.presets.numpy_errstate', 'workerstate.presets.environ[MY_FLAG]')
    >>> for name in names:
    ...     parallel.remove_global_parallel_callback(name)
    """
    from .parallel import register_global_parallel_callback, remove_global_parallel_callback

    names: list[str] = []
    try:
        for callback in callbacks:
            names.append(register_global_parallel_callback(callback, check=check))
    except BaseException:
        for name in reversed(names):
            with contextlib.suppress(KeyError):
                remove_global_parallel_callback(name)
        raise
    return tuple(names)


@contextlib.contextmanager
def registered(*callbacks: Callback, check: str = "task") -> Iterator[tuple[str, ...]]:
    """Register callbacks for the duration of a ``with`` block; yields their names.

    Parameters
    ----------
    *callbacks : callable
        Presets, or any parallel callbacks, registered as by :func:`register`.
    check : {"task", "batch"}, default "task"
        As for :func:`register`.

    Yields
    ------
    tuple of str
        The registration names, removed again when the block ends.

    Examples
    --------
    >>> from workerstate import parallel, presets
    >>> with presets.registered(presets.sklearn_config, presets.pandas_options) as names:
    ...     parallel.registered_callbacks() == names
    True
    >>> parallel.registered_callbacks()
    ()
    """
    from .parallel import remove_global_parallel_callback

    names = register(*callbacks, check=check)
    try:
        yield names
    finally:
        for name in reversed(names):
            with contextlib.suppress(KeyError):
                remove_global_parallel_callback(name)
