import json

import numpy as np
import pytest

from src import thresholds
from src.config import ThresholdConfig
from src.errors import UserError
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
    for d in (thresholds.Decider(np.array([0.25, 0.75]), True, metric="jaccard"),
              thresholds.Decider(np.array([0.25, 0.75]), ratio=0.6, metric="samples_f1")):
        obj = json.loads(json.dumps(d.to_json(["a", "b"], cfg)))
        back = thresholds.Decider.from_json(obj, ["b", "a"][::-1], cfg)
        assert back.thresholds.tolist() == [0.25, 0.75] and (back.min_one, back.ratio, back.metric) == (
            d.min_one, d.ratio, d.metric)
        probs = np.array([[0.3, 0.7], [0.1, 0.2], [0.9, 0.8]])
        assert (back(probs) == d(probs)).all()


def test_f1_on_grid_matches_a_scan_per_threshold():
    Y, probs = _data(3)
    probs = np.round(probs, 2)  # values equal to grid points: `>=` must count them
    scan = np.array([f1_per_label(Y, probs >= t) for t in thresholds.GRID])
    assert np.allclose(thresholds.f1_on_grid(Y, probs), scan)


def _rare(seed=0, n=2000):
    """Label 0 common and well separated; label 1 has ~8 positives whose best in-sample cut is far too high."""
    rng = np.random.default_rng(seed)
    Y = np.zeros((n, 2), int)
    Y[:, 0] = rng.random(n) < 0.4
    Y[rng.choice(n, 8, replace=False), 1] = 1
    probs = np.clip(0.35 * Y + 0.6 * rng.random(Y.shape), 0, 1)
    return Y, probs


def test_shrink_pulls_rare_labels_towards_the_global_threshold():
    Y, probs = _rare()
    plain = thresholds.tune(Y, probs, ThresholdConfig(mode="per_label"))
    g = thresholds.global_threshold(Y, probs)
    shrunk = thresholds.tune(Y, probs, ThresholdConfig(mode="per_label", shrink=40))
    n_pos = Y.sum(0)
    expected = (n_pos * plain + 40 * g) / (n_pos + 40)
    assert np.allclose(shrunk, expected)
    # the rare label moves most of the way, the common one barely
    assert abs(shrunk[1] - g) < 0.25 * abs(plain[1] - g) and abs(shrunk[0] - plain[0]) < 0.05 * abs(plain[0] - g) + 1e-9


def test_min_positives_gives_rare_labels_the_global_threshold():
    Y, probs = _rare(1)
    th = thresholds.tune(Y, probs, ThresholdConfig(mode="per_label", min_positives=50))
    plain = thresholds.tune(Y, probs, ThresholdConfig(mode="per_label"))
    assert th[1] == thresholds.global_threshold(Y, probs) and th[0] == plain[0]


def test_crossfit_tunes_each_fold_on_the_other_folds_only():
    Y, probs = _data(4)
    fold = np.arange(len(Y)) % 4
    cfg = ThresholdConfig(mode="per_label")
    P = thresholds.crossfit(Y, probs, fold, cfg, ["a", "b", "c", "d"])
    for k in range(4):
        th = thresholds.tune(Y[fold != k], probs[fold != k], cfg)
        assert np.array_equal(P[fold == k], (probs[fold == k] >= th).astype(int))
    # in-sample tuning is the optimum on these rows, so the honest figure cannot beat it
    in_sample = f1_per_label(Y, probs >= thresholds.tune(Y, probs, cfg)).mean()
    assert f1_per_label(Y, P).mean() <= in_sample


def test_exclusive_label_stands_alone():
    labels = ["joy", "anger", "neutral"]
    th = np.array([0.5, 0.5, 0.5])
    probs = np.array([[0.9, 0.1, 0.6],    # joy further above its threshold: neutral dropped
                      [0.55, 0.6, 0.95],  # neutral further above: the others dropped
                      [0.1, 0.2, 0.7],    # neutral alone: kept
                      [0.8, 0.7, 0.1]])   # no neutral: both kept
    cfg = ThresholdConfig(exclusive=["neutral"])
    P = thresholds.predict(probs, th, cfg, labels)
    assert P.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 1], [1, 1, 0]]
    assert thresholds.predict(probs, th, ThresholdConfig(), labels)[:2].tolist() == [[1, 0, 1], [1, 1, 1]]


def test_exclusive_names_must_be_labels():
    with pytest.raises(UserError, match="'neutrl', not a label"):
        thresholds.exclusive_columns(ThresholdConfig(exclusive=["neutrl"]), ["joy", "neutral"])


def test_binned_tuning_is_close_to_exact_and_on_its_grid():
    Y, probs = _data(5)
    for cfg in (ThresholdConfig(mode="per_label"), ThresholdConfig(mode="per_label", shrink=30, min_positives=40),
                ThresholdConfig(mode="global"), ThresholdConfig(mode="fixed", fixed=0.4)):
        th = thresholds.tune_binned(Y, probs, cfg, bins=1000)
        assert np.allclose(th * 1000, np.round(th * 1000)) or cfg.shrink  # multiples of 1/1000 (before shrinking)
        exact = f1_per_label(Y, probs >= thresholds.tune(Y, probs, cfg)).mean()
        assert abs(f1_per_label(Y, probs >= th).mean() - exact) < 0.01
    # the F1 the binned search maximizes is the F1 of its thresholds: better than any other grid point
    th = thresholds.tune_binned(Y, probs, ThresholdConfig(mode="per_label"), bins=100)
    for j in range(Y.shape[1]):
        best = max(f1_per_label(Y[:, [j]], probs[:, [j]] >= t)[0] for t in np.arange(101) / 100)
        assert f1_per_label(Y[:, [j]], probs[:, [j]] >= th[j])[0] >= best - 1e-9
