"""One table of every run folder, to compare runs.

    python -m src runs [--sort COLUMN] [--reverse] [--filter PATTERN] [--csv FILE] [--checkpoints-dir DIR]
    python -m src runs --filter 'tune-*' --sort wall_s    # the trials of a search, fastest first

A run folder is `<checkpoints-dir>/<exp>/` (default `checkpoints/`) holding config.yaml, run.json, metrics.json,
partial/ or fold<k>/. Columns: exp, dataset, type (model_type), model (the model, or a blend's / stack's members),
method (fine-tuning method, TF-IDF or probe classifier, LLM readout, blend method, stack C), status (complete,
partial: some folds, unfinished: no metrics.json yet, damaged), folds (done / n_folds), metric (the run's
data.metric), oof (the metric after decisions fitted on all OOF rows: optimistic), honest (each fold decided by
thresholds fitted on the other folds; a blend's nested figure, its weights fitted on the other folds too; empty for a
one-fold run), wall_s (the command that finished the run: for folds trained by `src.train` processes of their
own, only the predict step), train_s (the folds' training time summed from their done.json, wherever they ran; empty
for TF-IDF and probes, trained inside the run), ram_gb and gpu_gb (the peak of the run's process and of its folds'
training, GiB; empty where not recorded), date (metrics.json's time, else the newest of the folder's), submission,
note (what could not be read). A folder with both a complete run and a partial one shows the complete run.

Sorting: runs judged by different metrics are not comparable, so the table is grouped by metric (the metric with the
most runs first) and the default sort, honest, puts the best run of each group first (log_loss: lowest first; runs
without an honest figure after, by oof). `--sort oof` does the same on oof; any other column sorts the whole table
(ascending; date newest first), `--reverse` flips the order. `--filter` keeps the exps matching a glob (with * ? [)
or containing the text. Nothing read executes code (JSON and yaml.safe_load only); a damaged file shows in the note.
"""

from __future__ import annotations

import fnmatch
import json
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from src.errors import ArgParser, UserError, cli
from src.fileio import write_csv
from src.metrics import LOWER_IS_BETTER

COLUMNS = ["exp", "dataset", "type", "model", "method", "status", "folds", "metric", "oof", "honest", "wall_s",
           "train_s", "ram_gb", "gpu_gb", "date", "submission", "note"]
SCORES = ("honest", "oof")  # sorted best first within each metric
FOLD_MARKERS = ("done.json", "model.skops", "probe.skops")  # a finished fold: transformer / LLM, TF-IDF, probe


def _get(doc, *keys):
    """doc[k1][k2]... or None where a level is missing or not a mapping."""
    for k in keys:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(k)
    return doc


def _num(x) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else np.nan


def _read(path: Path, notes: list[str]):
    """A JSON or YAML file's document (JSON / yaml.safe_load only); None if absent, or damaged (noted)."""
    if not path.is_file():
        return None
    try:
        text = path.read_bytes().decode("utf-8")
        doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        reason = str(e).strip().splitlines()[0][:60] if str(e).strip() else type(e).__name__
        notes.append(f"{path.parent.name}/{path.name} unreadable ({reason})")
        return None
    if not isinstance(doc, dict):
        notes.append(f"{path.parent.name}/{path.name} holds no mapping")
        return None
    return doc


def _describe(cfg: dict, metrics: dict) -> tuple[str, str, str]:
    """(type, model, method) from a run's config.yaml and metrics.json."""
    kind = str(metrics.get("model_type") or cfg.get("model_type") or "")
    for section in ("ensemble", "stack"):  # blend / stack: members and how they are combined
        extra = _get(cfg, "extra", section)
        if isinstance(extra, dict) or isinstance(metrics.get(section), dict):
            extra = extra if isinstance(extra, dict) else metrics[section]
            members = extra.get("members") or {}
            model = "+".join(map(str, members))
            if section == "ensemble":
                return kind, model, f"{extra.get('method', '')}{' equal' if extra.get('equal') else ''}".strip()
            return kind, model, f"C={extra['C']}" if "C" in extra else ""
    if kind == "tfidf":
        return kind, "tfidf", str(_get(cfg, "tfidf", "classifier") or "")
    method = {"probe": ("probe", "classifier"), "llm": ("llm", "method")}.get(kind, ("model", "method"))
    return kind, str(_get(cfg, "model", "name_or_path") or ""), str(_get(cfg, *method) or "")


