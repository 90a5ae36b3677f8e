"""model_type llm end to end on synthetic data with a tiny random decoder saved to disk."""

import json

import numpy as np
import pandas as pd
import pytest
from tiny_lm import save_decoder, single_threaded  # noqa: F401 (autouse fixture)

from src.config import load_config
from src.llm import sampling
from src.pipeline import run


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    corpus = pd.read_csv(__import__("synth").make_competition(tmp_path_factory.mktemp("c")) / "train.csv")
    return save_decoder(tmp_path_factory.mktemp("lm"), corpus["Tweet"].tolist() + ["anger joy fear trust none"])


def test_multi_prompt_subset_run(workdir, comp_dir, decoder):
    cfg = load_config(None, [f"data.data_dir={comp_dir}", "exp=m", "model_type=llm", "folds.n_folds=5",
                             f"model.name_or_path={decoder}", "llm.max_train_rows=24", "llm.max_test_rows=6",
                             "llm.max_new_tokens=6", "llm.batch_size=4"])
    result = run(cfg)
    assert not result["complete"] and result["oof_rows"] == 24
    assert not (workdir / "submissions/m.csv").exists()  # partial OOF: metrics, no submission
    root = workdir / "checkpoints/m/partial"  # a subset of rows: outputs beside, not over, a complete run's
    assert not (workdir / "checkpoints/m/oof.csv").exists()
    oof, test = pd.read_csv(root / "oof.csv"), pd.read_csv(root / "test.csv")
    assert len(test) == 6 and oof["fold"].between(0, 4).all()
    probs = oof[["anger", "joy", "fear", "trust"]].to_numpy()
    assert ((probs >= 0) & (probs <= 1)).all()
    for m in ("first", "max", "mean", "parsed"):
        assert len(pd.read_csv(root / f"methods/{m}_oof.csv")) == 24
    maxed = pd.read_csv(root / "methods/max_oof.csv")[["anger", "joy", "fear", "trust"]].to_numpy()
    first = pd.read_csv(root / "methods/first_oof.csv")[["anger", "joy", "fear", "trust"]].to_numpy()
    assert (maxed >= first - 1e-6).all()
    steps = [json.loads(line) for line in (root / "steps_oof.jsonl").read_text().splitlines()]
    assert len(steps) == 24 and all(len(s["steps"]) >= 1 and isinstance(s["answer"], str) for s in steps)
    assert all(abs(sum(s["steps"][0]) - 1) < 1e-3 and len(s["steps"][0]) == 5 for s in steps)  # 4 labels + none
    analysis = json.loads((root / "analysis.json").read_text())
    assert set(analysis["methods"]) == {"first", "max", "mean", "parsed"} and analysis["steps"][0]["rows"] == 24
    for png in ("methods_f1.png", "calibration.png", "label_counts.png", "steps.png", "roc.png"):
        assert (root / "report" / png).stat().st_size > 1000


def test_unary_few_shot_draws_examples_from_training_folds_only(workdir, comp_dir, decoder, monkeypatch):
    seen = []
    real = sampling.unary_shots

    def spy(rng, pool, y, n):
        seen.append(set(pool.tolist()))
        return real(rng, pool, y, n)

    monkeypatch.setattr(sampling, "unary_shots", spy)
    cfg = load_config(None, [f"data.data_dir={comp_dir}", "exp=u", "model_type=llm", "folds.n_folds=5",
                             f"model.name_or_path={decoder}", "llm.prompt=unary", "llm.n_shots=2",
                             "llm.max_train_rows=10", "llm.max_test_rows=-1", "llm.chat_template=false"])
    result = run(cfg)
    assert result["oof_rows"] == 10 and not (workdir / "checkpoints/u/partial/test.csv").exists()
    folds = pd.read_csv(next((workdir / "folds").glob("*.csv")))
    oof = pd.read_csv(workdir / "checkpoints/u/partial/oof.csv")
    fold_rows = {k: set(np.flatnonzero(folds["fold"].to_numpy() == k)) for k in oof["fold"].unique()}
    assert len(seen) == 4 * len(fold_rows)  # one draw per label per scored fold
    for pool in seen:
        held_out = [k for k, rows in fold_rows.items() if not pool & rows]
        assert len(held_out) == 1 and len(pool) == 160  # the pool is the other four folds
    assert json.loads((workdir / "checkpoints/u/partial/analysis.json").read_text())["methods"].keys() == {"unary"}


def test_a_stopped_scoring_run_resumes_from_its_saved_chunks(workdir, comp_dir, decoder, monkeypatch, capsys):
    """Rows are scored a chunk at a time and each chunk saved: a run stopped in its third chunk reads the first two
    back and scores the rest; its outputs equal an uninterrupted run's, and the chunks are gone once they are
    written."""
    from src.llm import chunks, score

    monkeypatch.setattr(chunks, "CHUNK", 8)
    base = [f"data.data_dir={comp_dir}", "model_type=llm", "folds.n_folds=5", f"model.name_or_path={decoder}",
            "llm.prompt=unary", "llm.max_train_rows=30", "llm.max_test_rows=10", "llm.chat_template=false"]
    run(load_config(None, [*base, "exp=whole"]))
    real, calls, stop = score.score_unary, [], [True]

    class Stopped(Exception):  # a killed process, a session's end, a preempted pod
        pass

    def stopping(model, tok, prompter, texts, *args):
        calls.append(len(texts))
        if len(calls) == 3 and stop and stop.pop():
            raise Stopped
        return real(model, tok, prompter, texts, *args)

    monkeypatch.setattr(score, "score_unary", stopping)
    with pytest.raises(Stopped):
        run(load_config(None, [*base, "exp=stopped"]))
    store = workdir / "checkpoints/stopped/scoring"
    assert len(list(store.glob("*.npz"))) == 2 and not (workdir / "checkpoints/stopped/partial/oof.csv").exists()
    calls.clear()
    capsys.readouterr()
    bars, bar = [], chunks.tqdm
    monkeypatch.setattr(chunks, "tqdm", lambda *a, **k: bars.append(k) or bar(*a, **k))
    run(load_config(None, [*base, "exp=stopped"]))
    assert calls == [8, 6, 8, 2]  # the rest of the 30 train rows, then the 10 test rows: nothing scored twice
    assert "oof: 16 of 30 rows read from" in capsys.readouterr().out
    assert [(k["desc"], k["initial"]) for k in bars] == [("oof", 16), ("test", 0)]  # its ETA: the 14 rows left
    assert not store.exists()
    for name in ("oof.csv", "test.csv", "methods/unary_oof.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(workdir / "checkpoints/stopped/partial" / name),
                                      pd.read_csv(workdir / "checkpoints/whole/partial" / name))

    calls.clear()  # other settings: the saved chunks of the first settings are not read
    (store / "x").mkdir(parents=True)
    run(load_config(None, [*base, "exp=stopped", "llm.yes_words=[Yes]"]))
    assert sum(calls) == 40


def test_a_partial_llm_run_names_only_the_rows_it_leaves_out():
    from src.rundir import partial_reason

    for overrides, said in (([], ""), (["llm.max_test_rows=-1"], "llm.max_test_rows=-1: no test rows"),
                            (["llm.max_train_rows=400"], "llm.max_train_rows=400: 400 train rows"),
                            (["llm.max_train_rows=24", "llm.max_test_rows=6"],
                             "llm.max_train_rows=24: 24 train rows, llm.max_test_rows=6: 6 test rows")):
        assert partial_reason(load_config(None, ["model_type=llm", *overrides])) == said
