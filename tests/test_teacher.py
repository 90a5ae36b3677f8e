"""Pseudo-labels and distillation (src/teacher.py): fold k learns only from teacher outputs made without fold k's
labels; per-fold test predictions are written by every trained family and by blends."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_ensemble import fake_member
from test_train import overrides
from test_transformer import make_tiny

from src import teacher
from src.config import load_config
from src.data import load_competition
from src.ensemble import blend
from src.errors import UserError
from src.folds import ensure_folds
from src.pipeline import run
from src.rundir import RunDir, read_probs, read_test_folds, write_test_folds
from src.train import train_folds


def setup(comp_dir, *more, exp="student", n_folds=5):
    cfg = load_config(None, [f"data.data_dir={comp_dir}", f"exp={exp}", f"folds.n_folds={n_folds}",
                             "output.plots=false", *more])
    comp = load_competition(cfg.data)
    folds, _ = ensure_folds(cfg, comp, verbose=False)
    return cfg, comp, folds


def fake_teacher(comp_dir, name="t", seed=0, n_folds=5):
    """A finished run (fake_member) with per-fold test predictions that differ fold to fold."""
    comp = fake_member(comp_dir, name, seed, n_folds)
    rng = np.random.default_rng(seed + 100)
    per_fold = {k: rng.random((len(comp.test), len(comp.labels))) for k in range(n_folds)}
    write_test_folds(RunDir.of(load_config(None, [f"exp={name}"])), comp.test_ids, comp.labels, per_fold)
    return per_fold


def test_pseudo_rows_come_from_the_fold_k_teacher_and_other_folds_thresholds(workdir, comp_dir):
    per_fold = fake_teacher(comp_dir)
    cfg, comp, folds = setup(comp_dir, "teacher.exp=t", "teacher.keep=0.5")
    rows, targets = teacher.pseudo_rows(cfg, comp, folds, 2)
    assert len(rows) == round(0.5 * len(comp.test)) and len(set(rows)) == len(rows)
    np.testing.assert_allclose(targets, per_fold[2][rows], atol=1e-6)  # soft: the fold-2 models' probabilities
    other = teacher.pseudo_rows(cfg, comp, folds, 3)[1]
    assert not np.allclose(np.sort(other.ravel())[:50], np.sort(targets.ravel())[:50])

    # the kept texts are the most certain: their least certain label is further from the threshold than any other's
    t = teacher.load(cfg, comp, folds)
    fold = folds["fold"].to_numpy()
    th = t.thresholds(comp.Y, fold, 2)
    certainty = np.abs(per_fold[2] - th).min(1)
    assert certainty[rows].min() >= np.delete(certainty, rows).max()

    hard_cfg, *_ = setup(comp_dir, "teacher.exp=t", "teacher.mode=hard")
    hard_rows, hard = teacher.pseudo_rows(hard_cfg, comp, folds, 2)
    assert len(hard_rows) == len(comp.test) and set(np.unique(hard)) <= {0.0, 1.0}
    np.testing.assert_array_equal(hard, (per_fold[2] >= th).astype(np.float32))

    # fold 2's own labels never reach fold 2's pseudo-labels (its thresholds are tuned on the other folds' rows)
    flipped = comp.Y.copy()
    flipped[fold == 2] = 1 - flipped[fold == 2]
    np.testing.assert_array_equal(t.thresholds(flipped, fold, 2), th)
    assert not np.array_equal(t.thresholds(flipped, fold, 3), t.thresholds(comp.Y, fold, 3))

    mean_cfg, *_ = setup(comp_dir, "teacher.exp=t", "teacher.per_fold=false")
    test_csv = read_probs(workdir / "checkpoints/t/test.csv", comp.labels).set_index("id").loc[comp.test_ids]
    np.testing.assert_allclose(teacher.pseudo_rows(mean_cfg, comp, folds, 2)[1], test_csv[comp.labels], atol=1e-6)


def test_training_set_keeps_held_out_rows_out_and_mixes_labels_with_train_alpha(workdir, comp_dir):
    fake_teacher(comp_dir)
    cfg, comp, folds = setup(comp_dir, "teacher.exp=t", "teacher.keep=0.25", "teacher.train_alpha=0.4")
    texts, Y, rows = teacher.training_set(cfg, comp, folds, 1)
    n, fold = len(comp.train), folds["fold"].to_numpy()
    extra = round(0.25 * len(comp.test))
    assert len(texts) == n + extra and len(Y) == n + extra
    assert set(rows[rows < n]) == set(np.flatnonzero(fold != 1)) and (rows >= n).sum() == extra
    oof = teacher.load(cfg, comp, folds).oof
    np.testing.assert_allclose(Y[:n], 0.6 * comp.Y + 0.4 * oof, atol=1e-6)
    plain, *_ = setup(comp_dir)
    texts, Y, rows = teacher.training_set(plain, comp, folds, 1)
    assert texts == comp.train_texts and np.array_equal(Y, comp.Y) and set(rows) == set(np.flatnonzero(fold != 1))


def test_refusals_are_one_line_errors_before_any_write(workdir, comp_dir):
    fake_member(comp_dir, "plain", 0)  # a finished run made before test_folds.npz existed
    with pytest.raises(UserError, match="no test_folds.npz.*teacher.per_fold=false"):
        run(setup(comp_dir, "teacher.exp=plain", "teacher.mode=hard", exp="s1")[0])
    fake_teacher(comp_dir)
    with pytest.raises(UserError, match="tfidf learns 0/1 labels: use teacher.mode=hard"):
        run(setup(comp_dir, "teacher.exp=t", exp="s2")[0])
    with pytest.raises(UserError, match="is this run"):
        run(setup(comp_dir, "teacher.exp=t", "teacher.mode=hard", exp="t")[0])
    with pytest.raises(UserError, match="no config.yaml"):
        run(setup(comp_dir, "teacher.exp=nobody", "teacher.mode=hard", exp="s3")[0])
    with pytest.raises(UserError, match="teacher.mode must be soft or hard"):
        run(setup(comp_dir, "teacher.exp=t", "teacher.mode=sharp", exp="s4")[0])
    with pytest.raises(UserError, match="teacher.keep.*out of range"):
        setup(comp_dir, "teacher.keep=1.5")
    with pytest.raises(UserError, match="other folds"):  # a teacher on another fold file
        run(setup(comp_dir, "teacher.exp=t", "teacher.mode=hard", exp="s5", n_folds=4)[0])
    assert not any((workdir / "checkpoints" / s).exists() for s in ("s1", "s2", "s3", "s4", "s5"))


def test_tfidf_student_writes_per_fold_tests_and_learns_from_hard_pseudo_labels(workdir, comp_dir):
    cfg, comp, folds = setup(comp_dir, exp="tf")
    run(cfg)
    rd = RunDir.of(cfg)
    per_fold = read_test_folds(rd, comp.test_ids, comp.labels)
    assert sorted(per_fold) == list(range(5))
    mean = read_probs(rd.test, comp.labels).set_index("id").loc[comp.test_ids][comp.labels].to_numpy()
    np.testing.assert_allclose(np.mean([per_fold[k] for k in range(5)], axis=0), mean, atol=1e-5)
    assert not np.allclose(per_fold[0], per_fold[1])  # each fold model's own predictions

    student, *_ = setup(comp_dir, "teacher.exp=tf", "teacher.mode=hard", exp="tf-pseudo")
    run(student)
    a = read_probs(rd.oof, comp.labels)[comp.labels].to_numpy()
    b = read_probs(RunDir.of(student).oof, comp.labels)[comp.labels].to_numpy()
    assert a.shape == b.shape and not np.allclose(a, b)  # the pseudo-labeled texts changed the fold models


def test_blend_per_fold_tests_mix_fold_k_members_with_weights_fitted_without_fold_k(workdir, comp_dir):
    t1, t2 = fake_teacher(comp_dir, "a", 1), fake_teacher(comp_dir, "b", 2)
    blend(["a", "b"], "ab", [f"data.data_dir={comp_dir}"], equal=True)
    cfg, comp, _ = setup(comp_dir, exp="ab")
    per_fold = read_test_folds(RunDir.of(cfg), comp.test_ids, comp.labels)
    for k in range(5):
        np.testing.assert_allclose(per_fold[k], (t1[k] + t2[k]) / 2, atol=1e-6)
    blend(["a", "b"], "ab2", [f"data.data_dir={comp_dir}"], trials=5)
    metrics = json.loads((workdir / "checkpoints/ab2/metrics.json").read_text())
    assert "nested_macro_f1" in metrics["ensemble"]
    fake_member(comp_dir, "c", 3)  # no per-fold test predictions: the blend has none either
    blend(["a", "c"], "ab", [f"data.data_dir={comp_dir}"], equal=True, with_nested=False)
    assert read_test_folds(RunDir.of(cfg), comp.test_ids, comp.labels) is None


def test_transformer_student_trains_on_soft_targets_and_its_fingerprint_names_the_teacher(workdir, comp_dir,
                                                                                        tiny_root, capsys):
    fake_teacher(comp_dir, n_folds=5)
    model = make_tiny("bert", tiny_root)
    base = overrides(comp_dir, model, "st", "train.max_steps=4", "train.eval_every=4")
    plain = load_config(None, base)
    comp = load_competition(plain.data)
    folds, _ = ensure_folds(plain, comp, verbose=False)
    rd = RunDir.of(plain)
    train_folds(plain, comp, folds, rd)
    taught = load_config(None, [*base, "teacher.exp=t", "teacher.keep=0.5"])
    with pytest.raises(UserError, match=r"settings changed \(teacher\)"):  # never reused silently
        train_folds(taught, comp, folds, rd)
    other = load_config(None, [*base, "exp=st2", "teacher.exp=t", "teacher.keep=0.5"])
    train_folds(other, comp, folds, RunDir.of(other))
    out = capsys.readouterr().out
    assert f"teacher t: +{round(0.5 * len(comp.test))} test texts (soft targets" in out
    done = json.loads((RunDir.of(other).fold(0) / "done.json").read_text())
    assert done["fingerprint_parts"]["teacher"]["exp"] == "t" and done["fingerprint_parts"]["teacher"]["keep"] == 0.5
    a = np.load(next(rd.fold(0).glob("step*")) / "valid_probs.npy")
    b = np.load(next(RunDir.of(other).fold(0).glob("step*")) / "valid_probs.npy")
    assert a.shape == b.shape and not np.allclose(a, b)
