"""Capture: read every registered callback in the parent, once per call, into a snapshot.

In: the registry (and, inside a running task, the task's own snapshot, so nested calls
forward the state), the active side channels and the warning filters of this thread. Out: a
:class:`~workerstate._snapshot.Snapshot`, or the previous one of this thread when a worker
would see exactly the same state (so workers that hold it skip unpickling it again).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from . import _joblib, _transport, _warnings
from ._compare import same_function, strictly_equal
from ._errors import CallbackError
from ._install import active_snapshot
from ._registry import (
    BUSY,
    CallbackRegistry,
    check_pair,
    default_registry,
    running_callbacks,
    side_channels,
)
from ._snapshot import Entry, SideEntry, Snapshot

__all__ = ["capture"]


class _Slots(dict):  # type: ignore[type-arg]
    """One thread's last snapshot per mode (a dict that a weak set can hold, by identity)."""

    __hash__ = object.__hash__  # type: ignore[assignment]
    __eq__ = object.__eq__


#: Every live thread's slots: their snapshots are the ones the next call may reuse.
_ALL_SLOTS: weakref.WeakSet[_Slots] = weakref.WeakSet()


class _LastCapture(threading.local):
    def __init__(self) -> None:
        self.by_mode: dict[tuple[bool, bool, bool, int], Snapshot] = _Slots()
        _ALL_SLOTS.add(self.by_mode)


_LAST = _LastCapture()


def _retirable(owners: list[Any]) -> set[int]:
    """Of the snapshots that own payload files, those no call can need any more.

    A snapshot stays while a thread may reuse it for its next call, or while a call that
    was given it runs. The ones judged here are those kept only by the record on a
    ``joblib.Parallel`` whose call has ended (that object and its backend form a reference
    cycle, which only the cyclic garbage collector frees); any other holder (a running
    ``workerstate.parallel.Parallel`` call, tasks built up front) keeps its snapshot alive
    until it lets go, and the file goes with the snapshot.
    """
    keep: set[int] = set()
    for slots in list(_ALL_SLOTS):
        keep.update(id(snapshot) for snapshot in list(slots.values()))
    recorded: set[int] = set()
    for record in _joblib.live_records():
        recorded.update(id(snapshot) for snapshot in record.snapshots())
        keep.update(id(snapshot) for snapshot in record.running_snapshots())
    return {id(owner) for owner in owners if id(owner) in recorded and id(owner) not in keep}


_transport.set_retirement(_retirable)


def capture(
    registry: CallbackRegistry | None = None,
    *,
    local_workers: bool = False,
    stdlib_pickle: bool = False,
    collect: bool = False,
    remote: Any = None,
) -> Snapshot:
    """Call every registered callback on this thread and return the snapshot of their state.

    Inside a running task (a nested ``Parallel``), the callbacks of the task's own snapshot
    are captured too, so state registered only in the top-level parent reaches nested
    workers.

    Returns the previous snapshot of this thread when nothing changed, so workers that hold
    it skip unpickling and setting it.
    """
    if BUSY.depth:
        raise CallbackError(
            "A Parallel call was started from inside a parallel callback, setter or side "
            "channel while workerstate was capturing or installing state; that would capture "
            "again without end. Start parallel work from the task, not from a callback."
        )
    with running_callbacks():
        return _capture(registry, local_workers, stdlib_pickle, collect, remote)


def _capture(
    registry: CallbackRegistry | None,
    local_workers: bool,
    stdlib_pickle: bool,
    collect: bool,
    remote: Any,
) -> Snapshot:
    registry = registry or default_registry
    items = registry.items()
    per_batch = registry.per_batch()
    outer = active_snapshot()
    if outer is not None:
        present = {name for name, _ in items}
        inherited = tuple((e.name, e.callback) for e in outer.entries if e.name not in present)
        items = items + inherited
        per_batch = per_batch | (outer.per_batch & {name for name, _ in inherited})
    entries: list[Entry] = []
    for name, callback in items:
        try:
            result = callback()
        except Exception as exc:
            raise CallbackError(
                f"Parallel callback {name!r} raised {type(exc).__name__}: {exc} while its state "
                f"was captured in the parent; no task was sent. Fix the callback or remove it "
                f"with remove_global_parallel_callback({name!r})."
            ) from exc
        value, setter = check_pair(name, result)
        entries.append(Entry(name, value, setter, callback))
    side = _capture_side_channels()
    filters = _warnings.capture_filters()
    mode = (local_workers, stdlib_pickle, collect, id(remote))
    previous = _LAST.by_mode.get(mode)
    unchanged = (
        _unchanged(previous.entries, entries)
        if previous is not None
        and previous.filters is filters
        and previous.remote is remote
        and previous.per_batch == per_batch
        and not side
        else False
    )
    if unchanged is True:
        previous.check_payload()  # type: ignore[union-attr]
        return previous  # type: ignore[return-value]
    snapshot = Snapshot(
        tuple(entries),
        filters,
        local_workers=local_workers,
        stdlib_pickle=stdlib_pickle,
        side=side,
        collect=collect,
        remote=remote,
        per_batch=per_batch & {entry.name for entry in entries},
    )
    if unchanged is None and previous is not None and previous._data is not None:
        # A callback returned the very object it returned last time; it may have been
        # changed in place, so only its pickle can tell. Reusing the previous snapshot when
        # the pickles match spares the workers a reload.
        data = snapshot.payload()
        if data == previous._data:
            previous.check_payload()
            return previous
    _LAST.by_mode[mode] = snapshot
    return snapshot


def _capture_side_channels() -> tuple[SideEntry, ...]:
    side = []
    for name, channel in side_channels.items():
        try:
            captured = channel()
        except Exception as exc:
            raise CallbackError(
                f"The capture of parallel side channel {name!r} raised {type(exc).__name__}: "
                f"{exc} in the parent; no task was sent. Fix it or remove it with "
                f"remove_parallel_side_channel({name!r})."
            ) from exc
        if captured is not None:  # None switches the channel off for this call
            side.append(SideEntry(name, captured, channel.restore))  # type: ignore[attr-defined]
    return tuple(side)


def _unchanged(old: tuple[Entry, ...], new: list[Entry]) -> bool | None:
    """True if a worker would see the same state, False if not, None if only a pickle can tell."""
    if len(old) != len(new):
        return False
    verdict: bool | None = True
    for (o_name, o_value, o_setter, o_cb), (n_name, n_value, n_setter, n_cb) in zip(
        old, new, strict=True
    ):
        if o_name != n_name or o_cb is not n_cb or not same_function(o_setter, n_setter):
            return False
        same = strictly_equal(o_value, n_value)
        if same is False:
            return False
        if same is None:
            verdict = None
    return verdict
