"""Submission CSVs: exactly sample_submission.csv's shape (same ids, order, columns), 0/1, validated first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from src.errors import ArgParser, UserError, cli
from src.fileio import read_csv, write_csv


def holds_floats(sample: pd.DataFrame) -> bool:
    """Whether the sample submission's label columns hold probabilities (a threshold-free metric's format)."""
    values = sample[sample.columns[1:]].apply(pd.to_numeric, errors="coerce")
    return bool(values.notna().all().all() and ((values % 1) != 0).any().any())


def validate(sub: pd.DataFrame, sample: pd.DataFrame, name: str = "submission", probabilities: bool = False) -> None:
    """Raise UserError (naming `name` and the first offending row) unless `sub` has sample's columns, ids in
    sample's order, and 0/1 labels (`probabilities`: numbers in [0, 1])."""
    if list(sub.columns) != list(sample.columns):
        raise UserError(f"{name}: columns {list(sub.columns)} differ from the sample's {list(sample.columns)}")
    id_col = sample.columns[0]
    if len(sub) != len(sample):
        raise UserError(f"{name} has {len(sub)} rows, the sample has {len(sample)}")
    got, want = sub[id_col].astype(str).to_numpy(), sample[id_col].astype(str).to_numpy()
    differ = np.flatnonzero(got != want)
    if len(differ):
        i = differ[0]
        raise UserError(f"{name}: ids are not the sample's ids in the sample's order ({len(differ)} rows differ; "
                        f"first at row {i + 1}: {got[i]!r} where the sample has {want[i]!r})")
    vals = sub[sample.columns[1:]]
    if probabilities:
        numbers = vals.apply(pd.to_numeric, errors="coerce")
        bad = numbers.isna() | (numbers < 0) | (numbers > 1)
    else:
        bad = vals.isna() | ~vals.isin([0, 1])
    if bad.any().any():
        i, j = np.argwhere(bad.to_numpy())[0]
        value = vals.iat[i, j]
        value = value.item() if hasattr(value, "item") else value
        what = "probabilities in [0, 1]" if probabilities else "0 or 1"
        raise UserError(f"{name}: labels must all be {what}; {int(bad.to_numpy().sum())} are not (first: "
                        f"{value!r} for label '{vals.columns[j]}', id {got[i]})")


def build(ids: list[str], preds: np.ndarray, sample: pd.DataFrame, probabilities: bool = False) -> pd.DataFrame:
    """A submission frame in sample's order from predictions indexed by `ids` (0/1 decisions, or probabilities)."""
    id_col, labels = sample.columns[0], list(sample.columns[1:])
    frame = pd.DataFrame(np.asarray(preds, dtype=np.float64 if probabilities else np.int64), columns=labels)
    frame.insert(0, id_col, list(ids))
    missing = set(sample[id_col]) - set(frame[id_col])
    if missing:
        raise UserError(f"predictions lack {len(missing)} test ids of the sample, e.g. {sorted(missing)[0]}")
    return frame.set_index(id_col).loc[sample[id_col]].reset_index()


def write(sub: pd.DataFrame, sample: pd.DataFrame, path: str | Path, probabilities: bool = False) -> Path:
    validate(sub, sample, f"refusing to write {path}", probabilities)
    return write_csv(path, sub, float_format="%.6g" if probabilities else None)


@cli
def main(argv: list[str] | None = None) -> None:
    p = ArgParser(prog="python -m src.submission", description="Validate a submission CSV.")
    p.add_argument("submission")
    p.add_argument("sample", help="sample_submission.csv")
    a = p.parse_args(argv)
    sample = read_csv(a.sample, dtype=str)
    sub = read_csv(a.submission, dtype={sample.columns[0]: str})
    validate(sub, sample, a.submission, probabilities=holds_floats(sample))
    print(f"{a.submission}: valid ({len(sub)} rows, {len(sub.columns) - 1} labels)")


if __name__ == "__main__":
    main()
