"""The snapshot: the registered state of one ``Parallel`` call, as one value object.

In: what :func:`workerstate._capture.capture` read in the parent. Out: the object every task
of the call refers to. It pickles as its token, a :class:`~workerstate._transport.PayloadRef`
and the callbacks' functions (:mod:`workerstate._transport`), and in a worker it installs and
restores its state around tasks (:mod:`workerstate._install`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

from . import _install, _transport, _warnings
from ._errors import StateTransportError
from ._install import Undo, Watching
from ._roundtrip import Note
from ._transport import Payload, PayloadRef

__all__ = ["Entry", "SideEntry", "Snapshot"]


class Entry(NamedTuple):
    """One registered callback's captured state."""

    name: str
    value: Any
    setter: Callable[[Any], Any]
    callback: Callable[[], Any]


class SideEntry(NamedTuple):
    """One active side channel's captured data."""

    name: str
    captured: Any
    restore: Callable[[Any], Any]


class _Flags(NamedTuple):
    local_workers: bool
    collect: bool
    pid: int
    per_batch: frozenset[str]


class _Loaded(NamedTuple):
    """The arguments :func:`_load_snapshot` got, while the payload is still to be fetched."""

    token: str
    ref: PayloadRef
    functions: tuple[tuple[str, Any, Any], ...]
    restores: tuple[tuple[str, Any], ...]
    flags: _Flags


class Snapshot:
    """The captured state of one ``Parallel`` call.

    ``entries`` holds an :class:`Entry` per registered callback, ``filters`` the parent's
    warning filters in portable form, and ``side`` a :class:`SideEntry` per active side
    channel. ``collect`` says whether the caller merges what tasks send back, and ``pid`` is
    the capturing process, so a task can tell whether it runs elsewhere.
    """

    __slots__ = (
        "__weakref__",
        "_data",
        "_live_filters",
        "_lock",
        "_pending",
        "_ref",
        "calls",
        "collect",
        "entries",
        "filters",
        "local_workers",
        "notes",
        "per_batch",
        "pid",
        "remote",
        "side",
        "stdlib_pickle",
        "token",
    )

    def __init__(
        self,
        entries: tuple[Entry, ...],
        filters: _warnings.FilterState,
        *,
        token: str | None = None,
        local_workers: bool = False,
        stdlib_pickle: bool = False,
        side: tuple[SideEntry, ...] = (),
        collect: bool = False,
        pid: int | None = None,
        remote: Any = None,
        per_batch: frozenset[str] = frozenset(),
    ) -> None:
        self.entries = entries
        # Names of the entries registered with check="batch" (read once per batch).
        self.per_batch = per_batch
        # A dask distributed client when the workers are a dask cluster's: large payloads are
        # published on its scheduler once, instead of travelling in every batch.
        self.remote = remote
        self.side = side
        self.collect = collect
        self.pid = os.getpid() if pid is None else pid
        self.filters = filters
        self.token = token or uuid.uuid4().hex
        self.local_workers = local_workers
        self.stdlib_pickle = stdlib_pickle
        self._lock = threading.Lock()
        self._ref: PayloadRef | None = None
        self._data: bytes | None = None
        self._live_filters: list[tuple[Any, ...]] | None = None
        self._pending: _Loaded | None = None
        # In a worker: word for the parent about state that stays behind, sent back with
        # the next result of a collecting call (see workerstate._install).
        self.notes: list[Note] = []
        # The last (func, weak reference to its StatefulCall) made for this snapshot; see
        # workerstate._task.bind.
        self.calls: tuple[Any, Any] = (None, None)

    def __repr__(self) -> str:
        names = ", ".join(entry.name for entry in self.entries)
        return f"<Snapshot {self.token[:8]} [{names}] +{len(self.filters)} warning filters>"

    # -- the parent side ---------------------------------------------------------------------
    def payload(self) -> bytes:
        """The values and filters pickled, once per snapshot."""
        data = self._data
        if data is None:
            data = self._data = _transport.dumps_payload(self.entries, self.side, self.filters)
        return data

    def payload_ref(self) -> PayloadRef:
        """What a batch carries instead of the values (see :func:`_transport.place_payload`).

        Raises :class:`~workerstate.parallel.StatePicklingError` naming the callback and the
        failing part when a value, setter or callback cannot be pickled.
        """
        ref = self._ref
        if ref is not None and _transport.is_current(ref):
            return ref
        with self._lock:
            ref = self._ref
            if ref is None or not _transport.is_current(ref):
                # First use, or the file was retired, removed, or is a forked parent's:
                # written again (the same token, so workers that hold it need nothing).
                ref = self._ref = _transport.place_payload(
                    self,
                    self.token,
                    self.payload(),
                    local=self.local_workers,
                    remote=self.remote,
                    names=tuple(entry.name for entry in self.entries),
                )
            return ref

    def check_payload(self) -> None:
        """Before a call reuses this snapshot: have its file written again if it is gone."""
        ref = self._ref
        if ref is not None and not _transport.check_present(ref):
            with self._lock:
                self._ref = None

    def __reduce__(self) -> tuple[Any, ...]:
        if self._pending is not None:  # passing through (dask's scheduler): as received
            return _load_snapshot, tuple(self._pending)
        # Values (possibly large) go once per snapshot as bytes or a file. Setters and
        # callbacks go inside the batch, pickled by the backend's own pickler, so a function
        # from a __main__ script shares its globals with the task functions of the batch
        # (cloudpickle) or is found by name in the worker's __main__ (multiprocessing).
        stdlib = self.stdlib_pickle
        functions = tuple(
            (
                entry.name,
                _transport.for_pickler(entry.setter, stdlib),
                _transport.for_pickler(entry.callback, stdlib),
            )
            for entry in self.entries
        )
        restores = tuple(
            (entry.name, _transport.for_pickler(entry.restore, stdlib)) for entry in self.side
        )
        flags = _Flags(self.local_workers, self.collect, self.pid, self.per_batch)
        return _load_snapshot, (self.token, self.payload_ref(), functions, restores, flags)

    # -- the worker side ---------------------------------------------------------------------
    def live_filters(self) -> list[tuple[Any, ...]]:
        """The filters in the form :mod:`warnings` matches against."""
        live = self._live_filters
        if live is None:
            live = self._live_filters = _warnings.live_filters(self.filters)
        return live

    def enter(self) -> Undo:
        """Install this state on this thread (see :func:`workerstate._install.install`)."""
        pending = self._pending
        if pending is not None:
            try:
                payload = _transport.load_payload(pending.token, pending.ref)
            except FileNotFoundError as exc:
                raise _missing_file(pending) from exc
            _fill(self, payload, pending.functions, pending.restores)
            self._pending = None
        return _install.install(self)

    def watch(self, undo: Undo) -> Watching:
        """What :meth:`refresh` checks between the tasks under one :meth:`enter`."""
        return _install.watch(self, undo)

    def refresh(self, undo: Undo, watching: Watching) -> None:
        """Between two tasks under one :meth:`enter`: put back what the last task changed."""
        _install.refresh(watching)

    def exit(self, undo: Undo) -> None:
        """Restore the state that :meth:`enter` found."""
        _install.restore(self, undo)