def _dataset(root: Path, cfg: dict, notes: list[str]) -> str:
    """The dataset's name: run.json's, else the config's data.name, else its data folder's name."""
    name = _get(_read(root / "run.json", notes), "dataset") or _get(cfg, "data", "name")
    data_dir = _get(cfg, "data", "data_dir")
    return str(name or (Path(str(data_dir)).resolve().name if data_dir else ""))


def _folds_done(root: Path) -> list[int]:
    """Folds with a finished model (for a run without metrics.json)."""
    dirs = [d for d in root.glob("fold*") if d.name[4:].isdigit() and d.is_dir()]
    return sorted(int(d.name[4:]) for d in dirs if any((d / m).exists() for m in FOLD_MARKERS))


def _fold_records(root: Path, folds: list[int]) -> list:
    """The finished folds' done.json documents (None where absent or damaged), each read once."""
    return [_read(root / f"fold{k}" / "done.json", []) for k in folds]


def _elapsed(records: list) -> float:
    """Sum of the finished folds' training time (done.json), NaN if none recorded one."""
    times = [t for r in records if np.isfinite(t := _num(_get(r, "elapsed_s")))]
    return float(sum(times)) if times else np.nan


def _peaks(records: list, metrics: dict) -> dict:
    """The highest peak memory (ram_gb, gpu_gb) recorded by the run's process (metrics.json) and its folds'
    training (done.json); NaN where none recorded one."""
    found = [metrics.get("peak_memory"), *(_get(r, "peak_memory") for r in records)]
    return {key: max([v for p in found if np.isfinite(v := _num(_get(p, key)))], default=np.nan)
            for key in ("ram_gb", "gpu_gb")}


def _date(paths: list[Path]) -> str:
    times = [p.stat().st_mtime for p in paths if p.exists()]
    return datetime.fromtimestamp(max(times)).isoformat(sep=" ", timespec="seconds") if times else ""


def run_row(root: Path) -> dict:
    """One run folder's row (see the module docstring); damaged files leave their cells empty and a note."""
    notes: list[str] = []
    out = root if (root / "config.yaml").is_file() or (root / "metrics.json").is_file() else root / "partial"
    cfg = _read(out / "config.yaml", notes) or {}
    metrics = _read(out / "metrics.json", notes) or {}
    metric = str(metrics.get("metric") or "macro_f1") if metrics else str(_get(cfg, "data", "metric") or "macro_f1")
    kind, model, method = _describe(cfg, metrics)
    done = metrics.get("folds") if isinstance(metrics.get("folds"), list) else _folds_done(root)
    n_folds = _get(cfg, "folds", "n_folds")
    honest = _num(_get(metrics, "ensemble", f"nested_{metric}"))  # a blend's: weights nested too
    if not np.isfinite(honest):
        honest = _num(_get(metrics, "oof_crossfit", metric))
    if metrics:
        status = "complete" if out == root and metrics.get("complete", True) is not False else "partial"
    else:
        status = "damaged" if notes else "unfinished"
    wall = _num(metrics.get("wall_s"))
    records = _fold_records(root, done)
    return {"exp": root.name, "dataset": _dataset(root, cfg, notes), "type": kind, "model": model, "method": method,
            "status": status, "folds": f"{len(done)}/{n_folds if isinstance(n_folds, int) else '?'}",
            "metric": metric, "oof": _num(_get(metrics, "oof", metric)), "honest": honest,
            "wall_s": wall, "train_s": _elapsed(records), **_peaks(records, metrics),
            "date": _date([out / "metrics.json"]) or _date([root, *root.glob("fold*/done.json"), out / "config.yaml"]),
            "submission": str(metrics.get("submission") or ""), "note": "; ".join(notes)}


def is_run_folder(d: Path) -> bool:
    if not d.is_dir() or d.name.startswith((".", "_")):
        return False
    return any((d / f).exists() for f in ("config.yaml", "run.json", "metrics.json", "partial")) or any(
        p.name[4:].isdigit() for p in d.glob("fold*"))


