"""Transport: the pickled payload of a snapshot, from the parent to each worker process.

In: the captured values, side-channel data and warning filters of a snapshot. Out, in the
parent: a :class:`PayloadRef` that batches carry instead of the values (the bytes inline, a
file on this machine, or a dataset published on a dask scheduler). Out, in a worker: the
:class:`Payload` decoded from it, kept per process by token so a batch whose snapshot a worker
already holds costs a dict lookup.

The payload is pickled once per snapshot with cloudpickle (nested setters and lambdas work on
every backend); setters and callbacks travel inside the batch instead, pickled by the
backend's own pickler (see :func:`for_pickler`).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import sys
import tempfile
import threading
import types
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, NamedTuple

from . import _warnings
from ._errors import StatePicklingError
from ._pickling import describe_failure, find_unpicklable

__all__ = [
    "FILE_THRESHOLD",
    "Payload",
    "PayloadRef",
    "dumps_payload",
    "for_pickler",
    "load_payload",
    "place_payload",
]

#: Payloads larger than this go to a file when the workers share this machine.
FILE_THRESHOLD = 256 * 1024
_WORKER_CACHE_SIZE = 16


class PayloadRef(NamedTuple):
    """What a batch carries instead of the values: ``kind`` is "inline" (``data`` holds the
    bytes), "file" (a path on this machine) or "dask" (a dataset name on the scheduler)."""

    kind: str
    data: Any


@dataclass
class Payload:
    """A snapshot's values as a worker decoded them, with its filters ready to install."""

    values: tuple[Any, ...]
    side_values: tuple[Any, ...]
    filters: Any
    live_filters: Any = None


# -- the parent side -------------------------------------------------------------------------
def dumps_payload(entries: Any, side: Any, filters: Any) -> bytes:
    """Pickle the values, side-channel data and filters once, with cloudpickle.

    Raises :class:`StatePicklingError` naming the callback and the failing part when a value,
    setter or callback cannot be pickled.
    """
    import cloudpickle

    values = tuple(entry.value for entry in entries)
    side_values = tuple(entry.captured for entry in side)
    try:
        # The functions travel inside each batch (see Snapshot.__reduce__); checking them
        # here reports an unpicklable setter in the parent rather than in a queue thread.
        cloudpickle.dumps(tuple((entry.setter, entry.callback) for entry in entries))
        cloudpickle.dumps(tuple(entry.restore for entry in side))
        data: bytes = cloudpickle.dumps(
            (values, side_values, filters), protocol=pickle.HIGHEST_PROTOCOL
        )
    except Exception as exc:
        raise _explain_pickling(entries, exc) from exc
    return data


def _explain_pickling(entries: Any, exc: Exception) -> StatePicklingError:
    import cloudpickle

    for name, value, setter, callback in entries:
        for label, part in (("value", value), ("setter", setter), ("callback", callback)):
            found = find_unpicklable(part, cloudpickle.dumps, root=label)
            if found is not None:
                return StatePicklingError(
                    f"The state of parallel callback {name!r} cannot be sent to worker "
                    f"processes: {describe_failure(*found)} (The threading backend does not "
                    f"pickle and would work as is.)"
                )
    return StatePicklingError(
        f"The captured warning filters cannot be pickled ({type(exc).__name__}: {exc})."
    )


def place_payload(owner: Any, token: str, data: bytes, *, local: bool, remote: Any) -> PayloadRef:
    """Where the workers find ``data``: a file for local workers, the dask scheduler for a
    dask cluster's, inline otherwise (or when small). Removed when ``owner`` is freed."""
    if local and len(data) > FILE_THRESHOLD:
        return PayloadRef("file", _write_payload(owner, token, data))
    if remote is not None and len(data) > FILE_THRESHOLD:
        return PayloadRef("dask", _publish_dask(owner, token, data, remote))
    return PayloadRef("inline", data)


_payload_dir: str | None = None
_payload_dir_lock = threading.Lock()


def _write_payload(owner: Any, token: str, data: bytes) -> str:
    global _payload_dir
    with _payload_dir_lock:
        if _payload_dir is None:
            # /dev/shm keeps the file in memory, as joblib does for memmapped arrays.
            base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
            _payload_dir = tempfile.mkdtemp(prefix=f"workerstate-{os.getpid()}-", dir=base)
            weakref.finalize(sys.modules[__name__], shutil.rmtree, _payload_dir, True)
    path = os.path.join(_payload_dir, token)
    with open(path, "wb") as handle:
        handle.write(data)
    weakref.finalize(owner, _unlink, path)
    return path


