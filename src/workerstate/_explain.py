"""Pickling explanations: which part of an object cannot go to a worker process, and why.

In: any object (a value, a function, a task) or the pickling error of a ``Parallel`` call.
Out: a :class:`PicklingReport` naming the failing part, the known trap and the fix, or a
:class:`~workerstate.parallel.TaskPicklingError` for the call. The public names are in
:mod:`workerstate.diagnose`.
"""

from __future__ import annotations

import pickle
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ._dumps import Fragile, cloud_dumps, loky_dumps, std_dumps, strict_dumps
from ._errors import (
    TaskPicklingAttributeError,
    TaskPicklingError,
    TaskPicklingTypeError,
    WorkerStateError,
)
from ._pickling import classify, find_unpicklable, find_unpicklable_parts, type_name
from ._text import error_text, short
from ._traps import GENERIC_ADVICE, TRAPS

__all__ = [
    "PicklingReport",
    "TaskPicklingAttributeError",
    "TaskPicklingTypeError",
    "UnpicklablePart",
    "explain_pickling",
    "explain_pickling_error",
]

#: How many failing parts of one object a report names.
_PARTS_SHOWN = 3

Pickler = Literal["auto", "loky", "cloudpickle", "pickle"]

_WIDTH = 92


# -- the report ------------------------------------------------------------------------------
@dataclass(frozen=True)
class UnpicklablePart:
    """One more part of an object that fails to pickle, besides the one a report is about.

    Attributes
    ----------
    path : str
        Where it is, e.g. ``state['log']``.
    type_name : str
        Its type.
    trap : str or None
        Which known trap it is, a key of :data:`TRAPS`.
    error : str
        The pickling error.
    """

    path: str
    type_name: str
    trap: str | None
    error: str

    def __str__(self) -> str:
        what = TRAPS[self.trap][0] if self.trap is not None else self.error
        return f"{self.path} ({self.type_name}): {what}"


@dataclass(frozen=True)
class PicklingReport:
    """What :func:`explain_pickling` found out about one object.

    Attributes
    ----------
    name : str
        The name the paths start with.
    picklable : bool
        Whether cloudpickle can pickle it, as the loky and dask backends and workerstate's
        snapshots do.
    stdlib_picklable : bool
        Whether the standard ``pickle`` can, as the multiprocessing backend does.
    by_value : bool
        It pickles, but only because cloudpickle sends (part of) it by value: a lambda, a
        nested function, a class defined in a function or in ``__main__``.
    path : str or None
        The part the report is about: the first part that fails to pickle, or that pickles
        only by value or in a fragile way. ``None`` when there is nothing to report.
    type_name : str or None
        The type of that part.
    trap : str or None
        Which known trap it is, a key of :data:`TRAPS` (``"lock"``, ``"lambda"``, ...).
    advice : str or None
        What to do about it.
    error : str or None
        The pickling error, e.g. ``"TypeError: cannot pickle '_thread.lock' object"``.
    size : int or None
        The size of the cloudpickle pickle in bytes, when it pickles.
    others : tuple of UnpicklablePart
        The other parts that fail to pickle as well, up to two, in the order a pickler
        meets them.
    """

    name: str
    picklable: bool
    stdlib_picklable: bool
    by_value: bool = False
    path: str | None = None
    type_name: str | None = None
    trap: str | None = None
    advice: str | None = None
    error: str | None = None
    size: int | None = None
    others: tuple[UnpicklablePart, ...] = ()

    @property
    def fragile(self) -> bool:
        """It pickles, but one of the known traps applies (see :attr:`trap`)."""
        return self.picklable and self.trap is not None

    def summary(self) -> str:
        """The first line of the report."""
        name = self.name
        if not self.picklable:
            return f"{name} cannot be pickled, so it cannot be sent to worker processes."
        if self.trap is None and self.stdlib_picklable:
            size = f" ({self.size} bytes)" if self.size is not None else ""
            return f"{name} pickles{size}: every process backend can send it."
        if not self.stdlib_picklable:
            return (
                f"{name} pickles only with cloudpickle: the loky and dask backends can send "
                f"it, the multiprocessing backend cannot."
            )
        if self.trap == "main_module":
            return (
                f"{name} pickles, but part of it exists only in __main__, so cloudpickle "
                f"sends a copy of it by value."
            )
        return f"{name} pickles, but a worker may not get the same object."

    def __str__(self) -> str:
        lines = [self.summary()]
        if self.path is None:
            return lines[0]
        rows = [("part", f"{self.path} ({self.type_name})")]
        if self.error is not None:
            rows.append(("error", self.error))
        if self.trap is not None:
            rows.append(("trap", TRAPS[self.trap][0]))
        if self.advice is not None:
            rows.append(("fix", self.advice))
        rows.extend(("also", str(other)) for other in self.others)
        for label, text in rows:
            lines.append(
                textwrap.fill(
                    text,
                    width=_WIDTH,
                    initial_indent=f"  {label + ':':7}",
                    subsequent_indent=" " * 9,
                    break_on_hyphens=False,
                    break_long_words=False,
                )
            )
        return "\n".join(lines)


