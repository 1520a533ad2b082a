"""The bad-input catalogue: every public entry point fed wrong types, wrong arity, callbacks
of the wrong shape, values that cannot travel, and re-entrant registration.

Every case expects a clear error in the parent (a specific type, and a message that names
what is wrong) and leaves the registry exactly as it was: the same names, the same callback
objects, in the same order.
"""

from __future__ import annotations

import pickle
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest
from joblib.externals.loky.process_executor import BrokenProcessPool

from tests import _reliability_helpers as rh
from tests import _state
from tests._helpers import N_JOBS, loky_pids
from workerstate import parallel
from workerstate.parallel import (
    CallbackError,
    SetterError,
    StatePicklingError,
    WorkerStateBackend,
    WorkerStateError,
    fresh_pool,
)

SECTION = "bad input"


@pytest.fixture(autouse=True)
def _existing() -> Iterator[tuple[tuple[str, Any], ...]]:
    """Every case starts with two registrations that must survive it unchanged."""
    parallel.register_global_parallel_callback(rh.SlotCallback("existing-a"), name="existing-a")
    parallel.register_global_parallel_callback(_state.local_callback, name="existing-local")
    before = rh.registry_state()
    yield before
    rh.SLOTS.clear()
    rh.reset_other_local()


@pytest.fixture(autouse=True, scope="module")
def _figures() -> Iterator[None]:
    yield
    rh.write_figures()


def _unchanged(before: tuple[tuple[str, Any], ...]) -> None:
    after = rh.registry_state()
    assert [name for name, _ in after] == [name for name, _ in before], "registry changed"
    assert after == before
    assert all(a[1] is b[1] for a, b in zip(after, before, strict=True))


def _callback() -> tuple[Any, Any]:
    return 1, print


# -- 1. the public functions, called wrongly ----------------------------------------------------
def _enter_scoped(*args: Any, **kwargs: Any) -> None:
    with parallel.global_parallel_callback(*args, **kwargs):
        pytest.fail("the block must not run")


_register = parallel.register_global_parallel_callback
_remove = parallel.remove_global_parallel_callback

#: (id, function, args, kwargs, error, message pattern)
CALLS: list[
    tuple[
        str,
        Callable[..., Any],
        tuple[Any, ...],
        dict[str, Any],
        type[Exception] | tuple[type[Exception], ...],
        str,
    ]
] = [
    ("register: no arguments", _register, (), {}, TypeError, "callback"),
    ("register: three arguments", _register, (_callback, "n", "x"), {}, TypeError, "positional"),
    ("register: unknown keyword", _register, (_callback,), {"nam": "x"}, TypeError, "nam"),
    ("register: None", _register, (None,), {}, TypeError, "needs a callable.*NoneType"),
    ("register: int", _register, (42,), {}, TypeError, "needs a callable.*int 42"),
    ("register: str", _register, ("tests._state.value_callback",), {}, TypeError, "callable"),
    ("register: a pair", _register, ((1, print),), {}, TypeError, "needs a callable.*tuple"),
    ("register: name int", _register, (_callback, 1), {}, TypeError, "must be a str.*int 1"),
    ("register: name bytes", _register, (_callback, b"n"), {}, TypeError, "must be a str.*bytes"),
    ("register: name tuple", _register, (_callback, ("n",)), {}, TypeError, "must be a str.*tuple"),
    ("register: name float", _register, (_callback, 1.5), {}, TypeError, "must be a str.*float"),
    ("register: name bool", _register, (_callback, True), {}, TypeError, "must be a str.*bool"),
    ("register: name list", _register, (_callback, ["n"]), {}, TypeError, "must be a str.*list"),
    ("register: name callable", _register, (_callback, _callback), {}, TypeError, "must be a str"),
    ("register: empty name", _register, (_callback, ""), {}, ValueError, "must not be empty"),
    (
        "register: taken name",
        _register,
        (_callback, "existing-a"),
        {},
        ValueError,
        "'existing-a' is",
    ),
    ("remove: no arguments", _remove, (), {}, TypeError, "name"),
    ("remove: two arguments", _remove, ("existing-a", "x"), {}, TypeError, "positional"),
    ("remove: unknown", _remove, ("missing",), {}, KeyError, "'missing'.*now: 'existing-a', 'ex"),
    ("remove: wrong case", _remove, ("EXISTING-A",), {}, KeyError, "'EXISTING-A'"),
    ("remove: None", _remove, (None,), {}, KeyError, "under None"),
    ("remove: int", _remove, (1,), {}, KeyError, "under 1;"),
    ("remove: unhashable", _remove, (["existing-a"],), {}, KeyError, r"under \['existing-a'\]"),
    ("remove: a callback", _remove, (_state.local_callback,), {}, KeyError, "local_callback"),
    ("scoped: no arguments", _enter_scoped, (), {}, TypeError, "callback"),
    ("scoped: not callable", _enter_scoped, (42,), {}, TypeError, "needs a callable"),
    ("scoped: name int", _enter_scoped, (_callback, 3), {}, TypeError, "must be a str"),
    ("scoped: taken name", _enter_scoped, (_callback, "existing-a"), {}, ValueError, "already"),
    ("registered_callbacks: 1 argument", parallel.registered_callbacks, (1,), {}, TypeError, "po"),
    ("fresh_pool: an argument", fresh_pool, (2,), {}, TypeError, "positional"),
    ("delayed: no arguments", parallel.delayed, (), {}, TypeError, "function"),
    ("delayed: two functions", parallel.delayed, (abs, abs), {}, TypeError, "positional"),
    ("Parallel: unknown backend", parallel.Parallel, (), {"backend": "nope"}, ValueError, "nope"),
    ("backend: unknown inner", WorkerStateBackend, ("nope",), {}, ValueError, "cannot wrap 'nope'"),
    (
        "backend: keywords with an instance",
        WorkerStateBackend,
        (joblib.parallel.ThreadingBackend(),),
        {"n_jobs": 2},
        ValueError,
        "need inner= as a name",
    ),
    ("backend: inner int", WorkerStateBackend, (42,), {}, TypeError, "inner"),
    ("backend: inner None", WorkerStateBackend, (None,), {}, TypeError, "inner"),
]


