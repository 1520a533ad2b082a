"""workerstate: run-time state that follows tasks into joblib's worker processes.

``workerstate.enable()`` makes every joblib call in the process carry the state registered
with :mod:`workerstate.parallel`, where the rest of the public API lives. Importing the
package registers the ``"workerstate"`` joblib backend, in the parent and in every worker
that unpickles a task, so ``joblib.parallel_config(backend="workerstate")`` works wherever
workerstate is imported. It imports nothing heavy beyond joblib, since every worker process
pays for the import.
"""

from .parallel import disable, enable, enabled, fresh_pool, is_enabled

__all__ = ["__version__", "disable", "enable", "enabled", "fresh_pool", "is_enabled"]

__version__ = "0.1.0"
