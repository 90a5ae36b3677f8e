import json

import numpy as np
import pandas as pd
import pytest
import yaml
from test_ensemble import fake_member

from src import stack as stack_mod
from src.composite import features
from src.config import load_config
from src.ensemble import score
from src.errors import UserError
from src.stack import fit_predict, stack

LABELS = ["a", "b", "c", "d"]


def synthetic(n=400, k=5, seed=0):
    """Members' probabilities [2, n, 4], truth [n, 4] and folds; label b mostly co-occurs with label a."""
    rng = np.random.default_rng(seed)
    Y = (rng.random((n, 4)) < 0.3).astype(int)
    Y[:, 1] = np.where(rng.random(n) < 0.9, Y[:, 0], 1 - Y[:, 0])
    X = rng.random((2, n, 4))
    X[0, :, 0] = np.clip(0.6 * Y[:, 0] + 0.4 * rng.random(n), 0, 1)  # member 0 knows a; b only through a
    X[:, :, 2:] = np.clip(0.3 * Y[:, 2:] + 0.7 * X[:, :, 2:], 0, 1)
    return X, Y, np.arange(n) % k


def test_features_are_logits_of_every_member_for_every_label():
    P = np.array([[[0.5, 0.0]], [[1.0, 0.8]]])  # 2 members, 1 row, 2 labels
    F = features(P)
    assert F.shape == (1, 4)
    np.testing.assert_allclose(F[0], [0, np.log(1e-6 / (1 - 1e-6)), np.log((1 - 1e-6) / 1e-6), np.log(4)])


def test_fold_predictions_never_see_their_own_labels():
    X, Y, fold = synthetic()
    oof, test, _, _ = fit_predict(X, Y, fold, X[:, :50])
    Y2 = Y.copy()
    Y2[fold == 0] = 1 - Y2[fold == 0]
    oof2, test2, _, _ = fit_predict(X, Y2, fold, X[:, :50])
    np.testing.assert_array_equal(oof2[fold == 0], oof[fold == 0])
    for k in range(1, 5):
        assert np.abs(oof2[fold == k] - oof[fold == k]).max() > 1e-3
    assert np.abs(test2 - test).max() > 1e-3 and 0 <= test.min() and test.max() <= 1


def test_stack_uses_label_cooccurrence_the_equal_mean_cannot():
    X, Y, fold = synthetic()
    oof, _, _, _ = fit_predict(X, Y, fold, X[:, :10])
    tc = load_config().thresholds
    f1 = lambda p, j: score(Y[:, [j]], p[:, [j]], tc, LABELS[:1])
    assert f1(oof, 1) > f1(X.mean(0), 1) + 0.2  # b is learnt from member 0's column a
    assert score(Y, oof, tc, LABELS) > score(Y, X.mean(0), tc, LABELS) + 0.05


def test_a_label_with_one_class_in_a_fold_gets_the_training_rate():
    X, Y, fold = synthetic()
    Y[:, 2] = 0
    Y[(fold == 0) & (np.arange(len(Y)) < 100), 2] = 1  # positives only in fold 0: its stacker has none
    Y[:, 3] = 1  # always on
    oof, test, _, _ = fit_predict(X, Y, fold, X[:, :30])
    assert (oof[fold == 0, 2] == 0).all() and (oof[:, 3] == 1).all() and (test[:, 3] == 1).all()
    assert (oof[fold != 0, 2] > 0).all() and np.isfinite(test).all() and 0 <= test.min() and test.max() <= 1


