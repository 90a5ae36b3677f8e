"""Multi-label metrics: per-label accuracy/precision/recall/F1/ROC-AUC, macro/micro F1, Jaccard."""

from __future__ import annotations

import numpy as np
import pandas as pd


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


def summary(Y: np.ndarray, P: np.ndarray) -> dict[str, float]:
    return {"macro_f1": macro_f1(Y, P), "micro_f1": micro_f1(Y, P), "jaccard": jaccard(Y, P)}
