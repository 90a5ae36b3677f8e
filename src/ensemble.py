"""Blend finished runs: weights on the simplex that maximize the OOF score of the competition's metric
(`data.metric`, macro-F1 by default) after decisions fitted for it.

    python -m src.ensemble tfidf tfidf_svc --out blend [--method prob|rank] [--trials 200] [key=value ...]
    python -m src.ensemble mpnet-s42 mpnet-s43 mpnet-s44 --out mpnet-3seeds --equal   # seeds of one config

Members are run directories `checkpoints/<exp>/` with a complete oof.csv (every train id once), test.csv and
config.yaml, all built on the same fold file (checked on the fold column of oof.csv and on the fold file each
member's config names). `prob` averages probabilities; `rank` averages per-label percentiles (a member's test
values are placed within its own OOF values, so OOF-tuned thresholds carry over to test).

Search: uniform weights, each member alone and `trials` Dirichlet draws, then pairwise moves of weight between
members with shrinking steps; deterministic given `--seed`. `--equal` skips the search (equal weights: the
natural average for several seeds of one config, trained with `train.seed=...` under their own exp names).
Weights and thresholds fitted on the same OOF are optimistic, so a nested estimate is also reported: for each
fold, weights and thresholds are fitted on the other folds' rows and applied to its rows (members get the same
treatment for their thresholds).

The blend is a run directory `checkpoints/<out>/` (oof.csv, test.csv, config.yaml with the members, weights and each
fold's nested weights under `extra.ensemble`: what applying it to new texts needs, src/apply.py) finalized by the
spine: thresholds, metrics.json, per_label.csv, report, submission.
"""

from __future__ import annotations

import time
from itertools import permutations

import numpy as np
import pandas as pd

from src import metrics, report, thresholds, tracking
from src.composite import mix, percentiles
from src.config import ThresholdConfig, dump_config
from src.data import Competition
from src.errors import ArgParser, UserError, cli
from src.fileio import write_json, write_text
from src.members import Member, load_members, members_test_folds, shared_rows
from src.progress import tqdm
from src.rundir import RunDir, write_probs, write_test_folds
from src.runguard import prepare_outputs, run_lock

METHODS = ("prob", "rank")
STEPS = (0.2, 0.1, 0.05, 0.02, 0.01)
FINALISTS = 8  # candidates of the search rescored exactly



def transform(members: list[Member], method: str) -> tuple[np.ndarray, np.ndarray]:
    """Stacked member inputs [members, rows, labels] for OOF and test, on the blend's scale."""
    if method not in METHODS:
        raise UserError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "prob":
        return np.stack([m.oof for m in members]), np.stack([m.test for m in members])
    return (np.stack([percentiles(m.oof, m.oof) for m in members]),
            np.stack([percentiles(m.oof, m.test) for m in members]))


def per_label_f1(Y: np.ndarray, probs: np.ndarray, tc: ThresholdConfig, labels: list[str]) -> np.ndarray:
    """Per-label F1 after thresholds tuned on the same rows (what finalize reports)."""
    th = thresholds.tune(Y, probs, tc)
    return metrics.f1_per_label(Y, thresholds.predict(probs, th, tc, labels))


def score(Y: np.ndarray, probs: np.ndarray, tc: ThresholdConfig, labels: list[str], binned: bool = False,
          metric: str = "macro_f1") -> float:
    """The OOF score of `metric` (signed: higher is better) after decisions fitted on the same rows. `binned` (the
    weight search's many candidates): thresholds on a 1/1000 grid, and for a metric of all labels together the best
    of those (min_one off and on) and the relative-to-max rule, without coordinate ascent."""
    sign = -1.0 if metric in metrics.LOWER_IS_BETTER else 1.0
    if metric in metrics.THRESHOLD_FREE:
        return sign * metrics.score(metric, Y, None, probs)
    if not binned:
        if metric == "macro_f1":
            return float(per_label_f1(Y, probs, tc, labels).mean())
        return metrics.score(metric, Y, thresholds.fit(Y, probs, tc, labels, metric)(probs))
    th = thresholds.tune_binned(Y, probs, tc)
    if metric == "macro_f1":
        return metrics.macro_f1(Y, thresholds.predict(probs, th, tc, labels))
    rules = [thresholds.Decider(th, m, thresholds.exclusive_columns(tc, labels)) for m in (False, True)]
    return max(metrics.score(metric, Y, d(probs)) for d in [*rules, thresholds.relative(Y, probs, metric, th)])


