"""The way back: warnings, log records and side-channel data from workers to the parent.

In a worker process, a task of a call made with :class:`workerstate.parallel.Parallel` runs
while warnings that pass the parent's filters and log records that pass the worker's levels
are gathered instead of printed there; its side channels run around it. What was gathered
travels back with the result (an :class:`Envelope`, only when there is something to carry)
or, when the task raises, on the exception itself. The parent re-issues the warnings under
its own filters, hands the records to its own loggers and merges the side-channel data, as
the results are consumed.

Threads of the parent process gather nothing: their warnings and records reach the parent's
machinery directly, and gathering them too would duplicate them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any, NamedTuple

from . import _warnings
from ._errors import StateRestoreWarning
from ._portable import module_for, portable_record, sendable_category
from ._registry import side_channels
from ._reissue import SentWarning, reissue

__all__ = [
    "Envelope",
    "Gathering",
    "carries_gathered",
    "reissue_from",
    "unwrap",
    "unwrap_all",
    "unwrapping",
    "unwrapping_batch",
]

_ATTRIBUTE = "_workerstate_gathered"


class Envelope:
    """A task's result with what it sent back."""

    __slots__ = ("notes", "records", "result", "side", "warnings")

    def __init__(
        self,
        result: Any,
        warnings: list[Any],
        records: list[Any],
        side: list[Any],
        notes: tuple[Note, ...] = (),
    ) -> None:
        self.result = result
        self.warnings = warnings
        self.records = records
        self.side = side
        self.notes = notes

    def __reduce__(self) -> tuple[Any, ...]:
        return Envelope, (self.result, self.warnings, self.records, self.side, self.notes)


class Note(NamedTuple):
    """workerstate's own word to the parent about a call: its snapshot, callback, message."""

    token: str
    name: str
    message: str


class _Current(threading.local):
    gathering: _Gatherer | None = None


_CURRENT = _Current()


class _Gatherer:
    __slots__ = ("records", "warnings")

    def __init__(self) -> None:
        self.warnings: list[SentWarning] = []
        self.records: list[logging.LogRecord] = []

    def take(self) -> tuple[list[Any], list[Any]]:
        """What was gathered since the last take; the gatherer starts empty again."""
        taken = self.warnings, self.records
        if taken[0] or taken[1]:
            self.warnings, self.records = [], []
        return taken


