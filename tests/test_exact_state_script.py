"""Exact state for callbacks and tasks defined in a ``__main__`` script, run as a subprocess.

The patterns users write most: tpcp's ``lambda: (None, apply_patch)``, a callback that returns
a value it captured, a dict whose key order matters, ``-0.0``, and a callback that only works in
the parent. Each runs with ``delayed``, ``Parallel`` and the backend on loky and
multiprocessing, with the workers started before the parent's state changes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests._helpers import run_script

_SCRIPT = """
import json
import math
import sys
import warnings

import joblib
from workerstate import parallel

STATE = {"patched": False, "config": {"a": 2, "b": 1}, "scale": 0.0, "parent_only": None}


def apply_patch(_value):
    STATE["patched"] = True


def set_config(value):
    STATE["config"] = value


def set_scale(value):
    STATE["scale"] = value


def live_config():
    return STATE["config"], set_config


def live_scale():
    return STATE["scale"], set_scale


def set_parent_only(value):
    STATE["parent_only"] = value


def parent_only():
    # A module attribute set at run time: a fresh worker process does not have it.
    return json.workerstate_test_value, set_parent_only


def task(i):
    seen = {
        "patched": STATE["patched"],
        "captured": STATE.get("captured"),
        "config_keys": list(STATE["config"]),
        "scale_sign": math.copysign(1.0, STATE["scale"]),
        "parent_only": STATE["parent_only"],
    }
    # Reorders the dict: equal by ==, not the parent's state.
    STATE["config"] = dict(sorted(STATE["config"].items()))
    return seen


def make(form, backend):
    if form == "delayed":
        return joblib.Parallel(n_jobs=2, backend=backend, batch_size=4), parallel.delayed
    if form == "Parallel":
        return parallel.Parallel(n_jobs=2, backend=backend, batch_size=4), joblib.delayed
    return joblib.Parallel(n_jobs=2, batch_size=4), joblib.delayed


if __name__ == "__main__":
    backend, form = sys.argv[1], sys.argv[2]
    config = joblib.parallel_config(backend="workerstate", inner=backend)
    if form != "backend":
        config = joblib.parallel_config()
    with config:
        p, delayed = make(form, backend)
        with p:
            # Workers that exist before the parent changes anything.
            p(joblib.delayed(abs)(i) for i in range(4))
            value = "from the parent"
            parallel.register_global_parallel_callback(lambda: (None, apply_patch), name="patch")
            parallel.register_global_parallel_callback(
                lambda v=value: (v, lambda x: STATE.__setitem__("captured", x)), name="captured"
            )
            parallel.register_global_parallel_callback(live_config, name="config")
            parallel.register_global_parallel_callback(live_scale, name="scale")
            parallel.register_global_parallel_callback(parent_only, name="parent-only")
            STATE["config"] = {"b": 1, "a": 2}
            STATE["scale"] = -0.0
            json.workerstate_test_value = "parent value"
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                seen = p(delayed(task)(i) for i in range(8))
    notes = [str(w.message) for w in caught if w.category is parallel.StateRestoreWarning]
    print(json.dumps({"seen": seen, "notes": notes}))
"""


@pytest.mark.parametrize("form", ["delayed", "Parallel", "backend"])
@pytest.mark.parametrize("backend", ["loky", "multiprocessing"])
def test_every_task_sees_exactly_the_parents_state(tmp_path: Path, backend: str, form: str) -> None:
    out = run_script(tmp_path, _SCRIPT, backend, form)
    expected = {
        "patched": True,  # the setter ran, though the callback returns None everywhere
        "captured": "from the parent",  # the same captured value in the worker
        "config_keys": ["b", "a"],  # the parent's key order, after a task reordered it
        "scale_sign": -1.0,  # -0.0, not the worker's 0.0
        "parent_only": "parent value",  # delivered although it cannot be read there
    }
    assert out["seen"] == [expected] * 8
    if form == "Parallel":
        # Only workerstate's Parallel brings word back from the workers, once per call.
        assert len(out["notes"]) == 1, out["notes"]
        assert "'parent-only' raised AttributeError" in out["notes"][0]
