"""Stack finished runs: per label, a logistic regression over every member's OOF logits, fitted fold-wise.

    python -m src.stack tfidf probe_minilm minilm-l6 --out stack [--C 1.0] [key=value ...]

Members are checked as `python -m src.ensemble` checks them (complete oof.csv and test.csv, one fold file). The
features are the logits log(p / (1 - p)) of every member for every label (members x labels columns, standardized),
so a label can draw on the members' other labels (co-occurrence). Its OOF is honest: the stacker that predicts fold
k is fitted on the other folds' rows and never sees fold k's labels, and its inputs, the members' OOF probabilities,
are themselves out-of-fold. Test probabilities are the mean of the K fold-stackers. A label with one class only in a
fold's training rows gets their rate. The stack is a run directory `checkpoints/<out>/` (settings under
`extra.stack`, the fold stackers in `stackers.npz`, so it applies to new texts) finalized like a blend; the members
and their equal-weight mean are scored beside it.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from src import metrics, report, thresholds, tracking
from src.composite import Stackers, features
from src.config import dump_config
from src.ensemble import per_label_f1, score
from src.errors import ArgParser, UserError, cli
from src.fileio import write_json, write_text
from src.members import load_members, members_test_folds, shared_rows
from src.progress import tqdm
from src.rundir import RunDir, write_probs, write_test_folds
from src.runguard import prepare_outputs, run_lock


def fit(X: np.ndarray, Y: np.ndarray, fold: np.ndarray, C: float = 1.0) -> tuple[np.ndarray, Stackers]:
    """Each fold's stackers fitted on the other folds' rows of the members' OOF probabilities X [members, rows,
    labels], and the stacked OOF probabilities (each fold's rows by its own stackers)."""
    F = features(X)
    ks = np.unique(fold)
    n_f, n_l = F.shape[1], Y.shape[1]
    st = Stackers(ks, np.zeros((len(ks), n_f)), np.ones((len(ks), n_f)), np.zeros((len(ks), n_l, n_f)),
                  np.zeros((len(ks), n_l)), np.full((len(ks), n_l), np.nan))
    oof = np.zeros(Y.shape)
    for i, k in enumerate(tqdm(ks, desc="stacking", unit="fold")):
        fit_rows, held = fold != k, fold == k
        scaler = StandardScaler().fit(F[fit_rows])
        st.mean[i], st.scale[i] = scaler.mean_, scaler.scale_
        A = scaler.transform(F[fit_rows])
        for j in range(n_l):
            y = Y[fit_rows, j]
            if y.min() == y.max():  # one class only: no model to fit, the training rate
                st.const[i, j] = float(y.mean())
            else:
                lr = LogisticRegression(C=C, max_iter=1000).fit(A, y)
                st.coef[i, j], st.intercept[i, j] = lr.coef_[0], lr.intercept_[0]
        oof[held] = st.predict(X[:, held], k)
    return oof, st


def fit_predict(X: np.ndarray, Y: np.ndarray, fold: np.ndarray, X_test: np.ndarray, C: float = 1.0,
                X_test_folds: dict[int, np.ndarray] | None = None
                ) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray] | None, Stackers]:
    """Stacked (OOF, test, per-fold test) probabilities [rows, labels] from members' (OOF, test) probabilities
    [members, rows, labels], and the stackers: each fold's rows predicted by stackers fitted on the other folds'
    rows; test: the mean over folds; per-fold test (with `X_test_folds`, the members' fold-k test predictions):
    fold k's stackers on them."""
    oof, st = fit(X, Y, fold, C)
    per_fold = {k: st.predict(x, k) for k, x in (X_test_folds or {}).items()}
    return oof, st.predict(X_test), (per_fold if set(per_fold) == set(st.folds.tolist()) else None), st


