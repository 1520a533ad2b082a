"""The presets of ``workerstate.presets``, end to end through real loky workers.

Each loky test starts the pool first and changes the parent's state afterwards, so a worker
cannot have inherited the state when it started. Plain ``joblib.delayed`` is the control
that shows the state does not arrive by itself, and a plain task after the preset tasks, in
the same reused workers, shows that the workers' own state was put back.
"""

from __future__ import annotations

import contextlib
import contextvars
import decimal
import functools
import logging
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import joblib
import numpy as np
import pandas as pd
import pytest
import sklearn
import threadpoolctl

from tests import _presets_helpers as helpers
from workerstate import parallel, presets
from workerstate._capture import capture
from workerstate.parallel import fresh_pool

REPO = Path(__file__).resolve().parents[1]
N_JOBS = 2
N_TASKS = 6


def run(tasks: Iterable[Any], backend: str | None = "loky") -> list[Any]:
    """One task per batch, so the tasks spread over the workers.

    ``backend=None`` takes the backend of the active ``joblib.parallel_config``.
    """
    return list(joblib.Parallel(n_jobs=N_JOBS, backend=backend, batch_size=1)(tasks))


def start_pool(backend: str | None = "loky") -> set[int]:
    """Start (or reuse) the loky pool before the test changes the parent's state."""
    return set(run((joblib.delayed(helpers.pid)() for _ in range(2 * N_JOBS)), backend))


def seen(results: list[tuple[Any, Any]]) -> set[Any]:
    return {value for _, value in results}


def seen_lists(results: list[tuple[Any, list[Any]]]) -> set[Any]:
    return {value for _, values in results for value in values}


def workers(results: list[tuple[Any, Any]]) -> set[Any]:
    """The ``(pid, thread id)`` of the workers that ran the tasks."""
    return {worker for worker, _ in results}


def through_workers(
    callback: Callable[[], Any],
    func: Callable[..., Any],
    *args: Any,
    backend: str | None = "loky",
) -> tuple[set[Any], set[Any], set[Any]]:
    """What the workers see: with the callback, with plain joblib.delayed, and after both.

    The caller has changed the parent's state already. All three calls share one pool (also
    with the threading backend), and the last one, plain tasks, must see the workers' own
    state again in the workers that ran the callback's tasks.
    """
    with joblib.Parallel(n_jobs=N_JOBS, backend=backend, batch_size=1) as run_in_pool:
        with presets.registered(callback):
            with_preset = run_in_pool(parallel.delayed(func)(*args) for _ in range(N_TASKS))
            control = run_in_pool(joblib.delayed(func)(*args) for _ in range(N_TASKS))
        after = run_in_pool(joblib.delayed(func)(*args) for _ in range(2 * N_TASKS))
    assert workers(after) & workers(with_preset), "no later task reused a worker of the preset"
    return seen(with_preset), seen(control), seen(after)


# -- the API -----------------------------------------------------------------------------------
def test_default_names_are_readable_and_distinct() -> None:
    callbacks = [
        presets.sklearn_config,
        presets.pandas_options,
        presets.numpy_errstate,
        presets.numpy_printoptions,
        presets.threadpool_limits,
        presets.logging_levels,
        presets.decimal_context,
        presets.environ("OMP_NUM_THREADS", "MY_FLAG"),
        presets.environ("MY_FLAG"),
        presets.context_var(helpers.REQUEST_ID),
        presets.runtime_patch("tests._presets_helpers:expensive"),
    ]
    with presets.registered(*callbacks) as names:
        assert parallel.registered_callbacks() == names
    assert names[0] == "workerstate.presets.sklearn_config"
    assert names[7] == "workerstate.presets.environ[OMP_NUM_THREADS,MY_FLAG]"
    assert names[9] == "workerstate.presets.context_var[tests._presets_helpers:REQUEST_ID]"
    assert names[10] == "workerstate.presets.runtime_patch[tests._presets_helpers:expensive]"
    assert len(set(names)) == len(names)
    assert parallel.registered_callbacks() == ()
    # Paths in either spelling name the same place.
    assert presets.context_var("tests._presets_helpers.REQUEST_ID").__qualname__ == (
        "context_var[tests._presets_helpers:REQUEST_ID]"
    )
    assert sorted(presets.__all__) == presets.__all__


