"""Install, refresh and restore on threads of the test process: fast, no worker pools.

A snapshot whose ``pid`` is not this process's behaves as it does in a worker process; one
captured here behaves as on the threading backend. The end-to-end tests check the same rules
through real workers.
"""

from __future__ import annotations

import copy
import math
import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workerstate._compare import strict_checker, strictly_equal
from workerstate._install import Mode, active_snapshot
from workerstate._snapshot import Entry, Snapshot
from workerstate.parallel import SetterError, StateRestoreWarning

WORKER = -1  # no process has this id: the snapshot counts as coming from another process


class Slot:
    """A piece of state with a callback that reads it live and counts its setter's calls."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.sets: list[Any] = []

    def set(self, value: Any) -> None:
        self.sets.append(value)
        self.value = value

    def callback(self) -> tuple[Any, Any]:
        return self.value, self.set


def _snapshot(*entries: tuple[str, Any, Any], pid: int = WORKER, collect: bool = False) -> Any:
    return Snapshot(
        tuple(Entry(name, value, setter, callback) for name, value, setter, callback in entries),
        (),
        pid=pid,
        collect=collect,
    )


def _entry(name: str, slot: Slot, value: Any) -> tuple[str, Any, Any, Any]:
    return name, value, slot.set, slot.callback


def test_a_worker_always_runs_the_setter() -> None:
    parent = {"a": 1}
    slot = Slot(parent)  # the very object is in place already
    snapshot = _snapshot(_entry("s", slot, parent))
    undo = snapshot.enter()
    assert slot.sets == [parent]
    assert undo.steps[0].mode is Mode.RECORDED
    assert active_snapshot() is snapshot
    snapshot.exit(undo)
    assert slot.sets == [parent, parent]  # restored to what it read
    assert active_snapshot() is None


@pytest.mark.parametrize(
    ("own", "parent"),
    [(0.0, -0.0), ({"a": 2, "b": 1}, {"b": 1, "a": 2}), (1, True), (1.0, 1), (None, None)],
)
def test_a_worker_sets_values_that_are_only_equal(own: Any, parent: Any) -> None:
    slot = Slot(own)
    snapshot = _snapshot(_entry("s", slot, parent))
    undo = snapshot.enter()
    assert slot.value is parent
    assert slot.sets == [parent]
    snapshot.exit(undo)
    assert slot.value is own


def test_the_parents_process_skips_only_the_very_same_object() -> None:
    parent = {"a": 1}
    same = Slot(parent)
    equal = Slot({"a": 1})
    snapshot = _snapshot(_entry("same", same, parent), _entry("equal", equal, parent), pid=None)
    undo = snapshot.enter()
    assert [step.mode for step in undo.steps] == [Mode.SKIPPED, Mode.RECORDED]
    assert same.sets == []
    assert equal.value is parent
    snapshot.exit(undo)
    assert same.sets == []


def test_refresh_sets_again_what_a_task_changed_to_an_equal_value() -> None:
    parent = {"b": 1, "a": 2}
    slot = Slot({"a": 0})
    snapshot = _snapshot(_entry("s", slot, parent))
    undo = snapshot.enter()
    watched = snapshot.watch(undo)
    slot.value = {"a": 2, "b": 1}  # a task reordered it: == but not the parent's state
    snapshot.refresh(undo, watched)
    assert slot.value is parent
    sets = len(slot.sets)
    slot.value = dict(parent)  # strictly equal: the same keys in the same order
    snapshot.refresh(undo, watched)
    assert len(slot.sets) == sets
    slot.value = parent
    snapshot.refresh(undo, watched)
    assert len(slot.sets) == sets
    snapshot.exit(undo)
    assert slot.value == {"a": 0}


def test_refresh_tells_the_sign_of_zero() -> None:
    slot = Slot(1.0)
    snapshot = _snapshot(_entry("s", slot, -0.0))
    undo = snapshot.enter()
    slot.value = 0.0
    snapshot.refresh(undo, snapshot.watch(undo))
    assert math.copysign(1.0, slot.value) == -1.0
    snapshot.exit(undo)
    assert slot.value == 1.0


def test_a_callback_that_cannot_be_read_still_delivers_and_says_so() -> None:
    delivered: list[Any] = []

    def callback() -> tuple[Any, Any]:
        raise LookupError("nothing to read here")

    snapshot = _snapshot(("unread", "parent", delivered.append, callback), collect=True)
    undo = snapshot.enter()
    assert delivered == ["parent"]
    assert undo.steps[0].mode is Mode.UNREAD
    snapshot.refresh(undo, snapshot.watch(undo))  # cannot be read: set again
    assert delivered == ["parent", "parent"]
    snapshot.exit(undo)
    assert delivered == ["parent", "parent"]  # nothing to put back
    (note,) = snapshot.notes
    assert note.name == "unread"
    assert "raised LookupError: nothing to read here" in note.message
    snapshot.exit(snapshot.enter())
    assert len(snapshot.notes) == 1  # once per call and process


def test_an_unreadable_callback_on_a_thread_of_the_parent_warns_there() -> None:
    def callback() -> tuple[Any, Any]:
        raise LookupError("nothing to read here")

    snapshot = _snapshot(("unread", "parent", lambda value: None, callback), pid=None)
    with pytest.warns(StateRestoreWarning, match="'unread' raised LookupError"):
        snapshot.exit(snapshot.enter())


def test_concurrent_tasks_of_one_call_restore_once_at_the_end() -> None:
    parent = "parent"
    slot = Slot("own")
    snapshot = _snapshot(_entry("s", slot, parent))
    first = snapshot.enter()
    second_done = threading.Event()
    modes: list[Mode] = []

    def second_task() -> None:
        undo = snapshot.enter()
        modes.append(undo.steps[0].mode)
        snapshot.exit(undo)
        second_done.set()

    thread = threading.Thread(target=second_task)
    thread.start()
    thread.join(5)
    assert second_done.is_set()
    assert modes == [Mode.SHARED]
    assert slot.value is parent  # the first task still runs under it
    snapshot.exit(first)
    assert slot.value == "own"


def test_thread_local_state_is_installed_per_thread() -> None:
    local = threading.local()

    def callback() -> tuple[Any, Any]:
        return getattr(local, "value", "own"), lambda value: setattr(local, "value", value)

    snapshot = _snapshot(
        ("local", "parent", lambda value: setattr(local, "value", value), callback)
    )
    first = snapshot.enter()
    seen: list[Any] = []

    def other_thread() -> None:
        undo = snapshot.enter()
        seen.append((undo.steps[0].mode, local.value))
        snapshot.exit(undo)
        seen.append(getattr(local, "value", "own"))

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join(5)
    assert seen == [(Mode.PRIVATE, "parent"), "own"]
    snapshot.exit(first)
    assert local.value == "own"


def test_a_setter_that_fails_on_restore_names_the_callback() -> None:
    class Picky(Slot):
        def set(self, value: Any) -> None:
            if value == "own":
                raise RuntimeError("will not go back")
            super().set(value)

    slot = Picky("own")
    snapshot = _snapshot(_entry("picky", slot, "parent"))
    undo = snapshot.enter()
    with pytest.raises(SetterError, match="'picky' raised RuntimeError: will not go back"):
        snapshot.exit(undo)
    assert active_snapshot() is None


def test_a_setter_that_fails_on_install_undoes_the_others() -> None:
    good = Slot("own")

    def failing(value: Any) -> None:
        raise RuntimeError("refused")

    snapshot = _snapshot(
        _entry("good", good, "parent"), ("bad", "parent", failing, lambda: ("own", failing))
    )
    with pytest.raises(SetterError, match="'bad' raised RuntimeError: refused"):
        snapshot.enter()
    assert good.value == "own"
    assert active_snapshot() is None


@pytest.mark.parametrize(
    ("a", "b", "verdict"),
    [
        (1, 1, True),
        (1, True, False),
        (1, 1.0, False),
        (0.0, -0.0, False),
        (-0.0, -0.0, True),
        (math.nan, math.nan, True),
        (math.nan, -math.nan, False),
        (complex(0.0, 1), complex(-0.0, 1), False),
        ("x", "x", True),
        ({"a": 1, "b": 2}, {"a": 1, "b": 2}, True),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}, False),
        ({"a": [1, 2.0]}, {"a": [1, 2]}, False),
        ({1: "x"}, {True: "x"}, False),
        ({1.0: "x"}, {1: "x"}, False),
        ({0.0: "x"}, {-0.0: "x"}, False),
        ({(1,): "x"}, {(1,): "x"}, None),
        ((1, "a"), (1, "a"), True),
        ([1], (1,), False),
        (np.array([0.0]), np.array([-0.0]), False),
        (np.array([1], dtype=np.int32), np.array([1], dtype=np.int64), False),
        (np.array([1.5, 2.0]), np.array([1.5, 2.0]), True),
        (np.zeros((2, 2)), np.zeros((2, 2)).T.copy(order="F"), False),
        (object(), object(), None),
    ],
)
def test_strict_comparison(a: Any, b: Any, verdict: bool | None) -> None:
    assert strictly_equal(a, b) is verdict
    assert strictly_equal(b, a) is verdict


def test_the_checker_never_compares_arrays_by_equality() -> None:
    assert strict_checker({"a": True})({"a": np.array([True, True])}) is False
    assert strict_checker([1])([np.array([1, 1])]) is False


def test_the_same_mutable_object_cannot_be_judged() -> None:
    value = {"a": [1]}
    assert strictly_equal(value, value) is None
    array = np.zeros(3)
    assert strictly_equal(array, array) is None


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.floats(allow_nan=True, width=32),
    st.sampled_from(["a", "b"]),
    st.binary(max_size=2),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(_SCALARS.filter(lambda k: k == k), inner, max_size=3),
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None, database=None)
@given(value=_VALUES, current=_VALUES)
def test_the_precomputed_checker_agrees_with_strict_comparison(value: Any, current: Any) -> None:
    assert strict_checker(value)(current) is (strictly_equal(current, value) is True)
    assert strict_checker(value)(copy.deepcopy(value)) is (
        strictly_equal(copy.deepcopy(value), value) is True
    )
