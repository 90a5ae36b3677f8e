"""Threshold rules compared on finished runs' OOF: in-sample and cross-fitted (honest) macro-F1; or, with
--by-metric, what choosing the competition's metric is worth.

    python bench/thresholds.py goemotions-tfidf goemotions-blend --exclusive neutral [key=value ...]
    python bench/thresholds.py tfidf smollm2-135m-cpu --by-metric     # bench/results/metrics_<run>.csv

For each run: per-label thresholds plain, shrunk towards the global one (`thresholds.shrink`), or the global one
for labels with few positives (`thresholds.min_positives`), and one global threshold; each with the row rules
off, `min_one`, `exclusive` and both. "in-sample" tunes on all OOF rows (what finalize reports, optimistic);
"cross-fit" tunes each fold's thresholds on the other folds only. Writes bench/results/thresholds_<run>.csv.
--by-metric: decisions fitted for each of macro-F1, micro-F1, samples-F1 and Jaccard (`thresholds.fit`, as
finalize does for `data.metric`), each scored under every one of them, in-sample and cross-fitted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pandas as pd  # noqa: E402

from src import metrics, thresholds  # noqa: E402
from src.config import load_saved_sections  # noqa: E402
from src.data import load_competition  # noqa: E402
from src.errors import cli  # noqa: E402
from src.folds import ensure_folds  # noqa: E402
from src.members import load_member  # noqa: E402
from src.progress import tqdm  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SETTINGS = [("per_label", {}), *[(f"shrink={k}", {"shrink": k}) for k in (10, 30, 100, 300)],
            *[(f"min_positives={k}", {"min_positives": k}) for k in (100, 300, 1000)], ("global", {"mode": "global"})]


def compare(name: str, checkpoints_dir: str, overrides: list[str], exclusive: list[str]) -> pd.DataFrame:
    cfg = load_saved_sections(Path(checkpoints_dir) / name / "config.yaml", ["data", "folds", "thresholds"], overrides)
    comp = load_competition(cfg.data)
    folds, fold_file = ensure_folds(cfg, comp, verbose=False)
    oof = load_member(name, checkpoints_dir, comp, folds, fold_file.name).oof
    Y, fold = comp.Y, folds["fold"].to_numpy()
    rules = [("none", {}), ("min_one", {"min_one": True})]
    if exclusive:
        rules += [("exclusive", {"exclusive": exclusive}), ("both", {"min_one": True, "exclusive": exclusive})]
    rows = []
    base = replace(cfg.thresholds, mode="per_label", shrink=0.0, min_positives=0, min_one=False, exclusive=[])
    for (setting, s), (rule, r) in tqdm([(a, b) for a in SETTINGS for b in rules], desc=name, unit="rule"):
        tc = replace(base, **s, **r)
        P = thresholds.predict(oof, thresholds.tune(Y, oof, tc), tc, comp.labels)
        rows.append({"run": name, "thresholds": setting, "row_rule": rule, "in_sample": metrics.macro_f1(Y, P),
                     "cross_fit": metrics.macro_f1(Y, thresholds.crossfit(Y, oof, fold, tc, comp.labels))})
    return pd.DataFrame(rows)


BY_METRIC = ("macro_f1", "micro_f1", "samples_f1", "jaccard")


def by_metric(name: str, checkpoints_dir: str, overrides: list[str]) -> pd.DataFrame:
    """One row per metric the decisions were fitted for; columns: each metric in-sample and cross-fitted."""
    cfg = load_saved_sections(Path(checkpoints_dir) / name / "config.yaml", ["data", "folds", "thresholds"], overrides)
    comp = load_competition(cfg.data)
    folds, fold_file = ensure_folds(cfg, comp, verbose=False)
    oof = load_member(name, checkpoints_dir, comp, folds, fold_file.name).oof
    Y, fold = comp.Y, folds["fold"].to_numpy()
    rows = []
    for fitted in tqdm(BY_METRIC, desc=name, unit="metric"):
        P = thresholds.fit(Y, oof, cfg.thresholds, comp.labels, fitted)(oof)
        honest = thresholds.crossfit(Y, oof, fold, cfg.thresholds, comp.labels, fitted)
        rows.append({"run": name, "decided_for": fitted,
                     **{f"{m} (OOF)": metrics.score(m, Y, P) for m in BY_METRIC},
                     **{f"{m} (cross-fit)": metrics.score(m, Y, honest) for m in BY_METRIC}})
    return pd.DataFrame(rows)


@cli
def main(argv: list[str] | None = None) -> dict[str, pd.DataFrame]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="finished runs (exp names)")
    p.add_argument("--exclusive", nargs="*", default=[], help="labels to try as exclusive (e.g. neutral)")
    p.add_argument("--checkpoints-dir", default="checkpoints")
    p.add_argument("--results", type=Path, default=RESULTS, help="where thresholds_<run>.csv go (bench/results)")
    p.add_argument("--by-metric", action="store_true", help="decisions fitted for each metric, scored under each")
    a, overrides = p.parse_known_args(argv)
    tables = {}
    for name in a.runs:
        t0 = time.time()
        if a.by_metric:
            table = tables[name] = by_metric(name, a.checkpoints_dir, overrides)
            a.results.mkdir(parents=True, exist_ok=True)
            table.round(4).to_csv(a.results / f"metrics_{name}.csv", index=False)
            print(f"\n{name}: decisions fitted for each metric (rows), scored under each ({time.time() - t0:.0f} s)")
            print(table.drop(columns="run").set_index("decided_for").T.round(4).to_string())
            continue
        table = tables[name] = compare(name, a.checkpoints_dir, overrides, a.exclusive)
        a.results.mkdir(parents=True, exist_ok=True)
        table.round(4).to_csv(a.results / f"thresholds_{name}.csv", index=False)
        print(f"\n{name}: macro-F1 by threshold rule, sorted by the cross-fitted figure ({time.time() - t0:.0f} s)")
        print(table.sort_values("cross_fit", ascending=False).round(4).to_string(index=False))
    return tables


if __name__ == "__main__":
    main()
