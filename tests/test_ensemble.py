import numpy as np
import pandas as pd
import pytest
import yaml

from src import ensemble
from src.composite import percentiles
from src.config import dump_config, load_config
from src.data import load_competition
from src.ensemble import blend, optimize, score
from src.errors import UserError
from src.folds import ensure_folds
from src.pipeline import run
from src.rundir import RunDir, read_probs, write_probs


def fake_member(comp_dir, name, seed, n_folds=5, drop_rows=0, shuffle_folds=False, *more):
    """A finished run whose probabilities are the truth plus the member's own noise."""
    cfg = load_config(None, [f"data.data_dir={comp_dir}", f"exp={name}", f"folds.n_folds={n_folds}", *more])
    comp = load_competition(cfg.data)
    folds, _ = ensure_folds(cfg, comp, verbose=False)
    rng = np.random.default_rng(seed)

    def probs(Y):
        return 0.3 * Y + 0.7 * rng.random(Y.shape)

    rd = RunDir.of(cfg)
    rd.root.mkdir(parents=True)
    rd.config.write_text(dump_config(cfg))
    fold = folds["fold"].to_numpy()
    if shuffle_folds:
        fold = rng.permutation(fold)
    keep = slice(drop_rows, None)
    write_probs(rd.oof, comp.train_ids[keep], probs(comp.Y)[keep], comp.labels, fold[keep])
    Y_test = (rng.random((len(comp.test), len(comp.labels))) < 0.3).astype(int)
    write_probs(rd.test, comp.test_ids, probs(Y_test), comp.labels)
    return comp


def test_blend_beats_members_and_writes_a_run(workdir, comp_dir):
    comp = fake_member(comp_dir, "m1", seed=1)
    fake_member(comp_dir, "m2", seed=2)
    result = blend(["m1", "m2"], "b", [f"data.data_dir={comp_dir}"], trials=30)
    info = result["ensemble"]
    members = [info["members"][n]["oof_macro_f1"] for n in ("m1", "m2")]
    assert info["oof_macro_f1"] >= max(members)
    assert info["oof_macro_f1"] > max(members) + 0.03  # independent errors: the blend is clearly better
    assert result["oof"]["macro_f1"] == pytest.approx(info["oof_macro_f1"], abs=1e-6)  # finalize agrees
    weights = [info["members"][n]["weight"] for n in ("m1", "m2")]
    assert min(weights) >= 0 and sum(weights) == pytest.approx(1, abs=1e-3) and min(weights) > 0.1
    assert 0 < info["nested_macro_f1"] <= 1 and all("nested_macro_f1" in m for m in info["members"].values())
    cfg = yaml.safe_load((workdir / "checkpoints/b/config.yaml").read_text())
    assert cfg["model_type"] == "ensemble" and cfg["extra"]["ensemble"]["members"] == ["m1", "m2"]
    assert cfg["extra"]["ensemble"]["weights"]["m1"] == pytest.approx(weights[0], abs=1e-4)
    oof = pd.read_csv(workdir / "checkpoints/b/oof.csv", dtype={"id": str})
    assert sorted(oof["id"]) == sorted(comp.train_ids) and "fold" in oof.columns
    sub = pd.read_csv(workdir / "submissions/b.csv")
    assert list(sub.columns) == list(comp.sample.columns) and len(sub) == len(comp.test)
    for f in ("thresholds.json", "per_label.csv", "report/roc.png", "report/blend_f1.png"):
        assert (workdir / "checkpoints/b" / f).is_file()


