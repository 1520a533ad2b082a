"""The doctor's checks of one registered callback: in this process, then in live workers.

In: a registered callback and a :class:`~workerstate._doctor_report.Section` of the report.
Out: findings in that section. The static checks call the callback here and pickle its parts;
the live checks run :mod:`workerstate._doctor_probes` in a fresh pool:

A. plain joblib tasks read each callback's state in the fresh workers (their own value);
B. tasks made by workerstate's ``delayed`` read it under the installed state: the parent's
   value must arrive;
C. plain joblib tasks on the same, now reused, workers read it again: they must see the
   worker's own value, not the parent's (no leak). They only read, so that no probe changes
   what a later one sees;
D. last, plain tasks time ``setter(parent_value)``, then restore the fresh worker's value and
   read the state again: a setter that only adds entries leaves the parent's in place.

Values are compared as the run time compares them (:func:`~workerstate._compare.strictly_equal`),
never with ``==``: a NaN or an object without ``__eq__`` that comes back from a worker is not
``==`` to itself, and would be reported as a leak that no real run has.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ._compare import strictly_equal
from ._doctor_probes import probe_fresh, probe_plain, probe_setter, probe_wrapped, unpack
from ._doctor_report import Section, ms
from ._text import error_text, short

__all__ = ["CallbackCheck", "live_checks", "static_checks"]

_VALUE_LIMIT = 70


def _shown(packed: tuple[str, Any]) -> str:
    kind, value = packed
    return value if kind == "repr" else short(value, _VALUE_LIMIT)


def _equal(a: Any, b: Any) -> bool:
    verdict = strictly_equal(a, b)
    if verdict is not None:
        return verdict
    # Types the strict comparison cannot tell by looking: the same pickle is the same state.
    import cloudpickle

    try:
        return bool(cloudpickle.dumps(a) == cloudpickle.dumps(b))
    except Exception:
        return False


def _same(packed: tuple[str, Any], value: Any) -> bool:
    kind, got = packed
    return _equal(got, value) if kind == "value" else False


@dataclass
class CallbackCheck:
    name: str
    callback: Any
    section: Section
    value: Any = None
    usable: bool = False
    fresh: dict[int, tuple[str, Any]] = field(default_factory=dict)


def static_checks(check: CallbackCheck) -> None:
    from ._explain import explain_pickling
    from ._pickling import module_of

    section = check.section
    try:
        result = check.callback()
    except Exception as exc:
        section.add(
            "PROBLEM",
            f"the callback raises in this process: {error_text(exc)}",
            advice="A callback runs in the parent when each Parallel call starts; it must "
            "return (value, setter) without raising.",
        )
        return
    if not (isinstance(result, tuple) and len(result) == 2 and callable(result[1])):
        section.add(
            "PROBLEM",
            f"the callback returned {short(result, _VALUE_LIMIT)}, not a (value, setter) pair",
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


def live_checks(checks: list[CallbackCheck], n_jobs: int, backend: str, workers: Section) -> None:
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
                unpack(data)
                for data in run(joblib.delayed(probe_fresh)(payload) for _ in range(tasks))
            ]
        except Exception as exc:
            workers.add(
                "PROBLEM",
                f"plain joblib tasks fail in a fresh pool: {error_text(exc)}",
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
                    f"the callback works in a fresh worker (it reads the state in {ms(reads)}; "
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


def _check_one(check: CallbackCheck, run: Any, delayed: Any, tasks: int, backend: str) -> None:
    indistinct = all(_same(value, check.value) for value in check.fresh.values())
    seen = _run_wrapped(check, run, delayed, tasks)
    if seen is None:
        return
    ran_wrapped = {result["pid"] for result in seen}
    plain = _run_plain(check, run, tasks, ran_wrapped)
    setter_runs = _run_setter(check, run, tasks)
    wrong = _check_arrival(check, seen, setter_runs, indistinct, backend)
    if _check_plain_errors(check, plain + setter_runs):
        return
    if not (indistinct and not wrong):  # else said above: nothing to tell apart
        _check_leaks(check, plain, ran_wrapped, _kept_entries(check, setter_runs))
    _check_setter_time(check, setter_runs)


def _run_wrapped(
    check: CallbackCheck, run: Any, delayed: Any, tasks: int
) -> list[dict[str, Any]] | None:
    """B: tasks made by workerstate's delayed read the state they run under."""
    try:
        return [
            unpack(data) for data in run(delayed(probe_wrapped)(check.name) for _ in range(tasks))
        ]
    except Exception as exc:
        check.section.add(
            "PROBLEM",
            f"tasks made by workerstate's delayed fail: {error_text(exc).splitlines()[0]}",
            advice="Read the error: a setter that raises in the worker stops every task. Make "
            "the setter work in a fresh worker, with the value the callback returns.",
        )
        return None


def _run_plain(
    check: CallbackCheck, run: Any, tasks: int, ran_wrapped: set[int]
) -> list[dict[str, Any]]:
    """C: plain joblib tasks on the same workers read their own value."""
    import cloudpickle
    import joblib

    payload = cloudpickle.dumps(check.callback)
    plain: list[dict[str, Any]] = []
    for _ in range(3):  # until a plain task lands on a worker that ran workerstate's tasks
        try:
            plain += [
                unpack(data)
                for data in run(joblib.delayed(probe_plain)(payload) for _ in range(tasks))
            ]
        except Exception as exc:
            plain.append({"pid": -1, "error": error_text(exc)})
        if any(result["pid"] in ran_wrapped or "error" in result for result in plain):
            break
    return plain


