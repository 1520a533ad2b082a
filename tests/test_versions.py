"""The installed dependencies are ones that workerstate's declared bounds allow."""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def runtime_requirements() -> list[Requirement]:
    """The requirements of the installed workerstate that apply to this interpreter."""
    requirements = [Requirement(text) for text in metadata.requires("workerstate") or []]
    environment = {**default_environment(), "extra": ""}
    return [req for req in requirements if req.marker is None or req.marker.evaluate(environment)]


@pytest.mark.parametrize("name", ["joblib", "cloudpickle"])
def test_installed_version_is_allowed(name: str) -> None:
    applying = [req for req in runtime_requirements() if req.name == name]
    assert applying, f"no requirement on {name} applies to Python {sys.version.split()[0]}"
    installed = Version(metadata.version(name))
    for req in applying:
        assert req.specifier.contains(installed, prereleases=True), (
            f"{name} {installed} is installed, but workerstate requires {req}"
        )


def test_python_3_14_gets_a_joblib_that_runs_there() -> None:
    # joblib 1.3 and 1.4 fail on Python 3.14; the bound for it must exclude them.
    environment = {**default_environment(), "python_version": "3.14", "extra": ""}
    requirements = [Requirement(text) for text in metadata.requires("workerstate") or []]
    joblib = [
        req
        for req in requirements
        if req.name == "joblib" and (req.marker is None or req.marker.evaluate(environment))
    ]
    assert joblib
    for old in ("1.3.0", "1.4.2"):
        assert not all(req.specifier.contains(old) for req in joblib)
    assert all(req.specifier.contains("1.5.3") for req in joblib)


def _declared_dependencies() -> list[str]:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    if sys.version_info >= (3, 11):
        import tomllib

        return list(tomllib.loads(text)["project"]["dependencies"])
    # Python 3.10 has no TOML reader; the list is one literal of strings.
    block = re.search(r"^dependencies = (\[.*?\])$", text, re.MULTILINE | re.DOTALL)
    assert block is not None, "no dependencies list in pyproject.toml"
    return list(ast.literal_eval(block.group(1)))


def test_installed_metadata_matches_pyproject() -> None:
    """An install made before the bounds changed would test against stale bounds."""
    wanted = {str(Requirement(text)) for text in _declared_dependencies()}
    installed = {
        str(req)
        for req in map(Requirement, metadata.requires("workerstate") or [])
        if req.marker is None or "extra" not in str(req.marker)
    }
    assert installed == wanted
