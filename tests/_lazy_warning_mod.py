"""A warning category whose module the workers do not import until a task needs it.

Only the parent and :func:`tests._state.warn_lazy` import this module.
"""

from __future__ import annotations

import warnings


class LazyWarning(UserWarning):
    """A warning category defined outside ``builtins``."""


def warn(message: str = "lazy") -> None:
    warnings.warn(message, LazyWarning, stacklevel=2)
