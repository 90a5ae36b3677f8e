"""Pseudo-labels and distillation: a finished run (or blend) teaches the run being trained.

    teacher.exp=blend_cpu                      # a run or blend on the same data and fold file
    teacher.mode=soft|hard teacher.keep=0.5    # test texts added to each fold's training rows, most certain first
    teacher.source=unlabeled.csv               # texts of any file instead of test.csv (its id and text columns)
    teacher.train_alpha=0.5                    # distillation on the labeled rows as well (optimistic OOF, see below)

Honest OOF: fold k's held-out labels must not reach fold k's model, directly or through the teacher.
- Test texts (pseudo-labels; soft = distillation on unlabeled text). With `per_fold` (default) fold k learns the
  teacher's fold-k test predictions (test_folds.npz), made by models that never saw fold k's labels; a blend's are
  mixed with weights fitted without fold k. Hard labels and the certainty ranking use thresholds tuned on the other
  folds' OOF rows (those rows' probabilities came from models that did see fold k: a second-order leak through one
  number per label). `per_fold: false` takes the fold-averaged test.csv, which 9 of 10 fold models made with fold k's
  labels: optimistic.
- Labeled rows (`train_alpha` > 0): a fold-j row's teacher OOF came from a model trained on the other folds, fold k
  included, so the student's fold-k OOF is optimistic. Compare it with the same run at train_alpha=0.
Held-out rows are never added to their fold's training rows, and evaluation always scores the true labels.
Fine-tuned transformers take every setting; TF-IDF and probe runs take hard pseudo-labels only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from src import thresholds
from src.config import Config, ThresholdConfig, load_saved_sections
from src.data import Competition, digest, fold_path
from src.errors import UserError
from src.folds import folds_for_run
from src.members import load_member
from src.rundir import RunDir, read_test_folds
from src.text import normalize

MODES = ("soft", "hard")
HARD_ONLY = ("tfidf", "probe")  # sklearn classifiers: 0/1 targets


@dataclass
class Teacher:
    name: str
    oof: np.ndarray  # [train rows, labels] in train.csv order
    test: dict[int, np.ndarray]  # fold -> [texts, labels]: the fold-k models' (per_fold) or the fold mean
    tc: ThresholdConfig  # the teacher's threshold settings
    digest: str  # of the probabilities used: part of the student's fold fingerprint
    texts: list[str]  # the unlabeled texts those are for (raw): test.csv's, or teacher.source's

    def thresholds(self, Y: np.ndarray, fold: np.ndarray, k: int) -> np.ndarray:
        """Per-label thresholds for fold k, tuned on the teacher's OOF rows of the other folds."""
        return thresholds.tune(Y[fold != k], self.oof[fold != k], self.tc)


_CACHE: dict[tuple, Teacher] = {}


