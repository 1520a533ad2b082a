"""The joblib adapter: the only module that reads joblib's internals.

Everything else in workerstate talks to joblib through the small functions here, or through
joblib's public API. Each internal below was checked against joblib 1.3.0, 1.4.2, 1.5.3 and
1.6.0; each is looked up defensively, and when a joblib release renames or removes one, the
function that reads it returns its fallback, which is always the safe behaviour: the same
results, in the same order, with the right state in every task, and no warning.

==========================================  =====================================  ==========================================
internal                                    used for                               fallback when it is missing
==========================================  =====================================  ==========================================
``Parallel.dispatch_one_batch`` (code),     :func:`call_making_task`: which call   capture on the thread that makes the task,
frame ``f_locals["self"]``                  a task being made belongs to           as for tasks built up front (thread-local
                                                                                   state then needs ``Parallel`` or the
                                                                                   backend)
``Parallel._get_sequential_output`` (code)  the same, to stop looking for          look further up the stack (bounded)
                                            ``n_jobs=1`` calls
``Parallel._start`` (code)                  :func:`on_calling_thread`              assume the calling thread (no warning)
``Parallel._call_id``                       :func:`call_id`: tell a call from the  the iterator the call pulls from
                                            next one on the same object;           (:func:`call_id`); each task bound
                                            :func:`started_call_id`: the call      on its own (:func:`started_call_id`)
                                            runs in batches
``Parallel._dispatch`` (overridden)         :func:`dispatches_batches`: send a     each task bound on its own
                                            batch beside its snapshot
``Parallel._original_iterator``,            :func:`pulls_generator`: a task made   False: the frame lookup above
``Parallel._running``                       by the running call's generator;
                                            :func:`has_finished`: a call ended;    False: kept until the object is freed
                                            :func:`call_iterator`                  None: kept until the object is freed
``BatchedCalls.__call__`` (code), frame     :func:`batch_items`: the tasks of      None: install and restore around each
``f_locals["self"].items``                  the batch a worker runs                task
``BatchedCalls.items``                      :func:`batch_task_list`,               the workerstate backend raises an error
                                            :func:`set_batch_task_list`: the       that names the joblib version
                                            backend binds a batch's tasks
``Parallel._backend``                       :func:`backend_of`                     None: capture for an unknown backend
``BatchCompletionCallBack.parallel``        :func:`parallel_of_callback`           None: the backend's last capture
``parallel.BACKENDS``,                      :func:`backend_factory`,               joblib's own backend classes by name
``parallel.EXTERNAL_BACKENDS``              :func:`backend_name`
``parallel.get_active_backend``             :func:`active_backend`                 the backend of a new ``Parallel()``
``parallel.DEFAULT_BACKEND``                :func:`default_backend_name`           "loky"
``parallel.EXTERNAL_BACKENDS`` (written)    :func:`wrap_external_backends`: wrap   dask and Ray, registered on first use,
                                            dask and Ray after ``enable()``        run unwrapped (documented)
class names ``LokyBackend``,                :func:`backend_kind`                   "other": install per task, and send
``MultiprocessingBackend``,                                                        functions that only cloudpickle can
``DaskDistributedBackend``                                                         pickle by value
``loky.reusable_executor._executor``        :func:`reusable_executor`              ``loky.get_reusable_executor()``
``loky.backend.reduction.get_loky_pickler`` :func:`loky_pickler`                   cloudpickle's pickler
==========================================  =====================================  ==========================================

workerstate stores one key on a ``joblib.Parallel`` object, :data:`KEY`, holding a
:class:`CallRecord`.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import joblib
from joblib import parallel as _joblib_parallel

__all__ = [
    "KEY",
    "CallRecord",
    "active_backend",
    "backend_factory",
    "backend_kind",
    "backend_name",
    "backend_of",
    "batch_items",
    "batch_task_list",
    "call_id",
    "call_iterator",
    "call_making_task",
    "caller_frame",
    "caller_module_in",
    "default_backend_name",
    "dispatches_batches",
    "has_finished",
    "known_backends",
    "live_records",
    "loky_pickler",
    "on_calling_thread",
    "parallel_of_callback",
    "pulls_generator",
    "record_of",
    "register",
    "registered_backends",
    "reusable_executor",
    "running_call_snapshot",
    "runs_in_workers",
    "set_batch_task_list",
    "started_call_id",
    "stored_record",
    "unwrap_external_backends",
    "wrap_external_backends",
]

#: The one key workerstate stores in a ``joblib.Parallel`` object's ``__dict__``.
KEY = "_workerstate"


@dataclass(eq=False)
class CallRecord:
    """What workerstate keeps on a ``joblib.Parallel`` object.

    ``call_id`` and ``snapshot`` are the call whose first task ``delayed`` made and its
    snapshot; ``backend_snapshot`` is what the workerstate backend captured for the call;
    ``owner`` is a weak reference to the ``joblib.Parallel``.
    """

    call_id: Any = None
    snapshot: Any = None
    backend_snapshot: Any = None
    owner: Any = None

    def snapshots(self) -> tuple[Any, ...]:
        """The snapshots this record holds."""
        return tuple(s for s in (self.snapshot, self.backend_snapshot) if s is not None)

    def running_snapshots(self) -> tuple[Any, ...]:
        """The snapshots a running call on the owner may still give to tasks.

        All of them when the owner's state cannot be read (the safe side).
        """
        parallel = None if self.owner is None else self.owner()
        if parallel is None:
            return ()
        state = parallel.__dict__
        if _RUNNING not in state or _CALL_ID not in state:
            return self.snapshots()
        if not state[_RUNNING]:
            return ()
        running = [self.backend_snapshot]  # set at the start of the running call
        if self.call_id == state[_CALL_ID]:
            running.append(self.snapshot)
        return tuple(s for s in running if s is not None)


#: Every live record, for :meth:`CallRecord.running_snapshots` to be asked.
_RECORDS: weakref.WeakSet[CallRecord] = weakref.WeakSet()


def live_records() -> list[CallRecord]:
    """The records on the ``joblib.Parallel`` objects that are still alive."""
    return list(_RECORDS)


def record_of(parallel: Any) -> CallRecord:
    """The record stored on ``parallel``, made on first use."""
    state = parallel.__dict__
    record = state.get(KEY)
    if record is None:
        record = state[KEY] = CallRecord(owner=weakref.ref(parallel))
        _RECORDS.add(record)
    return record  # type: ignore[no-any-return]


def stored_record(parallel: Any) -> CallRecord | None:
    """The record stored on ``parallel``, if any."""
    return parallel.__dict__.get(KEY)  # type: ignore[no-any-return]


def _code_of(owner: Any, method: str) -> Any:
    return getattr(getattr(owner, method, None), "__code__", None)


# Looked up once; None where a joblib release renamed the method.
_DISPATCH_CODE = _code_of(joblib.Parallel, "dispatch_one_batch")
_START_CODE = _code_of(joblib.Parallel, "_start")
_SEQUENTIAL_CODE = _code_of(joblib.Parallel, "_get_sequential_output")
_DISPATCH_METHOD = getattr(joblib.Parallel, "_dispatch", None)
_BATCH_CALL_CODE = _code_of(getattr(_joblib_parallel, "BatchedCalls", None), "__call__")
_MAX_FRAMES = 8
#: ``sys._getframe``: the frames the functions above are given start from a caller's.
caller_frame = sys._getframe


def caller_module_in(filename: str) -> Any:
    """``__name__`` of the globals of the nearest caller whose code is in ``filename``.

    For a function cloudpickle rebuilt by value (from ``__main__`` or a notebook), the file
    name is not a module's, but its frame's globals still name the module.
    """
    frame: Any = caller_frame(1)
    while frame is not None and frame.f_code.co_filename != filename:
        frame = frame.f_back
    return None if frame is None else frame.f_globals.get("__name__")


def call_making_task(frame: Any) -> Any:
    """The ``joblib.Parallel`` whose dispatcher is pulling a task in ``frame``, or None.

    None also for ``n_jobs=1``, where joblib pulls and runs every task on the calling thread,
    and for tasks made outside a running call.
    """
    if _DISPATCH_CODE is None:
        return None
    for _ in range(_MAX_FRAMES):
        if frame is None:
            return None
        code = frame.f_code
        if code is _DISPATCH_CODE:
            return frame.f_locals.get("self")
        if code is _SEQUENTIAL_CODE:
            return None
        frame = frame.f_back
    return None


def on_calling_thread(frame: Any) -> bool:
    """Whether ``frame`` runs inside the dispatch of a call's first batches.

    joblib dispatches those from ``Parallel._start`` on the calling thread, and later ones
    from completion callbacks on its own threads. True when that cannot be told.
    """
    if _START_CODE is None:
        return True
    while frame is not None:
        if frame.f_code is _START_CODE:
            return True
        frame = frame.f_back
    return False


# Attribute names read on joblib objects; a release that renames one makes the read below
# find nothing, which selects the fallback.
_CALL_ID = "_call_id"
_ITERATOR = "_original_iterator"
_RUNNING = "_running"
_BACKEND = "_backend"
_CALLBACK_PARALLEL = "parallel"
_BATCH_ITEMS = "items"


def started_call_id(parallel: Any) -> Any:
    """joblib's ``_call_id`` of ``parallel``, or None. joblib gives a call a new one, before
    it pulls a task, only when it runs the call in batches through ``Parallel._dispatch``."""
    return parallel.__dict__.get(_CALL_ID)


def dispatches_batches() -> bool:
    """Whether ``joblib.Parallel`` has ``_dispatch``, which workerstate's overrides."""
    return _DISPATCH_METHOD is not None


