"""Classical baseline (``classical``): scikit-learn on utterance functionals.

Input ``X`` ``(N, D)`` float — one row of functionals per utterance (e.g. means, deviations and percentiles of
frame features) — and integer labels ``y`` ``(N,)`` in ``[0, n_classes)``. The model is a pipeline
``StandardScaler → SVC`` (``kind="svm"``) or ``StandardScaler → LogisticRegression`` (``kind="logreg"``), with
balanced class weights by default. ``predict_proba`` always returns ``(N, n_classes)`` columns in label order, also
when a class is missing from the training data (its column is 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from ser.errors import ConfigError, SerError
from ser.io import atomic_path


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class ClassicalModel:
    """StandardScaler + SVC or LogisticRegression with ``fit`` / ``predict_proba`` / ``predict``.

    ``kind``: ``svm`` or ``logreg``. For ``svm``, ``probability=False`` (default) turns the one-vs-rest decision
    function into probabilities with a softmax (fast, deterministic); ``probability=True`` calibrates the SVC with
    sigmoid (Platt) scaling by cross-validation (``CalibratedClassifierCV(SVC(), ensemble=False)``, what
    scikit-learn recommends in place of ``SVC(probability=True)``; slower). ``C`` is the inverse regularisation
    strength for both kinds.
    """

    name: ClassVar[str] = "classical"
    input_kind: ClassVar[str] = "functionals"

    def __init__(
        self,
        n_classes: int,
        n_features: int | None = None,
        *,
        kind: str = "svm",
        C: float = 1.0,
        kernel: str = "rbf",
        gamma: str | float = "scale",
        probability: bool = False,
        class_weight: str | None = "balanced",
        max_iter: int = 5000,
        seed: int = 0,
    ):
        if kind not in ("svm", "logreg"):
            raise ConfigError(f"classical: kind must be svm or logreg, got {kind!r}")
        if n_classes < 2:
            raise ConfigError(f"classical: n_classes must be at least 2, got {n_classes}")
        if C <= 0:
            raise ConfigError(f"classical: C must be positive, got {C}")
        self.n_classes = int(n_classes)
        self.n_features = None if n_features is None else int(n_features)
        self.hparams: dict[str, Any] = dict(
            kind=kind,
            C=C,
            kernel=kernel,
            gamma=gamma,
            probability=probability,
            class_weight=class_weight,
            max_iter=max_iter,
            seed=seed,
        )
        self.pipeline: Pipeline | None = None

    def _make(self, y: np.ndarray) -> Pipeline:
        h = self.hparams
        if h["kind"] == "svm":
            est = SVC(
                C=h["C"],
                kernel=h["kernel"],
                gamma=h["gamma"],
                class_weight=h["class_weight"],
                decision_function_shape="ovr",
                random_state=h["seed"],
            )
            if h["probability"]:
                folds = int(min(5, np.bincount(y)[np.unique(y)].min()))
                if folds < 2:
                    raise SerError("classical: probability=True needs at least 2 examples of every class")
                est = CalibratedClassifierCV(est, method="sigmoid", cv=folds, ensemble=False)
        else:
            est = LogisticRegression(
                C=h["C"], class_weight=h["class_weight"], max_iter=h["max_iter"], random_state=h["seed"]
            )
        return make_pipeline(StandardScaler(), est)

    def _check_x(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] == 0:
            raise SerError(f"classical: expected a non-empty (N, D) feature matrix, got shape {X.shape}")
        if self.n_features is not None and X.shape[1] != self.n_features:
            raise SerError(f"classical: expected {self.n_features} features per row, got {X.shape[1]}")
        if not np.isfinite(X).all():
            raise SerError("classical: feature matrix contains NaN or infinite values")
        return X

    def fit(self, X: np.ndarray, y: np.ndarray) -> ClassicalModel:
        """Fit on ``X`` ``(N, D)`` and labels ``y`` ``(N,)``; needs at least two distinct classes."""
        X = self._check_x(X)
        y = np.asarray(y).astype(np.int64)
        if y.shape != (X.shape[0],):
            raise SerError(f"classical: {X.shape[0]} rows but {y.size} labels")
        if y.min() < 0 or y.max() >= self.n_classes:
            raise SerError(f"classical: labels must lie in [0, {self.n_classes})")
        if np.unique(y).size < 2:
            raise SerError("classical: training data holds a single class")
        if self.n_features is None:
            self.n_features = X.shape[1]
        self.pipeline = self._make(y).fit(X, y)
        return self

    def _fitted(self) -> Pipeline:
        if self.pipeline is None:
            raise SerError("classical: model is not fitted")
        return self.pipeline

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, n_classes)``, rows sum to 1."""
        pipe = self._fitted()
        X = self._check_x(X)
        classes = pipe.classes_
        if self.hparams["kind"] == "svm" and not self.hparams["probability"]:
            d = pipe.decision_function(X)
            if d.ndim == 1:  # two classes: positive score favours classes[1]
                d = np.stack([-d, d], axis=1) / 2.0
            p = _softmax(d)
        else:
            p = pipe.predict_proba(X)
        out = np.zeros((X.shape[0], self.n_classes), dtype=np.float64)
        out[:, classes] = p
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Most probable label ``(N,)``."""
        return self.predict_proba(X).argmax(axis=1)

    def n_params(self, trainable_only: bool = False) -> int:
        """Learned numbers: scaler mean/scale + support vectors and dual coefficients, or coefficients."""
        pipe = self._fitted()
        scaler, est = pipe[0], pipe[-1]
        n = scaler.mean_.size + scaler.scale_.size
        if isinstance(est, CalibratedClassifierCV):
            cal = est.calibrated_classifiers_[0]
            n += 2 * len(cal.calibrators)  # sigmoid slope + offset per class
            est = cal.estimator
        if isinstance(est, SVC):
            n += est.support_vectors_.size + est.dual_coef_.size + est.intercept_.size
        else:
            n += est.coef_.size + est.intercept_.size
        return int(n)

    def save(self, path: str | Path) -> Path:
        """Write the fitted model with joblib (a pickle: load only files you trust)."""
        import joblib

        self._fitted()
        with atomic_path(path) as tmp:
            blob = {
                "n_classes": self.n_classes,
                "n_features": self.n_features,
                "hparams": self.hparams,
                "pipeline": self.pipeline,
            }
            joblib.dump(blob, tmp)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> ClassicalModel:
        import joblib

        path = Path(path)
        if not path.is_file():
            raise SerError(f"classical model not found: {path}")
        blob = joblib.load(path)
        model = cls(blob["n_classes"], blob["n_features"], **blob["hparams"])
        model.pipeline = blob["pipeline"]
        return model
