"""A scikit-learn estimator that reads a plugin registry, for
sklearn_cross_validation.py.

Its ``fit`` looks up its scaling function by name in ``SCALERS``, which the
application fills at run time, and records what the worker saw.
"""

from __future__ import annotations

import os

import numpy as np
import sklearn
from sklearn.base import BaseEstimator, ClassifierMixin


def standard_scale(X, reference):
    return (X - reference.mean(axis=0)) / reference.std(axis=0)


def robust_scale(X, reference):
    q1, median, q3 = np.percentile(reference, [25, 50, 75], axis=0)
    return (X - median) / (q3 - q1)


#: Scalers by name; applications register more at run time.
SCALERS = {"standard": standard_scale}


def scalers_callback():
    """A parallel callback for the registry: its entries now, and how a worker
    installs them."""
    return dict(SCALERS), set_scalers


def set_scalers(value):
    SCALERS.clear()
    SCALERS.update(value)


class ScaledNearestCentroid(ClassifierMixin, BaseEstimator):
    """Nearest centroid on features scaled by a registered scaler."""

    def __init__(self, scaler="standard"):
        self.scaler = scaler

    def fit(self, X, y):
        scale = SCALERS[self.scaler]  # the registry as this worker sees it
        self.reference_ = np.asarray(X, dtype=float)
        scaled = scale(self.reference_, self.reference_)
        self.classes_ = np.unique(y)
        self.centroids_ = np.stack(
            [scaled[y == label].mean(axis=0) for label in self.classes_]
        )
        # What the worker saw, for the example to check.
        self.fit_pid_ = os.getpid()
        self.assume_finite_ = sklearn.get_config()["assume_finite"]
        return self

    def predict(self, X):
        scaled = SCALERS[self.scaler](
            np.asarray(X, dtype=float), self.reference_
        )
        distances = ((scaled[:, None, :] - self.centroids_[None]) ** 2).sum(
            axis=2
        )
        return self.classes_[distances.argmin(axis=1)]
