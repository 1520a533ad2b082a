"""workerstate: run-time state that follows tasks into joblib's worker processes.

The public API lives in :mod:`workerstate.parallel`. This package imports nothing heavy, since
every worker process pays for the import.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
