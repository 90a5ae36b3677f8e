"""The LLM / probe report: readout methods side by side, label steps, label counts, calibration.

Written by each llm/llm_finetune/probe run into checkpoints/<exp>/report/ (and analysis.json); also

    python -m src.llm.analysis report --config X [key=value ...]          # redo a run's report
    python -m src.llm.analysis compare --config X --runs A,B,C [--out DIR]  # several runs on their common rows

Per method: macro-F1 at per-label thresholds tuned on the OOF rows (as finalize does) and at 0.5, expected
calibration error (ECE: 10 equal-width bins over every row x label cell), labels predicted per row against gold.
Per label step (multi-label prompt): rows reaching it, mean entropy of the step's label distribution (bits),
mean top probability, mean number of labels at or above the tuned threshold and above 0.5, label mass.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from src import metrics, thresholds  # noqa: E402
from src.config import Config, ThresholdConfig, load_config  # noqa: E402
from src.errors import ArgParser, UserError, cli  # noqa: E402
from src.fileio import write_csv, write_json  # noqa: E402
from src.llm.outputs import methods_dir  # noqa: E402
from src.report import save_png  # noqa: E402
from src.rundir import RunDir, read_probs  # noqa: E402


def ece(Y: np.ndarray, P: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over all cells: sum over bins of |mean p - mean y| weighted by bin size."""
    y, p = np.asarray(Y, float).ravel(), np.asarray(P, float).ravel()
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            total += m.mean() * abs(p[m].mean() - y[m].mean())
    return float(total)


def reliability(Y: np.ndarray, P: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y, p = np.asarray(Y, float).ravel(), np.asarray(P, float).ravel()
    which = np.minimum((p * bins).astype(int), bins - 1)
    conf, acc, n = [], [], []
    for b in range(bins):
        m = which == b
        conf.append(p[m].mean() if m.any() else np.nan)
        acc.append(y[m].mean() if m.any() else np.nan)
        n.append(int(m.sum()))
    return np.array(conf), np.array(acc), np.array(n)


def method_summary(Y: np.ndarray, P: np.ndarray, tcfg: ThresholdConfig, labels: list[str]) -> dict:
    th = thresholds.tune(Y, P, tcfg)
    pred = thresholds.predict(P, th, tcfg, labels)
    return {"macro_f1": metrics.macro_f1(Y, pred), "macro_f1_at_0.5": metrics.macro_f1(Y, P >= 0.5),
            "micro_f1": metrics.micro_f1(Y, pred), "ece": ece(Y, P),
            "labels_per_row": float(pred.sum(1).mean()), "gold_labels_per_row": float(Y.sum(1).mean()),
            "rows": int(len(Y)), "thresholds": np.round(th, 4).tolist()}


def run_methods(rd: RunDir, labels: list[str], model_type: str = "") -> dict[str, pd.DataFrame]:
    """A run's readout methods (methods/<m>_oof.csv), or its oof.csv as one method."""
    files = sorted(methods_dir(rd).glob("*_oof.csv"))
    if files:
        return {f.name[: -len("_oof.csv")]: read_probs(f, labels) for f in files}
    if not rd.oof.is_file():
        raise UserError(f"{rd.oof} does not exist: run {rd.root.name} first")
    return {model_type or rd.root.name: read_probs(rd.oof, labels)}


def gold(comp, ids) -> np.ndarray:
    row = pd.Series(np.arange(len(comp.train)), index=comp.train_ids)
    return comp.Y[row.loc[list(ids)].to_numpy()]


def step_table(records: list[dict], th: np.ndarray, n_labels: int) -> pd.DataFrame:
    """Per label step: rows reaching it, entropy (bits), top probability, labels passing, label mass."""
    rows = []
    n_steps = max((len(r.get("steps", [])) for r in records), default=0)
    for s in range(n_steps):
        dists = [np.asarray(r["steps"][s]) for r in records if len(r.get("steps", [])) > s]
        masses = [r["mass"][s] for r in records if len(r.get("steps", [])) > s]
        ent = [float(-(d[d > 0] * np.log2(d[d > 0])).sum()) for d in dists]
        rows.append({"step": s, "rows": len(dists), "entropy_bits": float(np.mean(ent)),
                     "max_entropy_bits": float(np.log2(len(dists[0]))),
                     "top_prob": float(np.mean([d.max() for d in dists])),
                     "labels_over_threshold": float(np.mean([(d[:n_labels] >= th).sum() for d in dists])),
                     "labels_over_0.5": float(np.mean([(d[:n_labels] > 0.5).sum() for d in dists])),
                     "label_mass": float(np.mean(masses))})
    return pd.DataFrame(rows)


def plot_methods(table: pd.DataFrame, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(table) + 2), 3.6))
    x = np.arange(len(table))
    ax.bar(x - 0.2, table["macro_f1"], 0.4, label="tuned thresholds")
    ax.bar(x + 0.2, table["macro_f1_at_0.5"], 0.4, label="at 0.5")
    for i, v in enumerate(table["macro_f1"]):
        ax.text(i - 0.2, v + 0.01, f"{v:.3f}", ha="center", fontsize=7)
    ax.set_xticks(x, table.index, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("OOF macro-F1")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return save_png(fig, path)


def plot_calibration(curves: dict[str, tuple], eces: dict[str, float], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    for name, (conf, acc, _) in curves.items():
        ax.plot(conf, acc, marker="o", ms=3, label=f"{name} (ECE {eces[name]:.3f})")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("fraction positive")
    ax.set_title("Calibration (all row x label cells)", fontsize=10)
    ax.legend(fontsize=7)
    return save_png(fig, path)


def plot_label_counts(Y: np.ndarray, preds: dict[str, np.ndarray], path: Path) -> Path:
    top = int(max([Y.sum(1).max(), *[p.sum(1).max() for p in preds.values()]])) + 1
    bins = np.arange(top + 1)
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * top + 3), 3.6))
    series = {"gold": Y.sum(1), **{k: v.sum(1) for k, v in preds.items()}}
    width = 0.8 / len(series)
    for i, (name, counts) in enumerate(series.items()):
        hist = np.bincount(counts.astype(int), minlength=top)[:top] / len(counts)
        ax.bar(bins[:-1] + (i - len(series) / 2 + 0.5) * width, hist, width, label=name)
    ax.set_xlabel("labels per row (tuned thresholds)")
    ax.set_ylabel("fraction of rows")
    ax.set_xticks(bins[:-1])
    ax.legend(fontsize=7)
    return save_png(fig, path)


