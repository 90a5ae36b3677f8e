"""Per-class loss weights from a fold's training rows only: `pos_weight = neg / pos` and variants."""

from __future__ import annotations

import numpy as np

from src.errors import UserError

MODES = ("balanced", "sqrt", "none")


def pos_weight(Y_train: np.ndarray, mode: str = "balanced", clip: float = 0.0) -> np.ndarray:
    """BCE `pos_weight` per label from the training rows' 0/1 matrix.

    balanced: neg/pos; sqrt: sqrt(neg/pos) (damped); none: ones. `clip` > 0 caps the weights.
    A label with no positive rows gets the weight of a single positive (neg/1).
    """
    if mode not in MODES:
        raise UserError(f"train.pos_weight must be one of {MODES}, got {mode!r}")
    Y = np.asarray(Y_train)
    pos = Y.sum(axis=0).astype(np.float64)
    neg = len(Y) - pos
    if mode == "none":
        w = np.ones(Y.shape[1])
    else:
        w = neg / np.maximum(pos, 1.0)
        if mode == "sqrt":
            w = np.sqrt(w)
    if clip > 0:
        w = np.minimum(w, clip)
    return w.astype(np.float32)
