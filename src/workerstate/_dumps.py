"""Pickling with a given pickler, to a byte counter: how the explanations test an object.

In: any object. Out: the size of its pickle under the standard pickle (the multiprocessing
backend), cloudpickle (dask, workerstate's state values), loky's pickler, or a strict
cloudpickle that fails at parts that pickle but will not behave the same in a worker.
Nothing is kept: the pickle goes to a counter.
"""

from __future__ import annotations

import pickle
import types
from typing import Any

from ._pickling import is_patched_wrapper

__all__ = ["Fragile", "cloud_dumps", "loky_dumps", "std_dumps", "strict_dumps"]


class _Sink:
    """A write-only file that counts bytes: checks do not keep a copy of a large pickle."""

    __slots__ = ("size",)

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: Any) -> int:
        n = memoryview(data).nbytes
        self.size += n
        return n


def std_dumps(obj: Any) -> int:
    sink = _Sink()
    pickle.Pickler(sink, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return sink.size


def cloud_dumps(obj: Any) -> int:
    import cloudpickle

    sink = _Sink()
    cloudpickle.Pickler(sink, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return sink.size


def loky_dumps(obj: Any) -> int:
    """loky's pickler: cloudpickle plus loky's reducers (sockets, for one)."""
    from ._joblib import loky_pickler

    sink = _Sink()
    loky_pickler()(sink, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return sink.size


class Fragile(pickle.PicklingError):
    """Raised by the strict pickler at a part that pickles but will not behave the same."""

    def __init__(self, trap: str) -> None:
        super().__init__(f"{trap} reference")
        self.trap = trap


def _fragile_trap(obj: Any) -> str | None:
    if isinstance(obj, (types.FunctionType, type)) and obj.__module__ == "__main__":
        return "main_module"
    if is_patched_wrapper(obj):
        return "patched_wrapper"
    return None


_strict_pickler: type | None = None


def strict_dumps(obj: Any) -> int:
    """cloudpickle, failing at references to ``__main__`` and at run-time wrappers."""
    global _strict_pickler
    if _strict_pickler is None:
        import cloudpickle

        class StrictPickler(cloudpickle.Pickler):  # type: ignore[misc]
            def reducer_override(self, obj: Any) -> Any:
                trap = _fragile_trap(obj)
                if trap is not None:
                    raise Fragile(trap)
                return super().reducer_override(obj)

        _strict_pickler = StrictPickler
    sink = _Sink()
    _strict_pickler(sink, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return sink.size
