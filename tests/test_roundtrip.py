"""Warnings, log records and side-channel data travel back from workers to the parent."""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import joblib
import pytest

from tests import _roundtrip_helpers as rt
from tests._helpers import N_JOBS, ONE_FAILING_TASK
from workerstate import _warnings, parallel
from workerstate._registry import side_channels

PROCESS_BACKENDS = ("loky", "multiprocessing", "dask")


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    name: str = request.param
    if name == "dask":
        request.getfixturevalue("dask_client")
        with joblib.parallel_config("dask"):
            yield name
    else:
        yield name


def _parallel(backend: str, **kwargs: Any) -> parallel.Parallel:
    return parallel.Parallel(
        n_jobs=N_JOBS, backend=None if backend == "dask" else backend, **kwargs
    )


@pytest.mark.parametrize("backend", PROCESS_BACKENDS, indirect=True)
def test_warnings_and_records_reach_the_parent(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tests.roundtrip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = _parallel(backend)(parallel.delayed(rt.warn_and_log)(i) for i in range(8))
    assert results == [i * 10 for i in range(8)]
    mine = [w for w in caught if w.category is rt.RoundTripWarning]
    assert sorted(str(w.message) for w in mine) == sorted(
        f"warning from task {i}" for i in range(8)
    )
    assert {w.filename for w in mine} == {rt.__file__}
    records = [r for r in caplog.records if r.name == "tests.roundtrip"]
    assert sorted(r.getMessage() for r in records) == sorted(
        f"record from task {i}" for i in range(8)
    )
    # Attributed to the worker that emitted them.
    assert all(r.process != os.getpid() for r in records)


def test_pytest_warns_sees_a_worker_warning() -> None:
    with pytest.warns(rt.RoundTripWarning) as record:
        parallel.Parallel(n_jobs=N_JOBS)(parallel.delayed(rt.warn_and_log)(i) for i in range(4))
    assert "warning from task 3" in {str(w.message) for w in record}


@pytest.mark.parametrize("backend", ["loky", "dask"], indirect=True)
def test_generator_results_reissue_as_they_are_consumed(backend: str) -> None:
    try:
        joblib.Parallel(n_jobs=N_JOBS, return_as="generator")
    except ValueError as control:  # joblib 1.3 has no generators on dask: the same error
        with pytest.raises(ValueError, match=re.escape(str(control).split(" object at ")[0])):
            _parallel(backend, return_as="generator")
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        output = _parallel(backend, return_as="generator")(
            parallel.delayed(rt.warn_and_log)(i) for i in range(6)
        )
        seen = []
        for result in output:
            seen.append(result)
            mine = [w for w in caught if w.category is rt.RoundTripWarning]
            assert len(mine) == len(seen)
    assert seen == [i * 10 for i in range(6)]


@pytest.mark.parametrize("backend", PROCESS_BACKENDS, indirect=True)
def test_an_error_filter_turns_a_worker_warning_into_a_parent_error(backend: str) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=rt.RoundTripWarning)
        with pytest.raises(rt.RoundTripWarning, match="warning from task"):
            _parallel(backend)(
                parallel.delayed(rt.warn_and_log)(i) for i in range(ONE_FAILING_TASK)
            )


def test_an_ignore_filter_drops_worker_warnings() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=rt.RoundTripWarning)
        parallel.Parallel(n_jobs=N_JOBS)(parallel.delayed(rt.warn_and_log)(i) for i in range(4))
    assert not [w for w in caught if w.category is rt.RoundTripWarning]