def _run_setter(check: CallbackCheck, run: Any, tasks: int) -> list[dict[str, Any]]:
    """D: plain joblib tasks time the setter and restore each worker's fresh value."""
    import cloudpickle
    import joblib

    fresh = {pid: packed[1] for pid, packed in check.fresh.items() if packed[0] == "value"}
    payload = cloudpickle.dumps((check.callback, check.value, fresh))
    try:
        return [
            unpack(data)
            for data in run(joblib.delayed(probe_setter)(payload) for _ in range(tasks))
        ]
    except Exception as exc:
        return [{"pid": -1, "error": error_text(exc)}]


def _kept_entries(check: CallbackCheck, setter_runs: list[dict[str, Any]]) -> list[str]:
    """The parent's entries that restoring a worker's own value left in the state: the sign
    of a setter that only adds (``REGISTRY.update(value)``)."""
    for result in setter_runs:
        after = result.get("after_restore")
        if after is None or after[0] != "value":
            continue
        kept = _kept(check.value, result["restored"], after[1])
        if kept:
            return kept
    return []


def _kept(parent: Any, restored: Any, after: Any) -> list[str]:
    if isinstance(parent, dict) and isinstance(restored, dict) and isinstance(after, dict):
        return [
            repr(key)
            for key, value in parent.items()
            if not (key in restored and _equal(restored[key], value))
            and key in after
            and _equal(after[key], value)
        ]
    if all(isinstance(item, (set, frozenset)) for item in (parent, restored, after)):
        return sorted(repr(item) for item in parent - restored if item in after)
    return []


def _check_arrival(
    check: CallbackCheck,
    seen: list[dict[str, Any]],
    plain: list[dict[str, Any]],
    indistinct: bool,
    backend: str,
) -> list[Any]:
    """Whether the parent's value arrived in B's tasks; returns what the wrong ones saw."""
    section = check.section
    errors = [result["error"] for result in seen if "error" in result]
    wrong = [result["seen"] for result in seen if "seen" in result]
    wrong = [packed for packed in wrong if not _same(packed, check.value)]
    if errors:
        section.add("PROBLEM", f"a task could not read the installed state: {errors[0]}")
    elif wrong:
        after = [r["after_set"] for r in plain if "after_set" in r]
        details = [
            f"the parent's value:   {short(check.value, _VALUE_LIMIT)}",
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
    return wrong


def _check_plain_errors(check: CallbackCheck, plain: list[dict[str, Any]]) -> bool:
    """Report a plain task that could not read or set the state; True if there was one."""
    plain_errors = [result["error"] for result in plain if "error" in result]
    if plain_errors:
        check.section.add(
            "PROBLEM",
            f"a plain task could not read or set the state in a worker: {plain_errors[0]}",
            advice="The setter runs in the workers with the value the callback returned in "
            "the parent, and with the worker's own value to restore it: it must accept both.",
        )
    return bool(plain_errors)


_ADDS_ONLY = (
    "The setter must replace the state with its argument, not add to it: workerstate puts "
    "the worker's own value back with setter(own_value) after the tasks, and a setter that "
    "only adds entries (REGISTRY.update(value)) leaves in place those the parent or the "
    "task added. Clear first: `REGISTRY.clear(); REGISTRY.update(value)`."
)


def _check_leaks(
    check: CallbackCheck, plain: list[dict[str, Any]], ran_wrapped: set[int], kept: list[str]
) -> None:
    """Whether plain tasks on reused workers see the worker's own value."""
    section = check.section
    adds_only = (
        f"after setter(the worker's own value), the state still holds the parent's "
        f"{', '.join(kept[:3])}{' ...' if len(kept) > 3 else ''}: the setter only adds"
    )
    checked = [result for result in plain if result["pid"] in ran_wrapped]
    leaked = [
        result for result in checked if not _same(result["own"], _fresh_for(check, result["pid"]))
    ]
    if not checked:
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
            *([adds_only] if kept else []),
            advice=_ADDS_ONLY
            if kept
            else "workerstate restores the value the callback read before the task. The "
            "callback must return a copy of mutable state (dict(SETTINGS), list(...), "
            "copy.deepcopy(...)), not the live object the setter then changes in place.",
        )
    elif kept:
        section.add(
            "PROBLEM",
            "the setter only adds: " + adds_only.split(": the setter only adds")[0],
            advice=_ADDS_ONLY,
        )
    else:
        section.add(
            "OK",
            f"no leak: plain joblib tasks on reused workers see the worker's own value "
            f"({len(checked)} checked)",
        )


def _check_setter_time(check: CallbackCheck, plain: list[dict[str, Any]]) -> None:
    set_seconds = max(result["set_seconds"] for result in plain if "set_seconds" in result)
    status = "NOTE" if set_seconds > 0.1 else "OK"
    check.section.add(
        status,
        f"the setter takes {ms(set_seconds)} in a worker (it runs before each batch)",
        advice="A slow setter delays the first task of each batch; keep it to assigning state "
        "and move expensive work elsewhere."
        if status == "NOTE"
        else None,
    )


def _fresh_for(check: CallbackCheck, pid: int) -> Any:
    packed = check.fresh.get(pid)
    if packed is None and check.fresh:
        packed = next(iter(check.fresh.values()))
    return None if packed is None or packed[0] != "value" else packed[1]
