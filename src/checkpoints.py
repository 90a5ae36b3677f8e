"""Checkpoint tables per fold and the choice of one checkpoint per fold, recorded in `selection.yaml`.

    python -m src.checkpoints list <exp> [--per-label]          # table per fold + val loss / F1 plot
    python -m src.checkpoints select <exp> [--rule balanced]    # apply a rule to every non-manual fold
    python -m src.checkpoints select <exp> --fold 3 --step 1200 # manual pick (survives re-running a rule)
    python -m src.checkpoints select <exp> --fold 3 --auto      # drop the manual pick of fold 3

Rules (each reads the `metrics.json` of every `fold<k>/step<N>/`):
  best_f1    highest held-out score of the run's metric (`data.metric`; macro-F1 by default) at decisions tuned on
             those rows (ties: lower val loss, then earlier step)
  best_loss  lowest val loss (ties: higher macro-F1, then earlier step)
  balanced   lowest val loss among the checkpoints within `select.tolerance` of the best score
`checkpoints/<exp>/selection.yaml` maps fold -> step with the rule (or "manual") and the metric values; it may be
edited by hand (set `rule: manual` so a later rule run keeps the pick). Prediction reads only this file.

A checkpoint's life lives here: written (`save_checkpoint`, through a temp folder), ranked and pruned (`keep_top_k`),
checked (`checkpoint_problem`: metrics.json, valid_probs.npy, the weights' safetensors headers, resume.pt) and, when
the newest resume state is damaged, passed over for the newest intact one (`repair_resume`). A damaged checkpoint is
skipped with a note wherever an intact one can stand in, else it is a one-line error naming the file.
"""

from __future__ import annotations

import json
import math
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from src import thresholds
from src.config import Config, load_config, load_saved_sections
from src.errors import ArgParser, UserError, cli
from src.fileio import read_json, write_text
from src.rundir import RunDir, check_probs, checkpoint_dirs
from src.runguard import run_lock

RULES = ("best_f1", "best_loss", "balanced")
COLUMNS = ["step", "epoch", "train_loss", "val_loss", "f1_at_0.5", "f1_tuned", "score"]
HEADER = """\
# Checkpoint selected per fold; `python -m src.predict` reads this file.
# To pick a checkpoint by hand, set its `step` and `rule: manual` (or run
# `python -m src.checkpoints select <exp> --fold K --step N`): manual picks survive re-running a rule.
# The metric values are the checkpoint's metrics.json, for reference.
"""
RESUME = "resume.pt"  # read with torch.load(weights_only=True): tensors, numbers, strings, lists and dicts only
CHECKPOINT_DTYPES = ("float32", "float16", "bfloat16")  # train.checkpoint_dtype
RESUME_KEYS = ("optimizer", "scheduler", "rng", "position")
NEEDED = ("val_loss", "f1_tuned")  # what every rule and listing reads
_noted: set[str] = set()


def _legacy_resume_globals() -> list:
    """What resume states of earlier versions hold besides tensors: numpy's RNG key array (uint32). Rebuilding a
    plain numeric array runs no code; nothing else is allowed."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


LEGACY_RESUME_GLOBALS = _legacy_resume_globals()


# ---------------------------------------------------------------- integrity

def note(message: str) -> None:
    """Print a one-line note, once per message (pruning looks at every checkpoint at each evaluation)."""
    if message not in _noted:
        _noted.add(message)
        print(f"note: {message}", flush=True)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def metrics_problem(d: Path, needed=NEEDED) -> str | None:
    """Why `d`'s metrics.json is unusable (unreadable, not a mapping, `needed` values missing or not numbers)."""
    path = d / "metrics.json"
    try:
        m = read_json(path)
    except UserError as e:
        return str(e)
    if not isinstance(m, dict):
        return f"{path} holds no metrics mapping (truncated or corrupted?)"
    bad = [key for key in needed if isinstance(m.get(key), bool) or not isinstance(m.get(key), (int, float))]
    return f"{path} lacks numeric {bad}" if bad else None


def read_metrics(d: Path, needed=NEEDED) -> dict | None:
    """A checkpoint's metrics.json, or None with a note (the checkpoint is skipped) when it is damaged."""
    problem = metrics_problem(d, needed)
    if problem:
        note(f"skipping checkpoint {d}: {problem}")
        return None
    return read_json(d / "metrics.json")