@pytest.mark.parametrize(
    ("function", "args", "kwargs", "error", "match"),
    [case[1:] for case in CALLS],
    ids=[case[0] for case in CALLS],
)
def test_public_function_called_wrongly(
    function: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[Exception] | tuple[type[Exception], ...],
    match: str,
    _existing: tuple[tuple[str, Any], ...],
) -> None:
    rh.record(SECTION, cases=1)
    with pytest.raises(error, match=match):
        function(*args, **kwargs)
    _unchanged(_existing)


def test_scoped_registration_never_entered_registers_nothing(
    _existing: tuple[tuple[str, Any], ...],
) -> None:
    rh.record(SECTION, cases=1)
    manager = parallel.global_parallel_callback(_callback, name="never-entered")
    del manager
    _unchanged(_existing)


def test_scoped_registration_with_a_taken_name_keeps_the_other_registration(
    _existing: tuple[tuple[str, Any], ...],
) -> None:
    rh.record(SECTION, cases=1)
    with (
        pytest.raises(ValueError, match="'existing-a' is already registered"),
        parallel.global_parallel_callback(_callback, name="existing-a"),
    ):
        pytest.fail("the block must not run")
    _unchanged(_existing)


def test_scoped_registration_removed_inside_the_block(
    _existing: tuple[tuple[str, Any], ...],
) -> None:
    """Removing the scoped name by hand inside the block: the exit says so, naming it."""
    rh.record(SECTION, cases=1)
    with (
        pytest.raises(KeyError, match="'scoped'"),
        parallel.global_parallel_callback(_callback, name="scoped"),
    ):
        parallel.remove_global_parallel_callback("scoped")
    _unchanged(_existing)


# -- 2. callbacks that return the wrong shape ---------------------------------------------------
SHAPES: dict[str, Callable[[], Any]] = {
    "int": lambda: 42,
    "None": lambda: None,
    "str of two characters": lambda: "ab",
    "setter not callable": lambda: (1, 2),
    "value and setter swapped": lambda: (print, 1),
    "triple": lambda: (1, print, 3),
    "single": lambda: (print,),
    "list pair": lambda: [1, print],
    "dict": lambda: {"value": 1, "setter": print},
    "generator of a pair": lambda: (x for x in (1, print)),
}


