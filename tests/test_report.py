"""The run report's tables: the worst OOF errors per label, token lengths against model.max_length (issue 14)."""

import numpy as np
import pandas as pd

from src import report
from src.config import load_config
from src.pipeline import run


def test_error_table_lists_the_most_confident_mistakes_first(tmp_path):
    Y = np.array([[1, 0], [0, 0], [1, 1], [0, 1], [0, 0]])
    probs = np.array([[0.9, 0.2], [0.8, 0.1], [0.2, 0.4], [0.6, 0.7], [0.1, 0.55]])
    t = report.error_table(list("abcde"), ["ta", "tb", "tc", "td", "te"], Y, probs, np.array([0.5, 0.5]), ["x", "y"])
    x = t[t["label"] == "x"]
    assert list(zip(x["error"], x["id"])) == [("false positive", "b"), ("false positive", "d"),
                                              ("false negative", "c")]
    y = t[t["label"] == "y"]
    assert list(zip(y["error"], y["id"], y["prob"])) == [("false positive", "e", 0.55), ("false negative", "c", 0.4)]
    assert t.loc[t["id"] == "c", "true_labels"].iloc[0] == "x y" and t.loc[t["id"] == "e", "true_labels"].iloc[0] == \
        "(none)"


def test_finalize_writes_the_error_table_with_texts(workdir, comp_dir):
    run(load_config(None, [f"data.data_dir={comp_dir}", "exp=e", "folds.n_folds=5", "tfidf.min_df=1",
                           "output.plots=false"]))
    errors = pd.read_csv(workdir / "checkpoints/e/report/errors.csv", dtype={"id": str})
    train = pd.read_csv(comp_dir / "train.csv", dtype=str).set_index("ID")
    assert set(errors["error"]) <= {"false positive", "false negative"} and len(errors) > 0
    row = errors.iloc[0]
    assert train.loc[row["id"], "Tweet"].startswith(row["text"]) and train.loc[row["id"], row["label"]] == \
        ("0" if row["error"] == "false positive" else "1")


def test_token_lengths_give_percentiles_and_the_truncated_share(tmp_path):
    stats = report.token_lengths(np.arange(1, 101), 80, tmp_path / "t.png", "t")
    assert stats["p50"] == 50 and stats["max"] == 100 and stats["truncated_share"] == 0.2
    assert (tmp_path / "t.png").stat().st_size > 1000