def weights_problem(d: Path, required: bool = False) -> str | None:
    """Why `d`'s weights cannot load: a truncated or garbage `*.safetensors` (only each file's header is read:
    safetensors checks that its tensors cover the file exactly), or, when `required`, no weights file at all."""
    from safetensors import safe_open

    files = sorted(d.glob("*.safetensors"))
    if not files:
        return f"{d} holds no weights (*.safetensors)" if required and not any(d.glob("*.bin")) else None
    for f in files:
        try:
            f.open("rb").close()
        except OSError as e:
            return f"cannot read {f}: {e.strerror or e}"
        try:
            with safe_open(str(f), "pt"):
                pass
        except Exception as e:  # safetensors' own error type, OSError
            return f"{f} is damaged (truncated or corrupted?): {_first_line(e)}"
    return None


def load_valid_probs(path: Path, n_labels: int | None = None) -> np.ndarray:
    """A checkpoint's valid_probs.npy as float64, checked: readable, [rows, n_labels] (default: as saved), finite,
    in [0, 1]; else a UserError naming the file."""
    if not path.is_file():
        raise UserError(f"{path} is missing")
    try:
        probs = np.load(path)
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"{path} is damaged (truncated or corrupted?): {_first_line(e)}") from None
    n = probs.shape[-1] if n_labels is None and probs.ndim else n_labels or 0
    return check_probs(probs, [str(j) for j in range(n)], str(path))


def checkpoint_problem(d: Path, resume: bool = False) -> str | None:
    """Why checkpoint `d` is damaged (metrics.json, valid_probs.npy, the weights' headers; with `resume` a weights
    file must exist), else None."""
    problem = metrics_problem(d) or weights_problem(d, required=resume)
    if problem is None and (d / "valid_probs.npy").is_file():
        try:
            load_valid_probs(d / "valid_probs.npy")
        except UserError as e:
            problem = str(e)
    return problem


def read_resume(d: Path, mmap: bool = False) -> tuple[dict | None, str | None]:
    """(state, None) from checkpoint `d`'s resume.pt, or (None, why) when it or the checkpoint is damaged. `mmap`
    maps the tensors instead of reading them (a cheap look at the fingerprint)."""
    import torch

    path = d / RESUME
    problem = checkpoint_problem(d, resume=True)
    if problem:
        return None, problem
    try:
        with torch.serialization.safe_globals(LEGACY_RESUME_GLOBALS):
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:  # anything but tensors, numbers, strings, lists, dicts: never unpickled
        return None, (f"{path} holds objects a safe load refuses, so it was not written by this kit (a crafted "
                      f"file?) and is not read: {_first_line(e)[:120]}")
    except Exception as e:  # zip errors of a truncated or garbage file
        return None, f"{path} is damaged (truncated or corrupted?): {_first_line(e)}"
    missing = [key for key in RESUME_KEYS if not isinstance(state, dict) or key not in state]
    return (None, f"{path} is no resume state (lacks {missing})") if missing else (state, None)


def resumable(fold_dir: Path) -> Path | None:
    """The newest checkpoint holding resume state, if any (intact or not: see `find_resume`)."""
    found = [d for _, d in checkpoint_dirs(fold_dir) if (d / RESUME).is_file()]
    return found[-1] if found else None


def find_resume(fold_dir: Path, mmap: bool = False) -> tuple[Path | None, dict | None, list[str]]:
    """The newest checkpoint whose resume state (and weights, metrics) are intact, its state, and why each newer
    checkpoint holding resume state was passed over."""
    broken = []
    for _, d in reversed(checkpoint_dirs(fold_dir)):
        if (d / RESUME).is_file():
            state, problem = read_resume(d, mmap)
            if state is not None:
                return d, state, broken
            broken.append(problem)
    return None, None, broken