@pytest.mark.parametrize("api", rh.API_NAMES)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_callback_returning_the_wrong_shape(
    shape: str, api: str, tmp_path: Path, _existing: tuple[tuple[str, Any], ...]
) -> None:
    returns = SHAPES[shape]
    parallel.register_global_parallel_callback(lambda: returns(), name="bad-shape")
    before = rh.registry_state()
    marker = tmp_path / "ran"
    rh.record(SECTION, cases=1, faults=1)
    with pytest.raises(
        CallbackError, match=r"'bad-shape' must return a \(value, setter\) pair"
    ) as info:
        rh.run_call(api, "threading", lambda d: (d(_state.touch)(str(marker)) for _ in range(4)))
    assert isinstance(info.value, TypeError)
    assert not marker.exists()
    _unchanged(before)


@pytest.mark.parametrize("api", rh.API_NAMES)
def test_callback_returning_the_wrong_shape_on_loky(
    api: str, tmp_path: Path, _existing: tuple[tuple[str, Any], ...]
) -> None:
    parallel.register_global_parallel_callback(lambda: (1, 2), name="bad-shape")
    before = rh.registry_state()
    marker = tmp_path / "ran"
    rh.record(SECTION, cases=1, faults=1)
    with pytest.raises(CallbackError, match="'bad-shape' must return"):
        rh.run_call(api, "loky", lambda d: (d(_state.touch)(str(marker)) for _ in range(4)))
    assert not marker.exists()
    _unchanged(before)


def test_a_tuple_subclass_pair_is_accepted(_existing: tuple[tuple[str, Any], ...]) -> None:
    """Not an error: a named tuple of (value, setter) is a pair."""
    from typing import NamedTuple

    class Pair(NamedTuple):
        value: Any
        setter: Any

    parallel.register_global_parallel_callback(
        lambda: Pair(_state.get_local(), _state.set_local), name="named-pair"
    )
    _state.set_local("caller-local")
    rh.record(SECTION, cases=1, tasks=4)
    results = parallel.Parallel(n_jobs=N_JOBS, backend="threading")(
        joblib.delayed(_state.get_local)() for _ in range(4)
    )
    assert results == ["caller-local"] * 4


# -- 3. callbacks and setters that raise, or take the wrong arguments ---------------------------
class _CustomError(Exception):
    pass


def _needs_an_argument(x: Any) -> tuple[Any, Any]:
    return x, print


RAISING: dict[str, tuple[Callable[[], Any], str]] = {
    "ValueError": (lambda: int("not a number"), "raised ValueError: invalid literal"),
    "KeyError": (lambda: {}["setting"], "raised KeyError: 'setting'"),
    "custom exception": (
        lambda: (_ for _ in ()).throw(_CustomError("custom failure")),
        "raised _CustomError: custom failure",
    ),
    "wrong arity": (_needs_an_argument, "raised TypeError: .*missing 1 required"),
    "RecursionError": (
        lambda: (_ for _ in ()).throw(RecursionError("too deep")),
        "raised RecursionError: too deep",
    ),
}


@pytest.mark.parametrize("api", rh.API_NAMES)
@pytest.mark.parametrize("kind", list(RAISING))
def test_callback_raising_in_the_parent(
    kind: str, api: str, tmp_path: Path, _existing: tuple[tuple[str, Any], ...]
) -> None:
    callback, match = RAISING[kind]
    parallel.register_global_parallel_callback(callback, name="raising")  # type: ignore[arg-type]
    before = rh.registry_state()
    marker = tmp_path / "ran"
    rh.record(SECTION, cases=1, faults=1)
    with pytest.raises(CallbackError, match="'raising' " + match) as info:
        rh.run_call(api, "threading", lambda d: (d(_state.touch)(str(marker)) for _ in range(4)))
    assert info.value.__cause__ is not None
    assert "no task was sent" in str(info.value)
    assert not marker.exists()
    _unchanged(before)


@pytest.mark.parametrize("error", [SystemExit, KeyboardInterrupt, GeneratorExit])
def test_base_exceptions_from_a_callback_pass_through_unchanged(
    error: type[BaseException], tmp_path: Path, _existing: tuple[tuple[str, Any], ...]
) -> None:
    def raising() -> tuple[Any, Any]:
        raise error("from the callback")

    parallel.register_global_parallel_callback(raising, name="base-raising")
    before = rh.registry_state()
    marker = tmp_path / "ran"
    rh.record(SECTION, cases=1, faults=1)
    with pytest.raises(error, match="from the callback") as info:
        parallel.Parallel(n_jobs=N_JOBS, backend="threading")(
            joblib.delayed(_state.touch)(str(marker)) for _ in range(4)
        )
    assert type(info.value) is error
    assert not marker.exists()
    _unchanged(before)


