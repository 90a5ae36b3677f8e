"""`python -m src.seeds`: several seeds (or variants) of one config trained as their own runs, then averaged with
equal weights into a finalized run; every refusal is one line, before anything is written."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import yaml
from test_transformer import make_tiny

from src.seeds import main, plan

pytestmark = pytest.mark.usefixtures("one_thread")
LABELS = ["anger", "joy", "fear", "trust"]


def probs(workdir, exp: str) -> pd.DataFrame:
    return pd.read_csv(workdir / "checkpoints" / exp / "oof.csv").set_index("id").sort_index()


def assert_average(workdir, members: list[str], out: str) -> None:
    """oof.csv of `out` is the elementwise mean of the members' (files written to 6 significant digits)."""
    avg = probs(workdir, out)
    mean = sum(probs(workdir, m)[LABELS] for m in members) / len(members)
    np.testing.assert_allclose(avg[LABELS].to_numpy(), mean.loc[avg.index].to_numpy(), rtol=2e-5, atol=2e-6)
    assert (avg["fold"] == probs(workdir, members[0])["fold"]).all()
    metrics = json.loads((workdir / "checkpoints" / out / "metrics.json").read_text())
    assert metrics["complete"] and metrics["ensemble"]["equal"] and list(metrics["ensemble"]["members"]) == members
    sub = pd.read_csv(workdir / "submissions" / f"{out}.csv")
    assert len(sub) == 60 and list(sub.columns) == ["ID", *LABELS]


def test_seeds_of_a_transformer_train_as_their_own_runs_and_average(workdir, comp_dir, tiny_root, capsys):
    config = workdir / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "exp": "tiny", "model_type": "transformer", "data": {"data_dir": str(comp_dir)}, "folds": {"n_folds": 2},
        "model": {"name_or_path": str(make_tiny("bert", tiny_root)), "max_length": 24},
        "train": {"max_steps": 2, "eval_every": 2, "batch_size": 16, "lr": 1e-3}, "output": {"plots": False}}))
    argv = ["--config", str(config), "--seeds", "7,8", "exp=small", "train.eval_batch_size=100"]
    result = main(argv)
    members = ["small-s7", "small-s8"]
    assert list(result["runs"]) == members and result["average"]["exp"] == "small-seeds2"
    for m, seed in zip(members, (7, 8)):
        saved = yaml.safe_load((workdir / "checkpoints" / m / "config.yaml").read_text())
        assert saved["train"]["seed"] == seed and saved["exp"] == m and saved["train"]["eval_batch_size"] == 100
    assert not np.allclose(probs(workdir, members[0])[LABELS], probs(workdir, members[1])[LABELS])  # seed matters
    assert_average(workdir, members, "small-seeds2")
    table = capsys.readouterr().out.split("[small-seeds2] equal-weight average of 2 runs")[-1]
    assert all(name in table for name in [*members, "small-seeds2", "nested", "wall s"])

    done = workdir / "checkpoints/small-s7/fold0/done.json"
    before = done.stat().st_mtime_ns
    main([*argv, "--out", "again"])  # rerun: finished folds reused, a second average under another name
    assert done.stat().st_mtime_ns == before and "fold 0: already trained" in capsys.readouterr().out
    assert_average(workdir, members, "again")


def test_vary_makes_a_run_per_value_and_their_average(workdir, comp_dir):
    result = main(["--vary", "tfidf.C=0.5,1", f"data.data_dir={comp_dir}", "folds.n_folds=2", "tfidf.min_df=1",
                   "output.plots=false"])
    members = ["tfidf-C0.5", "tfidf-C1"]  # no "=": the kit's commands read KEY=VALUE as a setting
    assert list(result["runs"]) == members and result["average"]["exp"] == "tfidf-C-avg2"
    assert [yaml.safe_load((workdir / "checkpoints" / m / "config.yaml").read_text())["tfidf"]["C"]
            for m in members] == [0.5, 1.0]
    assert_average(workdir, members, "tfidf-C-avg2")
    from src.ensemble import main as ensemble_main

    blended = ensemble_main([*members, "--out", "b", "--equal"])  # the kit's own run names work in its commands
    assert blended["exp"] == "b" and (workdir / "submissions/b.csv").is_file()


def test_vary_names_list_values_plainly(workdir):
    cfgs, out = plan(None, ["exp=t"], None, "tfidf.word_ngram=[1, 1],[1,3]", None)
    assert [c.exp for c in cfgs] == ["t-word_ngram1,1", "t-word_ngram1,3"] and out == "t-word_ngram-avg2"
    assert [c.tfidf.word_ngram for c in cfgs] == [[1, 1], [1, 3]]


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "42", "model_type=transformer"], "--seeds needs at least two values to average, got 42"),
    (["--seeds", "42,43,42", "model_type=transformer"], "--seeds names 42 twice"),
    (["--seeds", "1,2147483648", "model_type=transformer"], "'train.seed' = 2147483648 is out of range"),
    (["--seeds", "1,x", "model_type=transformer"], "--seeds takes integers"),
    (["--seeds", "1,2"], "model_type tfidf does not use train.seed (its fits are deterministic)"),
    (["--seeds", "1,2", "model_type=probe"], "probe.classifier=logreg is deterministic"),
    (["--seeds", "1,2", "--vary", "tfidf.C=1,2"], "argument --vary: not allowed with argument --seeds"),
    ([], "one of the arguments --seeds --vary is required"),
    (["--vary", "tfidf.C=1"], "--vary needs at least two values"),
    (["--vary", "tfidf.C=1,1.0"], "--vary: 1 and 1.0 give the same config"),
    (["--vary", "tfidf.nope=1,2"], "unknown config key 'tfidf.nope'"),
    (["--vary", "train.seed=1,2"], "--vary: model_type tfidf does not use train.seed"),
    (["--vary", "tfidf.C"], "--vary takes KEY=V1,V2,..."),
    (["--vary", "exp=a,b"], "--vary exp: the runs of an average share"),
    (["--vary", "folds.n_folds=5,10"], "--vary folds.n_folds: the runs of an average share"),
    (["--vary", "select.rule=best_f1,best"], "select.rule must be one of"),
    (["--vary", "tfidf.C=1,2", "folds.run=[0]"], "tfidf-C1 would be a partial run (folds [0] of 10)"),
    (["--vary", "tfidf.C=1,2", "--out", "tfidf-C2"], "--out 'tfidf-C2' is one of the runs"),
])
def test_refusals_are_one_line_before_anything_is_written(workdir, comp_dir, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main([*argv, f"data.data_dir={comp_dir}"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert os.listdir(workdir) == ["data"]