def test_register_is_all_or_nothing() -> None:
    with parallel.global_parallel_callback(presets.pandas_options):
        with pytest.raises(ValueError, match="already registered"):
            presets.register(presets.sklearn_config, presets.pandas_options)
        assert parallel.registered_callbacks() == ("workerstate.presets.pandas_options",)
    names = presets.register(presets.numpy_errstate, presets.decimal_context)
    try:
        assert parallel.registered_callbacks() == names
    finally:
        for name in names:
            parallel.remove_global_parallel_callback(name)


def test_bad_arguments() -> None:
    with pytest.raises(TypeError):
        presets.environ()
    with pytest.raises(ValueError, match="environment variable name"):
        presets.environ("A=B")
    with pytest.raises(ValueError, match="module and an attribute"):
        presets.runtime_patch("no_dot_here")
    with pytest.raises(ValueError, match="module-level variable"):
        presets.context_var(contextvars.ContextVar("nowhere"))
    with pytest.raises(TypeError):
        presets.context_var(42)  # type: ignore[arg-type]


def test_unchanged_state_reuses_the_snapshot() -> None:
    callbacks = (
        presets.sklearn_config,
        presets.pandas_options,
        presets.numpy_errstate,
        presets.numpy_printoptions,
        presets.threadpool_limits,
        presets.logging_levels,
        presets.decimal_context,
        presets.environ("MY_FLAG"),
        presets.context_var(helpers.REQUEST_ID),
        presets.runtime_patch("tests._presets_helpers:square"),
    )
    with presets.registered(*callbacks):
        first = capture()
        assert capture() is first
        with sklearn.config_context(assume_finite=True):
            assert capture() is not first


def test_defaults_capture_nothing() -> None:
    # The test process is at the libraries' defaults (the conftest restores scikit-learn).
    for callback in (
        presets.sklearn_config,
        presets.pandas_options,
        presets.numpy_errstate,
        presets.numpy_printoptions,
        presets.decimal_context,
    ):
        assert callback()[0] == {}, callback


def test_numpy_documented_defaults_match_a_new_process() -> None:
    from workerstate import _presets_libs

    code = "import numpy as np; print(repr((np.geterr(), np.get_printoptions())))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    errstate, printoptions = eval(out)
    assert errstate == _presets_libs.NUMPY_ERR_DEFAULTS
    assert printoptions == _presets_libs.NUMPY_PRINT_DEFAULTS