def _setter_without_arguments() -> None:
    pass


def _callback_with_a_bad_setter() -> tuple[Any, Any]:
    return rh.get_other_local(), _setter_without_arguments


@pytest.mark.parametrize("backend", ["threading", "loky"])
def test_setter_taking_no_argument(backend: str, _existing: tuple[tuple[str, Any], ...]) -> None:
    parallel.register_global_parallel_callback(_callback_with_a_bad_setter, name="bad-setter")
    before = rh.registry_state()
    rh.set_other_local("caller-local")  # differs from the workers' value: the setter runs
    rh.record(SECTION, cases=1, faults=1)
    with pytest.raises(
        SetterError, match="setter of parallel callback 'bad-setter' raised TypeError"
    ):
        parallel.Parallel(n_jobs=N_JOBS, backend=backend)(
            joblib.delayed(_state.square)(i) for i in range(4)
        )
    _unchanged(before)


# -- 4. state that cannot travel to process workers ---------------------------------------------
class _Holder:
    def __init__(self, inner: Any) -> None:
        self.inner = inner


class _RefusesPickling:
    def __reduce__(self) -> Any:
        raise ValueError("this object refuses to be pickled")


def _generator() -> Iterator[int]:
    yield 1


class _CallbackHoldingALock:
    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __call__(self) -> tuple[Any, Any]:
        return "value", _state.set_value


def _lock_setter_callback() -> tuple[Any, Any]:
    lock = threading.Lock()

    def setter(value: Any) -> None:
        with lock:
            _state.set_value(value)

    return "value", setter


class _Target:
    pass


_TARGET = _Target()

UNPICKLABLE: dict[str, tuple[Callable[[Path], Any], str]] = {
    "lock": (lambda _: {"setting": 1, "lock": threading.Lock()}, r"value\['lock'\]"),
    "generator": (lambda _: [1, _generator()], r"value\[1\]"),
    "open file": (lambda path: {"log": open(path / "log.txt", "w")}, r"value\['log'\]"),  # noqa: SIM115
    "weak reference": (lambda _: (weakref.ref(_TARGET),), r"value\[0\]"),
    "refuses pickling": (lambda _: _RefusesPickling(), "refuses to be pickled"),
    "lock deep inside an object": (lambda _: _Holder([_Holder(threading.Lock())]), "inner"),
}


@pytest.mark.parametrize(
    ("kind", "api", "backend"),
    [
        *((kind, "ws.Parallel+joblib.delayed", "loky") for kind in UNPICKLABLE),
        ("lock", "joblib.Parallel+ws.delayed", "loky"),
        ("lock", "workerstate backend", "loky"),
        ("lock", "ws.Parallel+ws.delayed", "multiprocessing"),
        ("generator", "joblib.Parallel+ws.delayed", "multiprocessing"),
    ],
)
def test_unpicklable_value(
    kind: str, api: str, backend: str, tmp_path: Path, _existing: tuple[tuple[str, Any], ...]
) -> None:
    make, where = UNPICKLABLE[kind]
    value = make(tmp_path)
    parallel.register_global_parallel_callback(lambda: (value, _state.set_value), name="cargo")
    before = rh.registry_state()
    marker = tmp_path / "ran"
    rh.record(SECTION, cases=1, faults=1)
    try:
        with pytest.raises(StatePicklingError, match=where) as info:
            rh.run_call(api, backend, lambda d: (d(_state.touch)(str(marker)) for _ in range(4)))
    finally:
        if kind == "open file":
            value["log"].close()
    message = str(info.value)
    assert "'cargo'" in message
    assert isinstance(info.value, pickle.PicklingError)
    assert not marker.exists()
    _unchanged(before)