def repair_resume(fold_dir: Path, k: int) -> None:
    """Before fold k resumes (main process only): if the newest resume state or its checkpoint is damaged, resume
    from the newest intact one instead (the checkpoints after it are removed: training makes them again), or,
    with none left, remove every checkpoint so the fold trains again from step 0. Either way it says so."""
    d, _, broken = find_resume(fold_dir, mmap=True)
    if not broken:
        return
    step = int(d.name[4:]) if d is not None else -1
    later = [c for s, c in checkpoint_dirs(fold_dir) if s > step]
    for c in later:
        shutil.rmtree(c, ignore_errors=True)
    then = (f"resuming fold {k} from the older intact {d}" if d is not None
            else f"no intact resume state left: training fold {k} again from step 0")
    note(f"{'; '.join(broken)}: {then} ({len(later)} later checkpoint(s) removed)")


# ---------------------------------------------------------------- writing, ranking, pruning

def _io_error(e: Exception) -> bool:
    """An OSError, or the write failures torch and safetensors report as their own errors (disk full, ...)."""
    text = str(e)
    return isinstance(e, OSError) or any(s in text for s in ("IoError", "I/O error", "failed writing", "write failed",
                                                             "No space left", "Disk quota", "File too large"))


def save_checkpoint(fold_dir: Path, step: int, model, tokenizer, record: dict, probs: np.ndarray,
                    resume_state: dict | None, weights_dtype: str | None = None) -> Path:
    """Write step<N>/ through a temp folder renamed into place, then drop older checkpoints' resume state. A failed
    write (disk full, read-only folder) removes the temp folder and is a UserError naming the checkpoint.
    `weights_dtype` (float16/bfloat16, full fine-tunes): floating-point weights saved in that dtype."""
    import torch
    from transformers.utils import logging as hf_logging

    final, tmp = fold_dir / f"step{step}", fold_dir / f".tmp-step{step}"
    half = getattr(torch, weights_dtype) if weights_dtype and weights_dtype != "float32" else None
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        hf_logging.disable_progress_bar()
        try:
            if half is None:
                model.save_pretrained(tmp)
            else:
                model.save_pretrained(tmp, state_dict={n: w.detach().to(half) if w.is_floating_point() else w
                                                       for n, w in model.state_dict().items()})
            tokenizer.save_pretrained(tmp)
        finally:
            hf_logging.enable_progress_bar()
        np.save(tmp / "valid_probs.npy", probs.astype(np.float32))
        if resume_state is not None:
            torch.save(resume_state, tmp / RESUME)
        (tmp / "metrics.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if not _io_error(e):
            raise
        reason = getattr(e, "strerror", None) or _first_line(e)
        raise UserError(f"cannot write checkpoint {final}: {reason} (check that {fold_dir} is writable and the disk "
                        "has space)") from None
    for _, d in checkpoint_dirs(fold_dir):
        if d != final:
            (d / RESUME).unlink(missing_ok=True)
    return final


def footprint(model, cfg: Config, adapter: bool) -> tuple[int, int]:
    """(bytes of one checkpoint's weight files, bytes of one resume state) for `model` under cfg's settings;
    `adapter`: a PEFT model, whose checkpoints hold the adapter and head only."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    half = cfg.train.checkpoint_dtype != "float32"
    if adapter:  # adapter + head, float32
        weights = 4 * trainable
    else:
        weights = sum(w.numel() * (min(2, w.element_size()) if half and w.is_floating_point() else w.element_size())
                      for w in model.state_dict().values())
    resume = 0
    if cfg.train.resume_state:
        resume = 8 * trainable + (4 * trainable if cfg.train.ema > 0 else 0)  # AdamW moments, raw weights under EMA
        if half and not adapter:
            resume += sum(4 * w.numel() for w in model.state_dict().values())  # the exact weights to resume from
    return weights, resume


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def check_disk(fold_dir: Path, cfg: Config, weights: int, resume: int, kept: int, folds_left: int) -> None:
    """Refuse to start when the run's checkpoints (`folds_left` folds x `kept` checkpoints of `weights` bytes, plus
    one more checkpoint and its resume state while a fold trains) would not fit the free space of `fold_dir`'s
    disk; a note when they would take most of it."""
    need = folds_left * kept * weights + weights + resume
    where = next((p for p in [fold_dir, *fold_dir.parents] if p.exists()), Path("."))
    free = shutil.disk_usage(where).free
    if need <= 0.8 * free:
        return
    t = cfg.train
    shrink = [f"train.keep_top_k=1 (now {t.keep_top_k or 'all'})" if t.keep_top_k != 1 else "",
              "train.checkpoint_dtype=float16 (full fine-tunes: half the weight files)"
              if t.checkpoint_dtype == "float32" else "",
              "train.resume_state=false (no optimizer state; a killed fold restarts)" if resume else ""]
    what = (f"{folds_left} folds x {kept} kept x {_gb(weights)} of weights, plus {_gb(weights + resume)} for the "
            f"checkpoint being written and its resume state")
    tips = "; ".join(x for x in shrink if x) + "; or point output.checkpoints_dir at a larger disk"
    if need > free:
        raise UserError(f"this run's checkpoints need about {_gb(need)} ({what}), but {where} has {_gb(free)} free: "
                        f"{tips}")
    print(f"note: this run's checkpoints need about {_gb(need)} ({what}) of the {_gb(free)} free on {where}: {tips}")


def _key(metric: str, value: float) -> float:
    """Sort key: lower is better (val_loss as is, the F1s negated; NaN last)."""
    if math.isnan(value):
        return math.inf
    return value if metric == "val_loss" else -value


def value(m: dict, metric: str) -> float:
    """A checkpoint's `metric` from its metrics.json; `score` (the run's metric) falls back to macro-F1 for
    checkpoints written before it existed."""
    return float(m.get("score", m.get("f1_tuned")) if metric == "score" else m[metric])


def _ranked(fold_dir: Path, metric: str) -> list[tuple[float, int, Path]]:
    """The fold's intact checkpoints, best first by `metric` (ties: earlier step); damaged ones skipped (a note)."""
    needed = ("f1_tuned",) if metric == "score" else (metric,)
    found = [(read_metrics(d, needed), step, d) for step, d in checkpoint_dirs(fold_dir)]
    return sorted((_key(metric, value(m, metric)), step, d) for m, step, d in found if m is not None)