def test_stack_writes_a_finished_run(workdir, comp_dir, capsys):
    comp = fake_member(comp_dir, "m1", seed=1)
    fake_member(comp_dir, "m2", seed=2)
    result = stack_mod.main(["m1", "--out", "st", "m2", "--C", "0.5", f"data.data_dir={comp_dir}"])
    run = workdir / "checkpoints/st"
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
    assert sorted(oof["id"]) == sorted(comp.train_ids) and not oof["id"].duplicated().any()
    folds = pd.read_csv(workdir / "folds/data_k5_s42.csv", dtype={"id": str}).set_index("id")["fold"]
    assert (oof.set_index("id")["fold"] == folds.loc[oof["id"]].to_numpy()).all()
    test = pd.read_csv(run / "test.csv", dtype={"id": str})
    assert sorted(test["id"]) == sorted(comp.test_ids)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model_type"] == "stack" and cfg["extra"]["stack"]["members"] == ["m1", "m2"]
    assert cfg["extra"]["stack"]["C"] == 0.5
    info = json.loads((run / "metrics.json").read_text())["stack"]
    assert info == result["stack"] and info["C"] == 0.5 and list(info["members"]) == ["m1", "m2"]
    assert info["oof_macro_f1"] == pytest.approx(result["oof"]["macro_f1"], abs=1e-6)
    assert info["crossfit_macro_f1"] == pytest.approx(result["oof_crossfit"]["macro_f1"], abs=1e-6)
    assert all(0 < m["oof_macro_f1"] <= 1 for m in [*info["members"].values(), info["equal_mean"]])
    others = max(m["crossfit_macro_f1"] for m in [*info["members"].values(), info["equal_mean"]])
    assert ("warning" in info) == (info["crossfit_macro_f1"] < others)  # flagged when a simpler choice does better
    sub = pd.read_csv(workdir / "submissions/st.csv")
    assert list(sub.columns) == list(comp.sample.columns) and len(sub) == len(comp.test)
    assert (run / "report/stack_f1.png").is_file()
    out = capsys.readouterr().out
    assert "stack of 2 runs" in out and "equal mean" in out and "crossfit" in out


def test_bad_input_is_a_one_line_error(workdir, comp_dir, capsys):
    fake_member(comp_dir, "m1", seed=1)
    fake_member(comp_dir, "m2", seed=2)
    fake_member(comp_dir, "bad", seed=3, shuffle_folds=True)
    data = f"data.data_dir={comp_dir}"
    for argv, message in [(["m1", "--out", "st", data], "at least two distinct runs to stack"),
                          (["m1", "m1", "--out", "st", data], "at least two distinct runs to stack"),
                          (["m1", "m2", "--out", "m2", data], "--out 'm2' is one of the members"),
                          (["m1", "m2", "--out", "st", "--C", "0", data], "--C must be a finite number > 0"),
                          (["m1", "nope", "--out", "st", data], "checkpoints/nope has no config.yaml"),
                          (["m1", "bad", "--out", "st", data], "member 'bad' was built on other folds"),
                          (["m1", "m2", data], "the following arguments are required: --out")]:
        with pytest.raises(SystemExit) as e:
            stack_mod.main(argv)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and message in err and "\n" not in err, (argv, err)
    with pytest.raises(UserError, match="is one of the members"):
        stack(["m1", "m2"], "m1")
    assert not (workdir / "checkpoints/st").exists()


def test_per_fold_test_predictions_come_from_each_fold_stacker():
    X, Y, fold = synthetic()
    X_folds = {k: X[:, 50 * k:50 * k + 40] for k in range(5)}
    oof, test, per_fold, _ = fit_predict(X, Y, fold, X[:, :40], X_test_folds=X_folds)
    Y2 = Y.copy()
    Y2[fold == 0] = 1 - Y2[fold == 0]
    _, _, per_fold2, _ = fit_predict(X, Y2, fold, X[:, :40], X_test_folds=X_folds)
    np.testing.assert_array_equal(per_fold2[0], per_fold[0])  # fold 0's stackers never saw fold 0's labels
    assert np.abs(per_fold2[1] - per_fold[1]).max() > 1e-3
    same = {k: X[:, :40] for k in range(5)}  # members' fold tests equal to their mean: the fold mean is the test
    np.testing.assert_allclose(np.mean(list(fit_predict(X, Y, fold, X[:, :40], X_test_folds=same)[2].values()), 0),
                               test, atol=1e-9)
    assert fit_predict(X, Y, fold, X[:, :40], X_test_folds={0: X_folds[0]})[2] is None
