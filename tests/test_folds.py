import numpy as np
import pandas as pd
import pytest
from synth import make_competition

from src.config import load_config
from src.data import load_competition
from src.errors import UserError
from src.folds import ensure_folds, fold_label_counts, load_folds, make_folds


def setup(comp_dir, *overrides):
    cfg = load_config(None, [f"data.data_dir={comp_dir}", *overrides])
    return cfg, load_competition(cfg.data)


def test_same_seed_byte_identical_and_balanced(workdir, comp_dir):
    cfg, comp = setup(comp_dir)
    folds, path = ensure_folds(cfg, comp)
    first = path.read_bytes()
    path.unlink()
    _, path2 = ensure_folds(cfg, comp)
    assert path2 == path and path.read_bytes() == first
    assert path.name == "data_k10_s42.csv" and sorted(folds["fold"].unique()) == list(range(10))
    spread = fold_label_counts(folds, comp).loc["spread"]
    assert (spread[comp.labels] <= 2).all() and spread["rows"] <= 1


def test_other_seed_or_k_gives_new_file(workdir, comp_dir):
    cfg, comp = setup(comp_dir)
    _, p1 = ensure_folds(cfg, comp)
    cfg2, _ = setup(comp_dir, "folds.seed=7")
    f2, p2 = ensure_folds(cfg2, comp)
    cfg3, _ = setup(comp_dir, "folds.n_folds=5")
    f3, p3 = ensure_folds(cfg3, comp)
    assert len({p1, p2, p3}) == 3 and f3["fold"].nunique() == 5
    assert not (pd.read_csv(p1)["fold"] == f2["fold"]).all()


def test_fold_file_from_another_dataset(workdir, comp_dir, tmp_path):
    cfg, comp = setup(comp_dir)
    _, path = ensure_folds(cfg, comp)
    other = load_competition(load_config(None, [f"data.data_dir={make_competition(tmp_path / 'o', 150)}"]).data)
    with pytest.raises(UserError, match="made for another dataset"):
        load_folds(path, other)
    # an existing file under this dataset's name that no longer matches is refused, never overwritten
    pd.DataFrame({"id": [f"x{i}" for i in range(200)], "fold": np.arange(200) % 10}).to_csv(path, index=False)
    with pytest.raises(UserError, match="made for another dataset"):
        ensure_folds(cfg, comp)



def test_a_wide_fold_table_turns_so_a_terminal_never_wraps_it(workdir, tmp_path):
    from src.folds import counts_text

    many = [f"emotion_{i}" for i in range(28)]
    comp = load_competition(load_config(None, [f"data.data_dir={make_competition(tmp_path / 'd', labels=many)}"]).data)
    folds = make_folds(comp.train_ids, comp.Y, 5, 42)
    text = counts_text(fold_label_counts(folds, comp))
    assert max(map(len, text.splitlines())) <= 120 and len(text.splitlines()) == 28 + 2  # header, labels, rows
    assert "emotion_27" in text and "spread" in text.splitlines()[0]
    few = counts_text(fold_label_counts(folds, load_competition(load_config(
        None, [f"data.data_dir={make_competition(tmp_path / 'e')}"]).data)))
    assert few.splitlines()[-1].startswith("spread")  # narrow: folds as rows, as before
