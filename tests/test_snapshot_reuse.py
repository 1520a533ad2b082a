"""A capture reuses the previous snapshot only when nothing a worker would see changed."""

from __future__ import annotations

from typing import Any

from workerstate import parallel
from workerstate._capture import capture


class _Sink:
    def __init__(self, label: str) -> None:
        self.label = label

    def set(self, value: Any) -> None:
        pass


def test_unchanged_state_reuses_the_snapshot() -> None:
    def callback() -> tuple[Any, Any]:
        def setter(value: Any) -> None:
            pass

        return {"a": 1, "b": [1.0, "x"]}, setter

    with parallel.global_parallel_callback(callback, name="same"):
        assert capture() is capture()


def test_a_setter_bound_to_another_object_is_a_change() -> None:
    holder = {"sink": _Sink("first")}

    def callback() -> tuple[Any, Any]:
        return 1, holder["sink"].set

    with parallel.global_parallel_callback(callback, name="sink"):
        first = capture()
        holder["sink"] = _Sink("second")
        second = capture()
    assert second is not first
    assert second.entries[0].setter.__self__.label == "second"


def test_a_keyword_only_default_bound_to_another_object_is_a_change() -> None:
    holder: dict[str, list[Any]] = {"target": []}

    def callback() -> tuple[Any, Any]:
        target = holder["target"]

        def setter(value: Any, *, into: list[Any] = target) -> None:
            into.append(value)

        return 1, setter

    with parallel.global_parallel_callback(callback, name="kw"):
        first = capture()
        holder["target"] = ["new"]
        second = capture()
    assert second is not first


def test_a_value_changed_in_place_is_a_change() -> None:
    value = {"items": [1, 2]}

    def callback() -> tuple[Any, Any]:
        return value, print

    with parallel.global_parallel_callback(callback, name="mutable"):
        first = capture()
        value["items"].append(3)
        second = capture()
    assert second is not first
    assert second.entries[0].value == {"items": [1, 2, 3]}


def test_a_pickled_value_changed_in_place_is_a_change_and_unchanged_is_reused() -> None:
    value = {"items": [1, 2]}

    def callback() -> tuple[Any, Any]:
        return value, print

    with parallel.global_parallel_callback(callback, name="mutable"):
        first = capture(local_workers=True)
        first.payload_ref()  # as if sent to loky workers
        assert capture(local_workers=True) is first  # the same content: reused
        value["items"].append(3)
        second = capture(local_workers=True)
    assert second is not first
    assert second.entries[0].value == {"items": [1, 2, 3]}
