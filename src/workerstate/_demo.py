"""``python -m workerstate demo``: the problem and the fix, side by side, on this machine.

The job is shaped like a cross-validation loop: each task "scores a fold" with a scorer
looked up in a registry, under scikit-learn's config and the parent's warning filters. The
parent changes all three at run time, after the worker pool has started, and the same job
runs three times: with ``joblib.delayed``, with ``workerstate.parallel.delayed``, and with
``joblib.delayed`` after ``workerstate.enable()``. The demo prints the code it registers the
state with, so what it shows is what a program writes.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

__all__ = ["main"]

#: A plugin-style registry, filled at import time; the parent adds to it at run time.
SCORERS: dict[str, str] = {"accuracy": "built in"}
NOISY = "fold 3 has few samples"


def _registry_callback() -> tuple[dict[str, str], Any]:
    return dict(SCORERS), _set_registry


def _set_registry(value: dict[str, str]) -> None:
    SCORERS.clear()
    SCORERS.update(value)


def _sklearn_callback() -> tuple[dict[str, Any], Any]:
    import sklearn

    return sklearn.get_config(), _set_sklearn


def _set_sklearn(config: dict[str, Any]) -> None:
    import sklearn

    sklearn.set_config(**config)


def score_fold(fold: int) -> dict[str, Any]:
    """What one task sees in its worker."""
    seen: dict[str, Any] = {"fold": fold, "pid": os.getpid()}
    if "sklearn" in sys.modules or _has_sklearn():
        import sklearn

        seen["assume_finite"] = sklearn.get_config()["assume_finite"]
    seen["scorers"] = sorted(SCORERS)
    with warnings.catch_warnings(record=True) as caught:
        # Recorded rather than printed: an "ignore" filter active here means nothing is.
        warnings.warn(NOISY, UserWarning, stacklevel=1)
    seen["warning_filtered"] = not caught
    return seen


def _has_sklearn() -> bool:
    import importlib.util

    return importlib.util.find_spec("sklearn") is not None


def _register(has_sklearn: bool) -> list[str]:
    from workerstate.parallel import register_global_parallel_callback

    names = [register_global_parallel_callback(_registry_callback, name="demo-scorers")]
    if has_sklearn:
        names.append(register_global_parallel_callback(_sklearn_callback, name="sklearn"))
    return names


def _source(*functions: Any) -> list[str]:
    """The source lines of ``functions``, as the demo runs them."""
    import inspect

    lines: list[str] = []
    for function in functions:
        lines += [*inspect.getsource(function).splitlines(), ""]
    return lines[:-1]


def _run(delayed: Any, n_folds: int) -> list[dict[str, Any]]:
    from joblib import Parallel

    return list(Parallel(n_jobs=2)(delayed(score_fold)(fold) for fold in range(n_folds)))


def _column(rows: list[dict[str, Any]], key: str) -> str:
    values = {repr(row.get(key, "-")) for row in rows}
    return values.pop() if len(values) == 1 else "mixed: " + ", ".join(sorted(values))


def main(n_folds: int = 6) -> int:
    """Run the demo and print what the workers saw; return 0 when workerstate delivered."""
    import joblib

    import workerstate
    from workerstate import parallel

    has_sklearn = _has_sklearn()
    # Start the worker pool first, so the state below is changed after the workers exist:
    # a process pool that forks later would copy it and hide the problem.
    joblib.Parallel(n_jobs=2)(joblib.delayed(os.getpid)() for _ in range(4))

    expected: dict[str, Any] = {
        "scorers": repr(["accuracy", "balanced_f1"]),
        "warning_filtered": "True",
    }
    SCORERS["balanced_f1"] = "registered at run time"
    warnings.filterwarnings("ignore", message=NOISY)
    if has_sklearn:
        import sklearn

        sklearn.set_config(assume_finite=True)
        expected["assume_finite"] = "True"
    names = _register(has_sklearn)
    try:
        plain = _run(joblib.delayed, n_folds)
        fixed = _run(parallel.delayed, n_folds)
        with workerstate.enabled():
            switched = _run(joblib.delayed, n_folds)
    finally:
        for name in names:
            parallel.remove_global_parallel_callback(name)

    pids = sorted({row["pid"] for row in plain + fixed + switched})
    print(f"A {n_folds}-fold job on joblib's loky backend, n_jobs=2, worker PIDs {pids}.")
    print("The parent changed three things at run time, after the workers had started:")
    if has_sklearn:
        print("  sklearn.set_config(assume_finite=True)")
    else:
        print("  (scikit-learn is not installed: pip install scikit-learn to see its config)")
    print('  SCORERS["balanced_f1"] = ...           # a plugin registry')
    print(f'  warnings.filterwarnings("ignore", message="{NOISY}")')
    print()
    print("It registered the state once, for all the columns, with this code:")
    shown = [_registry_callback, _set_registry]
    if has_sklearn:
        shown += [_sklearn_callback, _set_sklearn]
    for line in _source(*shown, _register):
        print("    " + line if line else "")
    print()
    labels = {
        "assume_finite": "sklearn assume_finite",
        "scorers": "registered scorers",
        "warning_filtered": "warning filter active",
    }
    columns = ("joblib.delayed", "workerstate delayed", "enable() + joblib.delayed")
    print((f"{'what every task saw':24}" + "".join(f" {title:29}" for title in columns)).rstrip())
    ok = True
    for key, label in labels.items():
        if key not in expected:
            continue
        got = [_column(rows, key) for rows in (plain, fixed, switched)]
        ok = ok and got[1] == got[2] == expected[key]
        print((f"{label:24}" + "".join(f" {value:29}" for value in got)).rstrip())
    print()
    print("Columns: 1. from joblib import delayed; 2. from workerstate.parallel import")
    print("delayed; 3. from joblib import delayed, with workerstate.enable() called first.")
    if ok:
        print("With workerstate every task saw the parent's state; with plain joblib the")
        print("workers kept their import-time state. Past the registration above, the only")
        print("change is the import (column 2) or one workerstate.enable() call (column 3).")
        return 0
    print("workerstate did not deliver the parent's state to every task: please report this.")
    return 1