def _publish_dask(owner: Any, token: str, data: bytes, client: Any) -> str:
    # Stored once on the scheduler; each worker process fetches it once (see load_payload).
    name = f"workerstate-{token}"
    client.publish_dataset(**{name: data})
    weakref.finalize(owner, _unpublish_dask, weakref.ref(client), name)
    return name


def _unpublish_dask(client_ref: Any, name: str) -> None:
    client = client_ref()
    if client is None or client.status != "running":
        return

    def unpublish() -> Any:
        # Run on the client's event loop, where unpublish_dataset returns a coroutine that
        # the loop awaits; called from any other thread it would block or be dropped.
        return client.unpublish_dataset(name)

    with contextlib.suppress(Exception):  # the cluster may be gone already
        client.loop.add_callback(unpublish)


def _fetch_dask(name: str) -> bytes:
    from distributed import get_client

    data: bytes = get_client().get_dataset(name)
    return data


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def for_pickler(func: Any, stdlib_pickle: bool) -> Any:
    """``func`` as it should go into a batch that ``pickle`` (not cloudpickle) will pickle."""
    if not stdlib_pickle:
        return func
    try:
        pickle.dumps(func)
    except Exception:
        return _ByValue(func)
    return func


class _ByValue:
    """A function that only cloudpickle can pickle (a lambda, a nested setter)."""

    __slots__ = ("func",)

    def __init__(self, func: Any) -> None:
        self.func = func

    def __reduce__(self) -> tuple[Any, ...]:
        import cloudpickle

        func = self.func
        if isinstance(func, types.FunctionType) and func.__module__ == "__main__":
            return _load_main_function, (cloudpickle.dumps(func),)
        return pickle.loads, (cloudpickle.dumps(func),)


def _load_main_function(data: bytes) -> Any:
    """A script's function that only cloudpickle could send, bound to the worker's script.

    cloudpickle ships a copy of the globals such a function names, so a lambda setter from
    a script would fill a copy, while the script's tasks, which ``pickle`` sends by name,
    read the worker's own ``__main__``. Where that module has every name the function uses,
    the function is bound to it, as a task function from the script is.
    """
    func = pickle.loads(data)
    main = sys.modules.get("__main__")
    names = vars(main) if main is not None else {}
    if not all(name in names for name in func.__globals__ if not name.startswith("__")):
        return func  # a notebook or ``python -c``: the names exist only in what was sent
    rebuilt = types.FunctionType(
        func.__code__, names, func.__name__, func.__defaults__, func.__closure__
    )
    rebuilt.__kwdefaults__ = func.__kwdefaults__
    rebuilt.__qualname__ = func.__qualname__
    rebuilt.__dict__.update(func.__dict__)
    return rebuilt


# -- the worker side -------------------------------------------------------------------------
_worker_cache: OrderedDict[str, Payload] = OrderedDict()
_worker_cache_lock = threading.Lock()
_fetch_lock = threading.Lock()


def cached_payload(token: str) -> Payload | None:
    """The payload of ``token`` if this process holds it already."""
    with _worker_cache_lock:
        cached = _worker_cache.get(token)
        if cached is not None:
            _worker_cache.move_to_end(token)
    return cached


def load_payload(token: str, ref: PayloadRef) -> Payload:
    """The payload of ``token``: from this process's cache, else fetched and decoded once."""
    # One fetch per process: threads of a dask worker that start together wait for the
    # first one's copy instead of fetching and unpickling their own.
    with _fetch_lock:
        with _worker_cache_lock:
            cached = _worker_cache.get(token)
        if cached is not None:
            return cached
        return _fetch_payload(token, ref)


def _fetch_payload(token: str, ref: PayloadRef) -> Payload:
    kind, data = ref
    if kind == "file":
        with open(data, "rb") as handle:
            data = handle.read()
    elif kind == "dask":
        data = _fetch_dask(data)
    values, side_values, filters = pickle.loads(data)
    payload = Payload(values, side_values, filters, _warnings.live_filters(filters))
    with _worker_cache_lock:
        _worker_cache[token] = payload
        while len(_worker_cache) > _WORKER_CACHE_SIZE:
            _worker_cache.popitem(last=False)
    return payload
