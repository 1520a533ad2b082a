"""``python -m workerstate doctor``: its report and exit status on healthy and broken setups.

The command runs in a subprocess from the repository root, so ``tests`` is importable there
and in its workers; each setup function in ``tests._diagnose_helpers`` registers callbacks and
changes the state in the parent only.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import _diagnose_helpers as helpers
from workerstate import diagnose, parallel

ROOT = Path(__file__).resolve().parents[1]
HELPERS = "tests._diagnose_helpers"


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workerstate", "doctor", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def section(output: str, title: str) -> str:
    """The lines of one section of the report, line wrapping undone."""
    lines = output.split(f"\n{title}", 1)[1].split("\n\n", 1)[0]
    return " ".join(lines.split())


def test_healthy_setup() -> None:
    done = doctor("--module", f"{HELPERS}:setup_healthy")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert out.startswith("workerstate doctor: Python ")
    assert "OK imported tests._diagnose_helpers and ran setup_healthy()" in section(out, "Setup")
    backend = section(out, "Backend")
    assert "joblib's active backend is loky" in backend
    assert "n_jobs=-1 would use" in backend
    workers = section(out, "Workers")
    assert "OK a new worker starts in" in workers
    assert "tests._diagnose_helpers:" in workers  # its import time
    assert "OK a fresh loky pool ran its first 4 tasks" in workers
    callback = section(out, "Callback 'settings' (tests._diagnose_helpers.settings_callback)")
    for line in (
        "OK value (dict), setter (tests._diagnose_helpers) and callback pickle",
        "OK the callback works in a fresh worker",
        "OK the parent's value arrives in tasks made by workerstate's delayed",
        "OK no leak: plain joblib tasks on reused workers see the worker's own value",
        "OK the setter takes",
    ):
        assert line in callback
    assert "PROBLEM" not in out
    assert out.rstrip().endswith("Result: no problems found.")


def test_value_that_does_not_arrive() -> None:
    done = doctor("--module", f"{HELPERS}:setup_not_arriving")
    assert done.returncode == 1, done.stdout + done.stderr
    healthy = section(done.stdout, "Callback 'settings'")
    assert "PROBLEM" not in healthy
    broken = section(done.stdout, "Callback 'forgetful'")
    assert "PROBLEM the value does not arrive" in broken
    assert f"the parent's value: {{'level': '{helpers.PARENT_LEVEL}'}}" in broken
    assert f"what the task saw: {{'level': '{helpers.IMPORT_LEVEL}'}}" in broken
    assert "after setter(value), the callback still reads" in broken
    assert "setter(value) must change the state" in section(done.stdout, "Advice")
    assert done.stdout.rstrip().endswith("Result: 1 problem found.")


def test_value_that_cannot_be_pickled() -> None:
    done = doctor("--module", f"{HELPERS}:setup_unpicklable")
    assert done.returncode == 1, done.stdout + done.stderr
    broken = section(done.stdout, "Callback 'locked'")
    assert "PROBLEM the value cannot be pickled" in broken
    assert "part: value['guard'] (_thread.lock)" in broken
    assert "trap: a lock or other synchronisation object" in broken
    assert "create a new one in the setter" in section(done.stdout, "Advice")
    # The other callback is still checked live.
    assert "OK the parent's value arrives" in section(done.stdout, "Callback 'settings'")


def test_state_that_leaks() -> None:
    done = doctor("--module", f"{HELPERS}:setup_leaky")
    assert done.returncode == 1, done.stdout + done.stderr
    broken = section(done.stdout, "Callback 'live'")
    assert "OK the parent's value arrives" in broken
    assert "PROBLEM the state leaks" in broken
    assert "must return a copy of mutable state" in section(done.stdout, "Advice")


def test_callback_that_fails_in_a_fresh_worker() -> None:
    done = doctor("--module", f"{HELPERS}:setup_parent_only")
    assert done.returncode == 1, done.stdout + done.stderr
    broken = section(done.stdout, "Callback 'parent-only'")
    assert "PROBLEM the callback raises in a fresh worker: LookupError" in broken
    assert "the worker keeps the parent's state" in broken


def test_callbacks_that_cannot_read_the_worker_state() -> None:
    done = doctor("--module", f"{HELPERS}:setup_captured")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "PROBLEM" not in section(done.stdout, "Callback 'settings'")
    for name, returned in (("patch", "None"), ("captured", "a value it captured")):
        flagged = section(done.stdout, f"Callback '{name}'")
        assert f"PROBLEM the callback returns {returned}, not the state it reads" in flagged
        assert "workers keep the parent's state after the tasks" in flagged
    assert "Return the live state the setter changes" in section(done.stdout, "Advice")


def test_module_that_does_not_import_and_no_callbacks() -> None:
    done = doctor("--module", "tests.no_such_module", "--module", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    setup = section(done.stdout, "Setup")
    assert "PROBLEM --module tests.no_such_module: ModuleNotFoundError" in setup
    assert "OK imported json" in setup
    assert "NOTE no callbacks are registered" in setup


def test_nothing_registered_is_healthy() -> None:
    done = doctor()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "NOTE no callbacks are registered" in section(done.stdout, "Setup")


def test_unchanged_state_is_a_note_on_multiprocessing() -> None:
    done = doctor("--module", f"{HELPERS}:setup_unchanged", "--backend", "multiprocessing")
    assert done.returncode == 0, done.stdout + done.stderr
    callback = section(done.stdout, "Callback 'settings'")
    assert "NOTE the parent's value equals a fresh worker's" in callback
    assert "backend='multiprocessing', n_jobs=2" in section(done.stdout, "Backend")


def test_bad_arguments() -> None:
    done = doctor("--n-jobs", "1")
    assert done.returncode == 2
    assert "--n-jobs must be at least 2" in done.stderr


def test_in_process_report(monkeypatch: pytest.MonkeyPatch) -> None:
    """``diagnose.doctor`` returns the report the command prints, and keeps the registry."""
    monkeypatch.setitem(helpers.SETTINGS, "level", helpers.IMPORT_LEVEL)
    parallel.register_global_parallel_callback(helpers.not_arriving_callback, name="forgetful")
    report = diagnose.doctor([f"{HELPERS}:setup_healthy"], n_jobs=2)
    assert not report.ok
    assert [finding.text for finding in report.problems] == [
        "the value does not arrive: tasks made by workerstate's delayed do not see the "
        "parent's value"
    ]
    assert "Callback 'forgetful'" in str(report)
    assert parallel.registered_callbacks() == ("forgetful", "settings")


def test_setter_that_only_adds_gets_advice_about_the_setter() -> None:
    done = doctor("--module", f"{HELPERS}:setup_adds_only")
    assert done.returncode == 1, done.stdout + done.stderr
    broken = section(done.stdout, "Callback 'plugins'")
    assert "OK the parent's value arrives" in broken
    assert "PROBLEM the state leaks" in broken
    assert "the state still holds the parent's 'added-in-the-parent': the setter only adds" in (
        broken
    )
    advice = section(done.stdout, "Advice")
    assert "The setter must replace the state with its argument" in advice
    assert "must return a copy of mutable state" not in advice


def test_nan_in_the_state_is_no_leak() -> None:
    """The doctor compares as the run time does: a NaN from a worker is the same state."""
    done = doctor("--module", f"{HELPERS}:setup_nan")
    callback = section(done.stdout, "Callback 'tolerance'")
    assert "OK the parent's value arrives" in callback, done.stdout
    assert "OK no leak" in callback, done.stdout
    assert done.returncode == 0, done.stdout + done.stderr


SCRIPT = """
import joblib
from joblib import Parallel, delayed
from sklearn.model_selection import cross_val_score

