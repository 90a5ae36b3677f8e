"""Small synthetic competition folders for tests: texts carry label keywords, so models can learn them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

LABELS = ["anger", "joy", "fear", "trust"]
FILLER = "the a of to and in that it is was for on with as at by this day time people".split()


def make_frame(n: int, labels=LABELS, seed: int = 0, with_labels: bool = True, prefix: str = "tr"):
    rng = np.random.default_rng(seed)
    rates = np.linspace(0.45, 0.15, len(labels))
    Y = (rng.random((n, len(labels))) < rates).astype(int)
    texts = []
    for i in range(n):
        words = list(rng.choice(FILLER, size=6))
        for j, lab in enumerate(labels):
            if Y[i, j] and rng.random() < 0.9:
                words.insert(int(rng.integers(len(words) + 1)), lab + "y")
        texts.append(" ".join(words))
    df = pd.DataFrame({"ID": [f"{prefix}-{i:05d}" for i in range(n)], "Tweet": texts})
    if with_labels:
        for j, lab in enumerate(labels):
            df[lab] = Y[:, j]
    return df


def make_competition(root: Path, n_train: int = 200, n_test: int = 60, labels=LABELS, seed: int = 0) -> Path:
    """Write train.csv, test.csv and sample_submission.csv under `root`; return it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    train = make_frame(n_train, labels, seed)
    test = make_frame(n_test, labels, seed + 1, with_labels=False, prefix="te")
    sample = test[["ID"]].copy()
    for lab in labels:
        sample[lab] = 0
    train.to_csv(root / "train.csv", index=False)
    test.to_csv(root / "test.csv", index=False)
    sample.to_csv(root / "sample_submission.csv", index=False)
    return root
