"""Run joblib's own tests against workerstate and compare with an unmodified run.

The installed joblib wheel ships its tests (``joblib/test/``). They are copied into a
temporary folder and run four ways, with the interpreter running this script:

- ``plain``: as shipped;
- ``delayed``: every module's ``delayed`` imported from joblib is workerstate's;
- ``parallel``: ``Parallel`` is workerstate's as well;
- ``backend``: as shipped, with ``workerstate`` as joblib's default backend (the variable
  ``JOBLIB_TESTS_DEFAULT_PARALLEL_BACKEND``, which joblib's own test configuration reads).

In the three workerstate runs a registered callback is active, and the session fails unless
its setter ran in at least one worker process. Every test that passes in the plain run must
pass in the others, except those listed in ``EXPECTED`` with their reason. Exits non-zero on
any other difference.

Usage: ``python .ci/joblib_suite.py [--modes plain,delayed,...] [FILE ...]``
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

# test_memmapping.py holds under workerstate too; it is left out by default to keep CI short.
FILES = ["test_parallel.py", "test_config.py"]
MODES = ["plain", "delayed", "parallel", "backend"]
PACKAGE = "joblib_suite"  # the copy's package name ("test" would be the standard library's)

# Tests that check joblib's own types by name, so they cannot hold with workerstate's:
# mode -> test id -> reason.
EXPECTED: dict[str, dict[str, str]] = {
    "backend": {
        f"{PACKAGE}.test_parallel::test_backend_hinting_and_constraints[{context}]": (
            "asserts that prefer='processes' keeps joblib's LokyBackend as the default "
            "(type(p._backend) is LokyBackend); with workerstate as the default backend, the "
            "default is workerstate's backend, which runs the tasks on loky"
        )
        for context in ("parallel_config", "parallel_backend")
    },
}

# What the conftest at the root of joblib's repository provides and the wheel does not ship:
# the default backend from the environment, the ``memory`` fixture, and the check that tests
# leave the thread-limit variables unset.
CONFTEST = """
import os

import pytest

from joblib import Memory
from joblib.parallel import ParallelBackendBase


def pytest_collection_finish(session):
    # Once the tests are collected: a backend that the plugin hides during collection (see
    # PLUGIN) cannot be the default before.
    backend = os.environ.get("JOBLIB_TESTS_DEFAULT_PARALLEL_BACKEND")
    if backend is not None:
        from joblib import parallel

        parallel.DEFAULT_BACKEND = backend


@pytest.fixture
def memory(tmp_path):
    mem = Memory(location=tmp_path, verbose=0)
    yield mem
    mem.clear()


@pytest.fixture(autouse=True)
def avoid_env_var_leakage():
    yield
    assert all(os.environ.get(k) is None for k in ParallelBackendBase.MAX_NUM_THREADS_VARS)
"""

# Loaded with -p in the workerstate runs: registers a callback whose setter leaves a file
# named after the process that ran it, and checks at the end that a worker process did.
PLUGIN = """
import os
import pathlib

import pytest

MARK_DIR = None


def _set(value):
    global MARK_DIR
    MARK_DIR = value
    if value is not None:
        (pathlib.Path(value) / str(os.getpid())).touch()


def mark_dir():
    return MARK_DIR, _set


_HIDDEN = {}


def pytest_configure(config):
    global MARK_DIR
    from joblib.parallel import BACKENDS

    from workerstate.parallel import register_global_parallel_callback

    MARK_DIR = os.environ["WORKERSTATE_SUITE_MARKS"]
    register_global_parallel_callback(mark_dir, name="joblib_suite.mark_dir")
    # joblib's tests are parametrized over the registered backends, some by position: while
    # they are collected, workerstate's backend is hidden, so that each test has the id it
    # has in the unmodified run.
    _HIDDEN["workerstate"] = BACKENDS.pop("workerstate")


def pytest_collection_finish(session):
    from joblib.parallel import BACKENDS

    BACKENDS.update(_HIDDEN)


def pytest_sessionfinish(session, exitstatus):
    marks = pathlib.Path(os.environ["WORKERSTATE_SUITE_MARKS"])
    workers = [p for p in marks.iterdir() if p.name != str(os.getpid())]
    if not workers:
        print("workerstate's callback reached no worker process")
        session.exitstatus = 3
    else:
        print(f"workerstate's callback ran in {len(workers)} worker processes")
