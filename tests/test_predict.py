import json

import numpy as np
import pandas as pd
import pytest
import yaml
from test_checkpoints import write_checkpoint

from src import predict as predict_mod
from src.checkpoints import select
from src.config import dump_config, load_config
from src.data import load_competition
from src.errors import UserError
from src.folds import ensure_folds
from src.predict import predict
from src.rundir import RunDir

STEPS = {100: (0.40, 0.50), 200: (0.30, 0.60), 300: (0.35, 0.58)}  # best_f1 and balanced -> 200


class FakePredictor:
    """Stands in for load_checkpoint + predict_probs: a constant per (fold, step), calls recorded."""

    def __init__(self):
        self.calls = []

    @staticmethod
    def value(step_dir):
        return (int(step_dir.parent.name[4:]) * 1000 + int(step_dir.name[4:])) / 1e4

    def __call__(self, cfg, step_dir, labels, texts):
        self.calls.append(step_dir)
        return np.full((len(texts), len(labels)), self.value(step_dir))


def fake_transformer_run(comp_dir, exp="tr", extra=()):
    """Fabricated finished checkpoints for every fold of a 5-fold transformer run on the synthetic data."""
    cfg = load_config(None, [f"data.data_dir={comp_dir}", f"exp={exp}", "model_type=transformer",
                             "folds.n_folds=5", *extra])
    comp = load_competition(cfg.data)
    folds, _ = ensure_folds(cfg, comp, verbose=False)
    rd = RunDir.of(cfg)
    fold = folds["fold"].to_numpy()
    for k in range(5):
        rows = np.flatnonzero(fold == k)
        for step, (loss, f1) in STEPS.items():
            # held-out probabilities that say which checkpoint and row they came from
            probs = np.stack([rows / 1e3 + step / 1e6 + j / 10 for j in range(len(comp.labels))], 1)  # in [0, 1]
            write_checkpoint(rd, k, step, loss, f1, probs=probs, labels=comp.labels)
        (rd.fold(k) / "done.json").write_text("{}")
    return cfg, comp, folds, rd


def test_oof_complete_and_test_fold_average(workdir, comp_dir):
    cfg, comp, folds, rd = fake_transformer_run(comp_dir)
    fake = FakePredictor()
    steps = predict(cfg, comp, folds, rd, predictor=fake)
    assert steps == {k: 200 for k in range(5)} and len(fake.calls) == 5
    oof = pd.read_csv(rd.oof, dtype={"id": str})
    assert len(oof) == len(comp.train) and sorted(oof["id"]) == sorted(comp.train_ids)  # every id exactly once
    merged = oof.merge(folds, on="id", suffixes=("", "_file"))
    assert (merged["fold"] == merged["fold_file"]).all()
    row = pd.Series(range(len(comp.train)), index=comp.train_ids).loc[oof["id"]].to_numpy()
    np.testing.assert_allclose(oof[comp.labels[1]], row / 1e3 + 200 / 1e6 + 0.1, atol=1e-7)  # from step 200
    test = pd.read_csv(rd.test, dtype={"id": str})
    assert list(test["id"]) == comp.test_ids
    expected = np.mean([k * 1000 + 200 for k in range(5)]) / 1e4
    np.testing.assert_allclose(test[comp.labels].to_numpy(), expected, atol=1e-6)


def test_changed_selection_recomputes_only_that_fold(workdir, comp_dir):
    cfg, comp, folds, rd = fake_transformer_run(comp_dir)
    predict(cfg, comp, folds, rd, predictor=FakePredictor())
    fake = FakePredictor()
    predict(cfg, comp, folds, rd, predictor=fake)
    assert fake.calls == []  # everything cached
    select(cfg, manual={3: 300})
    predict(cfg, comp, folds, rd, predictor=fake)
    assert fake.calls == [rd.step(3, 300)]
    test = pd.read_csv(rd.test)
    expected = (np.sum([k * 1000 + 200 for k in range(5)]) + 100) / 5 / 1e4
    np.testing.assert_allclose(test[comp.labels].to_numpy(), expected, atol=1e-6)
    oof = pd.read_csv(rd.oof, dtype={"id": str}).merge(folds, on="id", suffixes=("", "_file"))
    step = np.round(oof[comp.labels[0]].to_numpy() * 1e3 % 1 * 1e3)  # row / 1e3 + step / 1e6
    assert (step == np.where(oof["fold"] == 3, 300, 200)).all()


def test_changed_test_csv_invalidates_cache(workdir, comp_dir):
    cfg, comp, folds, rd = fake_transformer_run(comp_dir)
    predict(cfg, comp, folds, rd, predictor=FakePredictor())
    test = pd.read_csv(comp_dir / "test.csv")
    test.loc[0, "Tweet"] = "a different tweet"
    test.to_csv(comp_dir / "test.csv", index=False)
    fake = FakePredictor()
    predict(cfg, load_competition(cfg.data), folds, rd, predictor=fake)
    assert len(fake.calls) == 5
    fake = FakePredictor()  # a changed max_length changes the model's inputs too
    predict(load_config(None, [f"data.data_dir={comp_dir}", "exp=tr", "folds.n_folds=5", "model.max_length=64"]),
            load_competition(cfg.data), folds, rd, predictor=fake)
    assert len(fake.calls) == 5


