"""From candidate log-probabilities to per-label probabilities.

Multi-label prompt: every label step's candidate distribution is renormalized over the candidates (the label
words, plus the none answer at step 0). The methods read from them:
    first   step 0 only (what a single next-token readout gives)
    max     max over the label steps (the study's fix: each step suppresses all labels but one)
    mean    mean over the label steps
    parsed  1 where the generated text names the label, else 0 (text parsing, for comparison)
Unary prompt: P(label) = P(yes) / (P(yes) + P(no)), each side summing its words ("Yes", "yes").
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp, softmax

MULTI_METHODS = ("first", "max", "mean", "parsed")


def step_distributions(step_lps: list[np.ndarray]) -> list[np.ndarray]:
    """Each step's candidate log-probabilities renormalized to a distribution."""
    return [softmax(lp) for lp in step_lps]


def multi_methods(rows_steps: list[list[np.ndarray]], parsed: np.ndarray, n_labels: int) -> dict[str, np.ndarray]:
    """`rows_steps[i][s]`: log-probs of row i's step-s candidates (labels first). -> {method: [rows, labels]}."""
    out = {m: np.zeros((len(rows_steps), n_labels)) for m in ("first", "max", "mean")}
    for i, steps in enumerate(rows_steps):
        q = np.stack([d[:n_labels] for d in step_distributions(steps)])
        out["first"][i], out["max"][i], out["mean"][i] = q[0], q.max(0), q.mean(0)
    out["parsed"] = np.asarray(parsed, dtype=np.float64).reshape(len(rows_steps), n_labels)
    return out


def unary_probs(label_lps: list[np.ndarray], n_yes: int) -> np.ndarray:
    """`label_lps[j]`: log-probs of [yes words..., no words...] for label j -> P(yes) / (P(yes) + P(no))."""
    return np.array([np.exp(logsumexp(lp[:n_yes]) - logsumexp(lp)) for lp in label_lps])


def mass(lps: list[np.ndarray]) -> list[float]:
    """Total next-token probability the candidates hold at each query (how much the model 'wants' to answer)."""
    return [float(np.exp(logsumexp(lp))) for lp in lps]
