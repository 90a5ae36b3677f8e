"""Files of an LLM/probe run besides oof.csv and test.csv.

    checkpoints/<exp>/methods/<method>_oof.csv, <method>_test.csv   every readout method (same format as oof.csv)
    checkpoints/<exp>/steps_oof.jsonl, steps_test.jsonl             per row: answer text, per-step distributions

A run on a subset of rows (llm.max_train_rows, llm.max_test_rows) is partial: these files, oof.csv and test.csv
go under checkpoints/<exp>/partial/ and get thresholds and metrics but no submission (src/rundir.py). With
llm.max_test_rows = -1 no test.csv is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from src.errors import UserError
from src.fileio import atomic_path, read_utf8
from src.rundir import RunDir, write_probs, write_test_folds


def methods_dir(rd: RunDir) -> Path:
    return rd.out / "methods"


def steps_path(rd: RunDir, split: str) -> Path:
    return rd.out / f"steps_{split}.jsonl"


def write_jsonl(path: Path, records: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    """One JSON object per line; a missing, non-UTF-8 or damaged file is a UserError naming the file and line."""
    text = read_utf8(path, "step log")
    records = []
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UserError(f"{path} line {i} is not valid JSON (truncated or corrupted?): {e.msg}") from None
    return records


def write_outputs(rd: RunDir, comp, folds, main: str, train_rows: np.ndarray, oof: dict[str, np.ndarray],
                  test_rows: np.ndarray | None, test: dict[str, np.ndarray] | None) -> None:
    """oof.csv/test.csv from method `main`, and every method under methods/. Rows are indices into train/test."""
    for stale in methods_dir(rd).glob("*.csv"):  # methods of an earlier run under this name
        stale.unlink()
    write_test_folds(rd, comp.test_ids, comp.labels, None)  # scored without training: no per-fold predictions
    fold = folds["fold"].to_numpy()[train_rows]
    ids = [comp.train_ids[i] for i in train_rows]
    for name, probs in oof.items():
        write_probs(methods_dir(rd) / f"{name}_oof.csv", ids, probs, comp.labels, fold)
    write_probs(rd.oof, ids, oof[main], comp.labels, fold)
    if test is None:
        rd.test.unlink(missing_ok=True)  # no stale test.csv from an earlier run
        return
    test_ids = [comp.test_ids[i] for i in test_rows]
    for name, probs in test.items():
        write_probs(methods_dir(rd) / f"{name}_test.csv", test_ids, probs, comp.labels)
    write_probs(rd.test, test_ids, test[main], comp.labels)