def load(cfg: Config, comp: Competition, folds: pd.DataFrame) -> Teacher | None:
    """The configured teacher (None when `teacher.exp` is empty), checked: a finished run on the same train ids,
    labels and folds, with each trained fold's test predictions when `per_fold`."""


    t = cfg.teacher
    if not t.exp:
        return None
    rd = RunDir(Path(cfg.output.checkpoints_dir) / t.exp, Path("."))
    if t.exp == cfg.exp:
        raise UserError(f"teacher.exp={t.exp} is this run: a teacher is another, finished run")
    files = [f for f in (rd.config, rd.oof, rd.test, rd.test_folds, Path(t.source or rd.test)) if f.is_file()]
    key = (str(rd.root.absolute()), t.per_fold, t.source,
           *((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files))
    if key in _CACHE:
        return _CACHE[key]
    if not rd.config.is_file() and not (rd.root / "partial" / "config.yaml").is_file():
        raise UserError(f"teacher.exp={t.exp}: {rd.root} has no config.yaml; is it a finished run here?")
    member = load_member(t.exp, cfg.output.checkpoints_dir, comp, folds, fold_path(cfg).name)
    texts = comp.test[comp.text_col].fillna("").tolist()
    if t.source:  # any unlabeled file, labeled by the teacher's fold models now (src/apply.py)
        test, texts = _source_predictions(cfg, t.exp)
    elif t.per_fold:
        test = read_test_folds(rd, comp.test_ids, comp.labels)
        if test is None:
            raise UserError(f"teacher {t.exp} has no {rd.test_folds.name} (each fold model's test predictions): "
                            f"rerun it (python -m src predict --exp {t.exp}, its run command, or a blend's command), "
                            "or set teacher.per_fold=false (fold-averaged test predictions: optimistic OOF)")
        missing = [k for k in folds_for_run(cfg) if k not in test]
        if missing:
            raise UserError(f"teacher {t.exp} has no test predictions of folds {missing} in {rd.test_folds}")
    else:
        test = {int(k): member.test for k in np.unique(folds["fold"])}
    h = hashlib.sha1(np.ascontiguousarray(member.oof, dtype=np.float32).tobytes())
    for k in sorted(test):
        h.update(np.ascontiguousarray(test[k], dtype=np.float32).tobytes())
    if t.source:
        h.update(digest(texts).encode())
    tc = load_saved_sections(rd.config, ["thresholds"]).thresholds
    _CACHE[key] = Teacher(t.exp, member.oof, test, tc, h.hexdigest()[:16], texts)
    return _CACHE[key]


def _source_predictions(cfg: Config, exp: str) -> tuple[dict[int, np.ndarray], list[str]]:
    """The teacher's fold models applied to `teacher.source`'s texts: ({fold: probabilities}, raw texts); with
    `per_fold: false` every fold gets their mean."""
    from src.apply import fold_probs, open_run, read_input

    run = open_run(exp, [f"output.checkpoints_dir={cfg.output.checkpoints_dir}", f"data.data_dir={cfg.data.data_dir}"])
    _, texts = read_input(cfg.teacher.source, run)
    per_fold = fold_probs(run, texts)
    if not cfg.teacher.per_fold:
        mean = np.mean([per_fold[k] for k in sorted(per_fold)], axis=0)
        per_fold = {k: mean for k in per_fold}
    return per_fold, texts


def check(cfg: Config, comp: Competition, folds: pd.DataFrame) -> None:
    """Teacher settings checked before a run writes anything."""
    t = cfg.teacher
    if not t.exp:
        return
    if t.mode not in MODES:
        raise UserError(f"teacher.mode must be soft or hard, got {t.mode!r}")
    if cfg.model_type in HARD_ONLY and (t.mode != "hard" or t.train_alpha > 0):
        raise UserError(f"model_type {cfg.model_type} learns 0/1 labels: use teacher.mode=hard and "
                        "teacher.train_alpha=0 (soft targets need a fine-tuned transformer)")
    if cfg.model_type not in (*HARD_ONLY, "transformer"):
        raise UserError(f"model_type {cfg.model_type} does not train on labels: teacher.exp applies to transformer, "
                        "tfidf and probe runs")
    load(cfg, comp, folds)


def fingerprint_part(cfg: Config, comp: Competition, folds: pd.DataFrame) -> dict | None:
    """What a fold's model owes to its teacher (settings and a digest of its probabilities); None without one."""
    teacher = load(cfg, comp, folds)
    if teacher is None:
        return None
    t = cfg.teacher
    return {"exp": t.exp, "mode": t.mode, "keep": t.keep, "train_alpha": t.train_alpha, "per_fold": t.per_fold,
            "probabilities": teacher.digest, **({"source": t.source} if t.source else {})}


def pseudo_rows(cfg: Config, comp: Competition, folds: pd.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(test rows, targets) fold k adds to its training rows: the `teacher.keep` share of test texts whose
    least certain label is furthest from its threshold, with soft or hard (float 0/1) targets."""
    teacher = load(cfg, comp, folds)
    n_labels = len(comp.labels)
    if teacher is None or cfg.teacher.keep <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, n_labels), dtype=np.float32)
    probs = teacher.test[k]
    th = teacher.thresholds(comp.Y, folds["fold"].to_numpy(), k)
    certainty = np.abs(probs - th).min(axis=1)
    n = int(round(cfg.teacher.keep * len(probs)))
    rows = np.sort(np.argsort(-certainty, kind="stable")[:n])
    if cfg.teacher.mode == "hard":
        targets = thresholds.predict(probs[rows], th, teacher.tc, comp.labels)
    else:
        targets = probs[rows]
    return rows, np.asarray(targets, dtype=np.float32)


def training_set(cfg: Config, comp: Competition, folds: pd.DataFrame, k: int
                 ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(texts, targets, rows) for fold k: train.csv's texts followed by the test texts the teacher adds; targets
    [texts, labels] (labeled rows: the labels, or mixed with the teacher's OOF by `train_alpha`); rows: the positions
    fold k trains on (its training rows, then the added ones). Without a teacher: train.csv and its labels."""
    Y = comp.Y.astype(np.float32)
    train_rows = np.flatnonzero(folds["fold"].to_numpy() != k)
    teacher = load(cfg, comp, folds)
    if teacher is None:
        return comp.train_texts, Y, train_rows
    a = cfg.teacher.train_alpha
    if a > 0:
        Y = ((1 - a) * Y + a * teacher.oof).astype(np.float32)
    rows, targets = pseudo_rows(cfg, comp, folds, k)
    texts = comp.train_texts + normalize([teacher.texts[i] for i in rows], comp.normalize)
    return texts, np.concatenate([Y, targets]), np.r_[train_rows, len(Y) + np.arange(len(rows))]


def describe(cfg: Config, comp: Competition, folds: pd.DataFrame, k: int) -> str:
    """One line on what the teacher adds to fold k ("" without one)."""
    if not cfg.teacher.exp:
        return ""
    rows, targets = pseudo_rows(cfg, comp, folds, k)
    t = cfg.teacher
    honest = "fold-k teacher models" if t.per_fold else "fold-averaged teacher (optimistic OOF)"
    expected = "expected " if t.mode == "soft" else ""  # soft: the sum of the teacher's probabilities
    per_text = f", {targets.sum(1).mean():.2f} {expected}labels per text" if len(rows) else ""
    mixed = f", labeled targets mixed {t.train_alpha:g} with its OOF (optimistic OOF)" if t.train_alpha > 0 else ""
    return f"teacher {t.exp}: +{len(rows)} test texts ({t.mode} targets{per_text}, {honest}){mixed}"
