"""A run's report: ROC curve per label, per-label confusion matrices, per-label F1 bars (PNG), the worst errors per
label (errors.csv) and, for transformers, token lengths against `model.max_length`."""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from src import metrics  # noqa: E402
from src.fileio import atomic_path  # noqa: E402


def save_png(fig, path: Path) -> Path:
    """Save `fig` (constrained layout: titles never overlap) and close it; an unchanged picture is not rewritten."""
    fig.set_layout_engine("constrained")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    if not (Path(path).is_file() and Path(path).read_bytes() == buf.getvalue()):
        with atomic_path(path) as tmp:
            tmp.write_bytes(buf.getvalue())
    return path


def _grid(n: int, size: float = 2.6):
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes.flat


def roc_curves(Y: np.ndarray, probs: np.ndarray, labels: list[str], path: Path) -> Path:
    fig, axes = _grid(len(labels))
    for j, (ax, lab) in enumerate(zip(axes, labels)):
        y, p = Y[:, j].astype(bool), probs[:, j]
        order = np.argsort(-p, kind="stable")
        tpr = np.r_[0, np.cumsum(y[order]) / max(y.sum(), 1)]
        fpr = np.r_[0, np.cumsum(~y[order]) / max((~y).sum(), 1)]
        auc = metrics.roc_auc(y, p)
        ax.plot(fpr, tpr, lw=1.5)
        ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
        ax.set_title(f"{lab}  AUC {auc:.3f}", fontsize=9)
        ax.set_xlabel("FPR", fontsize=8)
        ax.set_ylabel("TPR", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("ROC per label (out-of-fold)")
    return save_png(fig, path)


def confusion_matrices(Y: np.ndarray, P: np.ndarray, labels: list[str], path: Path) -> Path:
    fig, axes = _grid(len(labels), 2.2)
    for j, (ax, lab) in enumerate(zip(axes, labels)):
        y, p = Y[:, j].astype(bool), P[:, j].astype(bool)
        m = np.array([[(~y & ~p).sum(), (~y & p).sum()], [(y & ~p).sum(), (y & p).sum()]])
        ax.imshow(m, cmap="Blues")
        for (r, c), v in np.ndenumerate(m):
            ax.text(c, r, str(v), ha="center", va="center", fontsize=9,
                    color="white" if v > m.max() / 2 else "black")
        ax.set_xticks([0, 1], ["pred 0", "pred 1"], fontsize=7)
        ax.set_yticks([0, 1], ["true 0", "true 1"], fontsize=7)
        ax.set_title(lab, fontsize=9)
    fig.suptitle("Confusion matrix per label (out-of-fold, tuned thresholds)")
    return save_png(fig, path)


def f1_bars(table: pd.DataFrame, path: Path, title: str = "Per-label F1 (out-of-fold)") -> Path:
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(table)), 3.5))
    ax.bar(table.index, table["f1"], color="tab:blue")
    ax.axhline(table["f1"].mean(), c="tab:red", ls="--", lw=1, label=f"macro-F1 {table['f1'].mean():.3f}")
    for i, v in enumerate(table["f1"]):
        ax.text(i, v + 0.01, f"{v:.2f}", ha="center", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.set_title(title)
    ax.legend(fontsize=8)
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    return save_png(fig, path)


def write_all(report_dir: Path, Y, probs, P, table: pd.DataFrame, labels: list[str]) -> list[Path]:
    return [
        roc_curves(Y, probs, labels, report_dir / "roc.png"),
        confusion_matrices(Y, P, labels, report_dir / "confusion.png"),
        f1_bars(table, report_dir / "f1_per_label.png"),
    ]


def checkpoint_curves(tables: dict[int, pd.DataFrame], selected: dict[int, int], path: Path) -> Path:
    """Val loss and macro-F1 (tuned, and at 0.5 dashed) over steps, one line per fold; selected steps circled."""
    fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (k, t) in enumerate(sorted(tables.items())):
        color = plt.cm.tab10(i % 10)
        ax_loss.plot(t["step"], t["val_loss"], marker=".", color=color, label=f"fold {k}")
        ax_f1.plot(t["step"], t["f1_tuned"], marker=".", color=color, label=f"fold {k}")
        ax_f1.plot(t["step"], t["f1_at_0.5"], ls="--", lw=0.8, color=color)
        sel = t[t["step"] == selected.get(k)]
        ax_loss.scatter(sel["step"], sel["val_loss"], s=90, facecolors="none", edgecolors=color, lw=1.5)
        ax_f1.scatter(sel["step"], sel["f1_tuned"], s=90, facecolors="none", edgecolors=color, lw=1.5)
    ax_loss.set(xlabel="step", ylabel="val loss", title="Validation loss")
    ax_f1.set(xlabel="step", ylabel="macro-F1", title="Macro-F1 (tuned thresholds; dashed: at 0.5)")
    ax_f1.legend(fontsize=7, ncol=2)
    fig.suptitle("Checkpoints per fold (circled: selected)")
    return save_png(fig, path)


def f1_comparison(per_label_f1: dict[str, pd.Series], path: Path, title: str = "Per-label OOF F1") -> Path:
    """Grouped bars of per-label F1 for several runs (e.g. blend members and the blend)."""
    names = list(per_label_f1)
    labels = list(per_label_f1[names[0]].index)
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(7, 0.7 * len(labels) * max(1, len(names) / 2)), 3.8))
    x = np.arange(len(labels))
    for i, name in enumerate(names):
        f1 = per_label_f1[name].reindex(labels)
        ax.bar(x + (i - (len(names) - 1) / 2) * width, f1, width, label=f"{name} ({f1.mean():.3f})")
    ax.set_xticks(x, labels)
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.set_title(title)
    ax.legend(fontsize=7, title="run (macro-F1)", title_fontsize=7)
    return save_png(fig, path)