def plot_steps(steps: pd.DataFrame, path: Path) -> Path:
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.plot(steps["step"], steps["entropy_bits"], marker="o", label="mean entropy")
    a.plot(steps["step"], steps["max_entropy_bits"], ls="--", c="grey", label="uniform")
    a.set_xlabel("label step")
    a.set_ylabel("bits")
    a.set_title("Entropy of the label distribution", fontsize=10)
    a.legend(fontsize=7)
    b.plot(steps["step"], steps["labels_over_threshold"], marker="o", label="labels >= tuned threshold")
    b.plot(steps["step"], steps["labels_over_0.5"], marker="s", label="labels > 0.5")
    b.plot(steps["step"], steps["top_prob"], marker="^", label="top probability")
    for s, n in zip(steps["step"], steps["rows"]):
        b.annotate(f"n={n}", (s, 0), fontsize=6, ha="center", va="bottom")
    b.set_xlabel("label step")
    b.set_title("Labels passing per step", fontsize=10)
    b.legend(fontsize=7)
    return save_png(fig, path)


def summarize(named: dict[str, pd.DataFrame], comp, tcfg: ThresholdConfig, report: Path | None, title: str):
    """Metrics of each method on the rows all methods share; plots into `report` (None: no plots)."""
    common = set.intersection(*(set(f["id"]) for f in named.values()))
    ids = [i for i in comp.train_ids if i in common]
    if not ids:
        raise UserError("the runs share no OOF rows")
    Y = gold(comp, ids)
    probs = {n: f.set_index("id").loc[ids, comp.labels].to_numpy(np.float64) for n, f in named.items()}
    stats = {n: method_summary(Y, P, tcfg, comp.labels) for n, P in probs.items()}
    table = pd.DataFrame(stats).T.drop(columns="thresholds")
    if report is None:
        return table, stats
    preds = {n: thresholds.predict(P, np.array(stats[n]["thresholds"]), tcfg, comp.labels) for n, P in probs.items()}
    plot_methods(table, report / "methods_f1.png", f"{title}: {len(ids)} OOF rows")
    plot_calibration({n: reliability(Y, P) for n, P in probs.items()}, {n: s["ece"] for n, s in stats.items()},
                     report / "calibration.png")
    plot_label_counts(Y, preds, report / "label_counts.png")
    return table, stats


