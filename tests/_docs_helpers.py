"""Build the documentation once per test session, as CI and Read the Docs do.

The build runs sphinx with ``-W`` on a copy of ``docs/`` and ``examples/``:
sphinx-gallery writes the gallery's pages into the source tree, and a copy keeps
concurrent builds (and the checkout) apart. The examples run during the build.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Written by earlier builds in place; never copied.
_GENERATED = shutil.ignore_patterns("_build", "auto_examples", "__pycache__")


@dataclass(frozen=True)
class Build:
    """A finished build: its output and what sphinx printed."""

    html: Path
    log: str


def build_docs(work: Path) -> Build:
    """Build the HTML pages under ``work``; fail with sphinx's output if it warns."""
    shutil.copytree(ROOT / "docs", work / "docs", ignore=_GENERATED)
    shutil.copytree(ROOT / "examples", work / "examples", ignore=_GENERATED)
    html = work / "html"
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    completed = subprocess.run(
        [*command, str(work / "docs"), str(html)],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    log = completed.stdout + completed.stderr
    assert completed.returncode == 0, f"sphinx exited with {completed.returncode}\n{log}"
    return Build(html=html, log=log)


@functools.lru_cache(maxsize=1)
def built_site() -> Build:
    """One build shared by every test of the session; removed at exit."""
    work = Path(tempfile.mkdtemp(prefix="workerstate-docs-"))
    atexit.register(shutil.rmtree, work, True)
    return build_docs(work)
