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

import atexit
import contextlib
import os
import pickle
import re
import shutil
import stat
import sys
import tempfile
import threading
import types
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from . import _warnings
from ._errors import StatePicklingError
from ._pickling import describe_failure, find_unpicklable
from ._text import error_text

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
    size: int = 0  # the pickled bytes: what the worker cache counts against its budget


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
            detail: str | None
            try:
                found = find_unpicklable(part, cloudpickle.dumps, root=label)
                detail = None if found is None else describe_failure(*found)
            except Exception:
                # The search itself failed (a __repr__ or __reduce__ that raises): name the
                # callback and the part, with the pickling error.
                detail = _failing_part(part, label, cloudpickle.dumps)
            if detail is not None:
                return StatePicklingError(
                    f"The state of parallel callback {name!r} cannot be sent to worker "
                    f"processes: {detail} (The threading backend does not "
                    f"pickle and would work as is.)"
                )
    return StatePicklingError(
        f"The captured warning filters cannot be pickled ({error_text(exc)})."
    )


def _failing_part(part: Any, label: str, dumps: Callable[[Any], Any]) -> str | None:
    try:
        dumps(part)
    except Exception as exc:
        return f"its {label}, a {type(part).__name__}, fails to pickle ({error_text(exc)})"
    return None


def place_payload(
    owner: Any, token: str, data: bytes, *, local: bool, remote: Any, names: tuple[str, ...] = ()
) -> PayloadRef:
    """Where the workers find ``data``: a file for local workers, the dask scheduler for a
    dask cluster's, inline otherwise (or when small). Removed when ``owner`` is freed, or
    earlier when :func:`set_retirement`'s policy says no call can need it any more.

    Raises :class:`~workerstate.parallel.StateTransportError` naming ``names`` (the
    callbacks) when no folder can take the file and the payload is too large to travel in
    every batch instead.
    """
    if local and len(data) > FILE_THRESHOLD:
        path = _write_payload(owner, token, data, names)
        if path is not None:
            return PayloadRef("file", path)
        return PayloadRef("inline", data)
    if remote is not None and len(data) > FILE_THRESHOLD:
        return PayloadRef("dask", _publish_dask(owner, token, data, remote))
    return PayloadRef("inline", data)


#: A payload that no folder can take still travels inline in every batch up to this size.
INLINE_FALLBACK_LIMIT = 16 * 1024 * 1024
#: Names a folder that is tried before ``/dev/shm`` and the system temporary folder.
TEMP_FOLDER_ENV = "WORKERSTATE_TEMP_FOLDER"
_FOLDER_PREFIX = "workerstate-"
_FOLDER_PATTERN = re.compile(r"^workerstate-(\d+)-[A-Za-z0-9_]+$")


class _Placed(NamedTuple):
    """A payload file this process wrote: the snapshot that owns it and the writer's pid."""

    owner: weakref.ReferenceType[Any]
    pid: int


_lock = threading.RLock()
_pid = os.getpid()
#: base folder -> this process's payload folder in it
_folders: dict[str, str] = {}
#: path -> the live payload files this process wrote
_files: dict[str, _Placed] = {}
_retirement: Callable[[list[Any]], set[int]] | None = None
_swept_stale = False


def set_retirement(policy: Callable[[list[Any]], set[int]]) -> None:
    """Set what decides, before a new file is written, which owners' files can go now.

    ``policy`` gets the live owners of payload files and returns the ``id`` of those that no
    call can need any more; their files are removed without waiting for the owners to be
    freed (a finished ``joblib.Parallel`` sits in a reference cycle with its backend, so
    only the cyclic garbage collector would free it).
    """
    global _retirement
    _retirement = policy


def is_current(ref: PayloadRef) -> bool:
    """Whether batches may still carry ``ref`` (a file is gone once retired, and a forked
    child never sends its parent's files)."""
    return ref.kind != "file" or ref.data in _files


def check_present(ref: PayloadRef) -> bool:
    """Whether the file of ``ref`` still exists; forgets it when not, so it is written again."""
    if ref.kind != "file" or ref.data not in _files:
        return True
    if os.path.exists(ref.data):
        return True
    with _lock:
        _files.pop(ref.data, None)
    return False


def _locations() -> list[str]:
    chosen = os.environ.get(TEMP_FOLDER_ENV)
    # /dev/shm keeps the file in memory, as joblib does for memmapped arrays.
    bases = [chosen] if chosen else []
    bases += ["/dev/shm", tempfile.gettempdir()]
    return list(dict.fromkeys(bases))


def _write_payload(owner: Any, token: str, data: bytes, names: tuple[str, ...]) -> str | None:
    """The path of ``data`` written in the first folder that takes it; None to send it
    inline. A partly written file is always removed."""
    with _lock:
        _retire_unneeded()
        _remove_stale_folders()
        failures: list[str] = []
        for base in _locations():
            try:
                path = _write_in(base, token, data)
            except OSError as exc:
                failures.append(f"{base} ({type(exc).__name__}: {exc.strerror or exc})")
                continue
            _files[path] = _Placed(weakref.ref(owner), _pid)
            weakref.finalize(owner, _unlink, path, _pid)
            return path
    if len(data) <= INLINE_FALLBACK_LIMIT:
        return None
    from ._errors import StateTransportError

    callbacks = ", ".join(repr(name) for name in names) or "(warning filters only)"
    raise StateTransportError(
        f"The state of parallel callback(s) {callbacks} ({len(data) / 1e6:.1f} MB pickled) "
        f"cannot be sent to the worker processes: no folder could take the file, tried "
        f"{'; '.join(failures)}, and it is too large to travel inline in every batch (more than "
        f"{INLINE_FALLBACK_LIMIT // (1024 * 1024)} MiB). Free space there, set "
        f"{TEMP_FOLDER_ENV} to a folder with room, or register a smaller value."
    )