# -- worker-side hooks, installed once per worker process -----------------------------------
class _WarningRouter:
    """``warnings.showwarning`` in workers: gather for the running task, else show as before."""

    def __init__(self, previous: Callable[..., Any]) -> None:
        self.previous = previous

    def __call__(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        gathering = _CURRENT.gathering
        if gathering is None:
            self.previous(message, category, filename, lineno, file, line)
            return
        # Anything may call showwarning: what travels is text, a category by name and a
        # line number the parent's warn_explicit accepts.
        filename = filename if type(filename) is str else str(filename)
        if type(lineno) is not int:
            try:
                lineno = int(lineno)
            except (TypeError, ValueError):
                lineno = 0
        gathering.warnings.append(
            SentWarning(
                str(message),
                sendable_category(category),
                filename,
                lineno,
                module_for(filename),
            )
        )


class _LogRouter(logging.Handler):
    """A root handler in workers: gather records of the running task, else keep the
    worker's usual output (the last-resort stderr handler when root has no other)."""

    def emit(self, record: logging.LogRecord) -> None:
        gathering = _CURRENT.gathering
        if gathering is not None:
            gathering.records.append(portable_record(record, self.handleError))
            return
        last_resort = logging.lastResort
        if (
            last_resort is not None
            and len(logging.root.handlers) == 1
            and record.levelno >= last_resort.level
        ):
            last_resort.handle(record)


_hooks_lock = threading.Lock()
_hooks_pid: int | None = None
# Set in a child made by os.fork: the pid it was forked from and the handlers it inherited.
_forked_from: int | None = None
_inherited: weakref.WeakSet[logging.Handler] = weakref.WeakSet()


def _before_fork() -> None:
    global _fork_parent
    _fork_parent = os.getpid()


def _after_fork_in_child() -> None:
    global _forked_from, _inherited
    _forked_from = _fork_parent
    _inherited = weakref.WeakSet(_existing_handlers())


_fork_parent: int | None = None
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def _install_hooks(parent_pid: int) -> None:
    global _hooks_pid
    if isinstance(warnings.showwarning, _WarningRouter) and _hooks_pid == os.getpid():
        return
    with _hooks_lock:
        if not isinstance(warnings.showwarning, _WarningRouter):
            # Checked for every batch: something may have put back an earlier showwarning.
            _warnings.keep_showwarning(_WarningRouter(warnings.showwarning))
        if _hooks_pid == os.getpid():
            return
        if not any(isinstance(h, _LogRouter) for h in logging.root.handlers):
            if _forked_from == parent_pid:
                # Handlers a forked worker inherited are the parent's own: they must not
                # print a record that also goes back to the parent, or it would appear
                # twice. Handlers the worker's code makes are left alone.
                for handler in list(_inherited):
                    if not any(isinstance(f, _SkipGathered) for f in handler.filters):
                        handler.addFilter(_SkipGathered())
            logging.root.addHandler(_LogRouter())
        _hooks_pid = os.getpid()


def _existing_handlers() -> list[logging.Handler]:
    handlers = list(logging.root.handlers)
    for logger in list(logging.root.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            handlers.extend(logger.handlers)
    return handlers


def _reaches_root(name: str) -> bool:
    logger: logging.Logger | None = logging.getLogger(name) if name else logging.root
    while logger is not None and logger is not logging.root:
        if not logger.propagate:
            return False
        logger = logger.parent
    return True


class _SkipGathered(logging.Filter):
    """Drops, on an inherited handler, a record that also goes back to the parent."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _CURRENT.gathering is None or not _reaches_root(record.name)


class Gathering:
    """The callable a worker runs for a task of a collecting call (or with side channels)."""

    __slots__ = ("_gatherer", "_outer", "func", "snapshot")

    def __init__(self, func: Callable[..., Any], snapshot: Any) -> None:
        self.func = func
        self.snapshot = snapshot
        # None until the first task: then a gatherer when this is another process than the
        # parent's and the parent merges, else False. One per batch, reused by its tasks.
        self._gatherer: _Gatherer | bool | None = None
        self._outer: _Gatherer | None = None

    # -- a whole batch on one thread ---------------------------------------------------------
    def begin_batch(self) -> _Gatherer | None:
        """Gather on this thread for every task of a batch, until :meth:`end_batch`.

        For a batch that a worker runs on its main thread, one task after the other: the
        caller then runs ``func`` itself, passes its exception to :meth:`attach` and its
        result to :meth:`envelope` when the gatherer or the notes hold anything, which
        spares each task the set-up. None when each task must gather for itself (side
        channels) or nothing is gathered here; the caller then calls this object per task.
        """
        if self.snapshot.side:
            return None
        gatherer = self._gatherer
        if gatherer is None:
            gatherer = self._setup()
        if gatherer is False:
            return None
        self._outer = _CURRENT.gathering
        _CURRENT.gathering = gatherer  # type: ignore[assignment]
        return gatherer  # type: ignore[return-value]

    def end_batch(self) -> None:
        """Stop gathering for the batch that :meth:`begin_batch` started."""
        _CURRENT.gathering, self._outer = self._outer, None

    def attach(self, exc: BaseException) -> None:
        """Put what the failing task emitted on its exception."""
        _attach(exc, self._gatherer if isinstance(self._gatherer, _Gatherer) else None)

    def envelope(self, result: Any) -> Any:
        """``result`` with what the task emitted and the pending notes."""
        notes = self._take_notes()
        gathered_warnings, records = self._gatherer.take()  # type: ignore[union-attr]
        return Envelope(result, gathered_warnings, records, [], notes)

    def _setup(self) -> _Gatherer | bool:
        snapshot = self.snapshot
        if snapshot.collect and snapshot.pid != os.getpid():
            _install_hooks(snapshot.pid)
            self._gatherer = _Gatherer()
        else:
            self._gatherer = False
        return self._gatherer

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        gatherer = self._gatherer
        if gatherer is None:
            gatherer = self._setup()
        if self.snapshot.side:
            return self._with_side_channels(
                args, kwargs, gatherer if isinstance(gatherer, _Gatherer) else None
            )
        if gatherer is False:
            return self.func(*args, **kwargs)
        notes = self._take_notes()
        current = _CURRENT
        outer = current.gathering
        current.gathering = gatherer  # type: ignore[assignment]
        try:
            result = self.func(*args, **kwargs)
        except BaseException as exc:
            _attach(exc, gatherer)  # type: ignore[arg-type]
            raise
        finally:
            current.gathering = outer
        if gatherer.warnings or gatherer.records or notes:  # type: ignore[union-attr]
            gathered_warnings, records = gatherer.take()  # type: ignore[union-attr]
            return Envelope(result, gathered_warnings, records, [], notes)
        return result

    def _take_notes(self) -> tuple[Note, ...]:
        # Written while the state was installed for this task, before it ran.
        pending = self.snapshot.notes
        if not pending:
            return ()
        notes = tuple(pending)
        pending.clear()
        return notes

    def _with_side_channels(self, args: Any, kwargs: Any, gatherer: _Gatherer | None) -> Any:
        notes = self._take_notes() if gatherer is not None else ()
        current = _CURRENT
        outer = current.gathering
        current.gathering = gatherer
        try:
            with ExitStack() as stack:
                # Side channels are entered for every task; their data is collected only
                # when the caller merges it (tpcp does the same).
                collectors = [
                    (name, stack.enter_context(restore(captured)))
                    for name, captured, restore in self.snapshot.side
                ]
                try:
                    result = self.func(*args, **kwargs)
                except BaseException as exc:
                    _attach(exc, gatherer)
                    raise
                side = (
                    [(name, collect()) for name, collect in collectors]
                    if self.snapshot.collect
                    else []
                )
        finally:
            current.gathering = outer
        gathered_warnings, records = gatherer.take() if gatherer is not None else ([], [])
        if gathered_warnings or records or side or notes:
            return Envelope(result, gathered_warnings, records, side, notes)
        return result


def _attach(exc: BaseException, gatherer: _Gatherer | None) -> None:
    # The exception goes back unchanged; what the task emitted before raising rides on it
    # and is taken off again in the parent.
    if gatherer is None or not (gatherer.warnings or gatherer.records):
        return
    gathered = gatherer.take()
    # An exception type without __dict__ cannot carry them; its warnings are lost.
    with contextlib.suppress(AttributeError, TypeError):
        setattr(exc, _ATTRIBUTE, gathered)


# -- the parent side -----------------------------------------------------------------------------
_noted: OrderedDict[tuple[str, str], None] = OrderedDict()
_NOTED_KEPT = 1024


def _report(notes: tuple[Note, ...]) -> None:
    # Every worker of a call may send the same note: the parent warns once per call.
    for note in notes:
        key = (note.token, note.name)
        if key in _noted:
            continue
        _noted[key] = None
        if len(_noted) > _NOTED_KEPT:
            _noted.popitem(last=False)
        warnings.warn(note.message, StateRestoreWarning, stacklevel=4)


def unwrap(result: Any) -> Any:
    """The task's own result; re-issue and merge what came back with it."""
    if type(result) is not Envelope:
        return result
    if result.notes:
        _report(result.notes)
    reissue(result.warnings, result.records)
    for name, data in result.side:
        try:
            channel = side_channels.get(name)
        except KeyError:
            continue  # removed since the call started: nothing left to merge into
        channel.merge(data)  # type: ignore[attr-defined]
    return result.result


def carries_gathered(exc: BaseException) -> bool:
    """Whether ``exc`` carries warnings or records its task emitted before raising."""
    return _ATTRIBUTE in getattr(exc, "__dict__", ())


def reissue_from(exc: BaseException) -> None:
    """Re-issue what a failed task emitted before raising; leave the exception as it was."""
    gathered = exc.__dict__.pop(_ATTRIBUTE, None) if hasattr(exc, "__dict__") else None
    if gathered is not None:
        reissue(*gathered)


def unwrapping(results: Iterator[Any]) -> Iterator[Any]:
    """Unwrap results lazily, as ``return_as="generator"`` hands them out."""
    try:
        for result in results:
            yield unwrap(result)
    except BaseException as exc:
        reissue_from(exc)
        raise


class _UnwrappingBatch(list):  # type: ignore[type-arg]
    """A batch's results that unwrap as joblib hands them out, on the consuming thread."""

    __slots__ = ()

    def __iter__(self) -> Iterator[Any]:
        for result in list.__iter__(self):
            yield unwrap(result)


def unwrapping_batch(results: Any) -> Any:
    """``results`` (a batch's list of results), unwrapped when iterated, if anything came back.

    A backend's result retrieval may run on joblib's callback threads; re-issuing there would
    miss the caller's ``catch_warnings`` (per thread on Python 3.14 with context-aware
    warnings) and turn a parent's ``error`` filter into a failure of the wrong task. joblib
    iterates the batch on the thread that consumes the call's results, where this unwraps.
    """
    # The types looked at in C: this runs for every task of every call.
    if type(results) is list and Envelope in set(map(type, results)):
        return _UnwrappingBatch(results)
    return results


def unwrap_all(results: list[Any]) -> list[Any]:
    """:func:`unwrap` of each of ``results``: the list itself when nothing came back."""
    if Envelope in set(map(type, results)):
        return [unwrap(result) for result in results]
    return results
