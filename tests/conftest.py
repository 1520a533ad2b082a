"""Shared fixtures: isolation of the registry and of the state each test changes; backends."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import sklearn

from tests import _state
from tests._helpers import ALL_BACKENDS, PROCESS_BACKENDS
from workerstate._registry import default_registry


@pytest.fixture(autouse=True)
def _isolate() -> Iterator[None]:
    """Restore the registry, the warning filters, scikit-learn's config and ``tests._state``."""
    with default_registry.preserved(), warnings.catch_warnings(), sklearn.config_context():
        try:
            yield
        finally:
            _state.set_value(_state.IMPORT_VALUE)
            _state.reset_local()
            _state.SETTER_CALLS = 0
            _state.CALLBACK_WORKS = False
            _state.CALLBACK_CALLS.clear()


@pytest.fixture(scope="session")
def dask_client() -> Iterator[Any]:
    """One real two-process dask cluster for the whole session."""
    from distributed import Client, LocalCluster

    with warnings.catch_warnings():
        # dashboard_address=None still starts the scheduler's HTTP server on the default
        # port; when another cluster on this machine holds that port, distributed warns,
        # drops the socket it tried, and takes a free port, which is fine here.
        warnings.filterwarnings(
            "ignore", message=r"Port \d+ is already in use", category=UserWarning
        )
        warnings.filterwarnings("ignore", message="unclosed <socket", category=ResourceWarning)
        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
        gc.collect()  # collect that socket while its warning is ignored
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def _backend_fixture(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    if backend == "dask":
        request.getfixturevalue("dask_client")
    return backend


@pytest.fixture(params=PROCESS_BACKENDS)
def process_backend(request: pytest.FixtureRequest) -> str:
    """A backend whose workers are other processes (the dask cluster is started if needed)."""
    return _backend_fixture(request)


@pytest.fixture(params=ALL_BACKENDS)
def any_backend(request: pytest.FixtureRequest) -> str:
    """Any backend, threads included."""
    return _backend_fixture(request)
