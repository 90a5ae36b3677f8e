"""Checkpoint tables per fold and the choice of one checkpoint per fold, recorded in `selection.yaml`.

    python -m src.checkpoints list <exp> [--per-label]          # table per fold + val loss / F1 plot
    python -m src.checkpoints select <exp> [--rule balanced]    # apply a rule to every non-manual fold
    python -m src.checkpoints select <exp> --fold 3 --step 1200 # manual pick (survives re-running a rule)
    python -m src.checkpoints select <exp> --fold 3 --auto      # drop the manual pick of fold 3

Rules (each reads the `metrics.json` of every `fold<k>/step<N>/`):
  best_f1    highest macro-F1 at tuned thresholds (ties: lower val loss, then earlier step)
  best_loss  lowest val loss (ties: higher macro-F1, then earlier step)
  balanced   lowest val loss among the checkpoints within `select.tolerance` of the best macro-F1
`checkpoints/<exp>/selection.yaml` maps fold -> step with the rule (or "manual") and the metric values; it may be
edited by hand (set `rule: manual` so a later rule run keeps the pick). Prediction reads only this file.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from src.config import Config, load_config, load_saved_sections
from src.errors import UserError, cli
from src.fileio import write_text
from src.rundir import RunDir, checkpoint_dirs

RULES = ("best_f1", "best_loss", "balanced")
COLUMNS = ["step", "epoch", "train_loss", "val_loss", "f1_at_0.5", "f1_tuned"]
HEADER = """\
# Checkpoint selected per fold; `python -m src.predict` reads this file.
# To pick a checkpoint by hand, set its `step` and `rule: manual` (or run
# `python -m src.checkpoints select <exp> --fold K --step N`): manual picks survive re-running a rule.
# The metric values are the checkpoint's metrics.json, for reference.
"""


def trained_folds(rd: RunDir) -> list[int]:
    """Folds that have at least one checkpoint directory."""
    if not rd.root.is_dir():
        return []
    folds = [int(p.name[4:]) for p in rd.root.glob("fold*") if p.name[4:].isdigit() and p.is_dir()]
    return sorted(k for k in folds if checkpoint_dirs(rd.fold(k)))


def fold_done(rd: RunDir, fold: int) -> bool:
    return (rd.fold(fold) / "done.json").is_file()


def list_checkpoints(rd: RunDir, fold: int) -> pd.DataFrame:
    """One row per checkpoint of a fold (sorted by step): COLUMNS, per-label F1 dicts and the directory."""
    rows = []
    for step, d in checkpoint_dirs(rd.fold(fold)):
        try:
            m = json.loads((d / "metrics.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{d / 'metrics.json'} is not valid JSON: {e}") from None
        missing = [key for key in ("val_loss", "f1_tuned") if key not in m]
        if missing:
            raise UserError(f"{d / 'metrics.json'} lacks {missing}")
        row = {c: float(m.get(c, math.nan)) for c in COLUMNS[1:]}
        rows.append({"step": step, **row, "per_label_f1": m.get("per_label_f1", {}),
                     "per_label_f1_at_0.5": m.get("per_label_f1_at_0.5", {}),
                     "has_probs": (d / "valid_probs.npy").is_file(), "dir": d})
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "per_label_f1", "per_label_f1_at_0.5", "has_probs", "dir"])
    return frame.sort_values("step", ignore_index=True)


def pick(table: pd.DataFrame, rule: str, tolerance: float = 0.005) -> int:
    """The step a rule selects from a fold's checkpoint table (only checkpoints with valid_probs.npy)."""
    if rule not in RULES:
        raise UserError(f"select.rule must be one of {', '.join(RULES)}, got {rule!r}")
    t = table[table["has_probs"]] if "has_probs" in table else table
    if t.empty:
        raise UserError("no checkpoint with valid_probs.npy to select from")
    f1, loss = t["f1_tuned"].fillna(-np.inf), t["val_loss"].fillna(np.inf)
    if rule == "best_f1":
        order = np.lexsort((t["step"], loss, -f1))
    elif rule == "best_loss":
        order = np.lexsort((t["step"], -f1, loss))
    else:
        near = (f1 >= f1.max() - tolerance).to_numpy()
        order = [i for i in np.lexsort((t["step"], -f1, loss)) if near[i]]
    return int(t["step"].iloc[order[0]])


