"""What a new worker costs: its start-up and the imports its tasks need.

In: task functions, module names and the registered callbacks. Out: a :class:`WorkerCost`
measured in one new loky worker of a private pool. The public names are in
:mod:`workerstate.diagnose`.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ._pickling import module_of
from ._text import error_text

__all__ = ["ModuleImport", "WorkerCost", "import_times", "worker_cost"]


@dataclass(frozen=True)
class ModuleImport:
    """How long a new worker took to import one module.

    ``already_imported`` means the worker had it before the task asked (joblib's own
    modules); ``error`` is the import error, when the module does not import in a worker.
    """

    module: str
    seconds: float
    already_imported: bool = False
    error: str | None = None


@dataclass(frozen=True)
class WorkerCost:
    """What :func:`worker_cost` measured: a new worker's start-up and import times."""

    start_seconds: float
    imports: tuple[ModuleImport, ...] = ()

    @property
    def import_seconds(self) -> float:
        """Time spent importing the modules the tasks need, in seconds."""
        return sum(item.seconds for item in self.imports)

    @property
    def total_seconds(self) -> float:
        """Start-up and imports: what a new worker costs before its first task runs."""
        return self.start_seconds + self.import_seconds

    @property
    def failed(self) -> tuple[ModuleImport, ...]:
        """The modules that could not be imported in the worker."""
        return tuple(item for item in self.imports if item.error is not None)

    def __str__(self) -> str:
        lines = [
            f"A new worker process starts in {self.start_seconds:.2f} s; importing what the "
            f"tasks need takes {self.import_seconds:.2f} s more."
        ]
        for item in sorted(self.imports, key=lambda item: -item.seconds):
            if item.error is not None:
                detail = f"FAILS in the worker: {item.error}"
            elif item.already_imported:
                detail = "already imported at start-up"
            else:
                detail = f"{item.seconds:.3f} s"
            lines.append(f"  {item.module:40} {detail}")
        if self.import_seconds > max(0.5, self.start_seconds):
            lines.append(
                f"Each new worker pays {self.total_seconds:.2f} s before its first task, mostly "
                f"on imports: tasks shorter than that are dominated by it in a new pool. loky "
                f"reuses its workers between calls (they exit after 300 s idle), so keep one "
                f"pool for many tasks, give each task more work, and avoid fresh_pool() in loops."
            )
        return "\n".join(lines)


def _needed_modules(functions: Iterable[Any], modules: Iterable[str], callbacks: bool) -> list[str]:
    names: list[str] = ["workerstate.parallel"]
    if callbacks:
        from ._registry import default_registry

        for _, callback in default_registry.items():
            names.append(module_of(callback) or "")
            try:
                value, setter = callback()
            except Exception:
                continue
            names.extend((module_of(setter) or "", module_of(value) or ""))
    names.extend(module_of(func) or "" for func in functions)
    names.extend(modules)
    return [name for name in dict.fromkeys(names) if name and name != "__main__"]


def worker_cost(
    *functions: Any,
    modules: Iterable[str] = (),
    callbacks: bool = True,
    timeout: float = 60.0,
) -> WorkerCost:
    """Start one new loky worker, and time its start-up and the imports the tasks need.

    The worker imports, in order: ``workerstate.parallel`` (what a task made by workerstate's
    ``delayed`` needs), the modules of the registered callbacks, their setters and the types
    of their values, the modules that ``functions`` live in, and ``modules``. A module's time
    includes the modules it imports that were not imported before. The worker belongs to a
    private pool, so joblib's shared pool is left alone.

    Parameters
    ----------
    *functions : callable
        Task functions; the worker imports their modules (functions defined in ``__main__``
        travel by value and import nothing).
    modules : iterable of str
        More modules to import.
    callbacks : bool
        Include what the registered callbacks need.
    timeout : float
        Seconds to wait for the worker.

    Returns
    -------
    WorkerCost
        Print it for a readable summary.

    Examples
    --------
    >>> import json
    >>> cost = worker_cost(json.dumps, callbacks=False)
    >>> [item.module for item in cost.imports]
    ['workerstate.parallel', 'json']
    >>> cost.start_seconds > 0
    True
    """
    from joblib.externals.loky import ProcessPoolExecutor

    names = _needed_modules(functions, modules, callbacks)
    start = time.perf_counter()
    executor = ProcessPoolExecutor(max_workers=1)
    try:
        executor.submit(os.getpid).result(timeout=timeout)
        started = time.perf_counter() - start
        rows = executor.submit(import_times, tuple(names)).result(timeout=timeout)
    finally:
        executor.shutdown(wait=True)
    return WorkerCost(started, tuple(ModuleImport(*row) for row in rows))


# -- run in the new worker -------------------------------------------------------------------
def import_times(names: tuple[str, ...]) -> list[tuple[str, float, bool, str | None]]:
    """Import ``names`` in order here; ``(name, seconds, already_imported, error)`` each."""
    rows: list[tuple[str, float, bool, str | None]] = []
    for name in names:
        if name in sys.modules:
            rows.append((name, 0.0, True, None))
            continue
        start = time.perf_counter()
        try:
            importlib.import_module(name)
        except BaseException as exc:
            rows.append((name, time.perf_counter() - start, False, error_text(exc)))
        else:
            rows.append((name, time.perf_counter() - start, False, None))
    return rows