from tests import _diagnose_helpers as helpers
from workerstate import parallel
{enable}

def settings_callback():
    return dict(helpers.SETTINGS), helpers.set_settings


def setup():
    parallel.register_global_parallel_callback(settings_callback, name="script-settings")
    helpers.SETTINGS["level"] = helpers.PARENT_LEVEL


if __name__ == "__main__":
    setup()
    Parallel(n_jobs=2)(delayed(abs)(i) for i in range(4))
    Parallel(n_jobs=2)(joblib.delayed(abs)(i) for i in range(4))
    cross_val_score(None, [[0]], [0], n_jobs=2)
"""


def test_script_file_with_plain_delayed(tmp_path: Path) -> None:
    script = tmp_path / "evaluate.py"
    script.write_text(SCRIPT.format(enable=""))
    done = doctor("--module", f"{script}:setup")
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert f"OK imported {script} and ran setup()" in section(out, "Setup")
    source = section(out, "Source")
    for line, text in ((21, "delayed(...) (joblib.delayed)"), (22, "joblib.delayed(...)")):
        assert f"PROBLEM {script}:{line}: {text}" in source
    assert "do not carry the registered state ('script-settings')" in source
    assert f"NOTE {script}:23: cross_val_score(...) runs joblib itself" in source
    advice = section(out, "Advice")
    assert "Call workerstate.enable() once" in advice
    assert "workerstate.parallel.delayed" in advice
    # The callback defined in the file is checked live like one in a module.
    callback = section(out, "Callback 'script-settings'")
    assert "OK the parent's value arrives in tasks made by workerstate's delayed" in callback
    assert "OK no leak" in callback
    assert out.count("PROBLEM") == 2


def test_script_file_that_enables(tmp_path: Path) -> None:
    script = tmp_path / "evaluate.py"
    script.write_text(SCRIPT.format(enable="import workerstate\nworkerstate.enable()\n"))
    done = doctor("--module", f"{script}:setup")
    assert done.returncode == 0, done.stdout + done.stderr
    source = section(done.stdout, "Source")
    assert f"OK {script} calls workerstate.enable()" in source
    assert "PROBLEM" not in done.stdout


def test_dotted_module_is_read_too() -> None:
    done = doctor("--module", f"{HELPERS}:setup_healthy")
    assert "OK tests/_diagnose_helpers.py makes no plain joblib tasks" in " ".join(
        section(done.stdout, "Source").replace(str(ROOT) + "/", "").split()
    )