def optimize(X: np.ndarray, Y: np.ndarray, tc: ThresholdConfig, labels: list[str], trials: int = 200,
             seed: int = 0, equal: bool = False, metric: str = "macro_f1") -> tuple[np.ndarray, float]:
    """Weights (non-negative, sum 1) over X's members maximizing `score` (`equal`: 1/n each); returns
    (weights, score). The search scores candidates with binned thresholds; its pick and the best of the first
    draws are rescored exactly, and the result is never below the best single member."""
    n = len(X)
    blend = lambda w: mix(w, X)
    if equal:
        return np.full(n, 1 / n), score(Y, blend(np.full(n, 1 / n)), tc, labels, metric=metric)
    rng = np.random.default_rng(seed)
    candidates = [np.full(n, 1 / n), *np.eye(n), *rng.dirichlet(np.ones(n), size=trials if n > 1 else 0)]
    scores = [score(Y, blend(w), tc, labels, True, metric) for w in candidates]
    runners_up = [candidates[i] for i in np.argsort(scores)[::-1][1:FINALISTS]]
    i = int(np.argmax(scores))
    w, best = candidates[i].copy(), scores[i]
    for step in STEPS:  # move `step` of weight from one member to another while that helps
        improved = True
        while improved:
            improved = False
            for a, b in permutations(range(n), 2):
                d = min(step, w[a])
                if d <= 0:
                    continue
                trial = w.copy()
                trial[a] -= d
                trial[b] += d
                s = score(Y, blend(trial), tc, labels, True, metric)
                if s > best + 1e-12:
                    w, best, improved = trial, s, True
    # the search's pick rescored exactly beside the first draws' runners-up and each member alone: the search's
    # score is an approximation (binned thresholds; for a metric of all labels together, no ascent)
    finalists = [w, *runners_up, *np.eye(n)]
    exact = [score(Y, blend(c), tc, labels, metric=metric) for c in finalists]
    i = int(np.argmax(exact))  # first of equals: the search's pick wins ties
    return finalists[i].copy(), exact[i]


def nested(X: np.ndarray, Y: np.ndarray, fold: np.ndarray, tc: ThresholdConfig, labels: list[str], trials: int,
           seed: int, equal: bool = False, metric: str = "macro_f1"
           ) -> tuple[float, list[float], dict[int, np.ndarray]]:
    """The metric when each fold's rows get weights and decisions fitted on the other folds only.

    Returns (blend, [each member with decisions fitted on the other folds], {fold: its weights})."""
    P_blend, B_held = np.zeros_like(Y), np.zeros(Y.shape)
    weights = {}
    for k in tqdm(np.unique(fold), desc="nested estimate", unit="fold"):
        fit, held = fold != k, fold == k
        w, _ = optimize(X[:, fit], Y[fit], tc, labels, trials, seed, equal, metric)
        b_fit, B_held[held] = mix(w, X[:, fit]), mix(w, X[:, held])
        P_blend[held] = thresholds.fit(Y[fit], b_fit, tc, labels, metric)(B_held[held])
        weights[int(k)] = w
    members = [metrics.score(metric, Y, thresholds.crossfit(Y, x, fold, tc, labels, metric), x) for x in X]
    return metrics.score(metric, Y, P_blend, B_held), members, weights


def fold_tests(names: list[str], members: list[Member], method: str, checkpoints_dir: str, comp: Competition,
               weights: dict[int, np.ndarray]) -> dict[int, np.ndarray] | None:
    """The blend's test probabilities per fold (for a teacher that must not have seen a fold): fold k mixes the
    members' fold-k test predictions with `weights[k]` (fitted without fold k); None unless every member has them."""
    per_member = members_test_folds(names, checkpoints_dir, comp, list(weights))
    if per_member is None:
        return None
    scale = (lambda m, x: x) if method == "prob" else (lambda m, x: percentiles(m.oof, x))
    return {k: mix(w, np.stack([scale(m, p[k]) for m, p in zip(members, per_member)])) for k, w in weights.items()}


