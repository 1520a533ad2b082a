"""``python -m workerstate doctor``: the debugging checklist, run live on this machine.

The parent imports the modules named on the command line (so they register their callbacks),
checks what joblib would use, times a new worker's start-up and imports, pickles each
registered value, setter and callback, and then runs real tasks in a fresh pool:

A. plain joblib tasks read each callback's state in the fresh workers (their own value);
B. tasks made by workerstate's ``delayed`` read it under the installed state: the parent's
   value must arrive;
C. plain joblib tasks on the same, now reused, workers read it again: they must see the
   worker's own value, not the parent's (no leak); then they time the setter.

The functions the workers run live at the top of this module, which imports only the standard
library at import time: every worker that runs them imports it.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DoctorReport", "Finding", "Section", "import_times", "main", "run"]

_VALUE_LIMIT = 70


# -- run in the workers ----------------------------------------------------------------------
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
            rows.append((name, time.perf_counter() - start, False, _error_text(exc)))
        else:
            rows.append((name, time.perf_counter() - start, False, None))
    return rows


def _error_text(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _pack(result: Any) -> bytes:
    import cloudpickle

    try:
        data: bytes = cloudpickle.dumps(result)
    except Exception as exc:
        data = cloudpickle.dumps({"pid": os.getpid(), "error": f"result: {_error_text(exc)}"})
    return data


def _value(value: Any) -> tuple[str, Any]:
    """A value to send back to the parent; its repr when it does not pickle."""
    import cloudpickle

    try:
        cloudpickle.dumps(value)
    except Exception:
        return "repr", repr(value)[:200]
    return "value", value


def _timed_read(callback: Callable[[], Any]) -> tuple[Any, Any, float]:
    start = time.perf_counter()
    value, setter = callback()
    return value, setter, time.perf_counter() - start


def probe_fresh(payload: bytes) -> bytes:
    """Task A: each callback's value in this worker, and how long reading it takes."""
    import cloudpickle

    results: dict[str, Any] = {}
    for name, callback in cloudpickle.loads(payload):
        try:
            value, _, seconds = _timed_read(callback)
        except BaseException as exc:
            results[name] = ("error", _error_text(exc))
        else:
            results[name] = ("ok", _value(value), seconds)
    return _pack({"pid": os.getpid(), "results": results})


def probe_wrapped(name: str) -> bytes:
    """Task B (made by workerstate's ``delayed``): the state this task runs under."""
    from ._install import active_snapshot

    snapshot = active_snapshot()
    if snapshot is None:
        return _pack({"pid": os.getpid(), "error": "no workerstate snapshot is installed"})
    for entry_name, _, _, callback in snapshot.entries:
        if entry_name == name:
            try:
                value = callback()[0]
            except BaseException as exc:
                return _pack({"pid": os.getpid(), "error": _error_text(exc)})
            return _pack({"pid": os.getpid(), "seen": _value(value)})
    return _pack({"pid": os.getpid(), "error": f"the snapshot has no entry {name!r}"})


def probe_plain(payload: bytes) -> bytes:
    """Task C: the worker's own value after workerstate's tasks; then time the setter."""
    import cloudpickle

    callback, parent_value = cloudpickle.loads(payload)
    result: dict[str, Any] = {"pid": os.getpid()}
    stage = "reading the state"
    try:
        own, setter, result["read_seconds"] = _timed_read(callback)
        result["own"] = _value(own)
        stage = "calling the setter with the parent's value"
        start = time.perf_counter()
        setter(parent_value)
        result["set_seconds"] = time.perf_counter() - start
        stage = "reading the state after the setter"
        result["after_set"] = _value(callback()[0])
        stage = "restoring the worker's own value"
        setter(own)
    except BaseException as exc:
        result["error"] = f"{_error_text(exc)} while {stage}"
    return _pack(result)


# -- the report ------------------------------------------------------------------------------
@dataclass
class Finding:
    """One line of the report: ``status`` is OK, PROBLEM, NOTE or INFO."""

    status: str
    text: str
    details: list[str] = field(default_factory=list)
    advice: str | None = None