def error_table(ids: list[str], texts: list[str], Y: np.ndarray, probs: np.ndarray, thresholds: np.ndarray,
                labels: list[str], per_label: int = 10) -> pd.DataFrame:
    """The worst OOF errors of each label: its `per_label` most confident false positives (highest probability
    above the threshold on a negative row) and false negatives (lowest probability below it on a positive row)."""
    rows = []
    for j, lab in enumerate(labels):
        p, y, t = probs[:, j], Y[:, j].astype(bool), thresholds[j]
        for kind, wrong, order in (("false positive", ~y & (p >= t), -p), ("false negative", y & (p < t), p)):
            idx = np.flatnonzero(wrong)
            for i in idx[np.argsort(order[idx], kind="stable")][:per_label]:
                rows.append({"label": lab, "error": kind, "id": ids[i], "prob": round(float(p[i]), 4),
                             "threshold": round(float(t), 4),
                             "true_labels": " ".join(labels[c] for c in np.flatnonzero(Y[i])) or "(none)",
                             "text": texts[i][:300]})
    return pd.DataFrame(rows, columns=["label", "error", "id", "prob", "threshold", "true_labels", "text"])


def token_lengths(lengths: np.ndarray, max_length: int, path: Path | None = None, title: str = "") -> dict:
    """Percentiles of token counts (before truncation) and the share cut by `max_length`; with `path`, a histogram
    PNG."""
    lengths = np.asarray(lengths)
    stats = {f"p{q}": int(np.percentile(lengths, q)) for q in (50, 90, 95, 99)}
    stats |= {"max": int(lengths.max()), "texts": int(len(lengths)), "max_length": int(max_length),
              "truncated_share": round(float((lengths > max_length).mean()), 4)}
    if path is None:
        return stats
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.hist(lengths, bins=min(60, max(10, len(np.unique(lengths)))), color="tab:blue")
    ax.axvline(max_length, c="tab:red", ls="--", label=f"max_length {max_length}: "
                                                       f"{100 * stats['truncated_share']:.1f}% truncated")
    ax.axvline(stats["p95"], c="grey", ls=":", label=f"95th percentile {stats['p95']}")
    ax.set(xlabel="tokens per text", ylabel="texts", title=title)
    ax.legend(fontsize=8)
    save_png(fig, path)
    return stats
