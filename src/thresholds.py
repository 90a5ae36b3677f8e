"""Decision thresholds tuned on out-of-fold probabilities: per label (each label's best F1) or one global."""

from __future__ import annotations

import numpy as np

from src.config import ThresholdConfig
from src.errors import UserError
from src.metrics import f1_per_label

MODES = ("per_label", "global", "fixed")
GRID = np.round(np.arange(0.01, 1.0, 0.01), 2)


def best_threshold(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Threshold maximizing F1 of `p >= t` for one label, exact over all cut points; returns (t, f1)."""
    y, p = np.asarray(y, bool), np.asarray(p, np.float64)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float(min(1.0, p.max() + 1e-6)), 0.0
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    tp = np.cumsum(ys)
    f1 = 2 * tp / (n_pos + np.arange(1, len(p) + 1))
    cut_ok = np.r_[ps[:-1] > ps[1:], True]  # only cut between distinct values
    f1 = np.where(cut_ok, f1, -1.0)
    i = int(np.argmax(f1))
    t = ps[i] if i == len(p) - 1 else (ps[i] + ps[i + 1]) / 2
    return float(t), float(f1[i])


def tune(Y: np.ndarray, probs: np.ndarray, cfg: ThresholdConfig) -> np.ndarray:
    """Thresholds (one per label) from OOF truth Y and probabilities."""
    n = Y.shape[1]
    if cfg.mode == "fixed":
        return np.full(n, cfg.fixed)
    if cfg.mode == "per_label":
        return np.array([best_threshold(Y[:, j], probs[:, j])[0] for j in range(n)])
    if cfg.mode == "global":
        scores = [f1_per_label(Y, probs >= t).mean() for t in GRID]
        return np.full(n, GRID[int(np.argmax(scores))])
    raise UserError(f"thresholds.mode must be one of {', '.join(MODES)}, got {cfg.mode!r}")


def apply(probs: np.ndarray, thresholds: np.ndarray, min_one: bool = False) -> np.ndarray:
    """0/1 predictions; with min_one, a row with no label gets the one furthest above its threshold."""
    P = (probs >= thresholds).astype(np.int64)
    if min_one:
        empty = P.sum(1) == 0
        top = np.argmax(probs - thresholds, axis=1)
        P[np.flatnonzero(empty), top[empty]] = 1
    return P


def to_json(labels: list[str], thresholds: np.ndarray, cfg: ThresholdConfig) -> dict:
    return {"mode": cfg.mode, "min_one": cfg.min_one, "thresholds": dict(zip(labels, map(float, thresholds)))}


def from_json(obj: dict, labels: list[str]) -> tuple[np.ndarray, bool]:
    th = obj["thresholds"]
    if list(th) != labels:
        raise UserError(f"thresholds are for labels {list(th)}, expected {labels}")
    return np.array([th[lab] for lab in labels]), bool(obj.get("min_one", False))
