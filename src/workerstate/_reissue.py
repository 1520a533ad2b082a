"""The parent's end of the way back: gathered warnings and records re-issued, in bounded memory.

What comes in is what :mod:`workerstate._roundtrip` gathered in a worker: warnings as
:class:`SentWarning` records (text, category, file name, line number, module) and log records
already formatted there. What goes out is a call of :func:`warnings.warn_explicit` per warning,
under the parent's filters, and :meth:`logging.Logger.handle` per record, on the parent's logger
of the record's name.

Nothing here grows with what workers send: the "already shown" registries that ``"default"``
and ``"module"`` filters need are kept for at most :data:`REGISTRY_FILES` source files of at
most :data:`REGISTRY_ENTRIES` entries each (a full registry is emptied, so such a warning can
show once more), and no logger is created for a record: a name the parent has no logger for
goes to the parent's logger of the nearest existing parent name (``"a.b"`` for ``"a.b.c"``), or
the root logger. Handing a record to that logger is what a new, unconfigured logger of the
record's name would do.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import warnings
from collections import OrderedDict
from typing import Any, NamedTuple

__all__ = ["REGISTRY_ENTRIES", "REGISTRY_FILES", "SentCategory", "SentWarning", "reissue"]

#: Source files whose "already shown" registry the parent keeps (the least recently used goes).
REGISTRY_FILES = 128
#: Entries one file's registry may hold before it is emptied.
REGISTRY_ENTRIES = 1000


class SentCategory(NamedTuple):
    """A warning category that may not exist in the parent, by name.

    ``name`` is the category's qualified name as the worker knew it; ``bases`` lists
    ``(module, qualname)`` of it and of every ``Warning`` class in its method resolution
    order, most derived first (empty when the category is not a ``Warning`` subclass).
    """

    name: str
    bases: tuple[tuple[str, str], ...]


class SentWarning(NamedTuple):
    """One warning a task emitted, as it travels back."""

    message: str
    category: type[Warning] | SentCategory
    filename: str
    lineno: int
    module: str


class _Registries:
    """One registry per source file, as a module's ``__warningregistry__`` is, bounded."""

    def __init__(self) -> None:
        self._by_file: OrderedDict[str, dict[Any, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def for_file(self, filename: str) -> dict[Any, Any]:
        with self._lock:
            by_file = self._by_file
            registry = by_file.get(filename)
            if registry is None:
                registry = by_file[filename] = {}
                if len(by_file) > REGISTRY_FILES:
                    by_file.popitem(last=False)
            else:
                by_file.move_to_end(filename)
                if len(registry) > REGISTRY_ENTRIES:
                    registry.clear()
            return registry

    def sizes(self) -> list[int]:
        """How many entries each kept registry holds (for tests)."""
        with self._lock:
            return [len(registry) for registry in self._by_file.values()]


registries = _Registries()

_resolved: dict[SentCategory, tuple[type[Warning], str | None]] = {}
_RESOLVED_KEPT = 256


def _find_class(module: str, qualname: str) -> Any:
    found: Any = sys.modules.get(module)
    if found is None:
        try:
            found = importlib.import_module(module)
        except Exception:  # a module only the worker has, or one that fails to import here
            return None
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found


def category_for(sent: SentCategory) -> tuple[type[Warning], str | None]:
    """The class to re-issue a warning of ``sent`` with, and the text to prefix when that
    is not the category itself (the nearest importable ``Warning`` base, else UserWarning)."""
    known = _resolved.get(sent)
    if known is not None:
        return known
    resolved: tuple[type[Warning], str | None] = (UserWarning, sent.name)
    for index, (module, qualname) in enumerate(sent.bases):
        found = _find_class(module, qualname)
        if isinstance(found, type) and issubclass(found, Warning):
            resolved = (found, None if index == 0 else sent.name)
            break
    if len(_resolved) >= _RESOLVED_KEPT:
        _resolved.clear()
    _resolved[sent] = resolved
    return resolved


def logger_for(name: str) -> tuple[logging.Logger, bool]:
    """The parent's logger named ``name`` (and True), else the one of the nearest existing
    parent name or the root logger (and False)."""
    logger_dict = logging.root.manager.loggerDict
    exact = True
    while name:
        logger = logger_dict.get(name)
        if isinstance(logger, logging.Logger):
            return logger, exact
        name, exact = name.rpartition(".")[0], False
    return logging.root, exact


def _hand_over(record: logging.LogRecord) -> None:
    logger, exact = logger_for(record.name)
    if exact:
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)
        return
    # What a new logger of that name would do: the level it would inherit, no filters of its
    # own, not disabled, then the handlers of its parents.
    levelno = record.levelno
    if logging.root.manager.disable < levelno and logger.getEffectiveLevel() <= levelno:
        logger.callHandlers(record)


def reissue(sent_warnings: list[SentWarning], records: list[logging.LogRecord]) -> None:
    """Re-issue warnings under the parent's filters; hand records to the parent's loggers."""
    for message, category, filename, lineno, module in sent_warnings:
        if type(category) is SentCategory:
            category, prefix = category_for(category)
            if prefix is not None:
                message = f"{prefix}: {message}"
        warnings.warn_explicit(
            message,
            category,  # type: ignore[arg-type]
            filename,
            lineno,
            module=module,
            registry=registries.for_file(filename),
        )
    for record in records:
        _hand_over(record)
