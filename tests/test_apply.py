"""Every finished run is a model (src/apply.py): TF-IDF, probe, stack and partial runs applied to texts they have not
seen, reproducing their submission on test.csv; fold models saved without pickle; teachers on any unlabeled file.
(A packed blend in a simulated code competition: tests/test_pack.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_pack import snapshot, tiny_run

from src import skio
from src.__main__ import main as cli_main
from src.config import load_config
from src.errors import UserError
from src.pipeline import run

pytestmark = pytest.mark.usefixtures("one_thread")


def tfidf(comp_dir: Path, exp: str, *extra: str) -> dict:
    return run(load_config(None, [f"data.data_dir={comp_dir}", f"exp={exp}", "folds.n_folds=3", "tfidf.min_df=1",
                                  "tfidf.n_jobs=1", "output.plots=false", *extra]))


def by_id(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"ID": str, "id": str}).rename(columns={"id": "ID"}).set_index("ID").sort_index()


def test_a_tfidf_run_keeps_its_fold_models_and_predicts_new_texts(workdir, comp_dir, tmp_path):
    tfidf(comp_dir, "tf")
    models = sorted((workdir / "checkpoints/tf").glob("fold*/model.skops"))
    assert len(models) == 3 and not list((workdir / "checkpoints").rglob("*.pkl"))
    before = snapshot(workdir / "checkpoints")
    out = tmp_path / "decisions.csv"
    cli_main(["predict", "--exp", "tf", "--input", str(comp_dir / "test.csv"), "--out", str(out)])
    sub = by_id(workdir / "submissions/tf.csv")
    pd.testing.assert_frame_equal(by_id(out)[sub.columns], sub)  # test.csv again: the submission, cell for cell
    cli_main(["predict", "--exp", "tf", "--input", str(comp_dir / "test.csv"), "--out", str(out), "--probs"])
    test = by_id(workdir / "checkpoints/tf/test.csv")
    np.testing.assert_allclose(by_id(out)[test.columns].to_numpy(), test.to_numpy(), rtol=1e-6)
    new = tmp_path / "new.csv"  # texts it has not seen, in their own order
    pd.DataFrame({"ID": ["b", "a"], "Tweet": ["joyy joyy day", "angery feary night"]}).to_csv(new, index=False)
    cli_main(["predict", "--exp", "tf", "--input", str(new), "--out", str(out)])
    assert pd.read_csv(out, dtype={"ID": str})["ID"].tolist() == ["b", "a"]
    assert snapshot(workdir / "checkpoints") == before  # nothing in the run folder changes
    pd.DataFrame({"ID": ["a"], "Text": ["x"]}).to_csv(new, index=False)
    with pytest.raises(SystemExit):
        cli_main(["predict", "--exp", "tf", "--input", str(new), "--out", str(out)])


def test_a_tfidf_fold_model_is_saved_in_a_few_files_whatever_its_vocabulary(tmp_path):
    """skops writes a dict's numpy ints one zip entry each (and lists the zip for every one): a real fold's 100k
    terms took minutes to save and ~100 MB. The vocabulary goes as arrays; the reloaded model predicts the same."""
    import zipfile

    from src.config import TfidfConfig
    from src.models import tfidf as tfidf_model

    rng = np.random.default_rng(0)
    texts = [" ".join(f"w{i}" for i in rng.integers(0, 3000, 12)) for _ in range(300)]
    Y = np.stack([(np.arange(300) + j) % 3 == 0 for j in range(3)], axis=1).astype(int)
    model = tfidf_model.fit(TfidfConfig(min_df=1), texts, Y)
    assert sum(len(v.vocabulary_) for _, v in model.named_steps["features"].transformer_list) > 5000
    path = tfidf_model.save_model(model, tmp_path / "model.skops")
    assert len(zipfile.ZipFile(path).namelist()) < 100
    reloaded = tfidf_model.load_model(path)
    np.testing.assert_array_equal(reloaded.predict_proba(texts[:50]), model.predict_proba(texts[:50]))
    assert model.named_steps["features"].transformer_list[0][1].vocabulary_  # the fitted model is left whole


def test_fold_models_load_only_the_types_the_kit_saves(tmp_path):
    """A .skops file travels in run folders and packs: one holding another type is refused, not loaded."""
    from sklearn.linear_model import LogisticRegression

    class Foreign(LogisticRegression):
        pass

    path = tmp_path / "model.skops"
    skio.save(Foreign().fit(np.eye(4), [0, 1, 0, 1]), path)
    with pytest.raises(UserError, match=r"holds types this kit never saves \(.*Foreign"):
        skio.load(path)
    path.write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(UserError, match="is damaged"):
        skio.load(path)


def test_a_stack_applies_its_fold_stackers_to_its_members(workdir, comp_dir, tmp_path):
    tfidf(comp_dir, "lr")
    tfidf(comp_dir, "nb", "tfidf.classifier=cnb")
    cli_main(["stack", "lr", "nb", "--out", "st"])
    assert (workdir / "checkpoints/st/stackers.npz").is_file()
    out = tmp_path / "st.csv"
    cli_main(["predict", "--exp", "st", "--input", str(comp_dir / "test.csv"), "--out", str(out)])
    sub = by_id(workdir / "submissions/st.csv")
    pd.testing.assert_frame_equal(by_id(out)[sub.columns], sub)


def test_runs_of_some_folds_predict_finalize_and_blend_saying_what_they_cover(workdir, comp_dir, tiny_root, tmp_path,
                                                                              capsys):
    tiny_run(comp_dir, tiny_root, "part", "folds.run=[0,1]")  # a laptop: two folds and a manual pick
    cli_main(["checkpoints", "select", "part", "--fold", "1", "--step", "2"])
    capsys.readouterr()
    out = tmp_path / "part.csv"
    cli_main(["predict", "--exp", "part", "--input", str(comp_dir / "test.csv"), "--out", str(out)])
    said = capsys.readouterr()
    assert "part is a partial run (folds [0, 1] of 3)" in said.out and out.is_file()
    assert "predicting with part: 100%" in said.err and "2/2" in said.err  # a bar over the fold models
    cli_main(["finalize", "--exp", "part"])
    assert "OOF covers" in capsys.readouterr().out and not (workdir / "submissions/part.csv").exists()
    cli_main(["finalize", "--exp", "part", "--partial-submission"])
    assert "submissions/part-partial.csv (from folds [0, 1] only)" in capsys.readouterr().out
    tfidf(comp_dir, "tf")
    from src.ensemble import main as ensemble_main

    result = ensemble_main(["part", "tf", "--out", "bl", "--trials", "5"])
    said = capsys.readouterr().out
    assert "a partial blend of folds [0, 1] of 3 (part lacks folds [2])" in said
    assert not result["complete"] and result["folds"] == [0, 1] and "submission" not in result
    assert (workdir / "checkpoints/bl/partial/oof.csv").is_file() and not (workdir / "submissions/bl.csv").exists()
    with pytest.raises(UserError, match=r"member 'part' covers folds \[0, 1\] of 3 \(folds \[2\] missing\)"):
        run(load_config(None, [f"data.data_dir={comp_dir}", "exp=student", "folds.n_folds=3", "tfidf.min_df=1",
                               "teacher.exp=part", "teacher.mode=hard"]))


def test_a_teacher_labels_any_unlabeled_file_fold_by_fold(workdir, comp_dir, tmp_path):
    """teacher.source: the teacher's fold-k models label the file's texts for the student's fold k."""
    tfidf(comp_dir, "teach")
    unlabeled = tmp_path / "unlabeled.csv"
    texts = ["joyy joyy", "angery feary", "trusty day", "fear and joy", "a calm night"]
    pd.DataFrame({"ID": [f"u{i}" for i in range(len(texts))], "Tweet": texts}).to_csv(unlabeled, index=False)
    from src import teacher
    from src.data import load_competition
    from src.folds import ensure_folds

    cfg = load_config(None, [f"data.data_dir={comp_dir}", "exp=student", "folds.n_folds=3", "tfidf.min_df=1",
                             "teacher.exp=teach", "teacher.mode=hard", f"teacher.source={unlabeled}"])
    comp = load_competition(cfg.data)
    folds, _ = ensure_folds(cfg, comp, verbose=False)
    t = teacher.load(cfg, comp, folds)
    assert t.texts == texts and all(p.shape == (5, 4) for p in t.test.values())
    assert not np.allclose(t.test[0], t.test[1])  # each fold's own models
    texts_k, _, rows = teacher.training_set(cfg, comp, folds, 0)
    assert texts_k[len(comp.train):] == texts  # keep=1: every text of the file, none of test.csv
    assert teacher.fingerprint_part(cfg, comp, folds)["source"] == str(unlabeled)
    assert run(cfg)["complete"]