@dataclass
class Section:
    """A titled group of findings."""

    title: str
    findings: list[Finding] = field(default_factory=list)

    def add(self, status: str, text: str, *details: str, advice: str | None = None) -> Finding:
        finding = Finding(status, text, list(details), advice)
        self.findings.append(finding)
        return finding


@dataclass
class DoctorReport:
    """The doctor's findings; ``str()`` is the printed report, ``ok`` the verdict."""

    header: str
    sections: list[Section] = field(default_factory=list)

    def section(self, title: str) -> Section:
        section = Section(title)
        self.sections.append(section)
        return section

    @property
    def findings(self) -> list[Finding]:
        return [finding for section in self.sections for finding in section.findings]

    @property
    def problems(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.status == "PROBLEM"]

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        import textwrap

        advice: list[str] = []
        lines = [self.header]
        for section in self.sections:
            if not section.findings:
                continue
            lines += ["", section.title]
            for finding in section.findings:
                text = finding.text
                if finding.advice is not None:
                    if finding.advice not in advice:
                        advice.append(finding.advice)
                    text += f" [advice {advice.index(finding.advice) + 1}]"
                lines.append(
                    textwrap.fill(
                        text,
                        width=96,
                        initial_indent=f"  {finding.status:8} ",
                        subsequent_indent=" " * 11,
                        break_on_hyphens=False,
                        break_long_words=False,
                    )
                )
                lines.extend(" " * 11 + detail for detail in finding.details)
        if advice:
            lines += ["", "Advice"]
            for i, text in enumerate(advice, 1):
                lines.append(
                    textwrap.fill(
                        text,
                        width=96,
                        initial_indent=f"  {i}. ",
                        subsequent_indent="     ",
                        break_on_hyphens=False,
                        break_long_words=False,
                    )
                )
        problems = len(self.problems)
        lines += [
            "",
            "Result: no problems found."
            if not problems
            else f"Result: {problems} problem{'s' if problems > 1 else ''} found.",
        ]
        return "\n".join(lines)


# -- the parent side -------------------------------------------------------------------------
def _short(value: Any, limit: int = _VALUE_LIMIT) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shown(packed: tuple[str, Any]) -> str:
    kind, value = packed
    return value if kind == "repr" else _short(value)


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # e.g. arrays, whose == is elementwise: compare the pickles
        import cloudpickle

        try:
            return bool(cloudpickle.dumps(a) == cloudpickle.dumps(b))
        except Exception:
            return False


def _same(packed: tuple[str, Any], value: Any) -> bool:
    kind, got = packed
    return _equal(got, value) if kind == "value" else False


def _ms(seconds: float) -> str:
    if seconds < 0.001:
        return f"{seconds * 1e6:.1f} us"
    return f"{seconds * 1000:.1f} ms" if seconds < 0.1 else f"{seconds:.2f} s"


def _load(spec: str, section: Section) -> None:
    module_name, _, function = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
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
            f"--module {spec}: {_error_text(exc)}{at}",
            advice="Check that the module named with --module can be imported from the "
            "current directory (python -m adds it to sys.path), and that its setup "
            "function runs.",
        )
    else:
        done = f" and ran {function}()" if function else ""
        section.add("OK", f"imported {module_name}{done}")


def _backend_name(backend: Any) -> str:
    from joblib import parallel as joblib_parallel

    for name, cls in getattr(joblib_parallel, "BACKENDS", {}).items():
        if type(backend) is cls:
            return str(name)
    return type(backend).__name__


