"""K-fold MultilabelStratifiedKFold assignments, made once per dataset and shared by every model.

    python -m src.folds --config configs/tfidf.yaml     # make (or check) the fold file, print label counts

The file `folds/<dataset>_k<K>_s<seed>.csv` holds `id,fold` in train.csv order. An existing file is reused
after checking that it covers exactly this dataset's ids; it is never overwritten.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from src.config import Config, load_config
from src.data import Competition, fold_path, load_competition
from src.errors import ArgParser, UserError, cli
from src.fileio import read_csv, write_csv
from src.rundir import RunDir
from src.runguard import check_run_data


def make_folds(ids: list[str], Y: np.ndarray, n_folds: int, seed: int) -> pd.DataFrame:
    """Seeded MultilabelStratifiedKFold: a DataFrame (id, fold) in the order of `ids`."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    if n_folds < 2 or n_folds > len(ids):
        raise UserError(f"cannot make {n_folds} folds from {len(ids)} rows")
    fold = np.full(len(ids), -1, dtype=np.int64)
    mskf = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, valid) in enumerate(mskf.split(np.zeros(len(ids)), Y)):
        fold[valid] = k
    return pd.DataFrame({"id": list(ids), "fold": fold})


def check_folds(folds: pd.DataFrame, comp: Competition, path: Path | str = "fold file") -> pd.DataFrame:
    """Check a fold table against a dataset; return it in train.csv order."""
    if list(folds.columns) != ["id", "fold"]:
        raise UserError(f"{path} must have columns id,fold, got {list(folds.columns)}")
    folds = folds.astype({"id": str})
    if folds["id"].duplicated().any():
        raise UserError(f"{path} has duplicate ids")
    ids, train_ids = set(folds["id"]), set(comp.train_ids)
    if ids != train_ids:
        raise UserError(
            f"{path} was made for another dataset: {len(ids - train_ids)} of its ids are not in train.csv "
            f"and {len(train_ids - ids)} train ids are missing from it"
        )
    k = folds["fold"].nunique()
    if sorted(folds["fold"].unique()) != list(range(k)):
        raise UserError(f"{path} folds must be 0..K-1, got {sorted(folds['fold'].unique())}")
    return folds.set_index("id").loc[comp.train_ids].reset_index()


def load_folds(path: str | Path, comp: Competition) -> pd.DataFrame:
    return check_folds(read_csv(path, str(path), dtype={"id": str}), comp, path)


def ensure_folds(cfg: Config, comp: Competition, verbose: bool = True) -> tuple[pd.DataFrame, Path]:
    """Load the config's fold file, or make and save it if it does not exist yet."""
    path = fold_path(cfg)
    if path.is_file():
        folds = load_folds(path, comp)
        if folds["fold"].nunique() != cfg.folds.n_folds:
            raise UserError(f"{path} has {folds['fold'].nunique()} folds, config asks for {cfg.folds.n_folds}")
        return folds, path
    folds = make_folds(comp.train_ids, comp.Y, cfg.folds.n_folds, cfg.folds.seed)
    write_csv(path, folds)
    if verbose:
        print(f"wrote fold file {path}")
    return folds, path


def fold_label_counts(folds: pd.DataFrame, comp: Competition) -> pd.DataFrame:
    """Positive count of each label in each fold (rows: folds, plus rows count and the max-min spread)."""
    counts = pd.DataFrame(comp.Y, columns=comp.labels).groupby(folds["fold"].to_numpy()).sum()
    rows = "rows"
    while rows in counts.columns:  # a label may be called "rows"
        rows = f"({rows})"
    counts[rows] = folds.groupby("fold").size().to_numpy()
    counts.index.name = "fold"
    counts.loc["spread"] = counts.max() - counts.min()
    return counts


def counts_text(counts: pd.DataFrame, width: int = 120) -> str:
    """The fold table as text: folds as rows, or (wider than `width`, e.g. GoEmotions' 28 labels) labels as rows,
    so a terminal or log never wraps it."""
    text = counts.to_string()
    return text if max(map(len, text.splitlines())) <= width else counts.T.to_string()


def parse_folds(text: str, n_folds: int | None = None) -> list[int]:
    """`--folds 0,3` or `0-4,7` as a list of folds, taken literally: no empty item, each a plain number or range
    (in 0..n_folds-1 when given), none twice; a selection naming no fold is an error."""
    items = [x.strip() for x in text.split(",")]
    if not all(re.fullmatch(r"[0-9]+(-[0-9]+)?", x) for x in items):
        raise UserError(f"--folds must be comma-separated fold numbers or ranges like 0,3 or 0-4, got {text!r}")
    folds = []
    for x in items:
        lo, _, hi = x.partition("-")
        if hi and int(hi) < int(lo):
            raise UserError(f"--folds range {x!r} runs backwards: write {hi}-{lo}")
        folds += range(int(lo), int(hi or lo) + 1)
    twice = sorted({k for k in folds if folds.count(k) > 1})
    if twice:
        raise UserError(f"--folds names fold {twice[0]} twice: {text!r}")
    bad = [k for k in folds if n_folds is not None and k >= n_folds]
    if bad:
        raise UserError(f"--folds {text!r} names fold {bad[0]}, outside 0..{n_folds - 1} (folds.n_folds={n_folds})")
    return folds


def folds_for_run(cfg: Config) -> list[int]:
    """The folds this run trains: `folds.run`, or all of them."""
    run = cfg.folds.run or list(range(cfg.folds.n_folds))
    bad = [k for k in run if not 0 <= k < cfg.folds.n_folds]
    if bad:
        raise UserError(f"folds.run has folds outside 0..{cfg.folds.n_folds - 1}: {bad}")
    return run


@cli
def main(argv: list[str] | None = None) -> None:
    p = ArgParser(prog="python -m src.folds", description="Make or check the fold file.")
    p.add_argument("--config", default=None)
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    a = p.parse_args(argv)
    cfg = load_config(a.config, a.overrides)
    comp = load_competition(cfg.data)
    check_run_data(cfg, comp, RunDir.of(cfg))  # train.sh's first step: another dataset's run folder writes nothing
    folds, path = ensure_folds(cfg, comp)
    print(f"{path}: {len(folds)} rows, {cfg.folds.n_folds} folds; positives per label and fold:")
    print(counts_text(fold_label_counts(folds, comp)))


if __name__ == "__main__":
    main()