def write_report(cfg: Config, comp, folds, rd: RunDir) -> dict:
    """The run's report: methods side by side, calibration, label counts, per-step table (multi prompt)."""
    from src.llm.outputs import read_jsonl, steps_path

    named = run_methods(rd, comp.labels, cfg.model_type)
    table, stats = summarize(named, comp, cfg.thresholds, rd.report if cfg.output.plots else None, cfg.exp)
    result = {"methods": {n: {k: v for k, v in s.items() if k != "thresholds"} for n, s in stats.items()}}
    main = cfg.llm.method if cfg.model_type in ("llm", "llm_finetune") and cfg.llm.prompt == "multi" else None
    if main in stats and steps_path(rd, "oof").is_file():
        records = [r for r in read_jsonl(steps_path(rd, "oof")) if r.get("steps")]
        steps = step_table(records, np.array(stats[main]["thresholds"]), len(comp.labels))
        if len(steps):
            if cfg.output.plots:
                plot_steps(steps, rd.report / "steps.png")
            write_csv(rd.report / "steps.csv", steps, float_format="%.4f")
            result["steps"] = steps.round(4).to_dict(orient="records")
            print(steps.round(3).to_string(index=False))
    write_csv(rd.report / "methods.csv", table.reset_index(names="method"), float_format="%.4f")
    write_json(rd.out / "analysis.json", result)
    print(table.astype(float).round(4).to_string())
    return result


def compare(cfg: Config, comp, runs: list[str], out: Path) -> pd.DataFrame:
    """Every method of every run, on the OOF rows they all share."""
    named = {}
    for exp in runs:
        rd = RunDir(Path(cfg.output.checkpoints_dir) / exp, Path(cfg.output.submissions_dir))
        if not rd.oof.is_file() and RunDir(rd.root, rd.submissions_dir, partial=True).oof.is_file():
            rd = RunDir(rd.root, rd.submissions_dir, partial=True)  # only a partial run: compare on its rows
            print(f"{exp}: using its partial run ({rd.out})")
        methods = run_methods(rd, comp.labels)
        for m, frame in methods.items():
            named[exp if len(methods) == 1 else f"{exp}:{m}"] = frame
    table, _ = summarize(named, comp, cfg.thresholds, out, "compare")
    write_csv(out / "compare.csv", table.reset_index(names="method"), float_format="%.4f")
    print(table.astype(float).round(4).to_string())
    return table


@cli
def main(argv: list[str] | None = None) -> None:
    from src.data import load_competition
    from src.folds import ensure_folds

    p = ArgParser(prog="python -m src.llm.analysis", description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["report", "compare"])
    p.add_argument("--config", default=None)
    p.add_argument("--runs", default="", help="compare: experiment names under checkpoints/, comma-separated")
    p.add_argument("--out", default=None, help="compare: output folder (default checkpoints/compare)")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    a = p.parse_intermixed_args(argv)
    cfg = load_config(a.config, a.overrides)
    comp = load_competition(cfg.data)
    if a.command == "report":
        folds, _ = ensure_folds(cfg, comp, verbose=False)
        write_report(cfg, comp, folds, RunDir.of(cfg))
    else:
        runs = [r.strip() for r in a.runs.split(",") if r.strip()]
        if not runs:
            raise UserError("compare needs --runs EXP1,EXP2,...")
        compare(cfg, comp, runs, Path(a.out or Path(cfg.output.checkpoints_dir) / "compare"))


if __name__ == "__main__":
    main()