def _load_snapshot(
    token: str,
    ref: PayloadRef,
    functions: tuple[tuple[str, Any, Any], ...],
    restores: tuple[tuple[str, Any], ...],
    flags: _Flags,
) -> Snapshot:
    """Unpickling side of :meth:`Snapshot.__reduce__`; the values are cached per process."""
    local_workers, collect, pid, per_batch = flags
    snapshot = Snapshot(
        (),
        (),
        token=token,
        local_workers=local_workers,
        collect=collect,
        pid=pid,
        per_batch=per_batch,
    )
    cached = _transport.cached_payload(token)
    if cached is None and ref.kind == "file":
        # A removed file is reported by the first task that needs it, naming the callbacks.
        with contextlib.suppress(FileNotFoundError):
            cached = _transport.load_payload(token, ref)
    if cached is None and ref.kind != "inline":
        # dask's scheduler unpickles tasks too, and only a worker can fetch the payload;
        # a removed file must fail the task, not the worker's unpickling of the batch
        # (which breaks a process pool): resolve on first use (see Snapshot.enter).
        snapshot._pending = _Loaded(token, ref, functions, restores, _Flags(*flags))
        snapshot._ref = ref
        return snapshot
    _fill(
        snapshot,
        cached if cached is not None else _transport.load_payload(token, ref),
        functions,
        restores,
    )
    return snapshot


def _missing_file(pending: _Loaded) -> StateTransportError:
    names = ", ".join(repr(name) for name, _, _ in pending.functions) or "(warning filters)"
    return StateTransportError(
        f"The state of parallel callback(s) {names} cannot be read in this worker: its "
        f"payload file {pending.ref.data} was removed while the call was running (a cleaner "
        f"of temporary files, or a full or remounted folder). The parent writes it again for "
        f"the next call; keep the folder (WORKERSTATE_TEMP_FOLDER chooses another) and run "
        f"the call again."
    )


def _fill(
    snapshot: Snapshot,
    payload: Payload,
    functions: tuple[tuple[str, Any, Any], ...],
    restores: tuple[tuple[str, Any], ...],
) -> None:
    snapshot.entries = tuple(
        Entry(name, value, setter, callback)
        for (name, setter, callback), value in zip(functions, payload.values, strict=True)
    )
    snapshot.side = tuple(
        SideEntry(name, captured, restore)
        for (name, restore), captured in zip(restores, payload.side_values, strict=True)
    )
    snapshot.filters = payload.filters
    snapshot._live_filters = payload.live_filters
