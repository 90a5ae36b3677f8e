import numpy as np
import pytest
from sklearn import metrics as skm

from src import metrics


@pytest.fixture
def ypp():
    rng = np.random.default_rng(0)
    Y = (rng.random((300, 5)) < [0.4, 0.2, 0.1, 0.05, 0.3]).astype(int)
    probs = np.clip(Y * 0.35 + rng.random(Y.shape) * 0.65, 0, 1)
    Y[:, 3] = 0  # a label with no positives
    Y[:5] = 0  # some empty rows
    return Y, probs, (probs >= 0.5).astype(int)


def test_against_sklearn(ypp):
    Y, probs, P = ypp
    assert np.allclose(metrics.f1_per_label(Y, P), skm.f1_score(Y, P, average=None, zero_division=0))
    assert metrics.macro_f1(Y, P) == pytest.approx(skm.f1_score(Y, P, average="macro", zero_division=0))
    assert metrics.micro_f1(Y, P) == pytest.approx(skm.f1_score(Y, P, average="micro", zero_division=0))
    assert metrics.jaccard(Y, P) == pytest.approx(skm.jaccard_score(Y, P, average="samples", zero_division=1))
    table = metrics.per_label_table(Y, P, probs, list("abcde"))
    for j in (0, 1, 2, 4):
        assert table["roc_auc"].iloc[j] == pytest.approx(skm.roc_auc_score(Y[:, j], probs[:, j]))
        assert table["precision"].iloc[j] == pytest.approx(skm.precision_score(Y[:, j], P[:, j], zero_division=0))
        assert table["recall"].iloc[j] == pytest.approx(skm.recall_score(Y[:, j], P[:, j], zero_division=0))
        assert table["accuracy"].iloc[j] == pytest.approx(skm.accuracy_score(Y[:, j], P[:, j]))
    assert np.isnan(table["roc_auc"].iloc[3])


def test_jaccard_empty_vs_empty_counts_one():
    Y = np.array([[0, 0], [1, 0]])
    assert metrics.jaccard(Y, np.array([[0, 0], [0, 1]])) == 0.5
    assert metrics.jaccard(Y, Y) == 1.0


def test_auc_ties():
    y, p = np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.2, 0.9])
    assert metrics.roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p))
