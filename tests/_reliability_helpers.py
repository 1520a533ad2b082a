"""State, callbacks and tasks for the reliability tests, and the figures they record.

Worker processes import this module by name, so everything here starts at its import-time
default in a worker. ``SLOTS`` holds any number of named process-global values; a
``SlotCallback`` registers one of them. A slot that no setter ever wrote reads as ``UNSET``,
so a worker that shows anything else for a slot its task did not get has kept state it
should have dropped.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import joblib

from tests import _state
from workerstate import parallel as ws
from workerstate._registry import default_registry

UNSET = "<unset>"
MUTATED = "mutated-by-task"

# -- named process-global slots ---------------------------------------------------------------
SLOTS: dict[str, Any] = {}


def get_slot(name: str) -> Any:
    return SLOTS.get(name, UNSET)


def set_slot(name: str, value: Any) -> None:
    if value == UNSET:
        SLOTS.pop(name, None)
    else:
        SLOTS[name] = value


class SlotSetter:
    """``setter(value)`` for one slot; one instance per callback, so captures can be reused."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, value: Any) -> None:
        set_slot(self.name, value)

    def __repr__(self) -> str:
        return f"SlotSetter({self.name!r})"


class SlotCallback:
    """The callback of one slot: ``(SLOTS[name], setter)``. Picklable by reference."""

    __slots__ = ("name", "setter")

    def __init__(self, name: str) -> None:
        self.name = name
        self.setter = SlotSetter(name)

    def __call__(self) -> tuple[Any, SlotSetter]:
        return get_slot(self.name), self.setter

    def __repr__(self) -> str:
        return f"SlotCallback({self.name!r})"


# -- a second thread-local value, that no other test callback touches ---------------------------
_OTHER_LOCAL = threading.local()


def get_other_local() -> Any:
    return getattr(_OTHER_LOCAL, "value", UNSET)


def set_other_local(value: Any) -> None:
    _OTHER_LOCAL.value = value


def reset_other_local() -> None:
    _OTHER_LOCAL.__dict__.clear()


def other_local_callback() -> tuple[Any, Any]:
    return get_other_local(), set_other_local


# -- a setter that installs a value but refuses to put the previous one back -------------------
def _install_only(value: Any) -> None:
    if value == UNSET:
        raise RuntimeError(f"cannot put the previous state back in process {os.getpid()}")
    set_other_local(value)


def install_only_callback() -> tuple[Any, Any]:
    return get_other_local(), _install_only


# -- a setter that refuses to work in one process ---------------------------------------------
PICKY: Any = UNSET


def set_picky(value: Any) -> None:
    """Install ``value`` unless its ``fail_in`` names this process."""
    global PICKY
    if isinstance(value, dict) and value.get("fail_in") == os.getpid():
        raise RuntimeError(f"picky setter refuses to run in process {os.getpid()}")
    PICKY = value


def picky_callback() -> tuple[Any, Any]:
    return PICKY, set_picky


# -- what a task sees -------------------------------------------------------------------------
def report_slots(i: int, names: Iterable[str], delay: float = 0.0) -> dict[str, Any]:
    if delay:
        time.sleep(delay)
    return {
        "i": i,
        "pid": os.getpid(),
        "thread": threading.get_ident(),
        "slots": {name: get_slot(name) for name in names},
        "local": _state.get_local(),
        "picky": PICKY,
    }


def report_model(
    i: int,
    names: Iterable[str],
    mutate: Iterable[str] = (),
    mutate_other_local: bool = False,
) -> dict[str, Any]:
    """What the property tests check: the slots and the second thread-local value; then
    change the ``mutate`` slots (and that thread-local value) as a careless task would."""
    seen = {
        "i": i,
        "pid": os.getpid(),
        "slots": {name: get_slot(name) for name in names},
        "other_local": get_other_local(),
    }
    for name in mutate:
        set_slot(name, MUTATED)
    if mutate_other_local:
        set_other_local(MUTATED)
    return seen


def report_slots_sklearn(i: int, names: Iterable[str], delay: float = 0.0) -> dict[str, Any]:
    import sklearn

    seen = report_slots(i, names, delay)
    seen["working_memory"] = sklearn.get_config()["working_memory"]
    return seen


def report_then_mutate(i: int, names: Iterable[str], delay: float = 0.0) -> dict[str, Any]:
    """Report, then change every named slot and the thread-local value: later tasks must not
    see the change."""
    names = tuple(names)
    seen = report_slots(i, names, delay)
    for name in names:
        set_slot(name, MUTATED)
    _state.set_local(MUTATED)
    return seen


def mutate_then_fail(i: int, names: Iterable[str], fail_at: int = 0) -> dict[str, Any]:
    names = tuple(names)
    for name in names:
        set_slot(name, MUTATED)
    _state.set_local(MUTATED)
    if i == fail_at:
        raise _state.TaskError(f"task {i} failed after changing the state")
    return report_slots(i, names)


def mutate_then_interrupt(i: int, names: Iterable[str]) -> None:
    for name in names:
        set_slot(name, MUTATED)
    _state.set_local(MUTATED)
    raise KeyboardInterrupt