def call_iterator(parallel: Any) -> Any:
    """The iterator that the running call on ``parallel`` pulls its later tasks from, if any."""
    return parallel.__dict__.get(_ITERATOR)


def call_id(parallel: Any) -> Any:
    """What tells one call on ``parallel`` from the next.

    joblib's ``_call_id``; where a release lacks it, the iterator the call pulls from, which
    is a new object for every call.
    """
    state = parallel.__dict__
    if _CALL_ID in state:
        return state[_CALL_ID]
    return state.get(_ITERATOR)


def has_finished(parallel: Any) -> bool:
    """Whether ``parallel`` is known to run no call now: ``_running`` is exactly False
    (joblib clears it before it calls the backend's ``stop_call``)."""
    return parallel.__dict__.get(_RUNNING) is False


def pulls_generator(parallel: Any, frame: Any) -> bool:
    """Whether ``frame`` is the generator that the running call on ``parallel`` pulls from.

    joblib leaves ``_original_iterator`` set when a call is abandoned, so the call must
    still be running.
    """
    state = parallel.__dict__
    iterator = state.get(_ITERATOR)
    return getattr(iterator, "gi_frame", None) is frame and bool(state.get(_RUNNING))


def running_call_snapshot(parallel: Any, frame: Any) -> Any:
    """The snapshot ``delayed`` stored for the running call on ``parallel``, when ``frame``
    is the generator that call is pulling from; None otherwise.

    This is the hot path of making a task: one function, reading ``parallel.__dict__`` once.
    """
    state = parallel.__dict__
    if getattr(state.get(_ITERATOR), "gi_frame", None) is not frame or not state.get(_RUNNING):
        return None
    record = state.get(KEY)
    if record is None or record.snapshot is None or record.call_id != call_id(parallel):
        return None
    return record.snapshot


