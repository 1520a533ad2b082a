"""workerstate: run-time state that follows tasks into joblib's worker processes.

The public API lives in :mod:`workerstate.parallel`. Importing the package registers the
``"workerstate"`` joblib backend, in the parent and in every worker that unpickles a task, so
``joblib.parallel_config(backend="workerstate")`` works wherever workerstate is imported. It
imports nothing heavy beyond joblib, since every worker process pays for the import.
"""

from .parallel import fresh_pool

__all__ = ["__version__", "fresh_pool"]

__version__ = "0.1.0"