def test_libraries_the_parent_did_not_import_stay_unimported(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from workerstate import presets
        # joblib comes with the package, which registers its backend with joblib on import.
        heavy = ("sklearn", "pandas", "threadpoolctl")
        assert not [m for m in heavy if m in sys.modules], "presets imported a library"
        for preset in (presets.sklearn_config, presets.pandas_options,
                       presets.threadpool_limits):
            assert preset()[0] == {}, preset

        from joblib import Parallel
        from workerstate import parallel

        def probe():
            return sorted(m for m in ("sklearn", "pandas", "threadpoolctl") if m in sys.modules)

        names = presets.register(
            presets.sklearn_config, presets.pandas_options, presets.numpy_errstate,
            presets.numpy_printoptions, presets.threadpool_limits, presets.logging_levels,
            presets.decimal_context, presets.environ("MY_FLAG"),
        )
        seen = Parallel(n_jobs=2, batch_size=1)(parallel.delayed(probe)() for _ in range(6))
        assert seen == [[]] * 6, seen
        assert probe() == [], probe()
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=80,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# -- scikit-learn ------------------------------------------------------------------------------
def test_sklearn_config_loky() -> None:
    start_pool()
    with sklearn.config_context(assume_finite=True, working_memory=123):
        got, control, after = through_workers(presets.sklearn_config, helpers.sklearn_config)
    assert got == {(True, 123)}
    assert control == after == {(False, 1024)}


def test_sklearn_config_threading_is_per_thread() -> None:
    with sklearn.config_context(assume_finite=True):
        got, control, after = through_workers(
            presets.sklearn_config, helpers.sklearn_config, backend="threading"
        )
        # The caller's thread keeps its own config.
        assert sklearn.get_config()["assume_finite"] is True
    assert got == {(True, 1024)}
    assert control == after == {(False, 1024)}


def test_sklearn_config_through_workerstate_parallel() -> None:
    start_pool()
    with presets.registered(presets.sklearn_config), sklearn.config_context(assume_finite=True):
        results = parallel.Parallel(n_jobs=N_JOBS, batch_size=1)(
            joblib.delayed(helpers.sklearn_config)() for _ in range(N_TASKS)
        )
    assert seen(results) == {(True, 1024)}


def test_sklearn_config_in_a_nested_call() -> None:
    # The workers capture the outer task's state for their own Parallel call: the preset's
    # callback works in a worker process.
    start_pool()
    with presets.registered(presets.sklearn_config), sklearn.config_context(assume_finite=True):
        results = run(parallel.delayed(helpers.nested_sklearn_config)() for _ in range(2))
    assert seen_lists(results) == {(True, 1024)}


# -- pandas ------------------------------------------------------------------------------------
def test_pandas_options_loky() -> None:
    start_pool()
    keys = ("display.max_rows", "display.precision", "display.max_colwidth")
    with pd.option_context("display.max_rows", 7, "display.precision", 3):
        assert presets.pandas_options()[0] == {"display.max_rows": 7, "display.precision": 3}
        got, control, after = through_workers(presets.pandas_options, helpers.pandas_options, *keys)
    assert got == {(7, 3, 50)}
    assert control == after == {(60, 6, 50)}


def test_pandas_deprecated_options_are_not_carried() -> None:
    from pandas._config import config as cf

    if "mode.copy_on_write" not in cf._deprecated_options:
        pytest.skip("mode.copy_on_write is a working option in this pandas")
    start_pool()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = pd.get_option("mode.copy_on_write")
    # The documented behaviour: the option cannot be changed (pandas warns and ignores it),
    # so it is left out; the other options still travel, and the workers get no warning
    # (the parent's "error" filter would turn it into an error there).
    with pytest.warns(Warning, match="copy_on_write"):
        pd.set_option("mode.copy_on_write", not old)
    try:
        with pd.option_context("display.max_rows", 9):
            assert presets.pandas_options()[0] == {"display.max_rows": 9}
            got, _, after = through_workers(
                presets.pandas_options, helpers.pandas_options, "display.max_rows"
            )
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pd.set_option("mode.copy_on_write", old)
    assert got == {(9,)}
    assert after == {(60,)}


def test_pandas_setter_resets_options_left_out() -> None:
    value, setter = presets.pandas_options()
    try:
        setter({"display.max_rows": 11, "display.width": 99})
        assert presets.pandas_options()[0] == {"display.max_rows": 11, "display.width": 99}
        setter({"display.width": 99, "not.an.option": 1})  # unknown options are skipped
        assert presets.pandas_options()[0] == {"display.width": 99}
    finally:
        setter(value)
    assert presets.pandas_options()[0] == value


# -- NumPy -------------------------------------------------------------------------------------
def test_numpy_errstate_and_printoptions_loky() -> None:
    start_pool()
    with np.errstate(divide="raise"), np.printoptions(precision=3):
        assert presets.numpy_errstate()[0] == {"divide": "raise"}
        assert presets.numpy_printoptions()[0] == {"precision": 3}
        with presets.registered(presets.numpy_errstate):
            got, control, after = through_workers(presets.numpy_printoptions, helpers.numpy_state)
    assert got == {("raise", 3)}
    assert control == after == {("warn", 8)}


def test_numpy_formatter_lambda_travels() -> None:
    start_pool()
    formatter = {"float": lambda x: f"<{x:.1f}>"}
    with np.printoptions(formatter=formatter), presets.registered(presets.numpy_printoptions):
        shown = run(parallel.delayed(np.array2string)(np.array([0.25])) for _ in range(2))
        control = run(joblib.delayed(np.array2string)(np.array([0.25])) for _ in range(2))
    assert shown == ["[<0.2>]", "[<0.2>]"]
    assert control == ["[0.25]", "[0.25]"]


# -- logging -----------------------------------------------------------------------------------
def test_logging_levels_loky() -> None:
    start_pool()
    app, quiet = "workerstate.test.app", "workerstate.test.quiet"
    saved_root = logging.root.level
    logging.getLogger(app).setLevel(logging.DEBUG)
    logging.getLogger(quiet).setLevel(logging.CRITICAL)
    logging.root.setLevel(logging.ERROR)
    try:
        value = presets.logging_levels()[0]
        assert value["root"] == logging.ERROR
        assert value[app] == logging.DEBUG
        got, control, after = through_workers(
            presets.logging_levels, helpers.logger_levels, "", app, quiet
        )
    finally:
        logging.root.setLevel(saved_root)
        logging.getLogger(app).setLevel(logging.NOTSET)
        logging.getLogger(quiet).setLevel(logging.NOTSET)
    assert got == {(logging.ERROR, logging.DEBUG, logging.CRITICAL)}
    assert control == after == {(logging.WARNING, logging.NOTSET, logging.NOTSET)}


def test_logging_setter_gives_exactly_the_value() -> None:
    value, setter = presets.logging_levels()
    extra = logging.getLogger("workerstate.test.extra")
    extra.setLevel(logging.INFO)
    try:
        setter(value)  # a logger with a level that the value does not have: NOTSET
        assert extra.level == logging.NOTSET
        assert presets.logging_levels()[0] == value
    finally:
        extra.setLevel(logging.NOTSET)


# -- environment variables ---------------------------------------------------------------------
def test_environ_sets_and_unsets_loky() -> None:
    had, gets = "WS_PRESETS_WORKER_HAS", "WS_PRESETS_PARENT_SETS"
    os.environ[had] = "inherited"
    os.environ.pop(gets, None)
    try:
        with fresh_pool():
            start_pool()  # the workers inherit WS_PRESETS_WORKER_HAS
            del os.environ[had]
            os.environ[gets] = "parent"
            callback = presets.environ(had, gets)
            assert callback()[0] == {had: None, gets: "parent"}
            got, control, after = through_workers(callback, helpers.environ, had, gets)
    finally:
        os.environ.pop(had, None)
        os.environ.pop(gets, None)
    assert got == {(None, "parent")}
    assert control == after == {("inherited", None)}


# -- threadpoolctl -----------------------------------------------------------------------------
@pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2 if hasattr(os, "sched_getaffinity") else True,
    reason="needs two CPUs for a BLAS limit below the default",
)
def test_threadpool_limits_loky(monkeypatch: pytest.MonkeyPatch) -> None:
    # Workers with two BLAS threads each, so that the parent's limit of one shows.
    with fresh_pool(), joblib.parallel_config(backend="loky", inner_max_num_threads=2):
        start_pool(backend=None)
        assert presets.threadpool_limits()[0] == {}
        # As dask's LocalCluster does in its parent: the variables no longer tell the
        # parent's defaults, which the preset has seen already.
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
        assert presets.threadpool_limits()[0] == {}
        with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
            assert presets.threadpool_limits()[0] == {"blas": 1}
            got, control, after = through_workers(
                presets.threadpool_limits, helpers.blas_threads, backend=None
            )
        assert presets.threadpool_limits()[0] == {}
    assert got == {1}
    assert control == after == {2}


