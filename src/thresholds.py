"""Decision thresholds tuned on out-of-fold probabilities: per label (each label's best F1) or one global.

Per-label thresholds tuned on a label with few positives overfit; `shrink` and `min_positives` pull them towards
the global threshold. Row rules come after the thresholds: `exclusive` labels (GoEmotions' neutral) stand alone,
`min_one` fills empty rows. `crossfit` scores a setting honestly: each fold's rows get thresholds tuned on the
other folds only.
"""

from __future__ import annotations

import numpy as np

from src.config import ThresholdConfig
from src.errors import UserError

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


def f1_on_grid(Y: np.ndarray, probs: np.ndarray, grid: np.ndarray = GRID) -> np.ndarray:
    """F1 of `probs >= t` for every t in grid and every label, [len(grid), labels]; sorts once per label
    (f1_per_label at each t would scan every row len(grid) times)."""
    Y = np.asarray(Y, bool)
    out = np.empty((len(grid), Y.shape[1]))
    for j in range(Y.shape[1]):
        pos, every = np.sort(probs[Y[:, j], j]), np.sort(probs[:, j])
        tp = len(pos) - np.searchsorted(pos, grid, side="left")
        predicted = len(every) - np.searchsorted(every, grid, side="left")
        denom = len(pos) + predicted
        out[:, j] = np.divide(2 * tp, denom, out=np.zeros(len(grid)), where=denom > 0)
    return out


def global_threshold(Y: np.ndarray, probs: np.ndarray) -> float:
    """The one threshold for all labels that maximizes macro-F1 (on GRID)."""
    return float(GRID[int(np.argmax(f1_on_grid(Y, probs).mean(1)))])


def tune(Y: np.ndarray, probs: np.ndarray, cfg: ThresholdConfig) -> np.ndarray:
    """Thresholds (one per label) from OOF truth Y and probabilities."""
    n = Y.shape[1]
    if cfg.mode == "fixed":
        return np.full(n, cfg.fixed)
    if cfg.mode == "global":
        return np.full(n, global_threshold(Y, probs))
    if cfg.mode != "per_label":
        raise UserError(f"thresholds.mode must be one of {', '.join(MODES)}, got {cfg.mode!r}")
    th = np.array([best_threshold(Y[:, j], probs[:, j])[0] for j in range(n)])
    if cfg.shrink > 0 or cfg.min_positives > 0:
        th = _towards_global(th, global_threshold(Y, probs), np.asarray(Y, bool).sum(0), cfg)
    return th


def _towards_global(th: np.ndarray, g: float, n_pos: np.ndarray, cfg: ThresholdConfig) -> np.ndarray:
    """Per-label thresholds shrunk towards the global one `g` (weight shrink / (n_pos + shrink)); the global one
    itself for labels with fewer than min_positives positives."""
    th = (n_pos * th + cfg.shrink * g) / np.maximum(n_pos + cfg.shrink, 1e-12)
    return np.where(n_pos < cfg.min_positives, g, th)


def tune_binned(Y: np.ndarray, probs: np.ndarray, cfg: ThresholdConfig, bins: int = 1000) -> np.ndarray:
    """`tune` with thresholds restricted to multiples of 1 / bins: one histogram per label instead of a sort, ~10x
    faster on 48k rows. For searches that score many candidates (blend weights); final thresholds come from `tune`."""
    n = Y.shape[1]
    if cfg.mode == "fixed":
        return np.full(n, cfg.fixed)
    if cfg.mode not in MODES:
        raise UserError(f"thresholds.mode must be one of {', '.join(MODES)}, got {cfg.mode!r}")
    cell = np.minimum((np.asarray(probs) * bins).astype(np.int64), bins) + (bins + 1) * np.arange(n)
    counts = np.bincount(cell.ravel(), minlength=n * (bins + 1)).reshape(n, bins + 1)
    pos = np.bincount(cell.ravel(), weights=np.asarray(Y, np.float64).ravel(), minlength=n * (bins + 1))
    above = lambda c: c[:, ::-1].cumsum(1)[:, ::-1]  # rows with p >= b / bins, for each b
    tp, predicted = above(pos.reshape(n, bins + 1)), above(counts)
    n_pos = tp[:, :1]
    f1 = np.divide(2 * tp, n_pos + predicted, out=np.zeros(tp.shape), where=(n_pos + predicted) > 0)
    grid = np.arange(bins + 1) / bins
    g = grid[int(np.argmax(f1.mean(0)))]
    if cfg.mode == "global":
        return np.full(n, g)
    th = grid[np.argmax(f1, axis=1)]
    return _towards_global(th, g, n_pos[:, 0], cfg)


def exclusive_columns(cfg: ThresholdConfig, labels: list[str]) -> list[int]:
    """Column indices of `cfg.exclusive`; a name that is not a label is an error."""
    unknown = [x for x in cfg.exclusive if x not in labels]
    if unknown:
        raise UserError(f"thresholds.exclusive names {', '.join(map(repr, unknown))}, not a label of this data "
                        f"(labels: {', '.join(labels)})")
    return [labels.index(x) for x in cfg.exclusive]


def apply(probs: np.ndarray, thresholds: np.ndarray, min_one: bool = False, exclusive: list[int] = ()) -> np.ndarray:
    """0/1 predictions. A row with an `exclusive` column and other labels on keeps the side whose best label is
    further above its threshold; with min_one, a row with no label gets the one furthest above its threshold."""
    P = (probs >= thresholds).astype(np.int64)
    margin = probs - thresholds
    for e in exclusive:
        others = np.delete(np.arange(P.shape[1]), e)
        both = (P[:, e] == 1) & (P[:, others].sum(1) > 0)
        best_other = np.where(P[:, others] == 1, margin[:, others], -np.inf).max(1)
        alone = both & (margin[:, e] >= best_other)
        P[np.ix_(alone, others)] = 0
        P[both & ~alone, e] = 0
    if min_one:
        empty = P.sum(1) == 0
        top = np.argmax(margin, axis=1)
        P[np.flatnonzero(empty), top[empty]] = 1
    return P


def predict(probs: np.ndarray, thresholds: np.ndarray, cfg: ThresholdConfig, labels: list[str]) -> np.ndarray:
    """0/1 predictions under cfg's row rules (exclusive labels, min_one)."""
    return apply(probs, thresholds, cfg.min_one, exclusive_columns(cfg, labels))


def crossfit(Y: np.ndarray, probs: np.ndarray, fold: np.ndarray, cfg: ThresholdConfig,
             labels: list[str]) -> np.ndarray:
    """0/1 predictions where each fold's rows are decided by thresholds tuned on the other folds' rows only."""
    P = np.zeros(Y.shape, dtype=np.int64)
    for k in np.unique(fold):
        held = fold == k
        P[held] = predict(probs[held], tune(Y[~held], probs[~held], cfg), cfg, labels)
    return P


def to_json(labels: list[str], thresholds: np.ndarray, cfg: ThresholdConfig) -> dict:
    return {"mode": cfg.mode, "min_one": cfg.min_one, "shrink": cfg.shrink, "min_positives": cfg.min_positives,
            "exclusive": list(cfg.exclusive), "thresholds": dict(zip(labels, map(float, thresholds)))}


def from_json(obj: dict, labels: list[str]) -> tuple[np.ndarray, bool]:
    th = obj["thresholds"]
    if list(th) != labels:
        raise UserError(f"thresholds are for labels {list(th)}, expected {labels}")
    return np.array([th[lab] for lab in labels]), bool(obj.get("min_one", False))