def _advice(trap: str | None) -> str:
    return GENERIC_ADVICE if trap is None else TRAPS[trap][1]


def _other(found: tuple[str, Any, BaseException]) -> UnpicklablePart:
    path, part, error = found
    trap = classify(part, error)
    return UnpicklablePart(path, type_name(part), trap, error_text(error))


def _report(
    name: str,
    found: tuple[str, Any, BaseException],
    *,
    picklable: bool,
    stdlib_picklable: bool,
    by_value: bool,
    trap: str | None = None,
    size: int | None = None,
    others: Sequence[tuple[str, Any, BaseException]] = (),
) -> PicklingReport:
    path, part, error = found
    if trap is None:
        trap = classify(part, error)
    return PicklingReport(
        name=name,
        picklable=picklable,
        stdlib_picklable=stdlib_picklable,
        by_value=by_value,
        path=path,
        type_name=type_name(part),
        trap=trap,
        advice=_advice(trap),
        error=None if isinstance(error, Fragile) else error_text(error),
        size=size,
        others=tuple(_other(item) for item in others),
    )


def _try(dumps: Callable[[Any], int], obj: Any) -> tuple[int | None, BaseException | None]:
    try:
        return dumps(obj), None
    except Exception as exc:
        return None, exc


def explain_pickling(obj: Any, name: str = "obj") -> PicklingReport:
    """Pickle ``obj`` the way the process backends do, and say what fails and why.

    ``obj`` is pickled with the standard ``pickle`` (the multiprocessing backend) and with
    cloudpickle (loky, dask, and workerstate's state values). When it fails, the report gives
    the path to the first part that fails (such as ``task.args[0].model._lock``), its type,
    which known trap it is and the fix. When it pickles only by value (a lambda, a class
    defined in a function) or only in a fragile way (a function from ``__main__``, a wrapper
    monkey-patched over a module attribute), the report says so; otherwise it is clean.

    Parameters
    ----------
    obj : object
        What would be sent to a worker.
    name : str
        How to call ``obj`` in the paths and the text.

    Returns
    -------
    PicklingReport
        Print it for a readable account, or read its fields.

    Examples
    --------
    >>> import threading
    >>> class Model:
    ...     def __init__(self):
    ...         self._lock = threading.Lock()
    >>> report = explain_pickling({"model": Model()}, name="state")
    >>> print(report)  # doctest: +NORMALIZE_WHITESPACE
    state cannot be pickled, so it cannot be sent to worker processes.
      part:  state['model']._lock (_thread.lock)
      error: TypeError: cannot pickle '_thread.lock' object
      trap:  a lock or other synchronisation object
      fix:   Locks and other synchronisation objects belong to one process; create a new one
             in the setter (or in the task) instead of sending it.
    >>> report = explain_pickling(lambda x: x + 1, name="func")
    >>> report.picklable, report.stdlib_picklable, report.by_value, report.trap
    (True, False, True, 'lambda')
    >>> print(explain_pickling([1, 2.5, "three"]))  # doctest: +ELLIPSIS
    obj pickles (... bytes): every process backend can send it.
    """
    size, cloud_error = _try(cloud_dumps, obj)
    _, std_error = _try(std_dumps, obj)
    if cloud_error is not None:
        parts = find_unpicklable_parts(obj, cloud_dumps, root=name, limit=_PARTS_SHOWN)
        return _report(
            name,
            parts[0] if parts else (name, obj, cloud_error),
            picklable=False,
            stdlib_picklable=std_error is None,
            by_value=False,
            others=parts[1:],
        )
    if std_error is not None:
        parts = find_unpicklable_parts(
            obj, std_dumps, root=name, by_value=False, limit=_PARTS_SHOWN
        )
        return _report(
            name,
            parts[0] if parts else (name, obj, std_error),
            picklable=True,
            stdlib_picklable=False,
            by_value=True,
            size=size,
            others=parts[1:],
        )
    _, strict_error = _try(strict_dumps, obj)
    if isinstance(strict_error, Fragile):
        found = find_unpicklable(obj, strict_dumps, root=name, by_value=False)
        if found is not None and isinstance(found[2], Fragile):
            trap = found[2].trap
            return _report(
                name,
                found,
                picklable=True,
                stdlib_picklable=True,
                by_value=trap == "main_module",
                trap=trap,
                size=size,
            )
    return PicklingReport(name=name, picklable=True, stdlib_picklable=True, size=size)


