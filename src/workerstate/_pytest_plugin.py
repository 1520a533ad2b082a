"""pytest plugin, registered through the ``pytest11`` entry point.

Only this module imports pytest, so the library itself does not depend on it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._pool import fresh_pool

__all__ = ["fresh_workers"]


@pytest.fixture
def fresh_workers() -> Iterator[None]:
    """Give the test new loky worker processes, and shut them down after it.

    Worker processes are reused across ``Parallel`` calls, so state a worker picked up in
    one test can reach the next. With this fixture the test starts on a clean pool and leaves
    none behind.

    Examples
    --------
    .. code-block:: python

        def test_config_reaches_workers(fresh_workers):
            ...
    """
    with fresh_pool():
        yield
