"""Finished runs read as members of a blend, a stack or a teacher: their OOF and test probabilities, each checked
(complete, made on the same folds, from the data given now, not being rewritten by another process)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from src import tracking
from src.config import Config, load_config, load_saved_sections
from src.data import Competition, fold_path, load_competition
from src.errors import UserError
from src.folds import ensure_folds
from src.rundir import RunDir, read_probs, read_test_folds
from src.runguard import check_idle, check_made_from, check_run_data


@dataclass
class Member:
    name: str
    oof: np.ndarray  # [train rows in train.csv order, labels]; NaN on the rows of folds it does not cover
    test: np.ndarray  # [test rows in test.csv order, labels]
    folds: list[int]  # the folds its OOF covers (every fold for a complete run)


def _member_dir(checkpoints_dir: str, name: str) -> RunDir:
    """A run folder as a member reads it: its complete outputs, else a partial run's (partial/)."""
    rd = RunDir(Path(checkpoints_dir) / name, Path("."))
    if not rd.config.is_file() and (rd.root / "partial" / "config.yaml").is_file():
        return RunDir(rd.root, Path("."), partial=True)
    if not rd.config.is_file():
        raise UserError(f"{rd.root} has no config.yaml: is '{name}' a finished run?")
    return rd


def _covered_oof(name: str, rd: RunDir, comp: Competition, folds: pd.DataFrame, allow_partial: bool,
                 made: str) -> tuple:
    """(OOF probabilities in train order, NaN where not covered; the folds covered), every covered fold whole."""
    oof = read_probs(rd.oof, comp.labels)
    if "fold" not in oof.columns:
        raise UserError(f"{rd.oof} has no fold column: cannot check it was built on the blend's folds")
    if oof["id"].duplicated().any() or not set(oof["id"]) <= set(comp.train_ids):
        raise UserError(f"{rd.oof} holds ids twice or ids that are not train.csv's")
    fold = folds["fold"].to_numpy()
    at = pd.Series(range(len(comp.train)), index=comp.train_ids).loc[oof["id"]].to_numpy()
    if not (oof["fold"].to_numpy() == fold[at]).all():
        raise UserError(f"member '{name}' was built on other folds: its oof.csv fold column differs from the blend's "
                        f"{made}; blend runs made on one fold file")
    covered = sorted(set(oof["fold"].tolist()))
    rows = np.flatnonzero(np.isin(fold, covered))
    missing = sorted(set(fold.tolist()) - set(covered))
    n_folds = folds["fold"].nunique()
    if len(oof) != len(rows):
        raise UserError(f"member '{name}': {rd.oof} holds {len(oof)} rows for the {len(rows)} of folds {covered} of "
                        f"{n_folds}: its folds are incomplete")
    if missing and not allow_partial:
        raise UserError(f"member '{name}' covers folds {covered} of {n_folds} (folds {missing} missing): finish its "
                        "folds first")
    X = np.full((len(comp.train), len(comp.labels)), np.nan)
    X[at] = oof[comp.labels].to_numpy(np.float64)
    return X, covered


def load_member(name: str, checkpoints_dir: str, comp: Competition, folds: pd.DataFrame, fold_file: str,
                allow_partial: bool = False) -> Member:
    """A finished run's OOF and test probabilities, refused unless on the blend's folds, made from this data, not
    being rewritten, and complete (`allow_partial`: a run of some folds, whole folds)."""
    rd = _member_dir(checkpoints_dir, name)
    check_idle(rd)
    check_made_from(rd, comp, f"member '{name}'")
    member_file = fold_path(load_saved_sections(rd.config, ["data", "folds"])).name
    made = fold_file + (f" (it was made with {member_file})" if member_file != fold_file else "")
    oof, covered = _covered_oof(name, rd, comp, folds, allow_partial, made)
    if member_file != fold_file:  # the same split under another name (the same data in another folder)
        print(f"note: member '{name}' names its fold file {member_file}, the blend {fold_file}; their folds are the "
              "same, so it is blended")
    test = read_probs(rd.test, comp.labels)
    if test["id"].duplicated().any() or set(test["id"]) != set(comp.test_ids):
        raise UserError(f"{rd.test} does not hold exactly test.csv's ids")
    test = test.set_index("id").loc[comp.test_ids]
    return Member(name, oof, test[comp.labels].to_numpy(np.float64), covered)


def load_members(names: list[str], out: str, overrides: list[str], what: str = "blend"
                 ) -> tuple[Config, Competition, pd.DataFrame, Path, list[Member]]:
    """The config of a run made from finished runs (data, folds and thresholds from the first member's config.yaml,
    then `overrides`, exp=out), its data, folds and fold file, and the members, each checked (`load_member`).
    Members of some folds make a partial run of the folds they share (`folds.run`), said with what is missing."""
    if len(names) < 2 or len(set(names)) != len(names):
        raise UserError(f"give at least two distinct runs to {what}, got {names}")
    if out in names:
        raise UserError(f"--out '{out}' is one of the members; choose a new name")
    base = load_config(None, ["exp=" + names[0], *overrides])
    first = _member_dir(base.output.checkpoints_dir, names[0])
    cfg = load_saved_sections(first.config, ["data", "folds", "thresholds"], [*overrides, f"exp={out}"])
    cfg.folds.run = []
    tracking.check(cfg.train.report_to)  # --wandb without the package or a key: said before any work
    comp = load_competition(cfg.data)
    check_run_data(cfg, comp, RunDir.of(cfg))  # before the fold file is made
    folds, fold_file = ensure_folds(cfg, comp, verbose=False)
    members = [load_member(n, cfg.output.checkpoints_dir, comp, folds, fold_file.name, allow_partial=True)
               for n in names]
    shared = sorted(set.intersection(*(set(m.folds) for m in members)))
    if not shared:
        raise UserError(f"the runs share no fold ({'; '.join(f'{m.name}: {m.folds}' for m in members)}): nothing to "
                        f"{what}")
    if len(shared) < cfg.folds.n_folds:
        cfg.folds.run = shared
        lacking = "; ".join(f"{m.name} lacks folds {sorted(set(range(cfg.folds.n_folds)) - set(m.folds))}"
                            for m in members if len(m.folds) < cfg.folds.n_folds)
        print(f"note: a partial {what} of folds {shared} of {cfg.folds.n_folds} ({lacking}): its OOF covers those "
              f"folds only, its outputs go to {RunDir.of(cfg).out}, and it writes no submission")
    return cfg, comp, folds, fold_file, members


def shared_rows(cfg: Config, folds: pd.DataFrame) -> np.ndarray:
    """The train rows a run made from members covers: those of its folds (every row of a complete one)."""
    fold = folds["fold"].to_numpy()
    return np.isin(fold, cfg.folds.run) if cfg.folds.run else np.ones(len(fold), dtype=bool)


def members_test_folds(names: list[str], checkpoints_dir: str, comp: Competition, ks: list[int]
                       ) -> list[dict[int, np.ndarray]] | None:
    """Each member's per-fold test predictions (test_folds.npz) for folds `ks`; None unless every member has them."""
    found = [read_test_folds(_member_dir(checkpoints_dir, n), comp.test_ids, comp.labels) for n in names]
    return None if any(f is None or not set(ks) <= set(f) for f in found) else found