# -- errors of Parallel calls ----------------------------------------------------------------
def _chain(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 8:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


# How the standard pickle and cloudpickle word a failure when the error is not a
# PicklingError: "cannot pickle '_thread.lock' object" (TypeError), "Can't pickle local
# object" (AttributeError up to Python 3.12) and "Can't get local object" (AttributeError on
# Python 3.13; 3.14 raises PicklingError instead).
_PICKLING_WORDS = ("pickl", "can't get local object")


def _is_pickling_error(exc: BaseException) -> bool:
    return any(
        isinstance(error, pickle.PicklingError)
        or any(word in str(error).lower() for word in _PICKLING_WORDS)
        for error in _chain(exc)
    )


def _from_loky(exc: BaseException) -> bool:
    return "Could not pickle the task" in str(exc) or type(exc.__cause__).__name__ == (
        "_RemoteTraceback"
    )


def _task_parts(task: Any) -> list[tuple[str, Any]]:
    """``(label, part)`` for what a task sends: its function (unwrapped), args, kwargs."""
    if not (isinstance(task, tuple) and len(task) == 3):
        return [("task", task)]
    func, args, kwargs = task
    inner = getattr(func, "func", None)
    if type(func).__name__ == "StatefulCall" and inner is not None:
        func = inner  # workerstate's wrapper: its snapshot is checked when it is captured
    parts: list[tuple[str, Any]] = [("task.func", func)]
    if isinstance(args, tuple):
        parts.extend((f"task.args[{i}]", arg) for i, arg in enumerate(args))
    else:
        parts.append(("task.args", args))
    if isinstance(kwargs, dict):
        parts.extend((f"task.kwargs[{key!r}]", val) for key, val in kwargs.items())
    else:
        parts.append(("task.kwargs", kwargs))
    return parts


def _call_text(parts: list[tuple[str, Any]]) -> str:
    func = parts[0][1]
    label = getattr(func, "__qualname__", None) or short(func, 40)
    shown = []
    for key, part in parts[1:4]:
        prefix = key.split("[", 1)[1][1:-2] + "=" if key.startswith("task.kwargs[") else ""
        shown.append(prefix + short(part, 40))
    if len(parts) > 4:
        shown.append("...")
    return f"{label}({', '.join(shown)})"


def explain_pickling_error(
    exc: BaseException, tasks: Iterable[Any], *, pickler: Pickler = "auto"
) -> TaskPicklingError | None:
    """Find the task that made a ``Parallel`` call fail to pickle; explain it in an exception.

    Call it with the exception a ``joblib.Parallel`` call raised (loky raises
    ``PicklingError("Could not pickle the task to send it to the workers.")``, the
    multiprocessing backend the pickler's own ``TypeError`` or ``PicklingError``) and the
    ``(func, args, kwargs)`` tasks that were submitted, or the last few hundred of them. Each
    task is pickled again; for the first one that fails, the returned error names the task
    and the path to the failing part, which trap it is and the fix. Tasks made by
    workerstate's ``delayed`` are unwrapped, so the paths refer to the user's function.

    Parameters
    ----------
    exc : BaseException
        The exception the call raised.
    tasks : iterable of tuple
        The tasks that may have been sent, in order.
    pickler : {"auto", "loky", "cloudpickle", "pickle"}
        What the backend pickles tasks with: ``"loky"`` (cloudpickle with loky's reducers),
        ``"cloudpickle"`` (dask), ``"pickle"`` (multiprocessing). ``"auto"`` uses loky's
        pickler for loky's error, and otherwise tries cloudpickle, then pickle.

    Returns
    -------
    TaskPicklingError or None
        The explanation, with ``__cause__`` set to ``exc`` (raise it ``from exc``). When the
        pickler raised ``AttributeError`` or ``TypeError`` rather than ``PicklingError`` (the
        multiprocessing backend does), it is a :class:`TaskPicklingAttributeError` or
        :class:`TaskPicklingTypeError`: a ``TaskPicklingError`` that is also of the original
        type. Its report names up to three failing parts of the task. ``None``
        when ``exc`` is not a pickling error, is already one of workerstate's, or no task
        fails to pickle: then re-raise ``exc`` as it is.

    Examples
    --------
    >>> import threading
    >>> from joblib import Parallel, delayed
    >>> tasks = [delayed(len)([1, 2]), delayed(len)({"lock": threading.Lock()})]
    >>> try:
    ...     Parallel(n_jobs=2)(tasks)
    ... except Exception as exc:
    ...     joblib_error, error = exc, explain_pickling_error(exc, tasks)
    >>> print(error.report.path, error.report.trap, error.task_index)
    task.args[0]['lock'] lock 1
    >>> error.__cause__ is joblib_error
    True
    """
    if isinstance(exc, WorkerStateError) or not _is_pickling_error(exc):
        return None
    candidates = list(tasks)
    if pickler == "auto":
        picklers: Sequence[str] = ("loky",) if _from_loky(exc) else ("cloudpickle", "pickle")
    else:
        picklers = (pickler,)
    for which in picklers:
        dumps = {"loky": loky_dumps, "cloudpickle": cloud_dumps}.get(which, std_dumps)
        by_value = which != "pickle"
        for index, task in enumerate(candidates):
            parts = _task_parts(task)
            if _try(dumps, tuple(part for _, part in parts))[1] is None:
                continue
            found: list[tuple[str, Any, BaseException]] = []
            for label, part in parts:
                found += find_unpicklable_parts(
                    part, dumps, root=label, by_value=by_value, limit=_PARTS_SHOWN - len(found)
                )
                if len(found) >= _PARTS_SHOWN:
                    break
            if not found:
                continue
            # Under the standard pickle, say whether cloudpickle (loky) could send it.
            cloud_ok = not by_value and _try(cloud_dumps, found[0][1])[1] is None
            report = _report(
                "task",
                found[0],
                picklable=cloud_ok,
                stdlib_picklable=False,
                by_value=cloud_ok,
                others=found[1:],
            )
            error = _error_type(exc)(_task_message(report, parts, exc))
            error.report = report
            error.task_index = index
            error.__cause__ = exc
            return error
    return None


def _error_type(exc: BaseException) -> type[TaskPicklingError]:
    """The explanation's type: also the type of the pickler's own error, so that the
    ``except`` clauses written for it still catch the explanation."""
    if isinstance(exc, pickle.PicklingError):
        return TaskPicklingError
    if isinstance(exc, AttributeError):
        return TaskPicklingAttributeError
    if isinstance(exc, TypeError):
        return TaskPicklingTypeError
    return TaskPicklingError


def _task_message(report: PicklingReport, parts: list[tuple[str, Any]], exc: BaseException) -> str:
    what = f": {TRAPS[report.trap][0]}" if report.trap is not None else ""
    if report.picklable:
        backend = (
            "The multiprocessing backend pickles tasks with the standard pickle; the loky "
            "backend (cloudpickle) can send this one."
        )
    else:
        backend = "The threading backend does not pickle tasks and would run it as is."
    also = ""
    if report.others:
        also = " It also holds " + "; ".join(str(other) for other in report.others) + "."
    return (
        f"The task {_call_text(parts)} cannot be sent to the worker processes: {report.path} "
        f"is a {report.type_name} that cannot be pickled ({report.error}){what}. "
        f"{report.advice}{also} {backend} (joblib raised {error_text(exc)})"
    )
