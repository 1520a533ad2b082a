"""workerstate's exceptions survive pickling, as they must to travel back from workers."""

from __future__ import annotations

import pickle
import threading

import cloudpickle
import joblib
import pytest

from tests import _state
from workerstate import parallel
from workerstate.parallel import (
    CallbackError,
    SetterError,
    StatePicklingError,
    WorkerStateError,
)

ERRORS = [WorkerStateError, CallbackError, SetterError, StatePicklingError]
BASES = {
    WorkerStateError: (Exception,),
    CallbackError: (WorkerStateError, TypeError),
    SetterError: (WorkerStateError, RuntimeError),
    StatePicklingError: (WorkerStateError, pickle.PicklingError),
}


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
@pytest.mark.parametrize("error_type", ERRORS, ids=lambda cls: cls.__name__)
def test_round_trip(error_type: type[Exception], dumps: object) -> None:
    error = error_type("Parallel callback 'name' failed: value['lock'] is a _thread.lock")
    loaded = pickle.loads(dumps(error))  # type: ignore[operator]
    assert type(loaded) is error_type
    assert str(loaded) == str(error)
    assert loaded.args == error.args
    assert isinstance(loaded, BASES[error_type])


@pytest.mark.parametrize("error_type", ERRORS, ids=lambda cls: cls.__name__)
def test_round_trip_with_cause_and_traceback(error_type: type[Exception]) -> None:
    try:
        try:
            raise KeyError("inner")
        except KeyError as exc:
            raise error_type("outer") from exc
    except error_type as exc:
        error = exc
    loaded = pickle.loads(pickle.dumps(error))
    assert type(loaded) is error_type
    assert str(loaded) == "outer"


def test_real_errors_round_trip() -> None:
    """The errors the library raises, with their real messages."""
    errors: list[BaseException] = []

    def raising() -> object:
        raise KeyError("no such setting")

    parallel.register_global_parallel_callback(raising, name="raising")
    with pytest.raises(CallbackError) as info:
        parallel.Parallel(n_jobs=2, backend="threading")(
            joblib.delayed(_state.square)(i) for i in range(2)
        )
    errors.append(info.value)
    parallel.remove_global_parallel_callback("raising")

    parallel.register_global_parallel_callback(_state.value_callback, name="value")
    _state.set_value({"lock": threading.Lock()})
    with pytest.raises(StatePicklingError) as pickling_info:
        parallel.Parallel(n_jobs=2, backend="multiprocessing")(
            joblib.delayed(_state.square)(i) for i in range(2)
        )
    errors.append(pickling_info.value)

    for error in errors:
        loaded = pickle.loads(pickle.dumps(error))
        assert type(loaded) is type(error)
        assert str(loaded) == str(error)
        assert "'raising'" in str(loaded) or "'value'" in str(loaded)