@pytest.mark.parametrize(
    ("callback", "part"),
    [(_lock_setter_callback, "setter"), (_CallbackHoldingALock(), "callback")],
    ids=["setter closing over a lock", "callback holding a lock"],
)
def test_unpicklable_setter_or_callback(
    callback: Any, part: str, tmp_path: Path, _existing: tuple[tuple[str, Any], ...]
) -> None:
    parallel.register_global_parallel_callback(callback, name="cargo")
    before = rh.registry_state()
    marker = tmp_path / "ran"
    rh.record(SECTION, cases=1, faults=1)
    with pytest.raises(StatePicklingError, match=f"'cargo'.*{part}") as info:
        parallel.Parallel(n_jobs=N_JOBS)(
            joblib.delayed(_state.touch)(str(marker)) for _ in range(4)
        )
    assert "lock" in str(info.value)
    assert not marker.exists()
    _unchanged(before)


def _cannot_rebuild() -> Any:
    raise ValueError("cannot rebuild this value here")


class _Unloadable:
    """Pickles fine in the parent, fails to unpickle in the worker."""

    def __reduce__(self) -> Any:
        return _cannot_rebuild, ()


@pytest.mark.filterwarnings(
    "ignore:Exception in thread ExecutorManagerThread:pytest.PytestUnhandledThreadExceptionWarning"
)
@pytest.mark.parametrize("api", ["joblib.Parallel+ws.delayed", "ws.Parallel+joblib.delayed"])
def test_value_that_cannot_be_unpickled_in_the_worker(
    api: str, tmp_path: Path, _existing: tuple[tuple[str, Any], ...]
) -> None:
    """Only the worker can find out; loky reports it in the parent as a task that failed to
    un-serialize, with the worker's traceback, and replaces its workers."""
    parallel.register_global_parallel_callback(_state.value_callback, name="unloadable")
    before = rh.registry_state()
    loky_pids()
    _state.set_value(_Unloadable())
    marker = tmp_path / "ran"
    rh.record(SECTION, cases=1, faults=1)
    with pytest.raises(BrokenProcessPool, match="failed to un-serialize") as info:
        rh.run_call(api, "loky", lambda d: (d(_state.touch)(str(marker)) for _ in range(4)))
    assert "cannot rebuild this value here" in str(info.value.__cause__)
    assert not marker.exists()
    _unchanged(before)
    # The next call works once the value is fixed.
    _state.set_value("fixed")
    results = rh.run_call(api, "loky", lambda d: (d(_state.get_value)() for _ in range(4)))
    rh.record(SECTION, tasks=len(results), errors=sum(r != "fixed" for r in results))
    assert results == ["fixed"] * 4


# -- 5. bad tasks: joblib's own errors, unchanged ---------------------------------------------
def _not_callable_tasks(delayed: Callable[..., Any]) -> Any:
    return (delayed(42)(i) for i in range(3))  # type: ignore[arg-type]


BAD_TASKS: dict[str, Callable[[Callable[..., Any]], Any]] = {
    "not iterable": lambda _: 42,
    "iterable of ints": lambda _: iter([1, 2, 3]),
    "iterable of pairs": lambda _: ((abs, (1,)) for _ in range(3)),
    "task function not callable": _not_callable_tasks,
    "args not a tuple": lambda d: ((d(abs)(1)[0], 5, {}) for _ in range(3)),
}


@pytest.mark.parametrize("backend", ["threading", "loky"])
@pytest.mark.parametrize("bad", list(BAD_TASKS))
def test_bad_tasks_give_joblibs_own_error(
    bad: str, backend: str, _existing: tuple[tuple[str, Any], ...]
) -> None:
    make = BAD_TASKS[bad]
    before = rh.registry_state()
    _state.set_local("caller-local")
    rh.record(SECTION, cases=1, faults=1)
    with pytest.raises(Exception) as control:
        joblib.Parallel(n_jobs=N_JOBS, backend=backend)(make(joblib.delayed))
    with pytest.raises(type(control.value)) as info:
        parallel.Parallel(n_jobs=N_JOBS, backend=backend)(make(parallel.delayed))
    if bad == "args not a tuple":
        # Python names the callable in this message: workerstate's task wrapper here.
        assert str(info.value).split(" argument")[1] == str(control.value).split(" argument")[1]
    else:
        assert str(info.value) == str(control.value)
    _unchanged(before)
    assert _state.get_local() == "caller-local"


def test_n_jobs_zero_gives_joblibs_own_error(_existing: tuple[tuple[str, Any], ...]) -> None:
    rh.record(SECTION, cases=1)
    with pytest.raises(ValueError) as control:
        joblib.Parallel(n_jobs=0)(joblib.delayed(abs)(i) for i in range(2))
    with pytest.raises(ValueError) as info:
        parallel.Parallel(n_jobs=0)(parallel.delayed(abs)(i) for i in range(2))
    assert str(info.value) == str(control.value)
    _unchanged(_existing)


