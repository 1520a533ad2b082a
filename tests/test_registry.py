"""The callback registry: registering, removing, naming, and changes from other threads."""

from __future__ import annotations

import functools
import threading

import joblib
import pytest

from tests import _state
from workerstate import parallel
from workerstate._registry import CallbackRegistry, default_registry


def _callback() -> tuple[int, object]:
    return 1, print


class _CallableObject:
    def __call__(self) -> tuple[int, object]:
        return 2, print


def test_starts_empty_in_every_test() -> None:
    # The autouse fixture restores the default registry; nothing is registered at import.
    assert parallel.registered_callbacks() == ()


def test_register_and_remove() -> None:
    assert parallel.register_global_parallel_callback(_callback, name="one") == "one"
    assert parallel.registered_callbacks() == ("one",)
    assert default_registry.get("one") is _callback
    parallel.remove_global_parallel_callback("one")
    assert parallel.registered_callbacks() == ()
    with pytest.raises(KeyError):
        default_registry.get("one")


def test_registration_order_is_kept() -> None:
    names = ["c", "a", "b"]
    for name in names:
        parallel.register_global_parallel_callback(_callback, name=name)
    assert parallel.registered_callbacks() == tuple(names)
    parallel.remove_global_parallel_callback("a")
    assert parallel.registered_callbacks() == ("c", "b")
    parallel.register_global_parallel_callback(_callback, name="a")
    assert parallel.registered_callbacks() == ("c", "b", "a")


def test_same_callback_under_two_names() -> None:
    parallel.register_global_parallel_callback(_callback, name="x")
    parallel.register_global_parallel_callback(_callback, name="y")
    assert parallel.registered_callbacks() == ("x", "y")


def test_context_manager_registers_for_the_block() -> None:
    with parallel.global_parallel_callback(_callback, name="scoped") as name:
        assert name == "scoped"
        assert parallel.registered_callbacks() == ("scoped",)
    assert parallel.registered_callbacks() == ()


def test_context_manager_removes_on_error() -> None:
    with (
        pytest.raises(RuntimeError, match="inside"),
        parallel.global_parallel_callback(_callback, name="scoped"),
    ):
        raise RuntimeError("inside")
    assert parallel.registered_callbacks() == ()


def test_context_manager_default_name() -> None:
    with parallel.global_parallel_callback(_callback) as name:
        assert name == f"{__name__}._callback"
        assert parallel.registered_callbacks() == (name,)
    assert parallel.registered_callbacks() == ()


def test_default_name_is_module_and_qualname() -> None:
    assert parallel.register_global_parallel_callback(_callback) == "tests.test_registry._callback"
    assert (
        parallel.register_global_parallel_callback(_state.value_callback)
        == "tests._state.value_callback"
    )

    class Holder:
        @staticmethod
        def method() -> tuple[int, object]:
            return 3, print

    assert parallel.register_global_parallel_callback(Holder.method) == (
        "tests.test_registry.test_default_name_is_module_and_qualname.<locals>.Holder.method"
    )


def test_default_names_of_unnamed_callables_do_not_collide() -> None:
    first = parallel.register_global_parallel_callback(lambda: (1, print))
    second = parallel.register_global_parallel_callback(lambda: (2, print))
    third = parallel.register_global_parallel_callback(_CallableObject())
    fourth = parallel.register_global_parallel_callback(functools.partial(_callback))
    assert len({first, second, third, fourth}) == 4
    assert parallel.registered_callbacks() == (first, second, third, fourth)
    assert all(isinstance(name, str) and name for name in (first, second, third, fourth))


def test_duplicate_name_raises_value_error() -> None:
    parallel.register_global_parallel_callback(_callback, name="dup")
    with pytest.raises(ValueError, match="'dup' is already registered"):
        parallel.register_global_parallel_callback(_state.value_callback, name="dup")
    # The first registration is untouched.
    assert parallel.registered_callbacks() == ("dup",)
    assert default_registry.get("dup") is _callback


def test_duplicate_default_name_raises_value_error() -> None:
    parallel.register_global_parallel_callback(_callback)
    with pytest.raises(ValueError, match="already registered"):
        parallel.register_global_parallel_callback(_callback)


