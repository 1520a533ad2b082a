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