def die_mid_task(i: int, names: Iterable[str], at: int, how: str) -> dict[str, Any]:
    """Change the state, then (for task ``at``) end this worker process abruptly."""
    names = tuple(names)
    for name in names:
        set_slot(name, MUTATED)
    if i == at:
        if how == "os._exit":
            os._exit(13)
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)  # not reached
    time.sleep(0.01)
    return report_slots(i, names)


def catch_and_report(
    task: tuple[Any, tuple[Any, ...], dict[str, Any]], names: Iterable[str]
) -> Any:
    """Run a ``delayed`` triple here; catch what it raises and report the state after it."""
    func, args, kwargs = task
    try:
        seen = func(*args, **kwargs)
    except Exception as exc:
        seen = report_slots(-1, names)
        seen["error"] = f"{type(exc).__name__}: {exc}"
        seen["error_type"] = type(exc).__name__
        return seen
    seen["error"] = None
    after = report_slots(-1, names)
    seen["after"] = {"slots": after["slots"], "local": after["local"], "picky": after["picky"]}
    return seen


def pid_and_registered(delay: float = 0.02) -> tuple[int, tuple[str, ...]]:
    """This process's PID and the names registered in it."""
    time.sleep(delay)
    return os.getpid(), default_registry.names()


# -- parent-side: running calls and checking what the tasks saw -------------------------------
#: The ways to use workerstate.
API_NAMES = (
    "joblib.Parallel+ws.delayed",
    "ws.Parallel+joblib.delayed",
    "ws.Parallel+ws.delayed",
    "workerstate backend",
)
TaskMaker = Callable[[Callable[..., Any]], Iterable[Any]]


def run_call(api: str, backend: str, make_tasks: TaskMaker, n_jobs: int = 2, **kwargs: Any) -> Any:
    """One ``Parallel`` call through ``api``; ``make_tasks(delayed)`` gives the tasks."""
    if api == "workerstate backend":
        with joblib.parallel_config(backend="workerstate", inner=backend):
            return joblib.Parallel(n_jobs=n_jobs, **kwargs)(make_tasks(joblib.delayed))
    if api == "plain joblib":  # the control
        return joblib.Parallel(n_jobs=n_jobs, backend=backend, **kwargs)(make_tasks(joblib.delayed))
    parallel_name, delayed_name = api.split("+")
    parallel_cls = ws.Parallel if parallel_name == "ws.Parallel" else joblib.Parallel
    delayed = ws.delayed if delayed_name == "ws.delayed" else joblib.delayed
    return parallel_cls(n_jobs=n_jobs, backend=backend, **kwargs)(make_tasks(delayed))


def registry_state() -> tuple[tuple[str, Any], ...]:
    """The registered ``(name, callback)`` pairs, to compare before and after a fault."""
    return default_registry.items()


@contextmanager
def registered_slots(names: Iterable[str]) -> Iterator[tuple[str, ...]]:
    names = tuple(names)
    for name in names:
        default_registry.register(SlotCallback(name), name)
    try:
        yield names
    finally:
        for name in names:
            if name in default_registry.names():
                default_registry.remove(name)


def wrong_tasks(
    results: list[dict[str, Any]], expected: Callable[[dict[str, Any]], dict[str, Any]]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``(seen, expected)`` for every task whose state differs from what it should be.

    ``expected(seen)`` returns the keys to compare (``slots``, ``local``, ...) with their
    expected values.
    """
    wrong = []
    for seen in results:
        want = expected(seen)
        got = {key: seen.get(key) for key in want}
        if got != want:
            wrong.append((got, want))
    return wrong


# -- figures for docs/reliability.rst ---------------------------------------------------------
#: Set to a file path to have the reliability tests add up what they did there.
FIGURES_ENV = "WORKERSTATE_RELIABILITY_FIGURES"
FIGURES: dict[str, Counter[str]] = {}
_FIGURES_LOCK = threading.Lock()


def record(
    section: str, *, cases: int = 0, tasks: int = 0, faults: int = 0, errors: int = 0
) -> None:
    """Count what a test did: cases tried, tasks run, faults injected, state errors found."""
    with _FIGURES_LOCK:
        counter = FIGURES.setdefault(section, Counter())
        counter.update(cases=cases, tasks=tasks, faults=faults, errors=errors)


def write_figures() -> None:
    """Add the figures counted so far to the file named by ``$WORKERSTATE_RELIABILITY_FIGURES``."""
    path = os.environ.get(FIGURES_ENV)
    with _FIGURES_LOCK:
        figures = {section: dict(counter) for section, counter in FIGURES.items()}
        FIGURES.clear()
    if not path or not figures:
        return
    try:
        with open(path) as handle:
            total: dict[str, dict[str, int]] = json.load(handle)
    except FileNotFoundError:
        total = {}
    for section, counts in figures.items():
        merged = Counter(total.get(section, {}))
        merged.update(counts)
        total[section] = dict(merged)
    with open(path, "w") as handle:
        json.dump(total, handle, indent=1, sort_keys=True)
