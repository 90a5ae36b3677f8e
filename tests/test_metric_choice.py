"""The competition's metric (`data.metric`) drives every decision: thresholds, checkpoint selection, blend weights,
stacking, seeds; `finalize --exp X metric=...` decides a finished run again for another metric."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import yaml
from synth import LABELS, make_competition
from test_ensemble import fake_member

from src import ensemble, metrics, thresholds
from src.__main__ import main as cli_main
from src.checkpoints import list_checkpoints, select
from src.config import ThresholdConfig, dump_config, load_config
from src.data import load_competition
from src.ensemble import blend, optimize, score
from src.errors import UserError
from src.folds import ensure_folds
from src.pipeline import run
from src.rundir import RunDir
from src.seeds import main as seeds_main
from src.stack import stack
from src.train import eval_metrics

DECIDED = ["macro_f1", "micro_f1", "samples_f1", "jaccard"]


def disagreeing(n=3000, seed=0):
    """Probabilities where the metrics want different decisions: two rare, weakly predicted labels (what macro-F1
    hinges on, and every other metric would rather leave off), and on half of the rows, otherwise easy, a label at a
    coin flip of 0.45: above micro-F1's break-even (its F1 / 2), below the sample-wise metrics' 0.5."""
    rng = np.random.default_rng(seed)
    Y = np.zeros((n, 7), int)
    easy = rng.random(n) < 0.5
    Y[np.arange(n), rng.choice(4, size=n, p=[0.4, 0.3, 0.2, 0.1])] = 1
    two = ~easy & (rng.random(n) < 0.4)
    Y[np.flatnonzero(two), rng.choice(4, size=two.sum())] = 1
    Y[:, 4:6] = rng.random((n, 2)) < 0.03
    Y[:, 6] = easy & (rng.random(n) < 0.45)
    sep = np.where(easy[:, None], 6.0, 1.5) * np.ones((1, 7))
    sep[:, 4:6] = 1.8
    P = 1 / (1 + np.exp(-(sep * (Y - 0.5) + rng.normal(0, 1, (n, 7)) + np.array([0, 0, -0.5, -1, -3, -3, 0]))))
    P[:, 6] = np.where(easy, 0.45 + rng.normal(0, 0.005, n), 0.2 * rng.random(n))
    return Y, P, rng.integers(0, 5, n)


def test_each_metrics_decisions_beat_the_others_on_that_metric_in_sample_and_cross_fitted():
    Y, P, fold = disagreeing()
    labels, tc = list("abcdefg"), ThresholdConfig()
    own = {m: thresholds.fit(Y, P, tc, labels, m)(P) for m in DECIDED}
    honest = {m: thresholds.crossfit(Y, P, fold, tc, labels, m) for m in DECIDED}
    for target in DECIDED:
        for other in DECIDED:
            if other == target:
                continue
            assert metrics.score(target, Y, own[target]) >= metrics.score(target, Y, own[other]), (target, other)
            gap = metrics.score(target, Y, honest[target]) - metrics.score(target, Y, honest[other])
            # samples-F1 is each row's Jaccard J as 2J / (1 + J): their decisions nearly coincide and the held-out
            # difference between them is noise; every other pair differs by far more than that
            close = {target, other} == {"samples_f1", "jaccard"}
            assert gap > (-0.01 if close else 0.004), (target, other, gap)


@pytest.mark.parametrize("metric", ["micro_f1", "samples_f1", "jaccard"])
@pytest.mark.parametrize("min_one", [False, True])
def test_each_ascent_step_is_the_exact_best_cut(metric, min_one):
    rng = np.random.default_rng(1)
    Y = (rng.random((120, 4)) < [0.5, 0.3, 0.1, 0.2]).astype(int)
    P = np.clip(0.35 * Y + 0.65 * rng.random(Y.shape), 0, 1)
    th = rng.uniform(0.3, 0.7, 4)
    for j in range(4):
        cut = thresholds._best_cut(Y, P, th, j, metric, min_one)
        scored = lambda t, j=j: metrics.score(metric, Y, thresholds.apply(P, np.r_[th[:j], t, th[j + 1:]], min_one))
        # where a row's decision can change: at its p_j, and (min_one) where j's margin passes the best other one
        others = np.delete(P - th, j, axis=1).max(1)
        edges = np.unique(np.r_[P[:, j], P[:, j] - others, 2.0])
        every = np.r_[edges, (edges[1:] + edges[:-1]) / 2]
        assert scored(cut) == pytest.approx(max(scored(t) for t in every), abs=1e-12)


def test_threshold_free_metrics_keep_cfgs_thresholds_and_score_probabilities():
    Y, P, _ = disagreeing(600)
    labels, tc = list("abcdefg"), ThresholdConfig()
    for m in ("roc_auc", "log_loss"):
        d = thresholds.fit(Y, P, tc, labels, m)
        np.testing.assert_allclose(d.thresholds, thresholds.tune(Y, P, tc))
    assert metrics.score("roc_auc", Y, None, P) == pytest.approx(metrics.mean_roc_auc(Y, P))
    assert metrics.better("log_loss", 0.2, 0.3) and not metrics.better("roc_auc", 0.2, 0.3)


def test_unknown_metric_is_a_one_line_error_naming_the_metrics(workdir, comp_dir, capsys):
    with pytest.raises(UserError, match="data.metric must be one of macro_f1, micro_f1, samples_f1, jaccard, "
                                        "roc_auc, log_loss, got 'accuracy'"):
        load_config(None, ["data.metric=accuracy"])
    with pytest.raises(SystemExit):
        cli_main(["run", f"data.data_dir={comp_dir}", "metric=f1"])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "got 'f1'" in err and "jaccard" in err
    assert not (workdir / "checkpoints/tfidf").exists()


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_finalize_decides_a_finished_run_again_for_another_metric_without_training(workdir, comp_dir, capsys):
    base = [f"data.data_dir={comp_dir}", "exp=t", "folds.n_folds=5", "tfidf.min_df=1", "output.plots=false"]
    first = run(load_config(None, base))
    rd = workdir / "checkpoints/t"
    oof, test, sub_before = _digest(rd / "oof.csv"), _digest(rd / "test.csv"), _digest(workdir / "submissions/t.csv")
    assert first["metric"] == "macro_f1" and list(first["oof"])[0] == "macro_f1"
    capsys.readouterr()

    cli_main(["finalize", "--exp", "t", "metric=jaccard"])
    out = capsys.readouterr().out
    m = json.loads((rd / "metrics.json").read_text())
    assert m["metric"] == "jaccard" and list(m["oof"])[0] == "jaccard" and list(m["oof_crossfit"])[0] == "jaccard"
    assert m["oof"]["jaccard"] >= first["oof"]["jaccard"]  # its own decisions, on the same OOF probabilities
    assert m["oof"]["macro_f1"] <= first["oof"]["macro_f1"]
    assert json.loads((rd / "thresholds.json").read_text())["metric"] == "jaccard"
    assert yaml.safe_load((rd / "config.yaml").read_text())["data"]["metric"] == "jaccard"
    assert "OOF jaccard" in out and "thresholds and metric updated" in out
    assert (_digest(rd / "oof.csv"), _digest(rd / "test.csv")) == (oof, test)  # nothing trained or predicted again
    sub = pd.read_csv(workdir / "submissions/t.csv")
    assert set(np.unique(sub.iloc[:, 1:].to_numpy())) <= {0, 1}

    cli_main(["finalize", "--exp", "t"])  # the run's recorded metric now: jaccard again, not the default
    assert json.loads((rd / "metrics.json").read_text())["metric"] == "jaccard"
    cli_main(["finalize", "--exp", "t", "data.metric=macro_f1"])  # and back: the first decisions, exactly
    assert json.loads((rd / "metrics.json").read_text())["oof"] == first["oof"]
    assert _digest(workdir / "submissions/t.csv") == sub_before


def test_a_threshold_free_metric_submits_probabilities_where_the_sample_holds_them(workdir, comp_dir):
    sample = pd.read_csv(comp_dir / "sample_submission.csv")
    sample[sample.columns[1:]] = 0.5
    sample.to_csv(comp_dir / "sample_submission.csv", index=False)
    result = run(load_config(None, [f"data.data_dir={comp_dir}", "exp=p", "folds.n_folds=5", "tfidf.min_df=1",
                                    "output.plots=false", "metric=roc_auc"]))
    assert result["metric"] == "roc_auc" and list(result["oof"])[0] == "roc_auc"
    sub = pd.read_csv(workdir / "submissions/p.csv")
    values = sub.iloc[:, 1:].to_numpy()
    test = pd.read_csv(workdir / "checkpoints/p/test.csv", dtype={"id": str}).set_index("id")
    assert ((values > 0) & (values < 1)).any() and ((values != 0) & (values != 1)).any()
    np.testing.assert_allclose(values, test.loc[sub.iloc[:, 0].astype(str), list(sub.columns[1:])].to_numpy(),
                               atol=1e-6)


def test_blend_weights_follow_the_metric():
    """Member A ranks the rare labels well and the rest poorly, member B the reverse: macro-F1 (half of it the rare
    labels) leans on A, the sample-wise metrics and micro-F1 on B."""
    rng = np.random.default_rng(3)
    Y, _, fold = disagreeing(2000)
    rare = [4, 5]
    A = np.clip(0.1 * Y + 0.9 * rng.random(Y.shape), 0, 1)
    A[:, rare] = np.clip(0.5 * Y[:, rare] + 0.5 * rng.random((len(Y), 2)), 0, 1)
    B = np.clip(0.35 * Y + 0.65 * rng.random(Y.shape), 0, 1)
    B[:, rare] = rng.random((len(Y), 2))
    labels, tc = list("abcdefg"), ThresholdConfig()
    w = {m: optimize(np.stack([A, B]), Y, tc, labels, trials=20, metric=m)[0][0] for m in DECIDED}
    assert w["macro_f1"] > max(w[m] for m in DECIDED[1:]) + 0.05, w
    for m in DECIDED:  # each metric's weights are the best of the four on it (up to the search's approximation)
        exact = {o: score(Y, w[o] * A + (1 - w[o]) * B, tc, labels, metric=m) for o in DECIDED}
        assert exact[m] >= max(exact.values()) - 0.002, (m, exact)


def test_blend_reads_the_metric_and_finalizes_for_it(workdir, comp_dir, monkeypatch):
    for i, name in enumerate(("m1", "m2", "m3")):
        fake_member(comp_dir, name, seed=i)
    asked = set()
    real = ensemble.score
    monkeypatch.setattr(ensemble, "score", lambda *a, **k: asked.add(k.get("metric", a[5] if len(a) > 5 else None))
                        or real(*a, **k))
    result = blend(["m1", "m2", "m3"], "bj", [f"data.data_dir={comp_dir}", "data.metric=jaccard"], trials=10)
    assert asked == {"jaccard"}  # every candidate weight, finalist and member scored by the run's metric
    info = result["ensemble"]
    assert info["metric"] == result["metric"] == "jaccard" and "nested_jaccard" in info
    assert all("oof_jaccard" in m and "nested_jaccard" in m for m in info["members"].values())
    assert info["oof_jaccard"] == pytest.approx(result["oof"]["jaccard"], abs=1e-6)  # finalize agrees
    assert info["oof_jaccard"] >= max(m["oof_jaccard"] for m in info["members"].values())
    assert json.loads((workdir / "checkpoints/bj/thresholds.json").read_text())["metric"] == "jaccard"


def test_stack_selects_and_reports_by_the_metric(workdir, comp_dir):
    for i, name in enumerate(("m1", "m2")):
        fake_member(comp_dir, name, seed=i)
    result = stack(["m1", "m2"], "st", [f"data.data_dir={comp_dir}", "metric=micro_f1"])
    info = result["stack"]
    assert result["metric"] == "micro_f1" and info["oof_micro_f1"] == pytest.approx(result["oof"]["micro_f1"],
                                                                                         abs=1e-6)
    assert "crossfit_micro_f1" in info and all("crossfit_micro_f1" in m for m in info["members"].values())


def _checkpoint(rd, fold, step, probs, metric="macro_f1", score=0.5):
    d = rd.step(fold, step)
    d.mkdir(parents=True)
    np.save(d / "valid_probs.npy", probs.astype(np.float32))
    (d / "metrics.json").write_text(json.dumps({"step": step, "val_loss": 0.3, "f1_at_0.5": 0.5, "f1_tuned": score,
                                                "metric": metric, "score": score}))


def test_checkpoint_selection_follows_the_metric(workdir, capsys):
    """Two checkpoints per fold, one better for macro-F1 and one for Jaccard; selection under either metric picks
    its own, rescoring checkpoints recorded under another metric from their held-out probabilities."""
    data = make_competition(workdir / "data", n_train=1000)
    train = pd.read_csv(data / "train.csv")
    train[LABELS[-1]] = (np.random.default_rng(0).random(len(train)) < 0.04).astype(int)  # a rare label
    train.to_csv(data / "train.csv", index=False)
    cfg = load_config(None, [f"data.data_dir={data}", "exp=s", "folds.n_folds=5"])
    comp = load_competition(cfg.data)
    folds, _ = ensure_folds(cfg, comp, verbose=False)
    rd = RunDir.of(cfg)
    rng = np.random.default_rng(0)
    for k in range(5):
        Y = comp.Y[(folds["fold"] == k).to_numpy()]
        for_rows = np.clip(0.6 * Y + 0.4 * rng.random(Y.shape), 0, 1)  # the frequent labels well ranked...
        for_rows[:, -1] = 1 - Y[:, -1]  # ...the rare label backwards
        for_labels = np.clip(0.35 * Y + 0.65 * rng.random(Y.shape), 0, 1)  # the frequent labels weakly ranked...
        for_labels[:, -1] = np.clip(0.9 * Y[:, -1] + 0.1 * rng.random(len(Y)), 0, 1)  # ...the rare one perfectly
        _checkpoint(rd, k, 100, for_labels)
        _checkpoint(rd, k, 200, for_rows)
        s = {m: [thresholds.held_out_score(Y, p, comp.labels, m) for p in (for_labels, for_rows)] for m in DECIDED}
        assert np.argmax(s["macro_f1"]) != np.argmax(s["jaccard"])  # the two metrics disagree on every fold
    rd.config.write_text(dump_config(cfg))
    for m in ("macro_f1", "jaccard"):
        chosen = select(load_config(None, [f"data.data_dir={data}", "exp=s", "folds.n_folds=5",
                                           f"data.metric={m}"]), rd)
        for k, step in chosen.items():
            Y = comp.Y[(folds["fold"] == k).to_numpy()]
            t = list_checkpoints(rd, k)
            scores = {int(s): thresholds.held_out_score(Y, np.load(d / "valid_probs.npy").astype(float),
                                                        comp.labels, m) for s, d in zip(t["step"], t["dir"])}
            assert step == max(scores, key=scores.get), (m, k)
    assert "scored again for jaccard" in capsys.readouterr().out


def test_eval_scores_checkpoints_for_the_run_s_metric():
    Y, P, _ = disagreeing(400)
    logits = np.log(P / (1 - P)).astype(np.float32)
    labels = list("abcdefg")
    for m in ("jaccard", "log_loss"):
        record, probs = eval_metrics(Y, logits, labels, m)
        assert record["metric"] == m
        assert record["score"] == pytest.approx(thresholds.held_out_score(Y, probs, labels, m))
    assert record["score"] == pytest.approx(-metrics.log_loss(Y, probs))  # signed: higher is better


def test_seeds_average_reports_the_metric(workdir, comp_dir):
    result = seeds_main(["--vary", "tfidf.C=0.5,1", f"data.data_dir={comp_dir}", "folds.n_folds=2",
                         "tfidf.min_df=1", "output.plots=false", "metric=samples_f1"])
    assert result["metric"] == "samples_f1"
    assert all("oof_samples_f1" in r for r in result["runs"].values())
    avg = result["average"]
    assert avg["metric"] == "samples_f1" and avg["ensemble"]["metric"] == "samples_f1"
    saved = yaml.safe_load((workdir / "checkpoints" / avg["exp"] / "config.yaml").read_text())
    assert saved["data"]["metric"] == "samples_f1"