def test_threadpool_limit_is_a_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    # Workers with one BLAS thread each; the parent's default is raised to 8 through its
    # environment, so its limit of 2 counts as a limit. The workers keep their 1.
    with joblib.parallel_config(backend="loky", inner_max_num_threads=1):
        start_pool(backend=None)
        monkeypatch.setenv("OPENBLAS_NUM_THREADS", "8")
        with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
            assert presets.threadpool_limits()[0] == {"blas": 2}
            got, control, after = through_workers(
                presets.threadpool_limits, helpers.blas_threads, backend=None
            )
    assert got == control == after == {1}


# -- context variables -------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["loky", "threading"])
def test_context_var(backend: str) -> None:
    if backend == "loky":
        start_pool()
    token = helpers.REQUEST_ID.set("req-1")
    try:
        assert presets.context_var(helpers.REQUEST_ID)()[0] == "req-1"
        got, control, after = through_workers(
            presets.context_var(helpers.REQUEST_ID), helpers.request_id, backend=backend
        )
    finally:
        helpers.REQUEST_ID.reset(token)
    assert got == {"req-1"}
    # The workers had the variable unset, and have it unset again.
    assert control == after == {"<unset>"}


def _in_new_context(func: Callable[[], None]) -> None:
    contextvars.copy_context().run(func)


def test_context_var_setter_restores_values_and_unset() -> None:
    def check() -> None:
        callback = presets.context_var("tests._presets_helpers:REQUEST_ID")
        before, setter = callback()
        assert before is callback()[0]  # the "unset" marker, the same object every time
        setter("a")
        assert helpers.REQUEST_ID.get() == "a"
        setter("b")
        setter("a")
        assert helpers.REQUEST_ID.get() == "a"
        setter(before)
        assert helpers.REQUEST_ID.get("<unset>") == "<unset>"

    _in_new_context(check)


def test_context_var_set_by_the_task_itself_stays_set() -> None:
    # Documented: only the task's own token could unset a variable that the worker had
    # unset and the task set.
    def check() -> None:
        before, setter = presets.context_var(helpers.REQUEST_ID)()
        helpers.REQUEST_ID.set("set by the task")
        setter(before)
        assert helpers.REQUEST_ID.get() == "set by the task"

    _in_new_context(check)


