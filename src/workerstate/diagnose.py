"""Explain, in plain words, why something cannot go to a worker process, and what workers cost.

Most failures of process pools are serialization failures, and their tracebacks say little
more than "cannot pickle '_thread.lock' object". The functions here pickle an object the way
the process backends do and report which part fails, which known trap it is, and the fix:

- :func:`explain_pickling` checks any object (a value, a function, a task);
- :func:`explain_pickling_error` turns the pickling error of a ``Parallel`` call into a
  :class:`TaskPicklingError` that names the failing task and part;
- :func:`worker_cost` measures how long a new worker takes to start and to import what the
  tasks need;
- :func:`doctor` runs the whole debugging checklist (``python -m workerstate doctor``).

Importing this module imports no optional library (scikit-learn, pandas, dask, Ray); joblib
comes with the package, which registers its backend with joblib.

Examples
--------
>>> import threading
>>> from workerstate.diagnose import explain_pickling
>>> report = explain_pickling({"retries": 3, "lock": threading.Lock()}, name="config")
>>> report.picklable, report.path, report.trap
(False, "config['lock']", 'lock')
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ._cost import ModuleImport, WorkerCost, worker_cost
from ._errors import TaskPicklingAttributeError, TaskPicklingError, TaskPicklingTypeError
from ._explain import PicklingReport, explain_pickling, explain_pickling_error
from ._pickling import TRAPS

if TYPE_CHECKING:
    from ._doctor import DoctorReport

__all__ = [
    "TRAPS",
    "ModuleImport",
    "PicklingReport",
    "TaskPicklingAttributeError",
    "TaskPicklingError",
    "TaskPicklingTypeError",
    "WorkerCost",
    "doctor",
    "explain_pickling",
    "explain_pickling_error",
    "worker_cost",
]


def doctor(modules: Iterable[str] = (), *, n_jobs: int = 2, backend: str = "loky") -> DoctorReport:
    """Run the checks of ``python -m workerstate doctor`` and return the report.

    Parameters
    ----------
    modules : iterable of str
        Modules to import first, so that they register their callbacks; ``"pkg.mod:setup"``
        also calls ``pkg.mod.setup()`` (in this process only, not in the workers).
    n_jobs : int
        How many workers the live checks use.
    backend : {"loky", "multiprocessing"}
        The backend of the live checks.

    Returns
    -------
    DoctorReport
        ``report.ok`` is False when a problem was found; ``str(report)`` is the text the
        command prints. Starting the checks shuts down joblib's shared loky pool.
    """
    from ._doctor import run

    return run(tuple(modules), n_jobs=n_jobs, backend=backend)
