"""Where a run's files live (`checkpoints/<exp>/...`, `submissions/<exp>.csv`) and the probability-file format.

    checkpoints/<exp>/config.yaml         resolved config
                      fold<k>/step<N>/     a checkpoint per evaluation (weights or adapter + head, metrics.json)
                      selection.yaml       fold -> step (rule or manual pick)
                      oof.csv              id, fold, one probability per label; every train id once
                      test.csv             id, one probability per label; mean over fold models
                      thresholds.json, metrics.json, per_label.csv, report/*.png
    submissions/<exp>.csv
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from src.config import Config
from src.errors import UserError
from src.fileio import read_csv, write_csv


@dataclass(frozen=True)
class RunDir:
    root: Path
    submissions_dir: Path

    @classmethod
    def of(cls, cfg: Config) -> RunDir:
        return cls(Path(cfg.output.checkpoints_dir) / cfg.exp, Path(cfg.output.submissions_dir))

    config = property(lambda self: self.root / "config.yaml")
    oof = property(lambda self: self.root / "oof.csv")
    test = property(lambda self: self.root / "test.csv")
    thresholds = property(lambda self: self.root / "thresholds.json")
    metrics = property(lambda self: self.root / "metrics.json")
    per_label = property(lambda self: self.root / "per_label.csv")
    selection = property(lambda self: self.root / "selection.yaml")
    report = property(lambda self: self.root / "report")
    submission = property(lambda self: self.submissions_dir / f"{self.root.name}.csv")

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


def write_probs(path: Path, ids: list[str], probs: np.ndarray, labels: list[str], folds=None) -> Path:
    """Probability file: `id`, optional `fold`, then one column per label."""
    frame = pd.DataFrame(np.asarray(probs, dtype=np.float64), columns=labels)
    if folds is not None:
        frame.insert(0, "fold", np.asarray(folds, dtype=np.int64))
    frame.insert(0, "id", list(ids))
    return write_csv(path, frame, float_format="%.6g")


def read_probs(path: Path, labels: list[str]) -> pd.DataFrame:
    frame = read_csv(path, str(path), dtype={"id": str})
    missing = [lab for lab in labels if lab not in frame.columns]
    if missing:
        raise UserError(f"{path} lacks probability columns {missing}")
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
    test = np.mean([per_fold[k][1] for k in sorted(per_fold)], axis=0)
    write_probs(rd.test, comp.test_ids, test, comp.labels)