def prune(fold_dir: Path, keep: int, metric: str, protect: Path | None = None) -> None:
    """Keep the `keep` best checkpoints by `metric` (ties: earlier step), and `protect`; damaged ones stay."""
    if keep <= 0:
        return
    for _, _, d in _ranked(fold_dir, metric)[keep:]:
        if d != protect:
            shutil.rmtree(d, ignore_errors=True)


def makes_top_k(fold_dir: Path, record: dict, keep: int, metric: str) -> bool:
    """Whether a new checkpoint with `record` would survive `prune` (later steps lose ties)."""
    if keep <= 0:
        return True
    ranked = _ranked(fold_dir, metric)
    return len(ranked) < keep or _key(metric, value(record, metric)) < ranked[keep - 1][0]


# ---------------------------------------------------------------- tables and selection


def trained_folds(rd: RunDir) -> list[int]:
    """Folds that have at least one checkpoint directory."""
    if not rd.root.is_dir():
        return []
    folds = [int(p.name[4:]) for p in rd.root.glob("fold*") if p.name[4:].isdigit() and p.is_dir()]
    return sorted(k for k in folds if checkpoint_dirs(rd.fold(k)))


def fold_done(rd: RunDir, fold: int) -> bool:
    return (rd.fold(fold) / "done.json").is_file()


def list_checkpoints(rd: RunDir, fold: int) -> pd.DataFrame:
    """One row per checkpoint of a fold (sorted by step): COLUMNS, per-label F1 dicts and the directory; a checkpoint
    with a damaged metrics.json is left out, with a note."""
    rows = []
    for step, d in checkpoint_dirs(rd.fold(fold)):
        m = read_metrics(d)  # a damaged metrics.json: the checkpoint is skipped, with a note
        if m is None:
            continue
        row = {c: _number(m.get(c)) for c in COLUMNS[1:]} | {"score": _number(value(m, "score"))}
        rows.append({"step": step, **row, "metric": m.get("metric", "macro_f1"),
                     "per_label_f1": m.get("per_label_f1", {}), "per_label_f1_at_0.5": m.get("per_label_f1_at_0.5", {}),
                     "has_probs": (d / "valid_probs.npy").is_file(), "dir": d})
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "metric", "per_label_f1", "per_label_f1_at_0.5", "has_probs",
                                        "dir"])
    return frame.sort_values("step", ignore_index=True)