def batch_items(frame: Any) -> list[Any] | None:
    """The items of the joblib batch that a worker is running in ``frame`` or its callers."""
    if _BATCH_CALL_CODE is None:
        return None
    for _ in range(3):
        if frame is None:
            return None
        if frame.f_code is _BATCH_CALL_CODE:
            items = getattr(frame.f_locals.get("self"), _BATCH_ITEMS, None)
            return items if isinstance(items, list) else None
        frame = frame.f_back
    return None


def batch_task_list(batch: Any) -> list[Any] | None:
    """The list of ``(func, args, kwargs)`` tasks of a joblib batch, None if it has none."""
    items = getattr(batch, _BATCH_ITEMS, None)
    return items if isinstance(items, list) else None


def set_batch_task_list(batch: Any, items: list[Any]) -> None:
    """Make ``items`` the tasks that ``batch`` runs when it is called."""
    setattr(batch, _BATCH_ITEMS, items)


def backend_of(parallel: Any) -> Any:
    """The backend object ``parallel`` runs its calls on."""
    return getattr(parallel, _BACKEND, None)


def runs_in_workers(parallel: Any) -> bool:
    """Whether ``parallel`` may hand its tasks to workers: ``n_jobs`` other than 1.

    joblib's own answer, ``Parallel._effective_n_jobs()``, warns when a multiprocessing call
    is nested in a worker, and joblib asks it again itself: asking here would repeat the
    warning. A nested call that joblib then runs in the worker is counted as using workers.
    """
    return getattr(parallel, "n_jobs", None) not in (None, 1)


def parallel_of_callback(callback: Any) -> Any:
    """The ``joblib.Parallel`` that a batch-completion callback reports to."""
    return getattr(callback, _CALLBACK_PARALLEL, None)


def _registered() -> dict[str, Any]:
    return getattr(_joblib_parallel, "BACKENDS", None) or {}


def known_backends() -> list[str]:
    """The names of the registered joblib backends."""
    return sorted(_registered() or _builtin_backends())


def backend_factory(name: str) -> Callable[..., Any] | None:
    """The factory of the joblib backend registered as ``name``, registering it if joblib
    knows it lazily ("dask", "ray"); None when there is none."""
    backends = _registered()
    if not backends:
        return _builtin_backends().get(name)
    factory = backends.get(name)
    if factory is None:
        register = getattr(_joblib_parallel, "EXTERNAL_BACKENDS", {}).get(name)
        if register is not None:
            register()
            factory = backends.get(name)
    return factory


