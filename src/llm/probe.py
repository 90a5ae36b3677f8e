"""model_type probe: a logistic-regression (or small MLP) probe per fold on frozen hidden states.

    python -m src run --config configs/probe_minilm.yaml data.data_dir=...

Features come from features.py (computed once, cached); each fold standardizes them on its training rows and
fits one-vs-rest logistic regression (probe.classifier=logreg) or an MLP with a sigmoid output per label
(probe.classifier=mlp), kept as `fold<k>/probe.skops` (no pickle) so the run predicts new texts (`predict_folds`).
Cheap: MiniLM-L6 features of the emotion data take minutes on a CPU, the ten probes seconds.
"""

from __future__ import annotations

import time

import numpy as np
from joblib import Parallel, delayed
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

from src import skio, teacher
from src.config import Config, ProbeConfig
from src.errors import UserError
from src.folds import folds_for_run
from src.llm import analysis
from src.llm.features import features
from src.progress import tqdm
from src.rundir import write_fold_outputs
from src.text import normalize


def build(pc: ProbeConfig, seed: int):
    if pc.classifier == "logreg":
        weight = None if pc.class_weight == "none" else pc.class_weight
        return OneVsRestClassifier(LogisticRegression(C=pc.C, class_weight=weight, max_iter=pc.max_iter))
    if pc.classifier == "mlp":
        return MLPClassifier(hidden_layer_sizes=(pc.hidden,), max_iter=pc.max_iter, random_state=seed)
    raise UserError(f"probe.classifier must be logreg or mlp, got {pc.classifier!r}")


def fit_fold(pc: ProbeConfig, k: int, X: np.ndarray, Y: np.ndarray, X_test: np.ndarray, fold: np.ndarray,
             seed: int, pseudo=None):
    """Fit on fold k's training rows (plus `pseudo` = (test rows, 0/1 targets) from a teacher); predict."""
    tr, va = fold != k, fold == k
    X_fit, Y_fit = X[tr], Y[tr]
    if pseudo is not None and len(pseudo[0]):
        X_fit, Y_fit = np.vstack([X_fit, X_test[pseudo[0]]]), np.vstack([Y_fit, pseudo[1].astype(Y.dtype)])
    scaler = StandardScaler().fit(X_fit)
    clf = build(pc, seed + k).fit(scaler.transform(X_fit), Y_fit)
    fitted = {"scaler": scaler, "clf": clf}
    return k, fitted, clf.predict_proba(scaler.transform(X[va])), clf.predict_proba(scaler.transform(X_test))


def model_path(rd, k: int):
    return rd.fold(k) / "probe.skops"


def predict_folds(cfg: Config, rd, texts: list[str]) -> dict[int, np.ndarray]:
    """Each fold's standardizer and probe applied to the features of `texts` (normalized as the run's were)."""
    feats, _ = features(cfg.model, cfg.probe, {"input": normalize(texts, cfg.data.normalize)})
    out = {}
    for k in folds_for_run(cfg):
        fitted = skio.load(model_path(rd, k))
        out[k] = fitted["clf"].predict_proba(fitted["scaler"].transform(feats["input"]))
    return out


def run(cfg: Config, comp, folds, rd) -> None:
    t0 = time.time()
    feats, _ = features(cfg.model, cfg.probe, {"train": comp.train_texts, "test": comp.test_texts})
    t1 = time.time()
    fold = folds["fold"].to_numpy()
    run_folds = folds_for_run(cfg)
    pseudo = {k: teacher.pseudo_rows(cfg, comp, folds, k) for k in run_folds}  # empty without a teacher
    jobs = (delayed(fit_fold)(cfg.probe, k, feats["train"], comp.Y, feats["test"], fold, cfg.train.seed, pseudo[k])
            for k in run_folds)
    parallel = Parallel(n_jobs=min(cfg.probe.n_jobs, len(run_folds)), return_as="generator_unordered")
    per_fold = {}
    for k, fitted, va, te in tqdm(parallel(jobs), total=len(run_folds), desc="probe folds", unit="fold"):
        per_fold[k] = (va, te)
        skio.save(fitted, model_path(rd, k))
    write_fold_outputs(rd, comp, folds, per_fold)
    print(f"[{cfg.exp}] features {t1 - t0:.1f} s, {len(run_folds)} probes {time.time() - t1:.1f} s")
    analysis.write_report(cfg, comp, folds, rd)