def stack(names: list[str], out: str, overrides: list[str] | None = None, C: float = 1.0) -> dict:
    """Stack the named runs into the run `out`; returns its metrics (with a `stack` section)."""
    from src.pipeline import finalize

    t0 = time.time()
    if not (np.isfinite(C) and C > 0):
        raise UserError(f"--C must be a finite number > 0, got {C}")
    cfg, comp, folds, fold_file, members = load_members(names, out, list(overrides or []), "stack")
    covered = shared_rows(cfg, folds)  # every row, or those of the folds partial members share
    Y, fold, tc, labels = comp.Y[covered], folds["fold"].to_numpy()[covered], cfg.thresholds, comp.labels
    X, X_test = np.stack([m.oof[covered] for m in members]), np.stack([m.test for m in members])
    ks = np.unique(fold).tolist()
    tests = members_test_folds(names, cfg.output.checkpoints_dir, comp, ks)  # for the stack's own, for teachers
    X_test_folds = None if tests is None else {k: np.stack([t[k] for t in tests]) for k in ks}
    oof, test, per_fold, stackers = fit_predict(X, Y, fold, X_test, C, X_test_folds)

    m = cfg.data.metric
    sign = -1 if m in metrics.LOWER_IS_BETTER else 1
    crossfit = lambda p: metrics.score(m, Y, thresholds.crossfit(Y, p, fold, tc, labels, m), p)  # noqa: E731
    rows = {**dict(zip(names, X)), "equal mean": X.mean(0)}  # exp names hold no spaces: no clash
    scores = {n: {f"oof_{m}": round(sign * score(Y, p, tc, labels, metric=m), 6),
                  f"crossfit_{m}": round(crossfit(p), 6)} for n, p in rows.items()}
    cfg.model_type = "stack"
    cfg.extra = {"stack": {"members": list(names), "C": C, "features": "logits of every member for every label"}}
    rd = RunDir.of(cfg)
    with run_lock(rd):
        prepare_outputs(rd, cfg, comp)
        write_text(rd.config, dump_config(cfg, absolute=True))
        write_probs(rd.oof, list(np.asarray(comp.train_ids, dtype=object)[covered]), oof, labels, fold)
        write_probs(rd.test, comp.test_ids, test, labels)
        write_test_folds(rd, comp.test_ids, labels, per_fold)
        stackers.save(Stackers.path(rd))
        result = finalize(cfg, comp, folds, wall_s=time.time() - t0, track=False)
        info = {"metric": m, "members": {n: scores[n] for n in names}, "C": C, "fold_file": str(fold_file),
                "features": f"{len(names)} members x {len(labels)} labels logits, standardized",
                "equal_mean": scores["equal mean"], f"oof_{m}": round(result["oof"][m], 6),
                f"crossfit_{m}": round(result["oof_crossfit"][m], 6)}
        best = next(iter(scores))
        for n in scores:
            if metrics.better(m, scores[n][f"crossfit_{m}"], scores[best][f"crossfit_{m}"]):
                best = n
        if metrics.better(m, scores[best][f"crossfit_{m}"], info[f"crossfit_{m}"]):
            instead = "python -m src.ensemble ... --equal" if best == "equal mean" else f"'{best}'"
            info["warning"] = (f"the stack's cross-fitted {m} {info[f'crossfit_{m}']:.4f} is worse than "
                               f"'{best}''s {scores[best][f'crossfit_{m}']:.4f}: submit {instead} instead, or try "
                               "another --C")
        result["stack"] = info
        write_json(rd.metrics, result)
        tracking.log_run(cfg, rd)
        if cfg.output.plots:
            f1s = {n: pd.Series(per_label_f1(Y, p, tc, labels), index=labels) for n, p in rows.items()}
            report.f1_comparison({**f1s, out: pd.Series(result["per_label_f1"])}, rd.report / "stack_f1.png",
                                 "Per-label OOF F1 (tuned thresholds): members, their equal mean and the stack")

    print(f"\n[{out}] stack of {len(names)} runs (per label, logistic regression C={C} on {len(names)} x "
          f"{len(labels)} logits), {m} after decisions fitted for it:")
    print(f"  {'run':<24}{'OOF':>9}{'crossfit':>10}")
    for n, s in [*scores.items(), (out, info)]:
        print(f"  {n:<24}{s[f'oof_{m}']:>9.4f}{s[f'crossfit_{m}']:>10.4f}")
    print("  OOF: decisions fitted on all OOF rows (optimistic); crossfit: each fold's rows by decisions fitted on the "
          "other folds. The stack's probabilities are out-of-fold either way.")
    if info.get("warning"):
        print(f"WARNING: {info['warning']}")
    return result


@cli
def main(argv: list[str] | None = None) -> dict:
    p = ArgParser(prog="python -m src.stack", description="Stack runs: per-label logistic regression on their OOF "
                                                          "logits, fitted fold-wise.")
    p.add_argument("runs", nargs="+", help="experiment names under checkpoints/, then optional key=value overrides "
                                           "(e.g. data.data_dir=... thresholds.min_one=true)")
    p.add_argument("--out", required=True, help="name of the stack run (checkpoints/<out>/, submissions/<out>.csv)")
    p.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the logistic regressions")
    a = p.parse_intermixed_args(argv)
    names = [r for r in a.runs if "=" not in r]
    overrides = [r for r in a.runs if "=" in r]
    return stack(names, a.out, overrides, a.C)


if __name__ == "__main__":
    main()