def _entry(table: pd.DataFrame, step: int, rule: str) -> dict:
    row = table.loc[table["step"] == step].iloc[0]
    out = {"step": int(step), "rule": rule}
    for c in COLUMNS[1:]:
        if not math.isnan(row[c]):
            out[c] = round(float(row[c]), 6)
    return out


def read_selection(rd: RunDir) -> dict[int, dict]:
    """selection.yaml as {fold: {"step": N, "rule": ..., metrics...}}; {} when there is none."""
    path = rd.selection
    if not path.is_file():
        return {}
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    folds = doc.get("folds") if isinstance(doc, dict) else None
    if not isinstance(folds, dict):
        raise UserError(f"{path} must hold a 'folds:' mapping of fold -> {{step: N, rule: ...}}")
    out = {}
    for k, entry in folds.items():
        if isinstance(entry, int) and not isinstance(entry, bool):
            entry = {"step": entry, "rule": "manual"}  # shorthand `3: 1200`
        if not (isinstance(k, int) and isinstance(entry, dict) and isinstance(entry.get("step"), int)):
            raise UserError(f"{path}: fold {k!r} must map to {{step: <int>, rule: ...}}, got {entry!r}")
        rule = entry.get("rule", "manual")
        if rule not in (*RULES, "manual"):
            raise UserError(f"{path}: fold {k} has rule {rule!r}; use one of {', '.join(RULES)} or manual")
        out[k] = {**entry, "rule": rule}
    return out


def saved_rule(rd: RunDir) -> tuple[str | None, float | None]:
    """The rule and tolerance selection.yaml was last written with (None, None without one)."""
    if not rd.selection.is_file():
        return None, None
    doc = yaml.safe_load(rd.selection.read_text(encoding="utf-8")) or {}
    return doc.get("rule"), doc.get("tolerance")


def write_selection(rd: RunDir, entries: dict[int, dict], rule: str, tolerance: float) -> Path:
    doc = {"rule": rule, "tolerance": tolerance, "folds": {int(k): entries[k] for k in sorted(entries)}}
    return write_text(rd.selection, HEADER + yaml.safe_dump(doc, sort_keys=False))


def _check_step(rd: RunDir, table: pd.DataFrame, fold: int, step: int) -> None:
    if table.empty:
        raise UserError(f"fold {fold} of {rd.root} has no checkpoints")
    row = table[table["step"] == step]
    if row.empty:
        steps = ", ".join(map(str, table["step"]))
        raise UserError(f"fold {fold} has no checkpoint at step {step} (steps: {steps})")
    if not bool(row["has_probs"].iloc[0]):
        raise UserError(f"checkpoint fold {fold} step {step} has no valid_probs.npy")


def select(cfg: Config, rd: RunDir | None = None, rule: str | None = None, tolerance: float | None = None,
           folds: list[int] | None = None, manual: dict[int, int] | None = None,
           auto: list[int] | None = None) -> dict[int, int]:
    """Write selection.yaml and return {fold: step}.

    Folds in `folds` (default: every fold with checkpoints) get the rule's pick unless they hold a manual pick;
    other folds keep their entry. `manual` sets manual picks; `auto` turns manual picks back to the rule.
    """
    rd = rd or RunDir.of(cfg)
    saved = read_selection(rd)
    rule = rule or cfg.select.rule
    tolerance = cfg.select.tolerance if tolerance is None else tolerance
    if rule not in RULES:
        raise UserError(f"select.rule must be one of {', '.join(RULES)}, got {rule!r}")
    available = trained_folds(rd)
    manual, auto = dict(manual or {}), set(auto or [])
    for k in [*manual, *auto]:
        if k not in available:
            raise UserError(f"fold {k} has no checkpoints in {rd.root} (folds with checkpoints: {available})")
    todo = available if folds is None else [k for k in folds if k in available]
    entries = {k: v for k, v in saved.items() if k in available}
    tables = {k: list_checkpoints(rd, k) for k in set(todo) | set(manual) | set(auto) | set(entries)}
    for k in sorted(set(todo) | auto | set(manual)):
        if k in manual:
            _check_step(rd, tables[k], k, manual[k])
            entries[k] = _entry(tables[k], manual[k], "manual")
        elif entries.get(k, {}).get("rule") == "manual" and k not in auto:
            _check_step(rd, tables[k], k, entries[k]["step"])
            entries[k] = _entry(tables[k], entries[k]["step"], "manual")  # metric values of the picked step
        else:
            entries[k] = _entry(tables[k], pick(tables[k], rule, tolerance), rule)
    for k, e in entries.items():
        _check_step(rd, tables[k], k, e["step"])
    write_selection(rd, entries, rule, tolerance)
    return {k: int(e["step"]) for k, e in sorted(entries.items())}