"""


def _rewrite(source: str, names: set[str]) -> str:
    """Import ``names`` from workerstate after the module's last top-level import.

    Only names the module itself imports from joblib are replaced, so its own definitions
    are left alone.
    """
    tree = ast.parse(source)
    imported: set[str] = set()
    last = 0
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            last = node.end_lineno or node.lineno
        if isinstance(node, ast.ImportFrom) and node.module in ("joblib", "joblib.parallel"):
            imported.update(alias.asname or alias.name for alias in node.names)
    chosen = sorted(names & imported)
    if not chosen:
        return source
    lines = source.splitlines(keepends=True)
    line = f"from workerstate.parallel import {', '.join(chosen)}  # workerstate's\n"
    return "".join([*lines[:last], line, *lines[last:]])


def _prepare(root: Path, mode: str, files: list[str]) -> Path:
    spec = importlib.util.find_spec("joblib")
    assert spec is not None and spec.submodule_search_locations
    shipped = Path(next(iter(spec.submodule_search_locations))) / "test"
    target = root / mode
    package = target / PACKAGE
    shutil.copytree(shipped, package, ignore=shutil.ignore_patterns("__pycache__"))
    names = {"delayed": {"delayed"}, "parallel": {"delayed", "Parallel"}}.get(mode, set())
    for path in package.glob("*.py"):
        try:
            source = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # a test of source encodings, which imports nothing from joblib.parallel
        # Test modules import each other as joblib.test.*: make that the copy, in every mode
        # (the unmodified run included), so each run uses its own rewritten modules.
        source = re.sub(r"\bjoblib\.test\b", PACKAGE, source)
        path.write_text(_rewrite(source, names), encoding="utf-8")
    (target / "conftest.py").write_text(CONFTEST, encoding="utf-8")
    (target / "joblib_suite_plugin.py").write_text(PLUGIN, encoding="utf-8")
    # joblib's own marks, declared so that they raise no warning.
    (target / "pytest.ini").write_text(
        "[pytest]\nmarkers =\n    thread_unsafe\n    no_cover\n", encoding="utf-8"
    )
    for name in files:
        if not (package / name).exists():
            raise SystemExit(f"joblib {_joblib_version()} ships no test file {name}")
    return target


def _joblib_version() -> str:
    import joblib

    return str(joblib.__version__)


def _run(target: Path, mode: str, files: list[str], timeout: int) -> tuple[dict[str, str], int]:
    """Run the copy; return test id -> outcome and pytest's exit status."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))
    env.pop("JOBLIB_TESTS_DEFAULT_PARALLEL_BACKEND", None)
    args = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        "-rfE",
        f"--timeout={timeout}",
        f"--junitxml={target / 'junit.xml'}",
    ]
    if mode == "plain":
        # As shipped: without workerstate's own pytest plugin, whose import would register
        # the workerstate backend and add it to the backends joblib's tests run over.
        args += ["-p", "no:workerstate"]
    else:
        marks = target / "marks"
        marks.mkdir()
        env["WORKERSTATE_SUITE_MARKS"] = str(marks)
        args += ["-p", "joblib_suite_plugin"]
    if mode == "backend":
        # The plugin imports workerstate.parallel, which registers the backend.
        env["JOBLIB_TESTS_DEFAULT_PARALLEL_BACKEND"] = "workerstate"
    args += [f"{PACKAGE}/{name}" for name in files]
    done = subprocess.run(args, cwd=target, env=env, check=False)
    return _outcomes(target / "junit.xml"), done.returncode


def _outcomes(junit: Path) -> dict[str, str]:
    outcomes: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case} & {"failure", "error", "skipped"}
        # A teardown error is reported as a second entry for a test that passed.
        previous = outcomes.get(test_id, "passed")
        outcome = "failed" if kinds & {"failure", "error"} else "skipped" if kinds else "passed"
        outcomes[test_id] = outcome if previous == "passed" else previous
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", default=FILES)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--timeout", type=int, default=120, help="per test, seconds")
    options = parser.parse_args()
    modes = options.modes.split(",")
    if modes[0] != "plain":
        modes.insert(0, "plain")
    print(f"joblib {_joblib_version()}, Python {sys.version.split()[0]}: {options.files}")
    results: dict[str, dict[str, str]] = {}
    statuses: dict[str, int] = {}
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="joblib-suite-") as tmp:
        for mode in modes:
            print(f"== joblib's tests, {mode}", flush=True)
            start = time.monotonic()
            target = _prepare(Path(tmp), mode, options.files)
            results[mode], statuses[mode] = _run(target, mode, options.files, options.timeout)
            seconds[mode] = time.monotonic() - start
    plain = results["plain"]
    passed_plain = {t for t, o in plain.items() if o == "passed"}
    failed = False
    print("\n== joblib's tests: comparison with the unmodified run")
    print(f"{'mode':<10} {'passed':>7} {'failed':>7} {'skipped':>8} {'excused':>8} {'seconds':>8}")
    for mode in modes:
        outcome = results[mode]
        counts = {
            kind: sum(1 for o in outcome.values() if o == kind)
            for kind in ("passed", "failed", "skipped")
        }
        excused = EXPECTED.get(mode, {})
        print(
            f"{mode:<10} {counts['passed']:>7} {counts['failed']:>7} {counts['skipped']:>8} "
            f"{len(excused):>8} {seconds[mode]:>8.0f}"
        )
    for mode in modes[1:]:
        outcome = results[mode]
        excused = EXPECTED.get(mode, {})
        lost = sorted(t for t in passed_plain if outcome.get(t) != "passed" and t not in excused)
        stale = sorted(t for t in excused if outcome.get(t) == "passed")
        for test_id in lost:
            print(f"REGRESSION [{mode}] {test_id}: {outcome.get(test_id, 'not run')}")
        for test_id in stale:
            print(f"NOTE [{mode}] {test_id} passes; it is listed as expected to fail")
        if lost:
            failed = True
        if statuses[mode] == 3 or (statuses[mode] not in (0, 1)):
            # 1 is "some tests failed", judged above; anything else is the session itself.
            print(f"FAILED [{mode}] pytest exited with status {statuses[mode]}")
            failed = True
    if statuses["plain"] not in (0, 1):
        print(f"FAILED [plain] pytest exited with status {statuses['plain']}")
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