# -- decimal -----------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["loky", "threading"])
def test_decimal_context(backend: str) -> None:
    if backend == "loky":
        start_pool()
    with decimal.localcontext() as context:
        context.prec = 5
        context.rounding = decimal.ROUND_DOWN
        context.traps[decimal.Inexact] = True
        assert presets.decimal_context()[0] == {
            "prec": 5,
            "rounding": "ROUND_DOWN",
            "traps": ("DivisionByZero", "Inexact", "InvalidOperation", "Overflow"),
        }
        context.traps[decimal.Inexact] = False
        got, control, after = through_workers(
            presets.decimal_context, helpers.decimal_state, backend=backend
        )
    assert got == {(5, "ROUND_DOWN", "0.66666")}
    assert control == after == {(28, "ROUND_HALF_EVEN", "0." + "6" * 27 + "7")}


# -- run-time patches --------------------------------------------------------------------------
@contextlib.contextmanager
def patched(name: str, replacement: Any) -> Iterator[Any]:
    original = getattr(helpers, name)
    setattr(helpers, name, replacement)
    try:
        yield original
    finally:
        setattr(helpers, name, original)


def _executions(log_dir: Path) -> list[str]:
    return sorted(path.name.split("-")[0] for path in log_dir.iterdir())


def test_runtime_patch_memory_cache_loky(tmp_path: Path) -> None:
    cache_dir, log_dir = tmp_path / "cache", tmp_path / "log"
    log_dir.mkdir()
    memory = joblib.Memory(cache_dir, verbose=0)
    start_pool()
    callback = presets.runtime_patch("tests._presets_helpers:expensive")
    with patched("expensive", memory.cache(helpers.expensive)) as original:
        cached = helpers.expensive
        assert callback()[0] is cached
        xs = range(10, 10 + N_TASKS)
        with presets.registered(callback):
            first = run(parallel.delayed(helpers.call_expensive)(x, str(log_dir)) for x in xs)
            assert seen(first) == {("MemorizedFunc", x * x) for x in xs}
            assert all(cached.check_call_in_cache(x, str(log_dir)) for x in xs)
            assert _executions(log_dir) == sorted(str(x) for x in xs)
            # Cached on disk: running again executes nothing.
            again = run(parallel.delayed(helpers.call_expensive)(x, str(log_dir)) for x in xs)
            assert seen(again) == seen(first)
            assert _executions(log_dir) == sorted(str(x) for x in xs)
            # The control: plain tasks get the workers' own, uncached function.
            control = run(joblib.delayed(helpers.call_expensive)(99, str(log_dir)) for _ in xs)
            assert seen(control) == {("function", 99 * 99)}
            assert not cached.check_call_in_cache(99, str(log_dir))
        after = run(joblib.delayed(helpers.call_expensive)(98, str(log_dir)) for _ in range(8))
        assert seen(after) == {("function", 98 * 98)}
        assert workers(after) & workers(first)
        assert helpers.expensive is cached
    assert helpers.expensive is original


def test_runtime_patch_wraps_wrapper_loky() -> None:
    start_pool()
    callback = presets.runtime_patch("tests._presets_helpers.square")
    with patched("square", helpers.tagging(helpers.square)):
        wrapper = helpers.square
        # The trap that the preset avoids: by reference, the wrapper is its own name.
        assert cloudpickle.loads(cloudpickle.dumps(wrapper)) is wrapper
        got, control, after = through_workers(callback, helpers.call_square, 4)
    assert got == {(("tagged", 16), False)}
    assert control == after == {(16, False)}


def test_runtime_patch_lru_cache_loky() -> None:
    start_pool()
    callback = presets.runtime_patch("tests._presets_helpers:square")
    with patched("square", functools.lru_cache(maxsize=None)(helpers.square)):
        got, control, after = through_workers(callback, helpers.call_square, 5)
    assert got == {(25, True)}
    assert control == after == {(25, False)}


def test_runtime_patch_setter_in_process() -> None:
    callback = presets.runtime_patch("tests._presets_helpers:square")
    original, setter = callback()
    assert original is helpers.square  # not patched: carried by reference
    replacement = functools.partial(helpers.square)
    try:
        setter(replacement)
        assert helpers.square is replacement
        setter(callback()[0])  # reading and setting back changes nothing
        assert helpers.square is replacement
    finally:
        setter(original)
    assert helpers.square is original