def show(rd: RunDir, cfg: Config, per_label: bool = False) -> dict[int, pd.DataFrame]:
    """Print a checkpoint table per fold (selected row marked `*`) and plot val loss / macro-F1 over steps."""
    from src import report

    saved = read_selection(rd)
    folds = trained_folds(rd)
    if not folds:
        raise UserError(f"no checkpoints under {rd.root} (expected fold<k>/step<N>/metrics.json)")
    tables, chosen = {}, {}
    for k in folds:
        t = list_checkpoints(rd, k)
        tables[k] = t
        if k in saved:
            chosen[k], how = saved[k]["step"], saved[k]["rule"]
        else:
            chosen[k], how = pick(t, cfg.select.rule, cfg.select.tolerance), f"{cfg.select.rule}, not saved yet"
        view = t[COLUMNS].copy()
        if per_label:
            view = view.join(pd.DataFrame(t["per_label_f1"].tolist()).add_prefix("f1:"))
        view.insert(0, "sel", np.where(t["step"] == chosen[k], "*", ""))
        state = "done" if fold_done(rd, k) else "not finished"
        print(f"\nfold {k} ({state}; selected step {chosen[k]}: {how})")
        print(view.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    path = report.checkpoint_curves(tables, chosen, rd.report / "checkpoints.png")
    print(f"\nplot: {path}")
    return tables


def _exp_config(exp: str, checkpoints_dir: str) -> tuple[Config, RunDir]:
    path = Path(checkpoints_dir) / exp / "config.yaml"
    overrides = [f"exp={exp}", f"output.checkpoints_dir={checkpoints_dir}"]
    cfg = load_saved_sections(path, ["select"], overrides) if path.is_file() else load_config(None, overrides)
    rd = RunDir.of(cfg)
    if not rd.root.is_dir():
        raise UserError(f"no run directory {rd.root}")
    return cfg, rd


@cli
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m src.checkpoints", description="List and select checkpoints.")
    sub = p.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", help="table of checkpoints per fold and a plot of val loss / macro-F1")
    ls.add_argument("exp")
    ls.add_argument("--per-label", action="store_true", help="add per-label F1 (tuned) columns")
    sel = sub.add_parser("select", help="apply a rule to the non-manual folds, or pick a step by hand")
    sel.add_argument("exp")
    sel.add_argument("--rule", choices=RULES, help="default: the run's select.rule")
    sel.add_argument("--tolerance", type=float, help="balanced: macro-F1 tolerance (default: select.tolerance)")
    sel.add_argument("--fold", type=int, help="with --step or --auto: the fold to change")
    sel.add_argument("--step", type=int, help="manual pick for --fold")
    sel.add_argument("--auto", action="store_true", help="drop --fold's manual pick; apply the rule")
    for sp in (ls, sel):
        sp.add_argument("--checkpoints-dir", default="checkpoints")
    a = p.parse_args(argv)
    cfg, rd = _exp_config(a.exp, a.checkpoints_dir)
    if a.cmd == "list":
        show(rd, cfg, a.per_label)
        return
    if (a.step is not None or a.auto) and a.fold is None:
        raise UserError("--step and --auto need --fold")
    if a.fold is not None and (a.step is None) == (not a.auto):
        raise UserError("--fold needs exactly one of --step N or --auto")
    manual = {a.fold: a.step} if a.step is not None else None
    saved = read_selection(rd)
    rule, tolerance = saved_rule(rd)
    # one fold changed by hand: the other folds keep their entries (folds without one get the rule)
    folds = [k for k in trained_folds(rd) if k not in saved] if a.fold is not None else None
    chosen = select(cfg, rd, rule=a.rule or rule, tolerance=a.tolerance if a.tolerance is not None else tolerance,
                    manual=manual, auto=[a.fold] if a.auto else None, folds=folds)
    for k, e in read_selection(rd).items():
        print(f"fold {k}: step {e['step']} ({e['rule']})  val_loss {e.get('val_loss', float('nan')):.4f}  "
              f"f1_tuned {e.get('f1_tuned', float('nan')):.4f}")
    print(f"wrote {rd.selection} ({len(chosen)} folds)")


if __name__ == "__main__":
    main()