def collect(checkpoints: Path) -> pd.DataFrame:
    """A row per run folder under `checkpoints` (unsorted); a folder that cannot be read at all: a note on stderr."""
    rows = []
    for d in sorted(checkpoints.iterdir()) if checkpoints.is_dir() else []:
        try:
            if is_run_folder(d):
                rows.append(run_row(d))
        except OSError as e:
            print(f"note: skipped {d}: {e.strerror or e}", file=sys.stderr)
    return pd.DataFrame(rows, columns=COLUMNS)


def sort_runs(table: pd.DataFrame, by: str = "honest", reverse: bool = False) -> pd.DataFrame:
    """Grouped by metric (most runs first), then best first on `by` (honest / oof) within each metric, or the whole
    table by another column (ascending; date newest first); `reverse` flips `by`'s order."""
    if by not in COLUMNS:
        raise UserError(f"--sort {by!r} is not a column; columns: {', '.join(COLUMNS)}")
    t = table.copy()
    size = t.groupby("metric")["exp"].transform("size")
    t["_group"] = list(zip(-size, t["metric"]))
    sign = np.where(t["metric"].isin(LOWER_IS_BETTER), 1.0, -1.0)  # ascending keys: best first
    first, then = (by, "oof" if by == "honest" else "honest") if by in SCORES else ("honest", "oof")
    t["_k1"], t["_k2"] = t[first] * sign * (-1 if reverse and by in SCORES else 1), t[then] * sign
    t = t.sort_values(["_group", "_k1", "_k2", "exp"], na_position="last", kind="stable")
    if by not in SCORES:
        ascending = (by != "date") != reverse
        t = t.sort_values(by, ascending=ascending, na_position="last", kind="stable")
    return t[COLUMNS].reset_index(drop=True)


def select(table: pd.DataFrame, pattern: str) -> pd.DataFrame:
    """Rows whose exp matches the glob `pattern` (with * ? [), else contains it."""
    glob = any(c in pattern for c in "*?[")
    keep = [fnmatch.fnmatchcase(e, pattern) if glob else pattern in e for e in table["exp"]]
    return table[keep].reset_index(drop=True)


def show(table: pd.DataFrame) -> str:
    """The fixed-width table: scores to 4 decimals, times in seconds, memory in GiB to 0.1, empty cells blank."""
    fmt = lambda spec: lambda x: "" if pd.isna(x) else format(x, spec)
    return table.to_string(index=False, na_rep="", formatters={
        "oof": fmt(".4f"), "honest": fmt(".4f"), "wall_s": fmt(".0f"), "train_s": fmt(".0f"), "ram_gb": fmt(".1f"),
        "gpu_gb": fmt(".1f")})


@cli
def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = ArgParser(prog="python -m src runs", description="One table of every run folder: metric, honest figure, "
                  "folds, wall time, peak memory, submission.")
    p.add_argument("--sort", default="honest", metavar="COLUMN", help=f"one of {', '.join(COLUMNS)} (default: honest,"
                   " best first within each metric)")
    p.add_argument("--reverse", action="store_true", help="flip the sort order")
    p.add_argument("--filter", default=None, metavar="PATTERN", help="exps matching a glob, or containing the text")
    p.add_argument("--csv", default=None, metavar="FILE", help="also write the table as CSV")
    p.add_argument("--checkpoints-dir", default="checkpoints", help="where the run folders are (default: checkpoints)")
    a = p.parse_args(argv)
    where = Path(a.checkpoints_dir)
    table = collect(where)
    found = len(table)
    if a.filter is not None:
        table = select(table, a.filter)
    table = sort_runs(table, a.sort, a.reverse)
    if a.csv:
        write_csv(a.csv, table)
    if not found:
        print(f"no run folders in {where} ({where.absolute()}): make one with `bash train.sh` (or point "
              "--checkpoints-dir at the folder holding them)")
    elif table.empty:
        print(f"no run of the {found} in {where} matches --filter {a.filter!r}")
    else:
        print(show(table))
    return table


if __name__ == "__main__":
    main()
