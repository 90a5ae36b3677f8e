"""How a blend or a stack turns its members' probabilities into its own: the weighted mean (`mix`), the rank
scale (`percentiles`), and a stack's fold stackers over the members' logits (`features`, `Stackers`). Used where
they are fitted (src/ensemble.py, src/stack.py) and where a finished one is applied to new texts (src/apply.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from src.errors import UserError
from src.fileio import atomic_path

EPS = 1e-6


def percentiles(ref: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per column, the mid-rank percentile of x's values within ref's values (ties share their mean rank)."""
    out = np.empty_like(x, dtype=np.float64)
    for j in range(ref.shape[1]):
        r = np.sort(ref[:, j][~np.isnan(ref[:, j])])  # a partial member's OOF: the rows it covers
        out[:, j] = (np.searchsorted(r, x[:, j], "left") + np.searchsorted(r, x[:, j], "right")) / (2 * len(r))
    return out


def mix(w: np.ndarray, X: np.ndarray) -> np.ndarray:
    """The weighted mean of the members, clipped to [0, 1] (weights summing to 1 in floating point can overshoot)."""
    return np.clip(np.tensordot(w, X, axes=1), 0.0, 1.0)


def features(P: np.ndarray) -> np.ndarray:
    """[members, rows, labels] probabilities -> [rows, members * labels] logits (p clipped to [EPS, 1 - EPS])."""
    p = np.clip(P, EPS, 1 - EPS)
    return np.log(p / (1 - p)).transpose(1, 0, 2).reshape(P.shape[1], -1)


@dataclass
class Stackers:
    """Each fold's fitted stack (fitted on the other folds' rows): a standardizer [folds, features] and per label a
    logistic regression [folds, labels, features] + intercept, or a constant rate where a label had one class.
    Plain arrays, so `stackers.npz` loads without pickle; `predict` applies them to members' probabilities."""
    folds: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    const: np.ndarray  # NaN where a regression was fitted

    def predict(self, P: np.ndarray, k: int | None = None) -> np.ndarray:
        """[members, rows, labels] probabilities -> stacked ones: fold k's stackers, or (k None) the mean over folds."""
        F = features(P)
        out = []
        for i, fk in enumerate(self.folds):
            if k is not None and fk != k:
                continue
            z = ((F - self.mean[i]) / self.scale[i]) @ self.coef[i].T + self.intercept[i]
            p = 1 / (1 + np.exp(-z))
            out.append(np.where(np.isnan(self.const[i]), p, self.const[i]))
        return np.clip(np.mean(out, axis=0), 0.0, 1.0)

    @staticmethod
    def path(rd) -> Path:
        """Where a stack's run folder keeps its stackers."""
        return rd.out / "stackers.npz"

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **{k: getattr(self, k) for k in ("folds", "mean", "scale", "coef", "intercept", "const")})

    @classmethod
    def load(cls, path: Path) -> Stackers:
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(**{k: z[k] for k in ("folds", "mean", "scale", "coef", "intercept", "const")})
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"{path} is damaged ({e}): stack the runs again") from None
