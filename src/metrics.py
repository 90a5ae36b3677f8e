"""Multi-label metrics: per-label accuracy/precision/recall/F1/ROC-AUC, and the competition metrics a run can be
judged by (`data.metric`): macro_f1, micro_f1, samples_f1, jaccard (sample-wise; a row with no gold and no
predicted label counts 1, as SemEval-2018 E-c scores it), roc_auc (the mean over labels) and log_loss.
The first four score 0/1 decisions, the last two probabilities (no thresholds)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from src.errors import UserError

METRICS = ("macro_f1", "micro_f1", "samples_f1", "jaccard", "roc_auc", "log_loss")
THRESHOLD_FREE = ("roc_auc", "log_loss")  # scored on probabilities: decisions do not change them
SAMPLE_WISE = ("samples_f1", "jaccard")  # one score per row, averaged
LOWER_IS_BETTER = ("log_loss",)


def _safe_div(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


def f1_per_label(Y: np.ndarray, P: np.ndarray) -> np.ndarray:
    """F1 of each column of 0/1 predictions P against 0/1 truth Y (0 where undefined)."""
    Y, P = np.asarray(Y, bool), np.asarray(P, bool)
    tp = (Y & P).sum(0)
    return _safe_div(2 * tp, Y.sum(0) + P.sum(0))


def macro_f1(Y: np.ndarray, P: np.ndarray) -> float:
    return float(f1_per_label(Y, P).mean())


def micro_f1(Y: np.ndarray, P: np.ndarray) -> float:
    Y, P = np.asarray(Y, bool), np.asarray(P, bool)
    return float(_safe_div(2 * (Y & P).sum(), Y.sum() + P.sum()))


def jaccard(Y: np.ndarray, P: np.ndarray) -> float:
    """Mean per-row |Y & P| / |Y | P| (SemEval's 'accuracy'); a row with both empty counts 1."""
    Y, P = np.asarray(Y, bool), np.asarray(P, bool)
    inter, union = (Y & P).sum(1), (Y | P).sum(1)
    return float(np.where(union == 0, 1.0, _safe_div(inter, union)).mean())


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC-AUC of one label via the rank statistic (ties averaged); NaN if only one class present."""
    y = np.asarray(y, bool)
    n_pos, n_neg = y.sum(), (~y).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(np.asarray(p, np.float64)).rank(method="average").to_numpy()
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def per_label_table(Y: np.ndarray, P: np.ndarray, probs: np.ndarray | None, labels: list[str]) -> pd.DataFrame:
    """One row per label: support, accuracy, precision, recall, F1 and (given probs) ROC-AUC."""
    Y, P = np.asarray(Y, bool), np.asarray(P, bool)
    tp = (Y & P).sum(0)
    table = pd.DataFrame(
        {
            "support": Y.sum(0),
            "predicted": P.sum(0),
            "accuracy": (Y == P).mean(0),
            "precision": _safe_div(tp, P.sum(0)),
            "recall": _safe_div(tp, Y.sum(0)),
            "f1": f1_per_label(Y, P),
        },
        index=pd.Index(labels, name="label"),
    )
    if probs is not None:
        table["roc_auc"] = [roc_auc(Y[:, j], probs[:, j]) for j in range(Y.shape[1])]
    return table


def samples_f1(Y: np.ndarray, P: np.ndarray) -> float:
    """Mean per-row F1 of the row's labels; a row with both empty counts 1 (as Jaccard)."""
    Y, P = np.asarray(Y, bool), np.asarray(P, bool)
    inter, size = (Y & P).sum(1), Y.sum(1) + P.sum(1)
    return float(np.where(size == 0, 1.0, _safe_div(2 * inter, size)).mean())


def mean_roc_auc(Y: np.ndarray, probs: np.ndarray) -> float:
    """ROC-AUC averaged over the labels that have both classes (Jigsaw's mean column-wise ROC-AUC)."""
    values = [roc_auc(Y[:, j], probs[:, j]) for j in range(np.shape(Y)[1])]
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def log_loss(Y: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Binary cross-entropy averaged over rows and labels (probabilities clipped to [eps, 1 - eps])."""
    p = np.clip(np.asarray(probs, np.float64), eps, 1 - eps)
    Y = np.asarray(Y, np.float64)
    return float(-(Y * np.log(p) + (1 - Y) * np.log(1 - p)).mean())


DECISION_FNS = {"macro_f1": macro_f1, "micro_f1": micro_f1, "samples_f1": samples_f1, "jaccard": jaccard}
PROBABILITY_FNS = {"roc_auc": mean_roc_auc, "log_loss": log_loss}


def check_metric(name: str) -> str:
    if name not in METRICS:
        raise UserError(f"data.metric must be one of {', '.join(METRICS)}, got {name!r}")
    return name


def score(name: str, Y: np.ndarray, P: np.ndarray | None, probs: np.ndarray | None = None) -> float:
    """The metric `name` of decisions P (threshold-free metrics: of `probs`)."""
    check_metric(name)
    return PROBABILITY_FNS[name](Y, probs) if name in THRESHOLD_FREE else DECISION_FNS[name](Y, P)


def better(name: str, a: float, b: float) -> bool:
    """Whether score a beats score b under metric `name` (NaN never does)."""
    if np.isnan(a):
        return False
    return np.isnan(b) or (a < b if name in LOWER_IS_BETTER else a > b)


def summary(Y: np.ndarray, P: np.ndarray, probs: np.ndarray | None = None, first: str = "macro_f1") -> dict:
    """Every metric of decisions P (and of probabilities, given them), the chosen one (`first`) first."""
    out = {name: fn(Y, P) for name, fn in DECISION_FNS.items()}
    if probs is not None:
        out |= {name: fn(Y, probs) for name, fn in PROBABILITY_FNS.items()}
    return {first: out[first], **out} if first in out else out