@pytest.mark.parametrize("backend", PROCESS_BACKENDS, indirect=True)
def test_a_failing_task_raises_unchanged_and_its_warnings_arrive(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tests.roundtrip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(rt.TaskFailedError, match=r"^task 0 failed$") as info:
            _parallel(backend, batch_size=1)(
                parallel.delayed(rt.warn_then_fail)(i) for i in range(ONE_FAILING_TASK)
            )
    assert type(info.value) is rt.TaskFailedError
    assert not hasattr(info.value, "_workerstate_gathered")
    assert [str(w.message) for w in caught if w.category is rt.RoundTripWarning] == [
        "warning before failing 0"
    ]
    assert [r.getMessage() for r in caplog.records if r.name == "tests.roundtrip"] == [
        "record before failing 0"
    ]


def test_a_thousand_tasks_lose_and_duplicate_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tests.roundtrip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = parallel.Parallel(n_jobs=N_JOBS)(
            parallel.delayed(rt.warn_and_log)(i) for i in range(1000)
        )
    assert results == [i * 10 for i in range(1000)]
    messages = sorted(str(w.message) for w in caught if w.category is rt.RoundTripWarning)
    assert messages == sorted(f"warning from task {i}" for i in range(1000))
    records = sorted(r.getMessage() for r in caplog.records if r.name == "tests.roundtrip")
    assert records == sorted(f"record from task {i}" for i in range(1000))


def test_the_worker_hook_outlives_filter_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Restoring filters with catch_warnings (Python 3.14's context-aware warnings) puts back
    the showwarning found on entry; the worker's hook installed inside stays, a task's own
    replacement does not."""
    monkeypatch.setattr(_warnings, "_kept_showwarning", None)
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    original = warnings.showwarning

    def hook(*args: Any) -> None:
        original(*args)

    def tasks_own(*args: Any) -> None:
        original(*args)

    first = warnings.catch_warnings()
    first.__enter__()
    _warnings.keep_showwarning(hook)  # the first task of a worker installs it
    _warnings.uninstall_filters(first)
    assert warnings.showwarning is hook
    second = warnings.catch_warnings()
    second.__enter__()
    warnings.showwarning = tasks_own
    _warnings.uninstall_filters(second)
    assert warnings.showwarning is hook
    # A task that installs its own function before the hook was ever set keeps nothing of it.
    monkeypatch.setattr(_warnings, "_kept_showwarning", None)
    warnings.showwarning = original
    last = warnings.catch_warnings()
    last.__enter__()
    warnings.showwarning = tasks_own
    _warnings.uninstall_filters(last)
    assert warnings.showwarning is original


def test_threading_backend_duplicates_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tests.roundtrip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parallel.Parallel(n_jobs=N_JOBS, backend="threading")(
            parallel.delayed(rt.warn_and_log)(i) for i in range(6)
        )
    # The threads' warnings reach the parent's warning machinery directly, as with plain
    # joblib. On Python 3.14 with context-aware warnings, a thread that does not inherit the
    # context of the thread that started it records into its own context, so the caller's
    # catch_warnings(record=True) sees none of them (plain joblib's threads neither).
    separate = getattr(sys.flags, "context_aware_warnings", False) and not getattr(
        sys.flags, "thread_inherit_context", False
    )
    assert len([w for w in caught if w.category is rt.RoundTripWarning]) == (0 if separate else 6)
    assert len([r for r in caplog.records if r.name == "tests.roundtrip"]) == 6


def test_plain_joblib_parallel_is_unaffected(caplog: pytest.LogCaptureFixture) -> None:
    """Without workerstate's Parallel nothing is merged back, and nothing breaks."""
    caplog.set_level(logging.WARNING, logger="tests.roundtrip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = joblib.Parallel(n_jobs=N_JOBS)(
            parallel.delayed(rt.warn_and_log)(i) for i in range(6)
        )
    assert results == [i * 10 for i in range(6)]
    assert not [w for w in caught if w.category is rt.RoundTripWarning]
    assert not [r for r in caplog.records if r.name == "tests.roundtrip"]


@pytest.fixture
def side_channel() -> Iterator[str]:
    rt.MERGED.clear()
    with side_channels.preserved():
        yield parallel.register_parallel_side_channel(
            rt.capture_side, rt.restore_side, rt.merge_side, name="side"
        )


@pytest.mark.parametrize("backend", ["loky", "multiprocessing", "threading"])
def test_side_channel_round_trip(side_channel: str, backend: str) -> None:
    results = parallel.Parallel(n_jobs=N_JOBS, backend=backend)(
        parallel.delayed(rt.pid)(i) for i in range(6)
    )
    assert len(rt.MERGED) == 6
    assert {captured for captured, _ in rt.MERGED} == {"from-parent"}
    assert sorted(worker for _, worker in rt.MERGED) == sorted(results)


def test_side_channel_with_plain_joblib_parallel_is_not_merged(side_channel: str) -> None:
    rt.RESTORED.clear()
    joblib.Parallel(n_jobs=N_JOBS, backend="threading")(
        parallel.delayed(rt.pid)(i) for i in range(4)
    )
    assert rt.MERGED == []
    assert rt.RESTORED == ["from-parent"] * 4  # the context was entered around every task


def test_side_channel_registration_errors(side_channel: str) -> None:
    with pytest.raises(ValueError, match="'side' is already registered"):
        parallel.register_parallel_side_channel(
            rt.capture_side, rt.restore_side, rt.merge_side, "side"
        )
    with pytest.raises(TypeError, match="callable restore"):
        parallel.register_parallel_side_channel(rt.capture_side, None, rt.merge_side)  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="'nope'"):
        parallel.remove_parallel_side_channel("nope")


# -- every form of call brings output back ----------------------------------------------------
FORMS = ("parallel", "backend")


def _run(form: str, backend: str, tasks: Any, **kwargs: Any) -> Any:
    """Run ``tasks`` with workerstate's Parallel or with a plain Parallel under the backend."""
    if form == "parallel":
        return _parallel(backend, **kwargs)(tasks)
    with joblib.parallel_config(backend="workerstate", inner=backend):
        return joblib.Parallel(n_jobs=N_JOBS, **kwargs)(tasks)


@pytest.mark.parametrize("make", [parallel.delayed, joblib.delayed], ids=["ws", "joblib"])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("backend", PROCESS_BACKENDS, indirect=True)
def test_every_form_brings_back_each_warning_and_record_once(
    backend: str, form: str, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tests.roundtrip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = _run(form, backend, (make(rt.where_and_pid)(i) for i in range(6)))
    mine = sorted(
        (str(w.message), w.filename, w.lineno) for w in caught if w.category is rt.RoundTripWarning
    )
    assert mine == sorted((f"located {i}", f, line) for i, (f, line, _) in enumerate(results))
    records = sorted(
        (r.getMessage(), r.process) for r in caplog.records if r.name == "tests.roundtrip"
    )
    assert records == sorted((f"located record {i}", p) for i, (_, _, p) in enumerate(results))
    assert os.getpid() not in {p for _, _, p in results}


@pytest.mark.parametrize("backend", PROCESS_BACKENDS, indirect=True)
def test_under_the_backend_filters_and_failures_apply_in_the_parent(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=rt.RoundTripWarning)
        with pytest.raises(rt.RoundTripWarning, match="warning from task 0"):
            _run("backend", backend, (joblib.delayed(rt.warn_and_log)(i) for i in range(1)))
    caplog.set_level(logging.WARNING, logger="tests.roundtrip")
    tasks = (joblib.delayed(rt.warn_then_fail)(i) for i in range(ONE_FAILING_TASK))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(rt.TaskFailedError, match=r"^task 0 failed$") as info:
            _run("backend", backend, tasks, batch_size=1)
    assert [str(w.message) for w in caught if w.category is rt.RoundTripWarning] == [
        "warning before failing 0"
    ]
    assert not hasattr(info.value, "_workerstate_gathered")
    assert [r.getMessage() for r in caplog.records if r.name == "tests.roundtrip"] == [
        "record before failing 0"
    ]


@pytest.mark.parametrize("backend", ["loky", "dask"], indirect=True)
def test_the_backend_reports_workerstate_notes_once_per_call(backend: str) -> None:
    from tests import _state

    parallel.register_global_parallel_callback(_state.parent_only_callback, name="parent-only")
    _state.CALLBACK_WORKS = True  # the parent only: workers fail to read the state
    _state.set_value("run-time")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seen = _run("backend", backend, (joblib.delayed(_state.report)(i) for i in range(8)))
    assert {result["value"] for result in seen} == {"run-time"}
    notes = [w for w in caught if issubclass(w.category, parallel.StateRestoreWarning)]
    assert len(notes) == 1, [str(w.message) for w in caught]
    assert "'parent-only' raised LookupError" in str(notes[0].message)


def test_a_main_script_brings_back_every_warning_and_record(tmp_path: Any) -> None:
    """Tasks defined in ``__main__`` are rebuilt by value in workers: their file name is not
    a module's, and their warnings still arrive, as ``__main__``'s, in every form."""
    import json
    import subprocess

    script = tmp_path / "main_script.py"
    script.write_text(rt.MAIN_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=str(tmp_path),
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert len(report["calls"]) == 8
    for name, call in report["calls"].items():
        results = call["results"]
        assert len(call["warnings"]) == 6, name
        assert sorted(w[0] for w in call["warnings"]) == [f"main warning {i}" for i in range(6)]
        assert sorted([f, ln] for f, ln, _ in results) == sorted(w[1:] for w in call["warnings"])
        assert sorted(p for _, p in call["records"]) == sorted(p for *_, p in results), name
        assert report["parent"] not in {p for *_, p in results}
        assert call["error"] == "main warning 0", name


# -- the round trip never changes what a task does --------------------------------------------
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("backend", PROCESS_BACKENDS, indirect=True)
def test_a_record_that_cannot_be_formatted_or_pickled_changes_nothing(
    backend: str, form: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tests.roundtrip")
    assert _run(form, backend, (joblib.delayed(rt.log_unformattable)(i) for i in range(3))) == [
        0,
        1,
        2,
    ]
    assert _run(form, backend, (joblib.delayed(rt.log_unpicklable)(i) for i in range(3))) == [
        0,
        1,
        2,
    ]
    records = [r for r in caplog.records if r.name == "tests.roundtrip"]
    assert sorted(r.getMessage() for r in records) == ["%d items"] * 3 + [
        f"record {i} with a lock" for i in range(3)
    ]
    locked = [r for r in records if "lock" in r.getMessage()]
    assert all(not hasattr(r, "conn") for r in locked)
    assert sorted(r.kept for r in locked) == [0, 1, 2]  # what pickles stays


def test_logging_reports_an_unformattable_record_in_the_worker_as_without_workerstate(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # Workers started now write to the captured standard error; both calls share them.
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True, kill_workers=True)
    joblib.Parallel(n_jobs=N_JOBS)(joblib.delayed(rt.log_unformattable)(i) for i in range(2))
    plain = capfd.readouterr().err.count("--- Logging error ---")
    parallel.Parallel(n_jobs=N_JOBS)(joblib.delayed(rt.log_unformattable)(i) for i in range(2))
    assert plain == 2
    assert capfd.readouterr().err.count("--- Logging error ---") == plain


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("backend", ["loky", "multiprocessing"], indirect=True)
def test_handlers_the_worker_installs_keep_their_records(
    backend: str, form: str, tmp_path: Any
) -> None:
    path = str(tmp_path / "own.log")
    _run(form, backend, (joblib.delayed(rt.log_to_own_file)(path, i) for i in range(4)))
    with open(path) as lines:
        assert sorted(lines.read().splitlines()) == [f"own line {i}" for i in range(4)]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("backend", PROCESS_BACKENDS, indirect=True)
def test_categories_the_parent_cannot_have_arrive_as_the_nearest_base(
    backend: str, form: str
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _run(form, backend, (joblib.delayed(rt.warn_odd_categories)(i) for i in range(2)))
    seen = sorted(
        (w.category.__name__, str(w.message)) for w in caught if "category" in str(w.message)
    )
    assert seen == sorted(
        [
            *(("UserWarning", f"int: int category {i}") for i in range(2)),
            *(
                ("RoundTripWarning", f"no_such_mod.WorkerOnlyWarning: worker-only category {i}")
                for i in range(2)
            ),
            *(("Warning", f"no_such_mod.BareWarning: bare category {i}") for i in range(2)),
        ]
    )


# -- bounded memory -----------------------------------------------------------------------------
def test_a_flood_of_distinct_warnings_and_logger_names_stays_bounded() -> None:
    shown = 0

    def count(*args: Any, **kwargs: Any) -> None:
        nonlocal shown
        shown += 1

    # The records' nearest existing logger keeps them from pytest's capture, which would keep
    # every one of them.
    nearest = logging.getLogger("tests.roundtrip.flood")
    handler = NullCounter()
    nearest.addHandler(handler)
    nearest.propagate = False
    loggers_before = len(logging.root.manager.loggerDict)
    try:
        _flood(count, lambda: shown)
    finally:
        nearest.removeHandler(handler)
        nearest.propagate = True
    assert handler.count == 2 + 4_000
    assert len(logging.root.manager.loggerDict) == loggers_before  # 4,000 names, none created


class NullCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def _flood(count: Any, shown: Any) -> None:
    import gc
    import tracemalloc

    from workerstate import _reissue

    with warnings.catch_warnings():
        warnings.simplefilter("default")  # remembers each text it showed
        warnings.showwarning = count
        p = parallel.Parallel(n_jobs=N_JOBS)
        p(joblib.delayed(rt.flood)(-10, 10) for _ in range(2))  # workers started, then measure
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        p(joblib.delayed(rt.flood)(n * 5_000, 5_000) for n in range(8))
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
    assert shown() == 10 + 40_000
    assert max(_reissue.registries.sizes()) <= _reissue.REGISTRY_ENTRIES + 1
    # Unbounded, the registry alone would keep some 20 MB for these 40,000 texts.
    assert retained < 1_000_000, retained