def evaluations(rd: RunDir, fold: int) -> pd.DataFrame:
    """Every evaluation of a fold (COLUMNS), kept or not, from its history.jsonl (the last record of each step;
    unreadable lines skipped)."""
    path, found = rd.fold(fold) / "history.jsonl", {}
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.is_file() else []
    for line in lines:
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(r, dict) and r.get("event") == "eval" and isinstance(r.get("step"), int):
            found[r["step"]] = r
    return pd.DataFrame([{"step": s, **{c: _number(r.get(c)) for c in COLUMNS[1:]}} for s, r in sorted(found.items())],
                        columns=COLUMNS)


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def pick(table: pd.DataFrame, rule: str, tolerance: float = 0.005) -> int:
    """The step a rule selects from a fold's checkpoint table (only checkpoints with valid_probs.npy)."""
    if rule not in RULES:
        raise UserError(f"select.rule must be one of {', '.join(RULES)}, got {rule!r}")
    t = table[table["has_probs"]] if "has_probs" in table else table
    if t.empty:
        raise UserError("no checkpoint with valid_probs.npy to select from")
    f1, loss = t["score"].fillna(t["f1_tuned"]).fillna(-np.inf), t["val_loss"].fillna(np.inf)  # the run's metric
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
    folds = _selection_doc(path).get("folds")
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


def _selection_doc(path: Path) -> dict:
    """selection.yaml's top-level mapping; a damaged file (unreadable, not UTF-8, not YAML) is a one-line error."""
    fix = "fix it, or delete it to select by the rule again (manual picks are lost)"
    try:
        doc = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text (corrupted?): {fix}") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML ({str(e).splitlines()[0]}): {fix}") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path} must hold a 'folds:' mapping of fold -> {{step: N, rule: ...}}: {fix}")
    return doc


def saved_rule(rd: RunDir) -> tuple[str | None, float | None]:
    """The rule and tolerance selection.yaml was last written with (None, None without one)."""
    if not rd.selection.is_file():
        return None, None
    doc = _selection_doc(rd.selection)
    rule, tolerance = doc.get("rule"), doc.get("tolerance")
    if rule is not None and rule not in (*RULES, "manual"):
        raise UserError(f"{rd.selection}: rule must be one of {', '.join(RULES)}, got {rule!r}")
    if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(tolerance, (int, float))
                                  or not math.isfinite(tolerance) or tolerance < 0):
        raise UserError(f"{rd.selection}: tolerance must be a number >= 0, got {tolerance!r}")
    return (None if rule == "manual" else rule), tolerance


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


def _pick_intact(rd: RunDir, table: pd.DataFrame, fold: int, rule: str, tolerance: float) -> int:
    """The rule's pick among fold's intact checkpoints: a damaged pick (valid_probs.npy, weights) is passed over
    with a note for the next one; every one damaged is a one-line error."""
    while True:
        step = pick(table, rule, tolerance) if table["has_probs"].any() else None
        if step is None:
            raise UserError(f"fold {fold} of {rd.root} has no intact checkpoint with valid_probs.npy: delete "
                            f"{rd.fold(fold)} and train it again")
        problem = checkpoint_problem(rd.step(fold, step))
        if problem is None:
            return step
        note(f"passing over fold {fold} step {step} (damaged: {problem}); the rule picks among the others")
        table = table[table["step"] != step]


