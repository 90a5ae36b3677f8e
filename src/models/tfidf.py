"""The classical baselines: word + char TF-IDF -> one-vs-rest logistic regression (or `tfidf.classifier`:
a sigmoid-calibrated linear SVM or complement naive Bayes), fitted per fold. Each fold's fitted pipeline is kept
as `fold<k>/model.skops` (no pickle: src/skio.py), so the run predicts new texts (`predict_folds`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import make_scorer
from sklearn.model_selection import GridSearchCV
from sklearn.multiclass import OneVsRestClassifier
from sklearn.naive_bayes import ComplementNB
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.svm import LinearSVC

from src import metrics, skio, teacher
from src.config import Config, TfidfConfig
from src.errors import UserError
from src.folds import folds_for_run
from src.progress import tqdm
from src.rundir import write_fold_outputs
from src.text import normalize


def build(cfg: TfidfConfig) -> Pipeline:
    common = dict(min_df=cfg.min_df, max_features=cfg.max_features, sublinear_tf=cfg.sublinear_tf,
                  lowercase=cfg.lowercase, dtype=np.float32)
    features = FeatureUnion([
        ("word", TfidfVectorizer(analyzer="word", ngram_range=tuple(cfg.word_ngram),
                                 token_pattern=r"(?u)[#@]?\b\w+\b", **common)),
        ("char", TfidfVectorizer(analyzer=cfg.char_analyzer, ngram_range=tuple(cfg.char_ngram), **common)),
    ])
    return Pipeline([("features", features), ("clf", OneVsRestClassifier(classifier(cfg)))])


SOLVERS = ("lbfgs", "liblinear")
LOGREG_MAX_ITER = 500  # lbfgs converges in well under this on TF-IDF rows; the default 100 can stop it early
C_PARAM = {"logreg": "C", "svc": "estimator__C", "cnb": None}  # classifier -> its parameter that grid_C sets


def classifier(cfg: TfidfConfig):
    """The per-label binary classifier named by `tfidf.classifier` (every option gives probabilities)."""
    weight = None if cfg.class_weight == "none" else cfg.class_weight
    if cfg.classifier == "logreg":
        if cfg.solver not in SOLVERS:
            raise UserError(f"tfidf.solver must be one of {', '.join(SOLVERS)}, got {cfg.solver!r}")
        return LogisticRegression(C=cfg.C, class_weight=weight, solver=cfg.solver, max_iter=LOGREG_MAX_ITER)
    if cfg.classifier == "svc":  # hinge loss; Platt-scaled on 3 inner folds for probabilities
        return CalibratedClassifierCV(LinearSVC(C=cfg.C, class_weight=weight), method="sigmoid", cv=3)
    if cfg.classifier == "cnb":
        return ComplementNB(alpha=1.0 / cfg.C)
    raise UserError(f"tfidf.classifier must be one of {', '.join(C_PARAM)}, got {cfg.classifier!r}")


def scorer(metric: str):
    """grid_search's scorer for data.metric: the metric of src/metrics.py, of decisions at 0.5 inside the inner CV
    (the run's own decisions are tuned on its OOF later) or of probabilities for a threshold-free one."""
    if metric in metrics.THRESHOLD_FREE:
        return make_scorer(metrics.PROBABILITY_FNS[metric], response_method="predict_proba",
                           greater_is_better=metric not in metrics.LOWER_IS_BETTER)
    return make_scorer(metrics.DECISION_FNS[metric])


def fit(cfg: TfidfConfig, texts: list[str], Y: np.ndarray, metric: str = "macro_f1"):
    """Fit on training texts; with grid_search, pick C and the word n-gram range by the run's metric (inner CV)."""
    model = build(cfg)
    if cfg.grid_search:
        if C_PARAM.get(cfg.classifier) is None:
            raise UserError(f"tfidf.grid_search supports classifier {', '.join(k for k, v in C_PARAM.items() if v)}")
        grid = {f"clf__estimator__{C_PARAM[cfg.classifier]}": cfg.grid_C,
                "features__word__ngram_range": [tuple(r) for r in cfg.grid_word_ngram]}
        search = GridSearchCV(model, grid, scoring=scorer(metric), cv=cfg.grid_cv, n_jobs=1)
        search.fit(texts, Y)
        return search.best_estimator_
    return model.fit(texts, Y)


def _fold(cfg: TfidfConfig, k: int, train_texts, Y, test_texts, fold: np.ndarray, pseudo=None,
          metric: str = "macro_f1"):
    """Fit on fold k's training rows (plus `pseudo` = (test rows, 0/1 targets) from a teacher); predict."""
    tr, va = fold != k, fold == k
    texts, targets = [t for t, m in zip(train_texts, tr) if m], Y[tr]
    if pseudo is not None and len(pseudo[0]):
        texts += [test_texts[i] for i in pseudo[0]]
        targets = np.concatenate([targets, pseudo[1].astype(targets.dtype)])
    try:
        model = fit(cfg, texts, targets, metric)
    except ValueError as e:  # sklearn's word for a bad setting (n-gram range, analyzer, min_df too high, ...)
        raise UserError(f"tfidf fold {k}: {str(e).strip().splitlines()[0]}") from None
    return k, model, model.predict_proba([t for t, m in zip(train_texts, va) if m]), model.predict_proba(test_texts)


def preflight(cfg: Config, comp, folds, rd) -> None:
    """Settings checked before the run writes anything (not inside a worker, after other folds' work)."""
    t = cfg.tfidf
    classifier(t)
    if t.grid_search and C_PARAM.get(t.classifier) is None:
        raise UserError(f"tfidf.grid_search supports classifier {', '.join(k for k, v in C_PARAM.items() if v)}")
    for key, value, allowed in (("char_analyzer", t.char_analyzer, ("char", "char_wb")),
                                ("class_weight", t.class_weight, ("none", "balanced"))):
        if value not in allowed:
            raise UserError(f"tfidf.{key} must be one of {', '.join(allowed)}, got {value!r}")
    fold = folds["fold"].to_numpy()
    smallest = min(int((fold != k).sum()) for k in folds_for_run(cfg))
    if t.min_df > smallest:
        raise UserError(f"tfidf.min_df={t.min_df} is more than the {smallest} training rows of the smallest fold: "
                        "no term could be kept; lower it")
    if t.grid_search and t.grid_cv > smallest:
        raise UserError(f"tfidf.grid_cv={t.grid_cv} inner folds are more than the {smallest} training rows of the "
                        "smallest fold: lower it (e.g. 3)")


def run(cfg: Config, comp, folds, rd) -> None:
    """Fit each fold on its training rows, write OOF and fold-averaged test probabilities."""
    preflight(cfg, comp, folds, rd)
    fold = folds["fold"].to_numpy()
    run_folds = folds_for_run(cfg)
    pseudo = {k: teacher.pseudo_rows(cfg, comp, folds, k) for k in run_folds}  # empty without a teacher
    jobs = (delayed(_fold)(cfg.tfidf, k, comp.train_texts, comp.Y, comp.test_texts, fold, pseudo[k],
                           cfg.data.metric) for k in run_folds)
    n_jobs = min(cfg.tfidf.n_jobs, len(run_folds))
    print(f"[{cfg.exp}] tfidf: {len(run_folds)} folds, {n_jobs} at a time; each fits word + char TF-IDF and "
          f"{len(comp.labels)} {cfg.tfidf.classifier} classifiers on ~{int((fold != run_folds[0]).sum())} texts, then "
          f"predicts {len(comp.test)} test texts", flush=True)
    parallel = Parallel(n_jobs=n_jobs, return_as="generator_unordered")
    per_fold = {}
    for k, model, valid, test in tqdm(parallel(jobs), total=len(run_folds), desc="tfidf folds", unit="fold"):
        per_fold[k] = (valid, test)
        save_model(model, model_path(rd, k))
    write_fold_outputs(rd, comp, folds, per_fold)


def model_path(rd, k: int) -> Path:
    return rd.fold(k) / "model.skops"


def save_model(model: Pipeline, path: Path) -> Path:
    """Write a fitted pipeline with each vectorizer's vocabulary as one array of terms: skops writes a dict's numpy
    ints one file each, so 100k terms took minutes a fold (a zip listing per file) and ~100 MB."""
    vectorizers = [v for _, v in model.named_steps["features"].transformer_list]
    vocabularies = [v.__dict__.pop("vocabulary_") for v in vectorizers]
    try:
        terms = [np.array(sorted(vocab, key=vocab.get)) for vocab in vocabularies]
        return skio.save({"pipeline": model, "terms": terms}, path)
    finally:
        for v, vocab in zip(vectorizers, vocabularies):
            v.vocabulary_ = vocab


def load_model(path: Path) -> Pipeline:
    """The pipeline save_model wrote (or an earlier run's plain pipeline)."""
    saved = skio.load(path)
    if not isinstance(saved, dict):
        return saved
    model = saved["pipeline"]
    for (_, v), terms in zip(model.named_steps["features"].transformer_list, saved["terms"]):
        v.vocabulary_ = {str(t): i for i, t in enumerate(terms)}
    return model


def predict_folds(cfg: Config, rd, texts: list[str]) -> dict[int, np.ndarray]:
    """Each fold's fitted pipeline applied to `texts` (normalized as the run's texts were)."""
    texts = normalize(texts, cfg.data.normalize)
    return {k: load_model(model_path(rd, k)).predict_proba(texts) for k in folds_for_run(cfg)}
