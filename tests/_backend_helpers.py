"""An estimator that records, in its worker, the state it was fitted under (importable)."""

from __future__ import annotations

from typing import Any

import numpy as np
import sklearn
from sklearn.base import BaseEstimator, ClassifierMixin

from tests import _state


class StateReadingClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Fits nothing; remembers what it saw; scores 1.0 only if it saw the registered state."""

    def __init__(self, c: int = 1, expect_local: str = "caller-local") -> None:
        self.c = c
        self.expect_local = expect_local

    def fit(self, X: Any, y: Any) -> StateReadingClassifier:
        self.seen_ = (_state.VALUE, _state.get_local(), sklearn.get_config()["assume_finite"])
        self.classes_ = np.unique(y)
        return self

    def predict(self, X: Any) -> Any:
        return np.zeros(len(X), dtype=int)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        return float(self.seen_[:2] == ("run-time", self.expect_local))


def nested_report(i: int) -> list[tuple[object, object]]:
    """Run a nested joblib call with plain joblib.delayed; report what its tasks saw."""
    import joblib

    seen = joblib.Parallel(n_jobs=2)(joblib.delayed(_state.report)(j) for j in range(4))
    return [(s["value"], s["local"]) for s in seen]
