"""Seeded row choices: the scored subset of rows, and few-shot examples from a fold's training rows."""

from __future__ import annotations

import numpy as np


def subset(rows: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """`rows` itself, or `max_rows` of them chosen with a fixed seed (sorted, so in train order)."""
    rows = np.asarray(rows)
    if max_rows <= 0 or max_rows >= len(rows):
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, size=max_rows, replace=False))


def shots(rng: np.random.Generator, pool: np.ndarray, n: int) -> np.ndarray:
    """`n` example rows drawn from `pool` (the training rows only)."""
    return rng.choice(pool, size=min(n, len(pool)), replace=False) if n > 0 else np.array([], dtype=int)


def unary_shots(rng: np.random.Generator, pool: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    """`n` examples for one label's yes/no question: half positive (rounded up) where the pool allows, shuffled."""
    if n <= 0:
        return np.array([], dtype=int)
    pos, neg = pool[y[pool] == 1], pool[y[pool] == 0]
    n_pos = min(len(pos), max(n - len(neg), (n + 1) // 2))
    picked = np.r_[rng.choice(pos, size=n_pos, replace=False), rng.choice(neg, size=min(n - n_pos, len(neg)),
                                                                           replace=False)]
    return rng.permutation(picked).astype(int)
