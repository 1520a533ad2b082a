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
import sys
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any, NamedTuple

from . import _warnings
from ._errors import StateRestoreWarning
from ._registry import side_channels

__all__ = ["Envelope", "Gathering", "reissue_from", "unwrap", "unwrapping"]

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
        self.warnings: list[tuple[str, type, str, int, str | None]] = []
        self.records: list[logging.LogRecord] = []

    def take(self) -> tuple[list[Any], list[Any]]:
        """What was gathered since the last take; the gatherer starts empty again."""
        taken = self.warnings, self.records
        if taken[0] or taken[1]:
            self.warnings, self.records = [], []
        return taken


# -- worker-side hooks, installed once per worker process -----------------------------------
_module_names: dict[str, str] = {}


def _module_for(filename: str) -> str | None:
    # warnings.warn knows the warning's module; showwarning only gets the file name. The
    # parent needs the module to apply filters that name one.
    name = _module_names.get(filename)
    if name is None:
        for mod_name, module in list(sys.modules.items()):
            if getattr(module, "__file__", None) == filename:
                name = mod_name
                break
        else:
            return None
        _module_names[filename] = name
    return name


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
        gathering.warnings.append((str(message), category, filename, lineno, _module_for(filename)))


class _LogRouter(logging.Handler):
    """A root handler in workers: gather records of the running task, else keep the
    worker's usual output (the last-resort stderr handler when root has no other)."""

    def emit(self, record: logging.LogRecord) -> None:
        gathering = _CURRENT.gathering
        if gathering is not None:
            gathering.records.append(_portable(record))
            return
        last_resort = logging.lastResort
        if (
            last_resort is not None
            and len(logging.root.handlers) == 1
            and record.levelno >= last_resort.level
        ):
            last_resort.handle(record)


def _portable(record: logging.LogRecord) -> logging.LogRecord:
    # As logging.handlers.QueueHandler.prepare: the message is formatted here, where its
    # arguments exist, and an exception is kept as text, so the record pickles.
    record = logging.makeLogRecord(record.__dict__)
    record.msg = record.getMessage()
    record.args = None
    if record.exc_info:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.exc_info = None
    return record


_hooks_lock = threading.Lock()
_hooks_pid: int | None = None


def _install_hooks() -> None:
    global _hooks_pid
    with _hooks_lock:
        if _hooks_pid == os.getpid():
            return
        if not isinstance(warnings.showwarning, _WarningRouter):
            _warnings.keep_showwarning(_WarningRouter(warnings.showwarning))
        if not any(isinstance(h, _LogRouter) for h in logging.root.handlers):
            # A forked worker inherits the parent's handlers; they must not print a record
            # that also goes back to the parent, or it would appear twice.
            for handler in _existing_handlers():
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


class _SkipGathered(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _CURRENT.gathering is None


class Gathering:
    """The callable a worker runs for a task of a collecting call (or with side channels)."""

    __slots__ = ("_gatherer", "func", "snapshot")

    def __init__(self, func: Callable[..., Any], snapshot: Any) -> None:
        self.func = func
        self.snapshot = snapshot
        # None until the first task: then a gatherer when this is another process than the
        # parent's and the parent merges, else False. One per batch, reused by its tasks.
        self._gatherer: _Gatherer | bool | None = None

    def _setup(self) -> _Gatherer | bool:
        snapshot = self.snapshot
        if snapshot.collect and snapshot.pid != os.getpid():
            _install_hooks()
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
def _reissue(gathered_warnings: list[Any], records: list[Any]) -> None:
    for message, category, filename, lineno, module in gathered_warnings:
        warnings.warn_explicit(
            message,
            category,
            filename,
            lineno,
            module=module,
            registry=_registry_for(filename),
        )
    for record in records:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


_registries: dict[str, dict[Any, Any]] = {}


def _registry_for(filename: str) -> dict[Any, Any]:
    # One "already shown" registry per source file, as a module's __warningregistry__ is,
    # so "default" and "module" filters show a worker's warning once, not once per task.
    return _registries.setdefault(filename, {})


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
    _reissue(result.warnings, result.records)
    for name, data in result.side:
        try:
            channel = side_channels.get(name)
        except KeyError:
            continue  # removed since the call started: nothing left to merge into
        channel.merge(data)  # type: ignore[attr-defined]
    return result.result


def reissue_from(exc: BaseException) -> None:
    """Re-issue what a failed task emitted before raising; leave the exception as it was."""
    gathered = exc.__dict__.pop(_ATTRIBUTE, None) if hasattr(exc, "__dict__") else None
    if gathered is not None:
        _reissue(*gathered)


def unwrapping(results: Iterator[Any]) -> Iterator[Any]:
    """Unwrap results lazily, as ``return_as="generator"`` hands them out."""
    try:
        for result in results:
            yield unwrap(result)
    except BaseException as exc:
        reissue_from(exc)
        raise
