"""``python -m workerstate doctor``: the debugging checklist, run live on this machine.

The parent imports the modules named on the command line (so they register their callbacks),
checks what joblib would use, times a new worker's start-up and imports, and then checks
each registered callback (:mod:`workerstate._doctor_checks`), in this process and in a fresh
pool. In: module names. Out: a :class:`~workerstate._doctor_report.DoctorReport`.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Iterable
from types import ModuleType

from ._doctor_checks import CallbackCheck, live_checks, static_checks
from ._doctor_report import DoctorReport, Finding, Section, ms
from ._doctor_source import check_sources
from ._text import error_text

__all__ = ["DoctorReport", "Finding", "Section", "main", "run"]


def _split(spec: str) -> tuple[str, str]:
    """``(module or path, function)`` of a ``--module`` argument; a drive letter is no
    function."""
    target, sep, function = spec.rpartition(":")
    if sep and function.isidentifier():
        return target, function
    return spec, ""


def _import_file(path: str) -> ModuleType:
    """Import the file at ``path`` as a module named after it. Its functions are sent by value,
    as a script's are when it runs as ``__main__``; its folder goes on ``sys.path`` (which
    workers get), so the cost of importing it in a worker can be measured too."""
    import importlib.util

    import cloudpickle

    stem = os.path.splitext(os.path.basename(path))[0]
    name = stem if stem.isidentifier() and stem not in sys.modules else f"_doctor_{abs(hash(path))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a Python module")
    folder = os.path.dirname(os.path.abspath(path))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    cloudpickle.register_pickle_by_value(module)
    return module


def _load(spec: str, section: Section) -> str | None:
    """Import what ``--module`` names (and run its function); return its source file."""
    target, function = _split(spec)
    is_file = target.endswith(".py") or os.sep in target
    try:
        module = _import_file(target) if is_file else importlib.import_module(target)
        if function:
            getattr(module, function)()
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        where = traceback.extract_tb(exc.__traceback__)[-1:]
        at = (
            f" ({where[0].filename}:{where[0].lineno})"
            if where and not where[0].filename.startswith("<")
            else ""
        )
        section.add(
            "PROBLEM",
            f"--module {spec}: {error_text(exc)}{at}",
            advice="Check that the module named with --module can be imported from the "
            "current directory (python -m adds it to sys.path), or that the file exists, and "
            "that its setup function runs.",
        )
        return None
    done = f" and ran {function}()" if function else ""
    section.add("OK", f"imported {target}{done}")
    source = getattr(module, "__file__", None)
    return source if isinstance(source, str) and source.endswith(".py") else None


def _check_backend(section: Section, n_jobs: int, backend: str) -> None:
    import joblib

    from ._joblib import active_backend, backend_name

    try:
        active, default_n_jobs = active_backend()
        workers = active.effective_n_jobs(-1)
    except Exception as exc:
        section.add("PROBLEM", f"joblib cannot tell its active backend: {error_text(exc)}")
        return
    name = backend_name(active)
    if default_n_jobs in (None, 1):
        runs = "runs tasks one at a time, in this process"
    else:
        runs = f"uses n_jobs={default_n_jobs}"
    section.add(
        "INFO",
        f"joblib's active backend is {name}; Parallel() without n_jobs {runs}; n_jobs=-1 "
        f"would use {workers} workers (joblib.cpu_count() = {joblib.cpu_count()}, "
        f"os.cpu_count() = {os.cpu_count()}).",
    )
    limits = {
        key: os.environ[key]
        for key in ("LOKY_MAX_CPU_COUNT", "JOBLIB_START_METHOD", "JOBLIB_MULTIPROCESSING")
        if key in os.environ
    }
    if limits:
        shown = ", ".join(f"{key}={value}" for key, value in limits.items())
        section.add("INFO", f"environment: {shown}")
    section.add("INFO", f"the live checks below use backend={backend!r}, n_jobs={n_jobs}")


def _check_worker_cost(section: Section) -> None:
    from ._cost import worker_cost

    try:
        cost = worker_cost()
    except Exception as exc:
        section.add(
            "PROBLEM",
            f"a new loky worker could not be started: {error_text(exc)}",
            advice="Workers are new Python processes: check that this Python can start "
            "another one (memory limits, a read-only temporary directory, sys.path).",
        )
        return
    imported = [item for item in cost.imports if item.error is None]
    details = [
        f"{item.module}: "
        + ("already imported at start-up" if item.already_imported else ms(item.seconds))
        for item in sorted(imported, key=lambda item: -item.seconds)
    ]
    section.add(
        "OK",
        f"a new worker starts in {cost.start_seconds:.2f} s and imports what the tasks need "
        f"in {cost.import_seconds:.2f} s:",
        *details,
    )
    for item in cost.failed:
        section.add(
            "PROBLEM",
            f"{item.module} cannot be imported in a worker: {item.error}",
            advice="Workers import the modules of the callbacks, setters and task functions "
            "by name. Make them importable in a new process: install the package, or run from "
            "the directory that contains it (the workers get the parent's sys.path).",
        )
    if cost.import_seconds > max(0.5, cost.start_seconds):
        heavy = max(cost.imports, key=lambda item: item.seconds)
        section.add(
            "NOTE",
            f"imports dominate a new worker's cost ({heavy.module} alone takes "
            f"{heavy.seconds:.2f} s): tasks shorter than {cost.total_seconds:.1f} s are slowed "
            f"down by it in every new pool",
            advice="loky reuses its workers between calls (they exit after 300 s idle): run "
            "many tasks per pool, give each task more work, and avoid fresh_pool() in loops.",
        )


def _header() -> str:
    import cloudpickle
    import joblib

    from . import __version__

    version = ".".join(str(part) for part in sys.version_info[:3])
    return (
        f"workerstate doctor: Python {version} ({sys.executable}), joblib {joblib.__version__}, "
        f"cloudpickle {cloudpickle.__version__}, workerstate {__version__}"
    )


def run(modules: Iterable[str] = (), *, n_jobs: int = 2, backend: str = "loky") -> DoctorReport:
    """Run every check and return the report (see :func:`workerstate.diagnose.doctor`)."""
    if n_jobs < 2:
        raise ValueError(
            f"n_jobs must be at least 2, as joblib runs n_jobs=1 in this process; got {n_jobs}"
        )
    from ._registry import default_registry

    report = DoctorReport(_header())
    setup = report.section("Setup")
    sources = [_load(spec, setup) for spec in modules]
    items = default_registry.items()
    if items:
        names = ", ".join(repr(name) for name, _ in items)
        setup.add(
            "INFO", f"{len(items)} callback{'s' if len(items) > 1 else ''} registered: {names}"
        )
    else:
        setup.add(
            "NOTE",
            "no callbacks are registered, so there is no state to check",
            advice="Name the module that registers your callbacks: --module mypkg.state, or "
            "--module mypkg.state:setup to also call a setup function in this process.",
        )
    check_sources(
        [source for source in sources if source is not None],
        [name for name, _ in items],
        report.section("Source"),
    )
    _check_backend(report.section("Backend"), n_jobs, backend)
    workers = report.section("Workers")
    _check_worker_cost(workers)
    checks = []
    for name, callback in items:
        label = f"{getattr(callback, '__module__', '?')}.{getattr(callback, '__qualname__', '?')}"
        title = f"Callback {name!r}" + (f" ({label})" if label != name else "")
        checks.append(CallbackCheck(name, callback, report.section(title)))
    for check in checks:
        static_checks(check)
    live = [check for check in checks if check.usable]
    from ._enable import disable, enable, is_enabled

    # The live checks compare plain joblib tasks with workerstate's: switched on, every task
    # would carry the state.
    was_enabled = is_enabled()
    disable()
    try:
        live_checks(live, n_jobs, backend, workers)
    except Exception as exc:
        workers.add("PROBLEM", f"the live checks failed: {error_text(exc)}")
    finally:
        if was_enabled:
            enable()
        if backend == "loky":
            from ._pool import fresh_pool

            fresh_pool()  # leave no workers behind that hold the checks' state
    return report


def main(modules: Iterable[str] = (), n_jobs: int = 2, backend: str = "loky") -> int:
    """Print the report; 0 when no problem was found, 1 otherwise."""
    report = run(modules, n_jobs=n_jobs, backend=backend)
    print(report, flush=True)
    return 0 if report.ok else 1