def rescore(cfg: Config, tables: dict[int, pd.DataFrame]) -> None:
    """Checkpoints scored for another metric than `data.metric` (the run is now judged by another one) get `score`
    again from their valid_probs.npy and the fold's held-out labels, so the rules follow this command's metric."""
    metric = cfg.data.metric
    stale = {k: t for k, t in tables.items() if (t["metric"] != metric).any()}
    if not stale:
        return
    from src.data import load_competition
    from src.folds import ensure_folds

    comp = load_competition(cfg.data)
    folds, _ = ensure_folds(cfg, comp, verbose=False)
    for k, t in stale.items():
        Y = comp.Y[(folds["fold"] == k).to_numpy()]
        for i in t.index[(t["metric"] != metric) & t["has_probs"]]:
            probs = load_valid_probs(t.at[i, "dir"] / "valid_probs.npy", len(comp.labels))
            if len(probs) != len(Y):
                raise UserError(f"{t.at[i, 'dir']}/valid_probs.npy holds {len(probs)} rows, fold {k} has {len(Y)} "
                                "held-out rows: the fold file changed since this run trained")
            t.at[i, "score"], t.at[i, "metric"] = thresholds.held_out_score(Y, probs, comp.labels, metric), metric
    note(f"checkpoints of folds {sorted(stale)} were scored for another metric: scored again for {metric} from "
         "their held-out probabilities")


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
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise UserError(f"the score tolerance (--tolerance, select.tolerance) must be a number >= 0, got "
                        f"{tolerance}")
    available = trained_folds(rd)
    manual, auto = dict(manual or {}), set(auto or [])
    for k in [*manual, *auto]:
        if k not in available:
            raise UserError(f"fold {k} has no checkpoints in {rd.root} (folds with checkpoints: {available})")
    todo = available if folds is None else [k for k in folds if k in available]
    entries = {k: v for k, v in saved.items() if k in available}
    tables = {k: list_checkpoints(rd, k) for k in set(todo) | set(manual) | set(auto) | set(entries)}
    rescore(cfg, tables)
    for k in sorted(set(todo) | auto | set(manual)):
        if k in manual:
            _check_step(rd, tables[k], k, manual[k])
            entries[k] = _entry(tables[k], manual[k], "manual")
        elif entries.get(k, {}).get("rule") == "manual" and k not in auto:
            _check_step(rd, tables[k], k, entries[k]["step"])
            entries[k] = _entry(tables[k], entries[k]["step"], "manual")  # metric values of the picked step
        else:
            entries[k] = _entry(tables[k], _pick_intact(rd, tables[k], k, rule, tolerance), rule)
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
        kept = list_checkpoints(rd, k)
        if k in saved:
            chosen[k], how = saved[k]["step"], saved[k]["rule"]
        else:
            chosen[k], how = pick(kept, cfg.select.rule, cfg.select.tolerance), f"{cfg.select.rule}, not saved yet"
        gone = evaluations(rd, k)
        gone = gone[~gone["step"].isin(kept["step"])].assign(has_probs=False)  # pruned by keep_top_k
        t = pd.concat([kept.assign(kept="yes"), gone.assign(kept="no")] if len(gone) else [kept.assign(kept="yes")],
                      ignore_index=True).sort_values("step", ignore_index=True)
        tables[k] = t
        view = t[[*COLUMNS, "kept"]].copy()
        if per_label:
            view = view.join(pd.DataFrame([x if isinstance(x, dict) else {} for x in t["per_label_f1"]])
                             .add_prefix("f1:"))
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
    p = ArgParser(prog="python -m src.checkpoints", description="List and select checkpoints.")
    sub = p.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", help="table of checkpoints per fold and a plot of val loss / macro-F1")
    ls.add_argument("exp")
    ls.add_argument("--per-label", action="store_true", help="add per-label F1 (tuned) columns")
    sel = sub.add_parser("select", help="apply a rule to the non-manual folds, or pick a step by hand")
    sel.add_argument("exp")
    sel.add_argument("--rule", choices=RULES, help="default: the run's select.rule")
    sel.add_argument("--tolerance", type=float,
                     help="balanced: tolerance on the score of data.metric (default: select.tolerance)")
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
    with run_lock(rd):  # selection.yaml is rewritten: not while another process predicts or trains this run
        chosen = select(cfg, rd, rule=a.rule or rule, tolerance=a.tolerance if a.tolerance is not None else
                        tolerance, manual=manual, auto=[a.fold] if a.auto else None, folds=folds)
    for k, e in read_selection(rd).items():
        print(f"fold {k}: step {e['step']} ({e['rule']})  val_loss {e.get('val_loss', float('nan')):.4f}  "
              f"f1_tuned {e.get('f1_tuned', float('nan')):.4f}")
    print(f"wrote {rd.selection} ({len(chosen)} folds)")


if __name__ == "__main__":
    main()
