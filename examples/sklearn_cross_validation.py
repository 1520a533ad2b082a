"""
scikit-learn cross-validation with a run-time registry
======================================================

scikit-learn cross-validation with a plugin registry filled at run time.

An estimator's ``fit`` looks up a scaler in a registry that the application
extends at run time. ``cross_validate(n_jobs=2)`` fits the folds in loky
workers, which import the registry as it was at import time; the workerstate
joblib backend carries the parent's registry into every fold, although
``cross_validate`` makes its joblib calls itself. For a parallel loop of your
own, ``presets.sklearn_config`` carries scikit-learn's configuration too.

Run it from the root of the repository::

    python examples/sklearn_cross_validation.py
"""

from __future__ import annotations

import os

import joblib
import sklearn
from sklearn.base import clone
from sklearn.datasets import load_iris
from sklearn.model_selection import cross_validate

import _example_estimators as estimators
from workerstate import parallel, presets


def main() -> None:
    X, y = load_iris(return_X_y=True)
    # Start the pool first: state changed before a fork-based pool starts is
    # copied into it.
    joblib.Parallel(n_jobs=2)(joblib.delayed(os.getpid)() for _ in range(2))

    # a plugin added at run time
    estimators.SCALERS["robust"] = estimators.robust_scale
    model = estimators.ScaledNearestCentroid(scaler="robust")

    # Without workerstate: the workers' registry has no "robust", and every
    # fold fails.
    try:
        cross_validate(model, X, y, cv=4, n_jobs=2)
    except ValueError as exc:
        assert "KeyError: 'robust'" in str(exc), exc
        print(
            "plain cross_validate:   every fold failed with KeyError: 'robust'"
        )
    else:
        raise AssertionError("the workers knew the plugin without workerstate")

    # With the registry registered and the workerstate backend around the call.
    parallel.register_global_parallel_callback(estimators.scalers_callback)
    with (
        sklearn.config_context(assume_finite=True),
        joblib.parallel_config(backend="workerstate"),
    ):
        result = cross_validate(
            model, X, y, cv=4, n_jobs=2, return_estimator=True
        )
    fitted = result["estimator"]
    # fitted in worker processes
    assert all(e.fit_pid_ != os.getpid() for e in fitted)
    # scikit-learn's own wrapper still works
    assert all(e.assume_finite_ for e in fitted)
    print(
        "workerstate backend:    fold accuracies "
        f"{result['test_score'].round(2).tolist()}"
    )

    # A parallel loop of your own: workerstate's delayed and the scikit-learn
    # preset.
    parallel.register_global_parallel_callback(presets.sklearn_config)
    sklearn.set_config(assume_finite=True)
    models = [
        clone(model).set_params(scaler=name) for name in ("standard", "robust")
    ]
    fitted = joblib.Parallel(n_jobs=2)(
        parallel.delayed(m.fit)(X, y) for m in models
    )
    assert all(e.fit_pid_ != os.getpid() and e.assume_finite_ for e in fitted)
    print("own loop, both scalers: fitted in workers with assume_finite=True")


if __name__ == "__main__":
    main()
