"""Where a run's files live (`checkpoints/<exp>/...`, `submissions/<exp>.csv`) and the probability-file format.

    checkpoints/<exp>/config.yaml         resolved config
                      run.json             the data (name, folder, train ids, labels) and fold file it is made from
                      fold<k>/step<N>/     a checkpoint per evaluation (weights or adapter + head, metrics.json)
                      selection.yaml       fold -> step (rule or manual pick)
                      oof.csv              id, fold, one probability per label; every train id once
                      test.csv             id, one probability per label; mean over fold models
                      test_folds.npz       each fold model's own test probabilities (folds, ids, labels, probs
                                           [folds, test rows, labels]): a teacher's predictions made without fold k
                      thresholds.json, metrics.json, per_label.csv, report/*.png
                      partial/             the same outputs (config.yaml ... report/) of a partial run
    submissions/<exp>.csv

A partial run (`folds.run` naming some folds, or an LLM run on a subset of rows) writes its outputs under
`partial/`, so it never replaces a complete run's oof.csv, test.csv or submission; fold checkpoints are shared.
Probabilities are checked (finite, in [0, 1]) whenever they are written or read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from src.config import Config
from src.errors import UserError
from src.fileio import atomic_path, read_csv, write_csv


def partial_reason(cfg: Config) -> str:
    """Why a run covers only part of the data ("" for a complete run): some folds, or a subset of LLM rows."""
    run = set(cfg.folds.run)
    if run and run != set(range(cfg.folds.n_folds)):
        return f"folds {sorted(run)} of {cfg.folds.n_folds}"
    if cfg.model_type not in ("llm", "llm_finetune"):
        return ""
    train, test = cfg.llm.max_train_rows, cfg.llm.max_test_rows
    parts = ([f"llm.max_train_rows={train}: {train} train rows"] if train > 0 else []) + (
        [f"llm.max_test_rows={test}: " + ("no test rows" if test < 0 else f"{test} test rows")] if test else [])
    return ", ".join(parts)


@dataclass(frozen=True)
class RunDir:
    root: Path
    submissions_dir: Path
    partial: bool = False  # outputs under root/partial/, no submission

    @classmethod
    def of(cls, cfg: Config) -> RunDir:
        return cls(Path(cfg.output.checkpoints_dir) / cfg.exp, Path(cfg.output.submissions_dir),
                   bool(partial_reason(cfg)))

    out = property(lambda self: self.root / "partial" if self.partial else self.root)  # the run's outputs
    config = property(lambda self: self.out / "config.yaml")
    oof = property(lambda self: self.out / "oof.csv")
    test = property(lambda self: self.out / "test.csv")
    test_folds = property(lambda self: self.out / "test_folds.npz")
    thresholds = property(lambda self: self.out / "thresholds.json")
    metrics = property(lambda self: self.out / "metrics.json")
    per_label = property(lambda self: self.out / "per_label.csv")
    report = property(lambda self: self.out / "report")
    selection = property(lambda self: self.root / "selection.yaml")
    data_record = property(lambda self: self.root / "run.json")  # the data and fold file the run is made from
    submission = property(lambda self: self.submissions_dir / f"{self.root.name}.csv")  # complete runs only

    def fold(self, k: int) -> Path:
        return self.root / f"fold{k}"

    def step(self, k: int, step: int) -> Path:
        return self.fold(k) / f"step{step}"


def checkpoint_dirs(fold_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of a fold's finished checkpoints (`step<N>/` holding metrics.json), by step."""
    if not fold_dir.is_dir():
        return []
    found = [(int(d.name[4:]), d) for d in fold_dir.glob("step*") if d.name[4:].isdigit()]
    return sorted((s, d) for s, d in found if (d / "metrics.json").is_file())


