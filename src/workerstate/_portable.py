"""What a worker sends back, in forms that travel: a warning's module and category, log records.

A task may emit anything: a warning whose category the parent cannot import or that is no
``Warning`` at all, a record whose message cannot be formatted or whose ``extra=`` values cannot
be pickled. What goes out of here is text, names and plain values that pickle, so the round
trip never makes a task fail.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import sys
from collections.abc import Callable
from typing import Any

from ._joblib import caller_module_in
from ._reissue import SentCategory

__all__ = ["module_for", "portable_record", "sendable_category"]

_module_names: dict[str, str | None] = {}  # file name -> module, None: no module's file
_MODULE_NAMES_KEPT = 1024


def module_for(filename: str) -> str:
    # warnings.warn knows the warning's module; showwarning only gets the file name. The
    # parent needs the module to apply filters that name one, and drops a warning whose
    # module is None.
    try:
        name = _module_names[filename]
    except KeyError:
        name = None
        for mod_name, module in list(sys.modules.items()):
            if getattr(module, "__file__", None) == filename:
                name = mod_name
                break
        if len(_module_names) < _MODULE_NAMES_KEPT:
            _module_names[filename] = name
    if name is not None:
        return name
    # Not a module's file: a function cloudpickle rebuilt by value (from ``__main__`` or a
    # notebook; all such functions share one file name). The globals of its frame name the
    # module, as warnings.warn found it.
    found = caller_module_in(filename)
    if isinstance(found, str):
        return found
    # What warnings.warn_explicit derives from a file name.
    return filename[:-3] if filename.lower().endswith(".py") else filename or "<unknown>"


_sent_categories: dict[Any, type[Warning] | SentCategory] = {}


def sendable_category(category: Any) -> type[Warning] | SentCategory:
    # A builtin warning class pickles by name; any other travels by name, so a class the
    # parent cannot import (or one that is not a Warning at all) cannot break the result.
    try:
        known = _sent_categories.get(category)
    except TypeError:  # unhashable
        known = None
    if known is not None:
        return known
    sent: type[Warning] | SentCategory
    if isinstance(category, type) and issubclass(category, Warning):
        if category.__module__ == "builtins":
            sent = category
        else:
            sent = SentCategory(
                _qualified(category),
                tuple(
                    (klass.__module__, klass.__qualname__)
                    for klass in category.__mro__
                    if issubclass(klass, Warning)
                ),
            )
    else:
        sent = SentCategory(_qualified(category), ())
    with contextlib.suppress(TypeError):
        if len(_sent_categories) < _MODULE_NAMES_KEPT:
            _sent_categories[category] = sent
    return sent


def _qualified(category: Any) -> str:
    if isinstance(category, type):
        module = getattr(category, "__module__", None)
        return (
            category.__qualname__
            if module in (None, "builtins")
            else (f"{module}.{category.__qualname__}")
        )
    return repr(category)


def portable_record(
    record: logging.LogRecord, report_error: Callable[[logging.LogRecord], None]
) -> logging.LogRecord:
    """A copy of ``record`` that pickles: its message formatted, its exception as text, and
    only the values passed with ``extra=`` that pickle on their own."""
    # As logging.handlers.QueueHandler.prepare: the message is formatted here, where its
    # arguments exist, and an exception is kept as text, so the record pickles.
    attrs = dict(record.__dict__)
    try:
        attrs["msg"] = record.getMessage()
    except Exception:
        # logging's own report of a record that cannot be formatted, in the worker, as
        # any handler would make it; the record still travels, with its text unformatted.
        report_error(record)
        attrs["msg"] = _text(record.msg)
    attrs["args"] = None
    if record.exc_info:
        attrs["exc_text"] = _exception_text(record)
        attrs["exc_info"] = None
    for key in attrs.keys() - _RECORD_ATTRIBUTES:
        # What a caller put in with extra=: kept only when it pickles on its own.
        try:
            pickle.dumps(attrs[key])
        except Exception:
            del attrs[key]
    return logging.makeLogRecord(attrs)


_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _text(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return object.__repr__(value)


def _exception_text(record: logging.LogRecord) -> str | None:
    if record.exc_text:
        return record.exc_text
    try:
        return logging.Formatter().formatException(record.exc_info)  # type: ignore[arg-type]
    except Exception:
        return None