def test_unfinished_fold_and_bad_checkpoint_refused(workdir, comp_dir):
    cfg, comp, folds, rd = fake_transformer_run(comp_dir)
    (rd.fold(2) / "done.json").unlink()
    with pytest.raises(UserError, match=r"folds \[2\] of .* have not finished training"):
        predict(cfg, comp, folds, rd, predictor=FakePredictor())
    cfg_part = load_config(None, [f"data.data_dir={comp_dir}", "exp=tr", "folds.n_folds=5", "folds.run=[0,1]"])
    predict(cfg_part, comp, folds, rd, predictor=FakePredictor())  # a partial run of the finished folds
    assert len(pd.read_csv(rd.oof)) == int((folds["fold"] < 2).sum())
    np.save(rd.step(0, 200) / "valid_probs.npy", np.zeros((3, 4), np.float32))
    with pytest.raises(UserError, match=r"has shape \(3, 4\), fold 0 has \d+ held-out rows"):
        predict(cfg_part, comp, folds, rd, predictor=FakePredictor())


def test_cli_predicts_and_finalizes(workdir, comp_dir, monkeypatch, capsys):
    fake_transformer_run(comp_dir)
    (workdir / "tr.yaml").write_text(yaml.safe_dump({"model_type": "transformer", "folds": {"n_folds": 5},
                                                     "data": {"data_dir": str(comp_dir)}}))
    fake = FakePredictor()
    monkeypatch.setattr(predict_mod, "predict_checkpoint", fake)
    result = predict_mod.main(["--config", "tr.yaml", "select.rule=best_loss"])
    assert len(fake.calls) == 5 and result["complete"]
    assert yaml.safe_load((workdir / "checkpoints/tr/selection.yaml").read_text())["rule"] == "best_loss"
    sub = pd.read_csv(workdir / "submissions/tr.csv")
    assert list(sub.columns) == list(pd.read_csv(comp_dir / "sample_submission.csv").columns)
    assert (workdir / "checkpoints/tr/config.yaml").is_file() and (workdir / "checkpoints/tr/report/roc.png").is_file()
    with pytest.raises(SystemExit):
        predict_mod.main(["--config", "tr.yaml", "model_type=tfidf"])
    assert "this config's model_type is 'tfidf'" in capsys.readouterr().err


def test_transformer_family_end_to_end(workdir, comp_dir, monkeypatch):
    """The real path on a tiny random BERT: train every fold -> select -> predict -> finalize, then a manual pick."""
    torch = pytest.importorskip("torch")
    from test_transformer import make_tiny

    from src import pipeline
    from src.models.transformer import load_checkpoint, predict_probs

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        path = make_tiny("bert", workdir / "tiny")
        cfg = load_config(None, [f"data.data_dir={comp_dir}", "exp=bert", "model_type=transformer",
                                 f"model.name_or_path={path}", "model.max_length=24", "folds.n_folds=3",
                                 "train.max_steps=8", "train.eval_every=4", "train.batch_size=16", "train.lr=1e-3",
                                 "select.rule=best_loss", "output.plots=false"])
        result = pipeline.run(cfg)
        assert result["complete"] and result["oof_rows"] == 200
        rd = RunDir.of(cfg)
        chosen = {k: e["step"] for k, e in yaml.safe_load(rd.selection.read_text())["folds"].items()}
        assert set(chosen) == {0, 1, 2} and set(chosen.values()) <= {4, 8}
        comp = load_competition(cfg.data)
        k = 1
        model, tok = load_checkpoint(cfg, rd.step(k, chosen[k]), comp.labels)
        direct = predict_probs(model, tok, comp.test_texts, cfg)
        np.testing.assert_allclose(np.load(rd.step(k, chosen[k]) / "test_probs.npy"), direct, atol=1e-5)

        other = 4 if chosen[k] == 8 else 8
        calls = []
        real = predict_mod.predict_checkpoint
        monkeypatch.setattr(predict_mod, "predict_checkpoint", lambda *a: calls.append(a[1]) or real(*a))
        select(cfg, manual={k: other})
        folds, _ = ensure_folds(cfg, comp, verbose=False)
        predict(cfg, comp, folds, rd)
        assert calls == [rd.step(k, other)]
        assert (pd.read_csv("submissions/bert.csv").columns == comp.sample.columns).all()
    finally:
        torch.set_num_threads(threads)


def test_predict_refuses_other_model_settings_than_the_run_was_trained_with(workdir, comp_dir, monkeypatch, capsys):
    cfg, comp, folds, rd = fake_transformer_run(comp_dir, extra=("model.max_length=64",))
    rd.config.write_text(dump_config(cfg))  # what training saved
    (workdir / "tr.yaml").write_text(yaml.safe_dump({"model_type": "transformer", "folds": {"n_folds": 5},
                                                     "data": {"data_dir": str(comp_dir)}}))
    fake = FakePredictor()
    monkeypatch.setattr(predict_mod, "predict_checkpoint", fake)
    with pytest.raises(SystemExit):  # the config file without the run's max_length override
        predict_mod.main(["--config", "tr.yaml", "model.dtype=float32"])
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {rd.root} was trained with other settings than this config's (model.dtype auto -> "
                   "float32, model.max_length 64 -> 128): predict with the run's own settings (python -m src "
                   "predict --exp tr), or fix the overrides")
    assert fake.calls == [] and not list(rd.root.glob("fold*/step*/test_probs.npy"))
    result = predict_mod.main(["--exp", "tr"])  # the run's own settings
    assert result["complete"] and len(fake.calls) == 5
    assert json.loads((rd.step(0, 200) / "test_probs.json").read_text())["max_length"] == 64
