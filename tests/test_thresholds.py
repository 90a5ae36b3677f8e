import numpy as np

from src import thresholds
from src.config import ThresholdConfig
from src.metrics import f1_per_label


def _data(seed=0):
    rng = np.random.default_rng(seed)
    Y = (rng.random((400, 4)) < [0.5, 0.2, 0.08, 0.3]).astype(int)
    probs = np.clip(0.3 * Y + 0.7 * rng.random(Y.shape) ** 1.5, 0, 1)
    return Y, probs


def test_per_label_is_best_over_a_fine_grid():
    Y, probs = _data()
    th = thresholds.tune(Y, probs, ThresholdConfig(mode="per_label"))
    tuned = f1_per_label(Y, probs >= th)
    for j in range(Y.shape[1]):
        grid_best = max(f1_per_label(Y[:, [j]], probs[:, [j]] >= t)[0] for t in np.linspace(0, 1, 1001))
        assert tuned[j] >= grid_best - 1e-12
        assert tuned[j] > f1_per_label(Y[:, [j]], probs[:, [j]] >= 0.5)[0] - 1e-12


def test_best_threshold_matches_its_f1():
    Y, probs = _data(1)
    t, f1 = thresholds.best_threshold(Y[:, 2], probs[:, 2])
    assert f1 == f1_per_label(Y[:, [2]], probs[:, [2]] >= t)[0]


def test_global_and_fixed():
    Y, probs = _data(2)
    g = thresholds.tune(Y, probs, ThresholdConfig(mode="global"))
    assert len(set(g)) == 1 and 0 < g[0] < 1
    best = max(f1_per_label(Y, probs >= t).mean() for t in thresholds.GRID)
    assert f1_per_label(Y, probs >= g).mean() == best
    assert (thresholds.tune(Y, probs, ThresholdConfig(mode="fixed", fixed=0.3)) == 0.3).all()


def test_min_one_gives_every_row_its_top_label():
    probs = np.array([[0.1, 0.4, 0.2], [0.9, 0.1, 0.1], [0.05, 0.06, 0.3]])
    th = np.array([0.5, 0.5, 0.5])
    P = thresholds.apply(probs, th, min_one=True)
    assert P.tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 1]]
    assert thresholds.apply(probs, th).sum(1).tolist() == [0, 1, 0]


def test_json_round_trip():
    cfg = ThresholdConfig(min_one=True)
    obj = thresholds.to_json(["a", "b"], np.array([0.25, 0.75]), cfg)
    th, min_one = thresholds.from_json(obj, ["a", "b"])
    assert th.tolist() == [0.25, 0.75] and min_one