@pytest.mark.parametrize("kind", ["llm", "llm_finetune"])
def test_llm_runs_apply_their_scorer_or_fold_adapters_to_new_texts(workdir, comp_dir, tmp_path, kind):
    """A zero-shot scorer scores new texts as it scored test.csv; an LLM fine-tune reads out each fold's adapter."""
    from synth import make_frame
    from tiny_lm import save_decoder

    decoder = save_decoder(tmp_path / "lm", make_frame(200)["Tweet"].tolist() + ["anger joy fear trust none"] * 3)
    extra = ["folds.run=[0,1]", "train.max_steps=2", "train.batch_size=4", "lora.r=4"] if kind == "llm_finetune" else []
    run(load_config(None, [f"data.data_dir={comp_dir}", "exp=lm", f"model_type={kind}", "folds.n_folds=5",
                           f"model.name_or_path={decoder}", "llm.max_train_rows=8", "llm.max_test_rows=4",
                           "llm.max_new_tokens=4", "llm.batch_size=4", *extra]))
    test = pd.read_csv(workdir / "checkpoints/lm/partial/test.csv", dtype={"id": str})
    texts = pd.read_csv(comp_dir / "test.csv", dtype={"ID": str}).set_index("ID").loc[test["id"]].reset_index()
    texts.to_csv(tmp_path / "four.csv", index=False)
    out = tmp_path / "out.csv"
    cli_main(["predict", "--exp", "lm", "--input", str(tmp_path / "four.csv"), "--out", str(out), "--probs"])
    mine = pd.read_csv(out, dtype={"ID": str})
    assert mine["ID"].tolist() == test["id"].tolist()
    np.testing.assert_allclose(mine[test.columns[1:]].to_numpy(), test.iloc[:, 1:].to_numpy(), atol=1e-4)