def test_equal_weights_for_seeds(workdir, comp_dir):
    comp = [fake_member(comp_dir, n, seed=i) for i, n in enumerate(("s1", "s2", "s3"))][0]
    result = ensemble.main(["s1", "s2", "s3", "--out", "avg", "--equal", "--no-nested", f"data.data_dir={comp_dir}"])
    info = result["ensemble"]
    assert [m["weight"] for m in info["members"].values()] == [pytest.approx(1 / 3, abs=1e-4)] * 3
    oof = lambda n: read_probs(workdir / "checkpoints" / n / "oof.csv", comp.labels).set_index("id").sort_index()
    mean = np.mean([oof(n)[comp.labels].to_numpy() for n in ("s1", "s2", "s3")], axis=0)
    np.testing.assert_allclose(oof("avg")[comp.labels].to_numpy(), mean, atol=1e-5)
    assert info["equal"] and info["oof_macro_f1"] > max(m["oof_macro_f1"] for m in info["members"].values())


def test_optimize_deterministic_and_at_least_best_member():
    rng = np.random.default_rng(0)
    Y = (rng.random((300, 3)) < 0.3).astype(int)
    X = np.stack([0.2 * Y + rng.random(Y.shape) for _ in range(3)])
    tc = load_config().thresholds
    labels = ["a", "b", "c"]
    w1, s1 = optimize(X, Y, tc, labels, trials=20, seed=5)
    w2, s2 = optimize(X, Y, tc, labels, trials=20, seed=5)
    assert np.array_equal(w1, w2) and s1 == s2
    assert s1 >= max(score(Y, x, tc, labels) for x in X)
    assert s1 == pytest.approx(score(Y, np.tensordot(w1, X, 1), tc, labels))
    assert (w1 >= 0).all() and w1.sum() == pytest.approx(1)


def test_percentiles_place_test_values_within_oof():
    ref = np.array([[0.1], [0.2], [0.2], [0.9]])
    np.testing.assert_allclose(percentiles(ref, np.array([[0.0], [0.2], [0.5], [1.0]]))[:, 0],
                               [0, 0.5, 0.75, 1])


def test_rank_blend_on_real_tfidf_runs(workdir, comp_dir):
    base = [f"data.data_dir={comp_dir}", "folds.n_folds=5", "tfidf.min_df=1", "tfidf.n_jobs=1", "output.plots=false"]
    run(load_config(None, [*base, "exp=lr"]))
    run(load_config(None, [*base, "exp=nb", "tfidf.classifier=cnb"]))
    result = ensemble.main(["lr", "nb", "--out", "lr_nb", "--method", "rank", "--trials", "10", "--no-nested",
                            f"data.data_dir={comp_dir}"])
    info = result["ensemble"]
    assert info["method"] == "rank" and "nested_macro_f1" not in info
    assert info["oof_macro_f1"] >= max(m["oof_macro_f1"] for m in info["members"].values())
    assert (workdir / "submissions/lr_nb.csv").is_file()


@pytest.mark.parametrize("kind, message", [
    ("other_k", r"member 'bad' was built on other folds: its oof.csv fold column differs from the blend's "
                r"data_k5_s42.csv \(it was made with data_k4_s42.csv\)"),
    ("shuffled", r"member 'bad' was built on other folds: its oof.csv fold column differs from the blend's "
                 r"data_k5_s42.csv; blend"),
    ("incomplete", r"member 'bad': checkpoints/bad/oof.csv holds 190 rows for the 200 of folds \[0, 1, 2, 3, 4\] of 5: "
                   "its folds are incomplete"),
])
def test_refuses_mismatched_or_incomplete_members(workdir, comp_dir, capsys, kind, message):
    fake_member(comp_dir, "good", seed=1)
    fake_member(comp_dir, "bad", seed=2, n_folds=4 if kind == "other_k" else 5,
                shuffle_folds=kind == "shuffled", drop_rows=10 if kind == "incomplete" else 0)
    with pytest.raises(UserError, match=message):
        blend(["good", "bad"], "b", [f"data.data_dir={comp_dir}"], trials=5, with_nested=False)
    assert not (workdir / "checkpoints/b").exists()
    with pytest.raises(SystemExit) as e:
        ensemble.main(["good", "bad", "--out", "b", f"data.data_dir={comp_dir}"])
    assert e.value.code == 2 and "\n" not in capsys.readouterr().err.strip()


