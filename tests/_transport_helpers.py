"""Helpers of the transport tests: the state they send, what workers report, and scripts.

Task functions live here (not in the test module) so worker processes import them by name.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from typing import Any

from workerstate import _transport

#: The value the registered callback returns; the setter puts it in ``RECEIVED``.
CURRENT: list[Any] = [b""]
RECEIVED: list[Any] = [None]


def read_big() -> tuple[Any, Any]:
    """A parallel callback: the current value, and the setter that puts it in RECEIVED."""
    return CURRENT[0], set_big


def set_big(value: Any) -> None:
    RECEIVED[0] = value


def received_marker(_: Any = None) -> Any:
    """In a worker: the first bytes of the value the task got, and its length."""
    value = RECEIVED[0]
    return None if value is None else (bytes(value[:16]), len(value))


def worker_rss_mb(_: Any = None) -> tuple[int, float]:
    """In a worker: its pid and resident memory in MB."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return os.getpid(), pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def run_pickled_task(data: bytes, path: str) -> str:
    """In a worker: remove ``path``, then unpickle and run the bound task in ``data``."""
    os.unlink(path)
    func, args, kwargs = pickle.loads(data)
    try:
        func(*args, **kwargs)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ran"


def big_value(tag: int, size: int) -> bytes:
    """``size`` bytes that differ from call to call in their first bytes."""
    head = b"%08d" % tag
    return head + bytes(size - len(head))


def payload_files() -> list[str]:
    """The payload files this process has in its folders now."""
    found = []
    for folder in list(_transport._folders.values()):
        if os.path.isdir(folder):
            found += [os.path.join(folder, name) for name in os.listdir(folder)]
    return found


def folders_of(pid: int, base: str = "/dev/shm") -> list[str]:
    """The workerstate payload folders of ``pid`` in ``base``."""
    prefix = f"workerstate-{pid}-"
    return [os.path.join(base, n) for n in os.listdir(base) if n.startswith(prefix)]


def run_script(source: str, *, wrap: list[str] | None = None, timeout: float = 90) -> str:
    """Run ``source`` as a ``__main__`` script in a new interpreter; its stdout.

    ``wrap`` is a shell command line that runs ``{python} {script}`` (e.g. in another mount
    namespace). Fails with the script's output when it exits with an error.
    """
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as handle:
        handle.write(textwrap.dedent(source))
        script = handle.name
    try:
        command = [sys.executable, script]
        if wrap is not None:
            command = [part.format(python=sys.executable, script=script) for part in wrap]
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    finally:
        os.unlink(script)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


SCRIPT_HEAD = """
import os, sys
import joblib
from workerstate import _transport
from workerstate.parallel import delayed, register_global_parallel_callback
from tests import _transport_helpers as h

register_global_parallel_callback(h.read_big, name="big")
"""
