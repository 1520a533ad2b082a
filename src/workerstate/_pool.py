"""Clean worker pools: shut down joblib's reusable loky executor."""

from __future__ import annotations

from types import TracebackType

from . import _joblib

__all__ = ["fresh_pool"]


def _shutdown_reusable_executor() -> None:
    # joblib keeps one loky executor per process and reuses it across Parallel calls.
    executor = _joblib.reusable_executor()
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)


class fresh_pool:  # noqa: N801 - used like a function, as contextlib's helpers are
    """Shut down joblib's reusable loky executor, so the next call starts new workers.

    Calling ``fresh_pool()`` kills the workers of the shared loky pool and waits for them to
    exit; it does nothing when no pool is running. Used as a context manager it gives a
    clean pool on entry and on exit, so nothing a block's workers picked up survives it.

    Examples
    --------
    >>> from joblib import Parallel, delayed
    >>> import os
    >>> with fresh_pool():
    ...     pids = set(Parallel(n_jobs=2)(delayed(os.getpid)() for _ in range(4)))
    >>> fresh_pool()  # also works as a plain call
    <fresh_pool>
    """

    def __init__(self) -> None:
        _shutdown_reusable_executor()

    def __enter__(self) -> fresh_pool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _shutdown_reusable_executor()

    def __repr__(self) -> str:
        return "<fresh_pool>"
