"""Decisions tuned on out-of-fold probabilities for the competition's metric (`data.metric`).

Per label (each label's best F1) or one global threshold: what macro-F1 asks for. Per-label thresholds tuned on a
label with few positives overfit; `shrink` and `min_positives` pull them towards the global threshold. Row rules come
after the thresholds: `exclusive` labels (GoEmotions' neutral) stand alone, `min_one` fills empty rows.
A metric of all labels together (micro-F1, and the sample-wise Jaccard and samples-F1) is optimized as itself
(`fit`): coordinate ascent over the per-label thresholds, with `min_one` off and on, and a relative-to-max rule (a
row keeps the labels whose probability is at least `ratio` x its highest) as candidates, the best on the OOF rows
kept (`Decider`, saved in thresholds.json). Threshold-free metrics (ROC-AUC, log-loss) need no decisions: their
submission holds probabilities. `crossfit` scores a setting honestly: each fold's rows get decisions fitted on the
other folds only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from src import metrics
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


@dataclass
class Decider:
    """A fitted decision rule: per-label thresholds with the row rules, or (ratio > 0) the relative-to-max rule."""
    thresholds: np.ndarray
    min_one: bool = False
    exclusive: list[int] = field(default_factory=list)
    ratio: float = 0.0  # > 0: a row keeps the labels whose probability is >= ratio x its highest
    metric: str = "macro_f1"  # what it was fitted for

    def __call__(self, probs: np.ndarray) -> np.ndarray:
        probs = np.asarray(probs, dtype=np.float64)
        if self.ratio > 0:
            return (probs >= self.ratio * probs.max(axis=1, keepdims=True)).astype(np.int64)
        return apply(probs, self.thresholds, self.min_one, self.exclusive)

    def to_json(self, labels: list[str], cfg: ThresholdConfig) -> dict:
        return {"metric": self.metric, "rule": "relative" if self.ratio > 0 else "thresholds", "ratio": self.ratio,
                "mode": cfg.mode, "min_one": bool(self.min_one), "shrink": cfg.shrink,
                "min_positives": cfg.min_positives, "exclusive": list(cfg.exclusive),
                "thresholds": dict(zip(labels, map(float, self.thresholds)))}

    @classmethod
    def from_json(cls, obj: dict, labels: list[str], cfg: ThresholdConfig) -> Decider:
        th = obj["thresholds"]
        if sorted(th) != sorted(labels):
            raise UserError(f"thresholds are for labels {list(th)}, expected {labels}")
        return cls(np.array([th[lab] for lab in labels]), bool(obj.get("min_one", False)),
                   exclusive_columns(cfg, labels), float(obj.get("ratio", 0.0) or 0.0),
                   obj.get("metric", "macro_f1"))


def fit(Y: np.ndarray, probs: np.ndarray, cfg: ThresholdConfig, labels: list[str], metric: str = "macro_f1"
        ) -> Decider:
    """The decision rule for `metric` fitted on these rows. Macro-F1 (a mean of per-label F1s): the per-label
    thresholds under cfg's rules (shrink, min_positives, min_one, exclusive). A metric of all labels together
    (micro-F1, samples-F1, Jaccard): of those, coordinate ascent on the metric from them (min_one off and on) and
    the relative-to-max rule, the one scoring best here. A threshold-free metric, or a `global`/`fixed` threshold
    mode, keeps the thresholds cfg asks for."""
    base = Decider(tune(Y, probs, cfg), cfg.min_one, exclusive_columns(cfg, labels), metric=metric)
    if metrics.check_metric(metric) in ("macro_f1", *metrics.THRESHOLD_FREE) or cfg.mode != "per_label":
        return base
    candidates = [base, *(_ascend(Y, probs, Decider(base.thresholds, m, base.exclusive, metric=metric))
                          for m in (False, True)), relative(Y, probs, metric, base.thresholds)]
    scores = [metrics.score(metric, Y, d(probs)) for d in candidates]
    return candidates[int(np.argmax(scores))]  # first of equals: the plain thresholds win ties


def _ascend(Y: np.ndarray, probs: np.ndarray, d: Decider, passes: int = 4, n_candidates: int = 24) -> Decider:
    """Coordinate ascent on the metric: each label's threshold in turn set to its best value with the others held,
    until a pass improves nothing. Exact over every cut point (`_best_cut`) for micro-F1, samples-F1 and Jaccard
    with or without min_one; with exclusive labels, the best of `n_candidates` quantiles."""
    th, best = d.thresholds.copy(), metrics.score(d.metric, Y, d(probs))
    exact = not d.exclusive and d.metric in ("micro_f1", "samples_f1", "jaccard")
    for _ in range(passes):
        improved = False
        for j in range(Y.shape[1]):
            if exact:
                options = [_best_cut(Y, probs, th, j, d.metric, d.min_one)]
            else:
                options = np.unique(np.quantile(probs[:, j], np.linspace(0.02, 0.98, n_candidates)))
            for c in options:
                trial = th.copy()
                trial[j] = c
                s = metrics.score(d.metric, Y, Decider(trial, d.min_one, d.exclusive, metric=d.metric)(probs))
                if s > best + 1e-12:
                    th, best, improved = trial, s, True
        if not improved:
            break
    return Decider(th, d.min_one, d.exclusive, metric=d.metric)


def _best_cut(Y: np.ndarray, probs: np.ndarray, th: np.ndarray, j: int, metric: str, min_one: bool) -> float:
    """Label j's threshold t maximizing `metric` (micro-F1, samples-F1 or Jaccard) with the other labels' thresholds
    held: every cut scored at once from running sums. A row turns j on when t <= its key: p_j, or (min_one, the
    other labels all off) p_j minus the best other margin, below which the row's top other label fills it instead."""
    Y = np.asarray(Y, bool)
    margin = probs - th
    off = margin >= 0
    off[:, j] = False
    key = probs[:, j].copy()
    if min_one:
        others = np.delete(np.arange(Y.shape[1]), j)
        empty = ~off.any(1)
        best_other = others[np.argmax(margin[:, others], axis=1)]
        key[empty] -= margin[empty, best_other[empty]]
        off[np.flatnonzero(empty), best_other[empty]] = True
    on = off.copy()
    on[:, j] = True
    if min_one:
        on[np.flatnonzero(empty), best_other[empty]] = False  # j fills the row: its top other label stays off
    order = np.argsort(-key, kind="stable")
    keys = key[order]

    def per_row(P):
        inter = (Y & P).sum(1)
        if metric == "jaccard":
            union = (Y | P).sum(1)
            return np.divide(inter, union, out=np.ones(len(Y)), where=union > 0)
        size = Y.sum(1) + P.sum(1)
        return np.divide(2 * inter, size, out=np.ones(len(Y)), where=size > 0)

    if metric == "micro_f1":  # F1 of all cells: TP and predicted counts as the cut moves down the sorted rows
        tp = (Y & off).sum() + np.r_[0, np.cumsum(((Y & on).sum(1) - (Y & off).sum(1))[order])]
        predicted = off.sum() + np.r_[0, np.cumsum((on.sum(1) - off.sum(1))[order])]
        value = np.divide(2 * tp, Y.sum() + predicted, out=np.ones(len(tp)), where=(Y.sum() + predicted) > 0)
    else:  # a mean over rows: each row's change when j turns on, summed in the sorted order
        v_off, v_on = per_row(off), per_row(on)
        value = v_off.sum() + np.r_[0, np.cumsum((v_on - v_off)[order])]
    cut_ok = np.r_[True, keys[:-1] > keys[1:], True]  # cut i: the first i rows on; only between distinct keys
    i = int(np.argmax(np.where(cut_ok, value, -np.inf)))
    if i == 0:
        return float(keys[0] + 1e-6) if len(keys) else 1.0
    return float(keys[i - 1] - 1e-6 if i == len(keys) else (keys[i - 1] + keys[i]) / 2)


