"""Strict comparison: when two captured values or setters are interchangeable as state.

Used between tasks and when restoring (is the state still what was installed?) and at capture
(would a worker see the same state as last time?). Never plain ``==``: an equal dict in another
key order, ``0.0`` for ``-0.0``, ``1`` for ``True`` or an array of another dtype is another
state. What cannot be told cheaply is reported as unknown, and callers treat it as changed.
"""

from __future__ import annotations

import math
import types
from typing import Any

__all__ = ["IMMUTABLE_SCALARS", "same_function", "strict_checker", "strictly_equal"]

IMMUTABLE_SCALARS = (type(None), bool, int, float, complex, str, bytes, range)


def same_function(a: Any, b: Any) -> bool:
    """Whether two setters behave the same: the same object, or the same code over the same
    objects (a nested setter is a new function object on every capture)."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, types.MethodType):
        return a.__self__ is b.__self__ and a.__func__ is b.__func__
    if not isinstance(a, types.FunctionType) or a.__code__ is not b.__code__:
        return False
    if a.__globals__ is not b.__globals__:
        return False
    try:
        cells_a = tuple(cell.cell_contents for cell in a.__closure__ or ())
        cells_b = tuple(cell.cell_contents for cell in b.__closure__ or ())
    except ValueError:  # an empty cell
        return False
    return (
        _same_objects(cells_a, cells_b)
        and _same_objects(a.__defaults__ or (), b.__defaults__ or ())
        and _same_objects(*_kwdefaults(a, b))
    )


def _kwdefaults(a: types.FunctionType, b: types.FunctionType) -> tuple[tuple[Any, ...], ...]:
    kw_a, kw_b = a.__kwdefaults__ or {}, b.__kwdefaults__ or {}
    if kw_a.keys() != kw_b.keys():
        return (None,), (False,)  # compares as different
    return tuple(kw_a.values()), tuple(kw_b[key] for key in kw_a)


def _same_objects(xs: tuple[Any, ...], ys: tuple[Any, ...]) -> bool:
    return len(xs) == len(ys) and all(x is y for x, y in zip(xs, ys, strict=True))


def strictly_equal(a: Any, b: Any, depth: int = 0) -> bool | None:
    """Whether ``a`` and ``b`` are interchangeable as state: never plain ``==``.

    True for the same immutable scalar, or equal values of exactly the same types, with the
    same key order and float signs, elements compared the same way (NumPy arrays by dtype,
    shape, memory layout and bytes). False when they differ. None when that cannot be told
    by looking: the same mutable object (it may have been changed in place since it was
    pickled) or an object of any other type. Callers treat None as changed.
    """
    if type(a) is not type(b) or depth > 6:
        return False
    if isinstance(a, IMMUTABLE_SCALARS):
        if a is b:
            return True
        if isinstance(a, float):
            return _same_float(a, b)
        if isinstance(a, complex):
            return _same_float(a.real, b.real) and _same_float(a.imag, b.imag)
        return bool(a == b)
    if isinstance(a, type) or (callable(a) and not isinstance(a, (list, dict))):
        return a is b
    if isinstance(a, (list, dict)) and a is b:
        return None
    if isinstance(a, (tuple, list)):
        if len(a) != len(b):
            return False
        return _all_equal(strictly_equal(x, y, depth + 1) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        if len(a) != len(b):
            return False
        # Keys too: {1: x}, {True: x} and {1.0: x} are == but another state.
        for key_a, key_b in zip(a, b, strict=True):
            if type(key_a) not in IMMUTABLE_SCALARS:
                return None
            if strictly_equal(key_a, key_b, depth + 1) is not True:
                return False
        return _all_equal(
            strictly_equal(x, y, depth + 1) for x, y in zip(a.values(), b.values(), strict=True)
        )
    if type(a).__module__ == "numpy" and type(a).__name__ == "ndarray":
        return _same_array(a, b)
    return None


def _same_float(a: float, b: float) -> bool:
    # 0.0 == -0.0, and NaN != NaN: compare as values and by sign.
    if a != b and not (a != a and b != b):
        return False
    return math.copysign(1.0, a) == math.copysign(1.0, b)


_ARRAY_BYTES_LIMIT = 1 << 16


def _same_array(a: Any, b: Any) -> bool | None:
    if a is b:
        return None  # may have been changed in place
    if a.dtype != b.dtype or a.shape != b.shape or a.strides != b.strides:
        return False
    if a.dtype.hasobject or a.nbytes > _ARRAY_BYTES_LIMIT:
        return None  # too costly or not comparable by bytes: count as changed
    return bool(a.tobytes() == b.tobytes())


def _all_equal(verdicts: Any) -> bool | None:
    result: bool | None = True
    for verdict in verdicts:
        if verdict is False:
            return False
        if verdict is None:
            result = None
    return result


# Types whose == between two objects of the very same type says exactly "the same state".
_EXACT_BY_EQ = frozenset({str, int, bool, type(None), bytes})


def strict_checker(value: Any) -> Any:
    """A function ``same(current)`` that says ``strictly_equal(current, value) is True``.

    Made once per batch for the value a batch installed; between two tasks it answers at the
    speed of ``==`` for the common shapes (scalars; flat dicts, lists and tuples of strings,
    ints, bools, ``None`` and bytes, such as scikit-learn's config), and falls back to
    :func:`strictly_equal` for everything else.

    Examples
    --------
    >>> same = strict_checker({"a": 1, "b": "x"})
    >>> same({"a": 1, "b": "x"}), same({"b": "x", "a": 1}), same({"a": True, "b": "x"})
    (True, False, False)
    """
    kind = type(value)
    if kind in _EXACT_BY_EQ:
        return lambda current: type(current) is kind and current == value
    if kind is dict:
        keys = tuple(value)
        key_types = tuple(map(type, keys))
        value_types = tuple(map(type, value.values()))
        if _EXACT_BY_EQ.issuperset(key_types) and _EXACT_BY_EQ.issuperset(value_types):
            count = len(value)

            def same_dict(current: Any) -> bool:
                # Types first: once they are the exact ones, == cannot raise or mislead.
                return (
                    type(current) is dict
                    and len(current) == count
                    and tuple(map(type, current.values())) == value_types
                    and tuple(map(type, current)) == key_types
                    and tuple(current) == keys
                    and current == value
                )

            return same_dict
    elif kind in (list, tuple):
        item_types = tuple(map(type, value))
        if _EXACT_BY_EQ.issuperset(item_types):

            def same_sequence(current: Any) -> bool:
                return (
                    type(current) is kind
                    and tuple(map(type, current)) == item_types
                    and current == value
                )

            return same_sequence
    return lambda current: strictly_equal(current, value) is True