def test_bad_member_lists(workdir, comp_dir):
    fake_member(comp_dir, "m1", seed=1)
    with pytest.raises(UserError, match="at least two distinct runs"):
        blend(["m1", "m1"], "b")
    with pytest.raises(UserError, match="is one of the members"):
        blend(["m1", "m2"], "m1")
    with pytest.raises(UserError, match="checkpoints/nope has no config.yaml"):
        blend(["m1", "nope"], "b", [f"data.data_dir={comp_dir}"])


@pytest.mark.parametrize("name", ["logreg", "svc", "cnb"])
def test_tfidf_classifier_options_give_probabilities(name):
    from synth import make_frame

    from src.config import TfidfConfig
    from src.models.tfidf import fit

    df = make_frame(120)
    Y = df[["anger", "joy", "fear", "trust"]].to_numpy()
    probs = fit(TfidfConfig(classifier=name, min_df=1), df["Tweet"].tolist(), Y).predict_proba(df["Tweet"].tolist())
    assert probs.shape == Y.shape and 0 <= probs.min() and probs.max() <= 1
    # the label keywords are learnable by every option
    assert score(Y, probs, load_config().thresholds, ["anger", "joy", "fear", "trust"]) > 0.7


def test_bad_tfidf_classifier_is_a_user_error(workdir, comp_dir):
    with pytest.raises(UserError, match="tfidf.classifier must be one of logreg, svc, cnb, got 'rf'"):
        run(load_config(None, [f"data.data_dir={comp_dir}", "folds.n_folds=5", "tfidf.classifier=rf"]))


def test_negative_trials_are_a_one_line_error():
    with pytest.raises(UserError, match=r"--trials must be >= 0 .*got -1"):
        blend(["a", "b"], "bl", trials=-1)


def test_the_same_data_in_another_folder_blends(workdir, comp_dir, capsys):
    fake_member(comp_dir, "here", 1)
    fake_member(comp_dir, "there", 2, 5, 0, False, "data.name=kaggle-copy")  # folds/kaggle-copy_k5_s42.csv
    result = blend(["here", "there"], "b", [f"data.data_dir={comp_dir}"], trials=5, with_nested=False)
    assert "submission" in result
    assert "note: member 'there' names its fold file kaggle-copy_k5_s42.csv, the blend data_k5_s42.csv; their " \
           "folds are the same" in capsys.readouterr().out


@pytest.mark.parametrize("nested_blend, warned", [(0.55, True), (0.65, False)])
def test_a_blend_below_its_best_member_on_the_nested_estimate_is_flagged(workdir, comp_dir, monkeypatch, capsys,
                                                                         nested_blend, warned):
    import json

    fake_member(comp_dir, "m1", seed=1)
    fake_member(comp_dir, "m2", seed=2)
    halves = {k: np.array([0.5, 0.5]) for k in range(5)}
    monkeypatch.setattr(ensemble, "nested", lambda *a, **k: (nested_blend, [0.6, 0.4], halves))
    result = blend(["m1", "m2"], "b", [f"data.data_dir={comp_dir}"], trials=5)
    out = capsys.readouterr().out
    saved = json.loads((workdir / "checkpoints/b/metrics.json").read_text())["ensemble"]
    assert ("WARNING: the blend's nested macro_f1 0.5500 is worse than its member 'm1''s 0.6000" in out) == warned
    assert ("warning" in saved) == warned and "submission" in result


def test_blended_probabilities_stay_within_0_and_1():
    """Weights that sum to 1 in floating point can overshoot (this Dirichlet draw on three 1.0s gives
    1.0000000000000002), which the probability check refused after the whole weight search."""
    from src.ensemble import mix

    X = np.ones((3, 4, 2))
    w = np.array([0.29846844738462247, 0.042444653575122594, 0.6590868990402551])
    assert np.tensordot(w, X, axes=1).max() > 1
    assert mix(w, X).max() == 1.0 and mix(w, X * 0).min() == 0.0