# -- 6. re-entrant use from inside a callback or a setter ---------------------------------------
def _reentrant_register() -> tuple[Any, Any]:
    parallel.register_global_parallel_callback(_state.value_callback, name="added-by-callback")
    return _state.get_local(), _state.set_local


def _reentrant_remove_self() -> tuple[Any, Any]:
    parallel.remove_global_parallel_callback("reentrant")
    return _state.get_local(), _state.set_local


def _reentrant_remove_other() -> tuple[Any, Any]:
    parallel.remove_global_parallel_callback("existing-a")
    return _state.get_local(), _state.set_local


REENTRANT_CALLBACKS = {
    "registers another callback": _reentrant_register,
    "removes itself": _reentrant_remove_self,
    "removes another callback": _reentrant_remove_other,
}


@pytest.mark.parametrize("backend", ["threading", "loky"])
@pytest.mark.parametrize("kind", list(REENTRANT_CALLBACKS))
def test_reentrant_registration_from_inside_a_callback(
    kind: str, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Changing the registry while it is being captured: a clear error, nothing changed."""
    if backend == "loky":
        request.getfixturevalue("fresh_workers")  # workers with no registrations of their own
    parallel.register_global_parallel_callback(REENTRANT_CALLBACKS[kind], name="reentrant")
    before = rh.registry_state()
    _state.set_local("caller-local")
    marker = tmp_path / "ran"
    rh.record(SECTION, cases=1, faults=1)
    with pytest.raises(WorkerStateError, match="'reentrant'"):
        parallel.Parallel(n_jobs=N_JOBS, backend=backend)(
            joblib.delayed(_state.touch)(str(marker)) for _ in range(4)
        )
    _unchanged(before)
    assert not marker.exists()


def _registering_setter(value: Any) -> None:
    parallel.register_global_parallel_callback(_state.value_callback, name="added-by-setter")
    rh.set_other_local(value)


def _callback_with_a_registering_setter() -> tuple[Any, Any]:
    return rh.get_other_local(), _registering_setter


@pytest.mark.parametrize("backend", ["threading", "loky"])
def test_reentrant_registration_from_inside_a_setter(backend: str, fresh_workers: None) -> None:
    """A setter that registers a callback where it runs (a pool thread of the parent, or a
    worker process): a clear SetterError in the parent, and no registry changed."""
    parallel.register_global_parallel_callback(
        _callback_with_a_registering_setter, name="reentrant"
    )
    before = rh.registry_state()
    rh.set_other_local("caller-local")  # differs from the workers' value: the setter runs
    rh.record(SECTION, cases=1, faults=1)
    with pytest.raises(SetterError, match="'reentrant'"):
        parallel.Parallel(n_jobs=N_JOBS, backend=backend, batch_size=1)(
            joblib.delayed(_state.square)(i) for i in range(4)
        )
    _unchanged(before)
    if backend == "loky":
        # No worker kept a registration either.
        names = joblib.Parallel(n_jobs=N_JOBS, batch_size=1)(
            joblib.delayed(rh.pid_and_registered)() for _ in range(8)
        )
        assert {registered for _, registered in names} == {()}


def _nested_parallel_callback() -> tuple[Any, Any]:
    parallel.Parallel(n_jobs=N_JOBS, backend="threading")(joblib.delayed(abs)(-i) for i in range(2))
    return _state.get_local(), _state.set_local


def test_callback_that_runs_a_workerstate_parallel_call(
    _existing: tuple[tuple[str, Any], ...],
) -> None:
    """The nested call captures the same callback again, and so on: one short, clear error
    rather than one line per level of recursion."""
    parallel.register_global_parallel_callback(_nested_parallel_callback, name="reentrant")
    before = rh.registry_state()
    rh.record(SECTION, cases=1, faults=1)
    with pytest.raises(CallbackError, match="'reentrant'") as info:
        parallel.Parallel(n_jobs=N_JOBS, backend="threading")(
            joblib.delayed(abs)(-i) for i in range(2)
        )
    _unchanged(before)
    assert len(str(info.value)) < 2_000, f"{len(str(info.value)):,} characters"