def relative(Y: np.ndarray, probs: np.ndarray, metric: str, th: np.ndarray) -> Decider:
    """The relative-to-max rule with the best ratio (1.0: the top label alone); `th` kept for the error report."""
    ratios = np.round(np.arange(0.2, 1.0001, 0.05), 2)
    best = max(ratios, key=lambda r: metrics.score(metric, Y, Decider(th, ratio=r)(probs)))
    return Decider(th, ratio=float(best), metric=metric)


def held_out_score(Y: np.ndarray, probs: np.ndarray, labels: list[str], metric: str) -> float:
    """`metric` on these rows at decisions fitted on them (default threshold settings), signed so that higher is
    better: what a checkpoint's `score` holds and the selection rules compare."""
    decided = fit(Y, probs, ThresholdConfig(), labels, metric)(probs)
    return metrics.score(metric, Y, decided, probs) * (-1 if metric in metrics.LOWER_IS_BETTER else 1)


def crossfit(Y: np.ndarray, probs: np.ndarray, fold: np.ndarray, cfg: ThresholdConfig,
             labels: list[str], metric: str = "macro_f1") -> np.ndarray:
    """0/1 predictions where each fold's rows are decided by a rule fitted on the other folds' rows only."""
    P = np.zeros(Y.shape, dtype=np.int64)
    for k in np.unique(fold):
        held = fold == k
        P[held] = fit(Y[~held], probs[~held], cfg, labels, metric)(probs[held])
    return P