def blend(names: list[str], out: str, overrides: list[str] | None = None, method: str = "prob",
          trials: int = 200, seed: int = 0, with_nested: bool = True, equal: bool = False) -> dict:
    """Blend the named runs into the run `out`; returns its metrics (with an `ensemble` section)."""
    from src.pipeline import finalize

    t0 = time.time()
    if trials < 0:
        raise UserError(f"--trials must be >= 0 (0: only equal weights and each member alone), got {trials}")
    cfg, comp, folds, fold_file, members = load_members(names, out, list(overrides or []), "blend")
    rows = shared_rows(cfg, folds)  # every row, or those of the folds partial members share
    Y, fold, tc = comp.Y[rows], folds["fold"].to_numpy()[rows], cfg.thresholds
    X, X_test = transform(members, method)
    X = X[:, rows]

    m = cfg.data.metric
    sign = -1 if m in metrics.LOWER_IS_BETTER else 1  # score() is signed, the reported values are the metric's own
    w, best = optimize(X, Y, tc, comp.labels, trials, seed, equal, m)
    member_scores = [score(Y, x, tc, comp.labels, metric=m) for x in X]
    info = {"metric": m, "method": method, "trials": 0 if equal else trials, "seed": seed, "equal": equal,
            "fold_file": str(fold_file),
            "members": {n: {"weight": round(float(wi), 4), f"oof_{m}": round(sign * f, 6)}
                        for n, wi, f in zip(names, w, member_scores)},
            f"oof_{m}": round(sign * best, 6),
            "note": "in-sample: weights and decisions are both fitted on this OOF (optimistic)"}
    fold_weights = {int(k): w for k in np.unique(fold)}  # with the nested estimate: each fold's own weights
    if with_nested:
        nb, nm, fold_weights = nested(X, Y, fold, tc, comp.labels, trials, seed, equal, m)
        info[f"nested_{m}"] = round(nb, 6)
        for n, v in zip(names, nm):
            info["members"][n][f"nested_{m}"] = round(v, 6)
        top = names[0]
        for n in names:
            if metrics.better(m, info["members"][n][f"nested_{m}"], info["members"][top][f"nested_{m}"]):
                top = n
        if metrics.better(m, info["members"][top][f"nested_{m}"], nb):
            info["warning"] = (f"the blend's nested {m} {nb:.4f} is worse than its member '{top}''s "
                               f"{info['members'][top][f'nested_{m}']:.4f}: "
                               + ("its weights fit noise in the OOF rows; " if not equal else "")
                               + f"submit '{top}' alone" + ("" if equal else ", try --equal weights")
                               + ", or leave the weak members out")

    cfg.model_type = "ensemble"
    cfg.extra = {"ensemble": {"members": list(names), "method": method, "equal": equal,
                              "weights": {n: float(wi) for n, wi in zip(names, w)}, "trials": trials, "seed": seed,
                              "fold_weights": {int(k): [float(x) for x in wk] for k, wk in fold_weights.items()}}}
    rd = RunDir.of(cfg)
    per_fold_test = fold_tests(names, members, method, cfg.output.checkpoints_dir, comp, fold_weights)  # read first
    with run_lock(rd):
        prepare_outputs(rd, cfg, comp)
        write_text(rd.config, dump_config(cfg, absolute=True))
        write_probs(rd.oof, list(np.asarray(comp.train_ids, dtype=object)[rows]), mix(w, X), comp.labels, fold)
        write_probs(rd.test, comp.test_ids, mix(w, X_test), comp.labels)
        write_test_folds(rd, comp.test_ids, comp.labels, per_fold_test)
        result = finalize(cfg, comp, folds, wall_s=time.time() - t0, track=False)
        result["ensemble"] = info
        write_json(rd.metrics, result)
        tracking.log_run(cfg, rd)
        if cfg.output.plots:
            f1s = {n: pd.Series(per_label_f1(Y, x, tc, comp.labels), index=comp.labels) for n, x in zip(names, X)}
            report.f1_comparison({**f1s, out: pd.Series(result["per_label_f1"])}, rd.report / "blend_f1.png",
                                 "Per-label OOF F1 (tuned thresholds): members and blend")

    m = info["metric"]
    print(f"\n[{out}] {method} blend of {len(names)} runs (OOF {m} after decisions fitted for it):")
    nest = "nested" if with_nested else ""
    print(f"  {'run':<24}{'weight':>8}{'OOF':>9}{nest:>9}")
    for n in names:
        r = info["members"][n]
        nested_col = f"{r[f'nested_{m}']:>9.4f}" if with_nested else ""
        print(f"  {n:<24}{r['weight']:>8.3f}{r[f'oof_{m}']:>9.4f}{nested_col}")
    print(f"  {out:<24}{1:>8.3f}{info[f'oof_{m}']:>9.4f}" + (f"{info[f'nested_{m}']:>9.4f}" if with_nested else ""))
    if with_nested:
        print("  OOF: weights and thresholds fitted on all OOF rows (optimistic); nested: fitted on the other "
              "folds for each fold's rows")
        if info.get("warning"):
            print(f"WARNING: {info['warning']}")
    return result


@cli
def main(argv: list[str] | None = None) -> dict:
    p = ArgParser(prog="python -m src.ensemble", description="Blend runs on the OOF score of data.metric.")
    p.add_argument("runs", nargs="+", help="experiment names under checkpoints/, then optional key=value overrides "
                                           "(e.g. data.data_dir=... thresholds.min_one=true)")
    p.add_argument("--out", required=True, help="name of the blend run (checkpoints/<out>/, submissions/<out>.csv)")
    p.add_argument("--method", choices=METHODS, default="prob", help="average probabilities or per-label ranks")
    p.add_argument("--trials", type=int, default=200, help="random Dirichlet weight draws before refinement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-nested", action="store_true", help="skip the fold-wise (nested) estimate")
    p.add_argument("--equal", action="store_true", help="equal weights, no search (e.g. seeds of one config)")
    a = p.parse_intermixed_args(argv)
    names = [r for r in a.runs if "=" not in r]
    overrides = [r for r in a.runs if "=" in r]
    return blend(names, a.out, overrides, a.method, a.trials, a.seed, not a.no_nested, a.equal)


if __name__ == "__main__":
    main()
