"""The examples, the user guide's scripts and the documentation build, each in a new process.

Every script checks its own output with asserts, so exit status 0 means it showed what it
claims. They run as CI runs them: ``python examples/NAME.py`` from the repository root.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests._docs_helpers import built_site

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SNIPPETS = ROOT / "docs" / "snippets"

# The scripts a reader runs; helper modules (_*.py) and the pytest example (test_*.py) are not.
EXAMPLE_SCRIPTS = sorted(
    path.name for path in EXAMPLES.glob("*.py") if not path.name.startswith(("_", "test_"))
)
# The user guide's scripts; myapp.py is the module they import.
SNIPPET_SCRIPTS = sorted(path.name for path in SNIPPETS.glob("*.py") if path.name != "myapp.py")
# Snippets that need an optional library, by the module they import.


def run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert completed.returncode == 0, (
        f"{' '.join(args)} exited with {completed.returncode}\n"
        f"--- stdout\n{completed.stdout}\n--- stderr\n{completed.stderr}"
    )
    return completed


def test_every_example_is_listed() -> None:
    assert {
        "pandas_option.py",
        "registry_in_workers.py",
        "runtime_cache.py",
        "sklearn_cross_validation.py",
        "warnings_and_logs.py",
    } <= set(EXAMPLE_SCRIPTS)
    assert (EXAMPLES / "test_with_fresh_workers.py").is_file()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("script", EXAMPLE_SCRIPTS)
def test_example_runs(script: str) -> None:
    completed = run(f"examples/{script}", timeout=240)
    assert completed.stdout.strip(), "every example prints what it showed"


@pytest.mark.timeout(300)
def test_pytest_example_passes() -> None:
    completed = run(
        "-m",
        "pytest",
        "examples/test_with_fresh_workers.py",
        "-q",
        "-p",
        "no:cacheprovider",
        timeout=240,
    )
    assert "3 passed" in completed.stdout


@pytest.mark.timeout(300)
@pytest.mark.parametrize("script", SNIPPET_SCRIPTS)
def test_user_guide_script_runs(script: str) -> None:
    run(f"docs/snippets/{script}", timeout=240)


@pytest.mark.timeout(600)
def test_docs_build_without_warnings() -> None:
    """sphinx -W on the whole site, the gallery's examples run included."""
    html = built_site().html
    assert (html / "index.html").is_file()
    for script in EXAMPLE_SCRIPTS:
        page = (html / "auto_examples" / script).with_suffix(".html")
        assert "sphx-glr-script-out" in page.read_text(encoding="utf-8"), script


def test_changelog_page_mirrors_changelog() -> None:
    """docs/changelog.rst repeats CHANGELOG.md in reST: every name the changelog quotes is there."""
    page = (ROOT / "docs" / "changelog.rst").read_text(encoding="utf-8")
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    missing = []
    for quoted in re.findall(r"`([^`]+)`", changelog):
        name = quoted.removesuffix("()")
        if name not in page and name.rsplit(".", 1)[-1] not in page:
            missing.append(quoted)
    assert not missing, f"docs/changelog.rst lacks what CHANGELOG.md says about: {missing}"