def backend_name(backend: Any) -> str:
    """The name ``backend``'s class is registered under, else the class name."""
    for name, cls in (_registered() or _builtin_backends()).items():
        if type(backend) is cls:
            return str(name)
    return type(backend).__name__


def active_backend() -> tuple[Any, Any]:
    """The backend and default ``n_jobs`` that ``joblib.Parallel()`` would use here."""
    get = getattr(_joblib_parallel, "get_active_backend", None)
    if get is None:
        return backend_of(joblib.Parallel()), None
    backend, n_jobs = get()
    return backend, n_jobs


def registered_backends() -> dict[str, Any]:
    """The registered backend factories by name (a copy)."""
    return dict(_registered() or _builtin_backends())


def register(name: str, factory: Any, *, make_default: bool = False) -> None:
    """Register ``factory`` as backend ``name`` with joblib's public API."""
    joblib.register_parallel_backend(name, factory, make_default=make_default)


def default_backend_name() -> str:
    """The backend a ``joblib.Parallel()`` that names none uses outside ``parallel_config``."""
    return str(getattr(_joblib_parallel, "DEFAULT_BACKEND", "loky"))


def wrap_external_backends(hook: Callable[[str], None]) -> dict[str, Any]:
    """Make joblib call ``hook(name)`` right after it registers a backend on first use.

    joblib registers "dask" and "ray" only when a call first names them, through the
    functions in ``EXTERNAL_BACKENDS``. Returns the functions replaced, for
    :func:`unwrap_external_backends`; nothing where joblib has no such table.
    """
    table = getattr(_joblib_parallel, "EXTERNAL_BACKENDS", None)
    if not isinstance(table, dict):
        return {}
    replaced = {}
    for name, register_fn in list(table.items()):
        if name in _registered():
            continue  # registered already: wrapped with the others

        def registering(register_fn: Any = register_fn, name: str = name) -> Any:
            result = register_fn()
            hook(name)
            return result

        replaced[name] = register_fn
        table[name] = registering
    return replaced


def unwrap_external_backends(replaced: dict[str, Any]) -> None:
    """Undo :func:`wrap_external_backends`."""
    table = getattr(_joblib_parallel, "EXTERNAL_BACKENDS", None)
    if isinstance(table, dict):
        table.update(replaced)


def _builtin_backends() -> dict[str, Any]:
    # Where joblib's registry cannot be read, its own backends are still importable.
    from joblib import _parallel_backends as module

    names = {
        "loky": "LokyBackend",
        "multiprocessing": "MultiprocessingBackend",
        "threading": "ThreadingBackend",
        "sequential": "SequentialBackend",
    }
    found = {name: getattr(module, cls, None) for name, cls in names.items()}
    return {name: cls for name, cls in found.items() if cls is not None}


# By class name, so that a release that moves a class needs no import here; only joblib's
# own classes count: Ray's backend subclasses the multiprocessing one, but its workers may be
# other machines' processes and it pickles with cloudpickle.
_KINDS = (
    ("DaskDistributedBackend", "dask", False),
    ("MultiprocessingBackend", "multiprocessing", True),
    ("LokyBackend", "loky", True),
)


def backend_kind(backend: Any) -> str:
    """``"loky"``, ``"multiprocessing"``, ``"dask"``, ``"threads"`` or ``"other"``."""
    if backend is None:
        return "other"
    cls = type(backend)
    for klass in cls.__mro__:
        for name, kind, joblibs_only in _KINDS:
            if klass.__name__ == name and (
                not joblibs_only or cls.__module__.startswith("joblib.")
            ):
                return kind
    if getattr(backend, "uses_threads", False):
        return "threads"
    return "other"


def reusable_executor() -> Any:
    """joblib's shared loky executor if one exists (without creating one where that can be
    told; where it cannot, the executor, created if need be)."""
    from joblib.externals import loky

    module = getattr(loky, "reusable_executor", None)
    if module is None or not hasattr(module, _EXECUTOR):
        return loky.get_reusable_executor()
    with getattr(module, "_executor_lock", nullcontext()):
        return getattr(module, _EXECUTOR)


_EXECUTOR = "_executor"


def loky_pickler() -> Any:
    """The pickler class loky sends tasks with (cloudpickle plus loky's reducers)."""
    try:
        from joblib.externals.loky.backend.reduction import get_loky_pickler
    except ImportError:
        import cloudpickle

        return cloudpickle.Pickler
    return get_loky_pickler()