def _check_backend(section: Section, n_jobs: int, backend: str) -> None:
    import joblib
    from joblib import parallel as joblib_parallel

    try:
        active, default_n_jobs = joblib_parallel.get_active_backend()
        workers = active.effective_n_jobs(-1)
    except Exception as exc:
        section.add("PROBLEM", f"joblib cannot tell its active backend: {_error_text(exc)}")
        return
    name = _backend_name(active)
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
    from .diagnose import worker_cost

    try:
        cost = worker_cost()
    except Exception as exc:
        section.add(
            "PROBLEM",
            f"a new loky worker could not be started: {_error_text(exc)}",
            advice="Workers are new Python processes: check that this Python can start "
            "another one (memory limits, a read-only temporary directory, sys.path).",
        )
        return
    imported = [item for item in cost.imports if item.error is None]
    details = [
        f"{item.module}: "
        + ("already imported at start-up" if item.already_imported else _ms(item.seconds))
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


@dataclass
class _Callback:
    name: str
    callback: Any
    section: Section
    value: Any = None
    usable: bool = False
    fresh: dict[int, tuple[str, Any]] = field(default_factory=dict)


def _static_checks(check: _Callback) -> None:
    from ._pickling import module_of
    from .diagnose import explain_pickling

    section = check.section
    try:
        result = check.callback()
    except Exception as exc:
        section.add(
            "PROBLEM",
            f"the callback raises in this process: {_error_text(exc)}",
            advice="A callback runs in the parent when each Parallel call starts; it must "
            "return (value, setter) without raising.",
        )
        return
    if not (isinstance(result, tuple) and len(result) == 2 and callable(result[1])):
        section.add(
            "PROBLEM",
            f"the callback returned {_short(result)}, not a (value, setter) pair",
            advice="A callback must return (value, setter), e.g. `return get_config(), "
            "set_config_from_dict`.",
        )
        return
    check.value, setter = result
    ok = True
    sizes = []
    for label, part in (("value", check.value), ("setter", setter), ("callback", check.callback)):
        report = explain_pickling(part, name=label)
        if not report.picklable:
            ok = False
            section.add(
                "PROBLEM",
                f"the {label} cannot be pickled, so it cannot reach a worker process:",
                *(line.strip() for line in str(report).splitlines()[1:4]),
                advice=report.advice,
            )
        elif report.trap is not None and (label == "value" or report.trap != "lambda"):
            section.add(
                "NOTE",
                f"the {label} pickles, but {report.path} is {_trap_title(report.trap)}",
                advice=report.advice,
            )
        if report.size is not None:
            sizes.append(report.size)
    if ok:
        module = module_of(setter) or "?"
        section.add(
            "OK",
            f"value ({type(check.value).__name__}), setter ({module}) and callback pickle: "
            f"{sum(sizes)} bytes",
        )
        if sizes and sizes[0] > 1024 * 1024:
            section.add(
                "NOTE",
                f"the value pickles to {sizes[0] / 1e6:.1f} MB: every Parallel call that "
                f"changes it pickles it again, and every worker loads it",
            )
    if ok and _reads_nothing_live(check.callback, check.value):
        section.add(
            "PROBLEM",
            "the callback returns "
            + ("None" if check.value is None else "a value it captured")
            + ", not the state it reads: its value arrives (the setter runs in every "
            "worker), but the worker's own value cannot be read back, so workers keep the "
            "parent's state after the tasks",
            advice="Return the live state the setter changes (e.g. `return get_config(), "
            "set_config_from_dict`, or the current value of the patched attribute), so the "
            "worker's own state can be read before a task and put back after it.",
        )
    check.usable = ok


def _reads_nothing_live(callback: Any, value: Any) -> bool:
    """Whether ``callback`` returns ``None`` or an object it holds itself (a default
    argument or a closure cell), which it returns in a worker too, whatever the state."""
    if value is None:
        return True
    func = getattr(callback, "__func__", callback)
    held = [*(getattr(func, "__defaults__", None) or ())]
    held += list((getattr(func, "__kwdefaults__", None) or {}).values())
    for cell in getattr(func, "__closure__", None) or ():
        try:
            held.append(cell.cell_contents)
        except ValueError:  # an empty cell
            continue
    return any(obj is value for obj in held)


def _trap_title(trap: str) -> str:
    from ._pickling import TRAPS

    return TRAPS[trap][0]


def _unpack(data: bytes) -> dict[str, Any]:
    import cloudpickle

    result: dict[str, Any] = cloudpickle.loads(data)
    return result


def _live_checks(checks: list[_Callback], n_jobs: int, backend: str, workers: Section) -> None:
    import cloudpickle
    import joblib

    from ._pool import fresh_pool
    from ._registry import default_registry
    from ._task import delayed

    tasks = max(2 * n_jobs, 4)
    payload = cloudpickle.dumps([(check.name, check.callback) for check in checks])
    if backend == "loky":
        fresh_pool()
    with joblib.Parallel(n_jobs=n_jobs, backend=backend, batch_size=1, timeout=60) as run:
        start = time.perf_counter()
        try:
            fresh = [
                _unpack(data)
                for data in run(joblib.delayed(probe_fresh)(payload) for _ in range(tasks))
            ]
        except Exception as exc:
            workers.add(
                "PROBLEM",
                f"plain joblib tasks fail in a fresh pool: {_error_text(exc)}",
            )
            return
        pids = sorted({result["pid"] for result in fresh})
        workers.add(
            "OK",
            f"a fresh {backend} pool ran its first {tasks} tasks in "
            f"{time.perf_counter() - start:.2f} s on {len(pids)} worker"
            f"{'s' if len(pids) > 1 else ''}",
        )
        for check in checks:
            for result in fresh:
                outcome = result["results"][check.name]
                if outcome[0] == "error":
                    check.section.add(
                        "PROBLEM",
                        f"the callback raises in a fresh worker: {outcome[1]}; its value is "
                        "still set for the tasks, but the worker's own state cannot be read, "
                        "so the worker keeps the parent's state after them",
                        advice="workerstate calls the callback in the worker too, to read the "
                        "state to restore after each task: make it read state that exists in "
                        "a new process, before anything was set (import what it needs inside "
                        "it, and fall back to a default).",
                    )
                    break
                check.fresh[result["pid"]] = outcome[1]
            else:
                reads = max(result["results"][check.name][2] for result in fresh)
                check.section.add(
                    "OK",
                    f"the callback works in a fresh worker (it reads the state in {_ms(reads)}; "
                    f"it runs before every task)",
                )
                continue
            check.usable = False
        for check in checks:
            if check.usable:
                with default_registry.preserved():
                    for name in default_registry.names():
                        if name != check.name:
                            default_registry.remove(name)
                    _check_one(check, run, delayed, tasks, backend)


def _check_one(check: _Callback, run: Any, delayed: Any, tasks: int, backend: str) -> None:
    import cloudpickle
    import joblib

    section = check.section
    fresh_values = list(check.fresh.values())
    indistinct = all(_same(value, check.value) for value in fresh_values)
    # B: tasks made by workerstate's delayed see the parent's value.
    try:
        seen = [
            _unpack(data) for data in run(delayed(probe_wrapped)(check.name) for _ in range(tasks))
        ]
    except Exception as exc:
        section.add(
            "PROBLEM",
            f"tasks made by workerstate's delayed fail: {_error_text(exc).splitlines()[0]}",
            advice="Read the error: a setter that raises in the worker stops every task. Make "
            "the setter work in a fresh worker, with the value the callback returns.",
        )
        return
    errors = [result["error"] for result in seen if "error" in result]
    wrong = [result["seen"] for result in seen if "seen" in result]
    wrong = [packed for packed in wrong if not _same(packed, check.value)]
    # C: plain joblib tasks on the same workers see their own value; time the setter.
    payload = cloudpickle.dumps((check.callback, check.value))
    ran_b = {result["pid"] for result in seen}
    plain: list[dict[str, Any]] = []
    for _ in range(3):  # until a plain task lands on a worker that ran workerstate's tasks
        try:
            plain += [
                _unpack(data)
                for data in run(joblib.delayed(probe_plain)(payload) for _ in range(tasks))
            ]
        except Exception as exc:
            plain.append({"pid": -1, "error": _error_text(exc)})
        if any(result["pid"] in ran_b or "error" in result for result in plain):
            break
    if errors:
        section.add("PROBLEM", f"a task could not read the installed state: {errors[0]}")
    elif wrong:
        after = [r["after_set"] for r in plain if "after_set" in r]
        details = [
            f"the parent's value:   {_short(check.value)}",
            f"what the task saw:    {_shown(wrong[0])}",
        ]
        if after and not _same(after[0], check.value):
            details.append(
                f"after setter(value), the callback still reads {_shown(after[0])} in a worker"
            )
        section.add(
            "PROBLEM",
            "the value does not arrive: tasks made by workerstate's delayed do not see the "
            "parent's value",
            *details,
            advice="setter(value) must change the state that the callback reads and the tasks "
            "use. A setter that rebinds a name imported into another module, or a callback "
            "defined in __main__ (sent by value, with copies of its globals), sets a copy: "
            "reach shared state through its module (mymodule.SETTINGS) and update it there.",
        )
    elif indistinct:
        why = (
            " (the multiprocessing backend forks its workers from this process, so they "
            "start as copies of it)"
            if backend == "multiprocessing"
            else "; change the state in a setup function (--module mod:setup) to check that"
        )
        section.add(
            "NOTE",
            "the parent's value equals a fresh worker's, so this run cannot tell whether it "
            f"arrives or leaks{why}",
        )
    else:
        section.add("OK", "the parent's value arrives in tasks made by workerstate's delayed")
    plain_errors = [result["error"] for result in plain if "error" in result]
    if plain_errors:
        section.add(
            "PROBLEM",
            f"a plain task could not read or set the state in a worker: {plain_errors[0]}",
            advice="The setter runs in the workers with the value the callback returned in "
            "the parent, and with the worker's own value to restore it: it must accept both.",
        )
        return
    checked = [result for result in plain if result["pid"] in ran_b]
    leaked = [
        result for result in checked if not _same(result["own"], _fresh_for(check, result["pid"]))
    ]
    if indistinct and not wrong:
        pass  # said above: nothing to tell apart
    elif not checked:
        section.add(
            "NOTE",
            "no plain task ran on a worker that had run workerstate's tasks; leaks not checked",
        )
    elif leaked:
        section.add(
            "PROBLEM",
            "the state leaks: after workerstate's tasks, a plain joblib task on the same worker "
            "does not see the worker's own value",
            f"the worker's own value: {_shown(check.fresh.get(leaked[0]['pid'], ('repr', '?')))}",
            f"what the task saw:      {_shown(leaked[0]['own'])}",
            advice="workerstate restores the value the callback read before the task. The "
            "callback must return a copy of mutable state (dict(SETTINGS), list(...), "
            "copy.deepcopy(...)), not the live object the setter then changes in place.",
        )
    else:
        section.add(
            "OK",
            f"no leak: plain joblib tasks on reused workers see the worker's own value "
            f"({len(checked)} checked)",
        )
    set_seconds = max(result["set_seconds"] for result in plain)
    status = "NOTE" if set_seconds > 0.1 else "OK"
    section.add(
        status,
        f"the setter takes {_ms(set_seconds)} in a worker (it runs before a batch when the "
        f"worker does not hold the value yet)",
        advice="A slow setter delays the first task of each batch; keep it to assigning state "
        "and move expensive work elsewhere."
        if status == "NOTE"
        else None,
    )


def _fresh_for(check: _Callback, pid: int) -> Any:
    packed = check.fresh.get(pid)
    if packed is None and check.fresh:
        packed = next(iter(check.fresh.values()))
    return None if packed is None or packed[0] != "value" else packed[1]


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
    for spec in modules:
        _load(spec, setup)
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
    _check_backend(report.section("Backend"), n_jobs, backend)
    workers = report.section("Workers")
    _check_worker_cost(workers)
    checks = []
    for name, callback in items:
        label = f"{getattr(callback, '__module__', '?')}.{getattr(callback, '__qualname__', '?')}"
        title = f"Callback {name!r}" + (f" ({label})" if label != name else "")
        checks.append(_Callback(name, callback, report.section(title)))
    for check in checks:
        _static_checks(check)
    live = [check for check in checks if check.usable]
    try:
        _live_checks(live, n_jobs, backend, workers)
    except Exception as exc:
        workers.add("PROBLEM", f"the live checks failed: {_error_text(exc)}")
    finally:
        if backend == "loky":
            from ._pool import fresh_pool

            fresh_pool()  # leave no workers behind that hold the checks' state
    return report


def main(modules: Iterable[str] = (), n_jobs: int = 2, backend: str = "loky") -> int:
    """Print the report; 0 when no problem was found, 1 otherwise."""
    report = run(modules, n_jobs=n_jobs, backend=backend)
    print(report, flush=True)
    return 0 if report.ok else 1