def _write_in(base: str, token: str, data: bytes) -> str:
    for attempt in (0, 1):
        folder = _folders.get(base)
        if folder is None:
            folder = _folders[base] = tempfile.mkdtemp(prefix=f"{_FOLDER_PREFIX}{_pid}-", dir=base)
        path = os.path.join(folder, token)
        try:
            # Readable by the owner only: the values may hold secrets (tokens, passwords).
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except FileNotFoundError:
            if attempt:
                raise
            _folders.pop(base, None)  # the folder was removed behind our back
            continue
        try:
            with open(fd, "wb", closefd=True) as handle:
                handle.write(data)
        except BaseException:
            _unlink(path, _pid)
            raise
        return path
    raise AssertionError("unreachable")


def _retire_unneeded() -> None:
    policy = _retirement
    if policy is None or not _files:
        return
    owners = [(path, placed.owner()) for path, placed in _files.items()]
    removable = policy([owner for _, owner in owners if owner is not None])
    for path, owner in owners:
        if owner is not None and id(owner) in removable:
            del _files[path]
            _unlink(path, _pid)


def _remove_stale_folders() -> None:
    """Once per process: remove the payload folders of this user's processes that are gone
    (killed processes run no cleanup, and their folders would stay in memory)."""
    global _swept_stale
    if _swept_stale:
        return
    _swept_stale = True
    uid = os.getuid() if hasattr(os, "getuid") else None
    for base in _locations():
        try:
            names = os.listdir(base)
        except OSError:
            continue
        for name in names:
            match = _FOLDER_PATTERN.match(name)
            if match is None or int(match.group(1)) == _pid or _alive(int(match.group(1))):
                continue
            path = os.path.join(base, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode) and (uid is None or info.st_uid == uid):
                shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists (another user's) or cannot be told: keep its folder
    return True


def _remove_folders(pid: int) -> None:
    # Registered with atexit, which a forked child inherits: only the writer removes them.
    if pid != os.getpid():
        return
    for folder in list(_folders.values()):
        shutil.rmtree(folder, ignore_errors=True)
    _folders.clear()
    _files.clear()


def _after_fork_in_child() -> None:
    # The child writes its own files in its own folders; the parent's stay the parent's.
    global _pid, _swept_stale
    _pid = os.getpid()
    _folders.clear()
    _files.clear()
    _swept_stale = True
    atexit.register(_remove_folders, _pid)


atexit.register(_remove_folders, _pid)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


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


def _unlink(path: str, pid: int) -> None:
    if pid != os.getpid():
        return  # a forked child's copy of the parent's finalizer
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
#: Read in each worker: the bytes of decoded payloads a worker keeps (64 MB by default).
WORKER_CACHE_ENV = "WORKERSTATE_WORKER_CACHE_MB"
_DEFAULT_WORKER_CACHE_MB = 64.0
_worker_cache: OrderedDict[str, Payload] = OrderedDict()
_worker_cache_bytes = 0
#: A payload larger than the whole budget: kept only until a batch of another call comes.
_oversized: dict[str, Payload] = {}
_worker_cache_lock = threading.Lock()
_fetch_lock = threading.Lock()


def worker_cache_budget() -> int:
    """The bytes of payloads a worker keeps, from ``WORKERSTATE_WORKER_CACHE_MB``."""
    text = os.environ.get(WORKER_CACHE_ENV, "")
    try:
        megabytes = float(text) if text else _DEFAULT_WORKER_CACHE_MB
    except ValueError:
        megabytes = _DEFAULT_WORKER_CACHE_MB
    return max(0, int(megabytes * 1_000_000))


def cached_payload(token: str) -> Payload | None:
    """The payload of ``token`` if this process holds it already."""
    with _worker_cache_lock:
        cached = _worker_cache.get(token)
        if cached is not None:
            _worker_cache.move_to_end(token)
            return cached
        return _oversized.get(token)


def load_payload(token: str, ref: PayloadRef) -> Payload:
    """The payload of ``token``: from this process's cache, else fetched and decoded once.

    Raises :class:`FileNotFoundError` when its file was removed.
    """
    # One fetch per process: threads of a dask worker that start together wait for the
    # first one's copy instead of fetching and unpickling their own.
    with _fetch_lock:
        cached = cached_payload(token)
        if cached is not None:
            return cached
        return _fetch_payload(token, ref)


def _fetch_payload(token: str, ref: PayloadRef) -> Payload:
    global _worker_cache_bytes
    with _worker_cache_lock:
        _oversized.clear()  # another call's: drop it before reading this one
    kind, data = ref
    if kind == "file":
        with open(data, "rb") as handle:
            data = handle.read()
    elif kind == "dask":
        data = _fetch_dask(data)
    size = len(data)
    values, side_values, filters = pickle.loads(data)
    del data
    payload = Payload(values, side_values, filters, _warnings.live_filters(filters), size)
    budget = worker_cache_budget()
    with _worker_cache_lock:
        if size > budget:
            _oversized[token] = payload
            return payload
        _worker_cache[token] = payload
        _worker_cache_bytes += size
        while _worker_cache_bytes > budget:
            _, evicted = _worker_cache.popitem(last=False)
            _worker_cache_bytes -= evicted.size
    return payload
