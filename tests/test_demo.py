"""``python -m workerstate demo``: its three columns, and the registration code it shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_shows_its_registration_and_three_columns() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "workerstate", "demo", "--folds", "4"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    # The registration lines the demo runs, as code a program writes.
    assert 'register_global_parallel_callback(_registry_callback, name="demo-scorers")' in out
    assert "return dict(SCORERS), _set_registry" in out
    header = next(line for line in out.splitlines() if line.startswith("what every task saw"))
    assert header.split()[4:] == [
        "joblib.delayed",
        "workerstate",
        "delayed",
        "enable()",
        "+",
        "joblib.delayed",
    ]
    rows = {line[:24].strip(): line[24:].split("  ") for line in out.splitlines()}
    scorers = [cell.strip() for cell in rows["registered scorers"] if cell.strip()]
    assert scorers == ["['accuracy']", "['accuracy', 'balanced_f1']", "['accuracy', 'balanced_f1']"]
    filtered = [cell.strip() for cell in rows["warning filter active"] if cell.strip()]
    assert filtered == ["False", "True", "True"]
