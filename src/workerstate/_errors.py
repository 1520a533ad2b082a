"""Exceptions raised by workerstate.

Some of them are raised inside worker processes and travel back to the parent by pickle, so
every class takes a single message argument and nothing else: an exception whose constructor
needs extra arguments fails to unpickle in the parent and hides the real error.
"""

from __future__ import annotations

import pickle
from typing import Any

__all__ = [
    "CallbackError",
    "SetterError",
    "StateChangedError",
    "StatePicklingError",
    "StateRestoreWarning",
    "StateTransportError",
    "TaskPicklingAttributeError",
    "TaskPicklingError",
    "TaskPicklingTypeError",
    "WorkerStateError",
]


class WorkerStateError(Exception):
    """Base class of the errors raised by workerstate."""


class CallbackError(WorkerStateError, TypeError):
    """A registered callback raised, or did not return a ``(value, setter)`` pair.

    Raised in the parent when the state is captured, before any task is sent.
    """


class StatePicklingError(WorkerStateError, pickle.PicklingError):
    """A captured state value cannot be sent to process workers.

    The message names the callback and the part of the value that fails to pickle.
    """


class StateTransportError(WorkerStateError, OSError):
    """The captured state could not be handed to the worker processes.

    Raised in the parent when no folder can take a large payload (no space, no permission)
    and it is too large to travel inside every batch; raised in a worker when the payload
    file of the running call was removed. The message names the callbacks, and in the
    parent the size, the folders tried and the fix.
    """


class SetterError(WorkerStateError, RuntimeError):
    """A setter raised in the worker; the task was not run.

    The original exception is chained as ``__cause__``; after a trip through a process pool
    its traceback appears in the message that joblib shows.
    """


class StateChangedError(WorkerStateError, RuntimeError):
    """A task left changed the state of a callback registered with ``check="batch"``.

    Raised in the worker after the last task of the batch in which the state changed, so the
    call fails in the parent: the tasks after the change in that batch may have seen the
    changed state. The message names the callbacks and the fix.
    """


class TaskPicklingError(WorkerStateError, pickle.PicklingError):
    """A task of a ``Parallel`` call cannot be sent to the worker processes.

    The message names the task, the part of it that fails to pickle, the trap and the fix;
    the error that joblib raised is chained as ``__cause__``. :attr:`report` holds the
    :class:`~workerstate.diagnose.PicklingReport` and :attr:`task_index` the position of the
    task among the ones that were checked. The constructor takes the message only, so the
    error survives pickling.
    """

    report: Any = None  # a workerstate.diagnose.PicklingReport
    task_index: int | None = None


class TaskPicklingAttributeError(TaskPicklingError, AttributeError):
    """A :class:`~workerstate.parallel.TaskPicklingError` for a pickler that raised
    ``AttributeError`` (the standard pickle's "Can't pickle local object" up to Python 3.13),
    so ``except AttributeError`` still catches it."""


class TaskPicklingTypeError(TaskPicklingError, TypeError):
    """A :class:`~workerstate.parallel.TaskPicklingError` for a pickler that raised
    ``TypeError`` (``cannot pickle '_thread.lock' object``), so ``except TypeError`` still
    catches it."""


class StateRestoreWarning(RuntimeWarning):
    """A worker keeps the parent's state after a task because its own could not be read.

    Issued in the parent, once per call and callback, when a callback raised while it was
    called in a worker to read the worker's own state. The tasks ran with the parent's
    value; the message names the callback, the exception and the fix.
    """