def check_probs(probs: np.ndarray, labels: list[str], what: str, ids=None) -> np.ndarray:
    """`probs` as float64 [rows, labels]; NaN, infinite or out-of-[0, 1] values raise a UserError naming `what`."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(labels):
        raise UserError(f"{what}: probabilities have shape {probs.shape}, expected [rows, {len(labels)} labels]")
    bad = ~np.isfinite(probs) | (probs < 0) | (probs > 1)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        kind = "NaN" if np.isnan(probs[row, col]) else "infinite" if np.isinf(probs[row, col]) else "outside [0, 1]"
        where = f"id {ids[row]}" if ids is not None else f"row {row}"
        raise UserError(f"{what}: {int(bad.sum())} probabilities are NaN, infinite or outside [0, 1] (first: "
                        f"{kind} {float(probs[row, col])!r} for label '{labels[col]}', {where}); a diverged model or a "
                        "damaged file: retrain, or recompute the file")
    return probs


def write_probs(path: Path, ids: list[str], probs: np.ndarray, labels: list[str], folds=None) -> Path:
    """Probability file: `id`, optional `fold`, then one column per label (checked before anything is written)."""
    probs = check_probs(probs, labels, f"refusing to write {path}", list(ids))
    if len(ids) != len(probs):
        raise ValueError(f"{path}: {len(ids)} ids for {len(probs)} rows of probabilities")
    frame = pd.DataFrame(probs, columns=labels)
    if folds is not None:
        frame.insert(0, "fold", np.asarray(folds, dtype=np.int64))
    frame.insert(0, "id", list(ids))
    return write_csv(path, frame, float_format="%.6g")


def _float(cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        return np.nan


def read_probs(path: Path, labels: list[str]) -> pd.DataFrame:
    """A probability file with its `id` column as text and every label column checked (numbers in [0, 1])."""
    frame = read_csv(path, str(path), dtype=str)
    missing = [c for c in ("id", *labels) if c not in frame.columns]
    if missing:
        raise UserError(f"{path} lacks columns {missing}")
    if frame["id"].isna().any():
        raise UserError(f"{path} has rows without an id")
    values = frame[labels].apply(pd.to_numeric, errors="coerce")
    text = frame[labels].notna() & values.isna()
    for col in text.columns[text.any()]:  # "nan", "inf": numbers to float(), refused below by check_probs
        values.loc[text[col], col] = frame.loc[text[col], col].map(_float)
    text = frame[labels].notna() & values.isna() & ~frame[labels].apply(lambda c: c.str.strip().str.lower() == "nan")
    if text.any().any():
        col = text.any().idxmax()
        raise UserError(f"{path}: column '{col}' holds non-numbers, e.g. {frame.loc[text[col], col].iloc[0]!r}")
    check_probs(values.to_numpy(), labels, str(path), frame["id"].tolist())
    frame[labels] = values
    if "fold" in frame.columns:
        fold = pd.to_numeric(frame["fold"], errors="coerce")
        if fold.isna().any() or not (fold == fold.round()).all():
            raise UserError(f"{path}: column 'fold' must hold fold numbers")
        frame["fold"] = fold.astype(np.int64)
    return frame


def write_fold_outputs(
    rd: RunDir, comp, folds: pd.DataFrame, per_fold: dict[int, tuple[np.ndarray, np.ndarray]]
) -> None:
    """Write oof.csv (held-out rows of the given folds) and test.csv (mean of their test probabilities).

    `per_fold[k] = (probs for the rows of fold k in train order, probs for test.csv's rows)`.
    """
    fold = folds["fold"].to_numpy()
    ids, oof_probs, oof_fold = [], [], []
    for k in sorted(per_fold):
        rows = np.flatnonzero(fold == k)
        valid, _ = per_fold[k]
        if len(valid) != len(rows):
            raise ValueError(f"fold {k}: {len(valid)} held-out probabilities for {len(rows)} rows")
        ids += [comp.train_ids[i] for i in rows]
        oof_probs.append(valid)
        oof_fold += [k] * len(rows)
    write_probs(rd.oof, ids, np.concatenate(oof_probs), comp.labels, oof_fold)
    ks = sorted(per_fold)
    write_test_folds(rd, comp.test_ids, comp.labels, {k: per_fold[k][1] for k in ks})
    write_probs(rd.test, comp.test_ids, np.mean([per_fold[k][1] for k in ks], axis=0), comp.labels)


def write_test_folds(rd: RunDir, ids: list[str], labels: list[str], per_fold: dict[int, np.ndarray] | None) -> Path:
    """test_folds.npz: each fold model's test probabilities (checked), for teachers that must not have seen a fold;
    `per_fold` None (no per-fold predictions): a file left by an earlier run under this name is removed."""
    if per_fold is None:
        rd.test_folds.unlink(missing_ok=True)
        return rd.test_folds
    ks = sorted(per_fold)
    probs = np.stack([check_probs(per_fold[k], labels, f"refusing to write {rd.test_folds} (fold {k})", list(ids))
                      for k in ks]).astype(np.float32)
    with atomic_path(rd.test_folds) as tmp, open(tmp, "wb") as f:
        np.savez(f, folds=np.array(ks, dtype=np.int64), ids=np.array(ids, dtype=str),
                 labels=np.array(labels, dtype=str), probs=probs)
    return rd.test_folds


def read_test_folds(rd: RunDir, ids: list[str], labels: list[str]) -> dict[int, np.ndarray] | None:
    """{fold: test probabilities in `ids` order} from test_folds.npz; None if the run has none (made before this
    file existed: rerun its predict step); a file for other test ids or labels, or damaged, is a UserError."""
    path = rd.test_folds
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            folds, file_ids, file_labels, probs = z["folds"], z["ids"].tolist(), z["labels"].tolist(), z["probs"]
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{path} is damaged ({e}); rerun the run's predict step to rewrite it") from None
    if sorted(file_labels) != sorted(labels) or sorted(file_ids) != sorted(ids) or len(set(file_ids)) != len(file_ids):
        raise UserError(f"{path} holds other labels or test ids than test.csv: rerun the run on this data")
    order = pd.Series(range(len(file_ids)), index=file_ids).loc[list(ids)].to_numpy()
    cols = [file_labels.index(lab) for lab in labels]  # label columns matched by name, whatever their order
    return {int(k): check_probs(p[order][:, cols], labels, f"{path} (fold {int(k)})", list(ids))
            for k, p in zip(folds, probs)}