@pytest.mark.parametrize("not_callable", [None, 42, "name", (1, print)])
def test_non_callable_raises_type_error(not_callable: object) -> None:
    with pytest.raises(TypeError, match="needs a callable"):
        parallel.register_global_parallel_callback(not_callable)  # type: ignore[arg-type]
    assert parallel.registered_callbacks() == ()


@pytest.mark.parametrize("bad_name", [1, b"bytes", ("a",)])
def test_non_str_name_raises_type_error(bad_name: object) -> None:
    with pytest.raises(TypeError, match="must be a str"):
        parallel.register_global_parallel_callback(_callback, name=bad_name)  # type: ignore[arg-type]
    assert parallel.registered_callbacks() == ()


def test_empty_name_raises_value_error() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        parallel.register_global_parallel_callback(_callback, name="")


def test_remove_unknown_name_raises_key_error_naming_it() -> None:
    parallel.register_global_parallel_callback(_callback, name="known")
    with pytest.raises(KeyError) as info:
        parallel.remove_global_parallel_callback("missing-name")
    message = str(info.value)
    assert "'missing-name'" in message
    assert "'known'" in message  # it also says what is registered
    assert parallel.registered_callbacks() == ("known",)


def test_remove_twice_raises_key_error() -> None:
    parallel.register_global_parallel_callback(_callback, name="once")
    parallel.remove_global_parallel_callback("once")
    with pytest.raises(KeyError, match="'once'"):
        parallel.remove_global_parallel_callback("once")


def test_preserved_restores_registrations() -> None:
    parallel.register_global_parallel_callback(_callback, name="kept")
    with default_registry.preserved():
        parallel.remove_global_parallel_callback("kept")
        parallel.register_global_parallel_callback(_callback, name="temporary")
        assert parallel.registered_callbacks() == ("temporary",)
    assert parallel.registered_callbacks() == ("kept",)


def test_registries_are_independent() -> None:
    registry = CallbackRegistry()
    registry.register(_callback, name="own")
    assert registry.names() == ("own",)
    assert parallel.registered_callbacks() == ()
    assert registry.items() == (("own", _callback),)


def test_concurrent_registration_from_threads() -> None:
    registry = CallbackRegistry()
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(200):
                name = f"t{k}-{i}"
                registry.register(_callback, name=name)
                if i % 2:
                    registry.remove(name)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(registry.names()) == sorted(
        f"t{k}-{i}" for k in range(4) for i in range(200) if not i % 2
    )


@pytest.mark.parametrize("api", ["joblib.Parallel+delayed", "workerstate.Parallel"])
def test_registry_changed_from_another_thread_during_a_call(api: str) -> None:
    """Another thread registers and removes callbacks while Parallel calls capture state.

    No call fails (no "dictionary changed size during iteration"), and every task of a
    call sees the same, consistent set: the permanent callback's value and a churned
    callback's value either in all tasks of the call or in none.
    """
    parallel.register_global_parallel_callback(_state.value_callback, name="value")
    # Callbacks that let other threads run while the registry is being read.
    for i in range(8):
        parallel.register_global_parallel_callback(_state.yielding_callback, name=f"slow-{i}")
    _state.set_value("run-time")
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        i = 0
        try:
            while not stop.is_set():
                name = f"churn-{i % 5}"
                parallel.register_global_parallel_callback(_state.local_callback, name=name)
                parallel.remove_global_parallel_callback(name)
                i += 1
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        for _ in range(15):
            _state.set_local("caller-local")
            if api == "workerstate.Parallel":
                results = parallel.Parallel(n_jobs=2, backend="threading", batch_size=1)(
                    parallel.delayed(_state.report)(i) for i in range(20)
                )
            else:
                results = joblib.Parallel(n_jobs=2, backend="threading", batch_size=1)(
                    parallel.delayed(_state.report)(i) for i in range(20)
                )
            assert [seen["i"] for seen in results] == list(range(20))
            assert {seen["value"] for seen in results} == {"run-time"}
            # A churned callback carries the local value: one snapshot per call means all
            # tasks saw it, or none did.
            locals_seen = {seen["local"] for seen in results}
            assert len(locals_seen) == 1, locals_seen
            assert locals_seen <= {"caller-local", _state.IMPORT_LOCAL}
    finally:
        stop.set()
        thread.join()
    assert errors == []
