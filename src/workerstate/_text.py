"""Text for messages: a shortened ``repr`` and an exception in one line.

Messages name the offending object; its ``repr`` may be long, or raise, and neither may hide
the message itself.
"""

from __future__ import annotations

from typing import Any

__all__ = ["error_text", "short"]


def short(obj: Any, limit: int = 80) -> str:
    """``repr(obj)``, cut to ``limit`` characters; the type's name when ``repr`` raises.

    Examples
    --------
    >>> short("x" * 100, limit=10)
    "'xxxxxx..."
    >>> class Broken:
    ...     def __repr__(self):
    ...         raise RuntimeError("no repr")
    >>> short(Broken()).endswith(".Broken>")
    True
    """
    try:
        text = repr(obj)
    except Exception:
        cls = type(obj)
        name = cls.__qualname__
        text = f"<{name}>" if cls.__module__ == "builtins" else f"<{cls.__module__}.{name}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_text(exc: BaseException) -> str:
    """``"Type: message"``, or the type's name alone when the message is empty.

    Examples
    --------
    >>> error_text(ValueError("bad"))
    'ValueError: bad'
    >>> error_text(KeyboardInterrupt())
    'KeyboardInterrupt'
    """
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
