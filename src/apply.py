"""Every finished run is a model: apply it to texts it has not seen, from its run folder or from a (read-only) pack.

    python -m src predict --exp EXP --input FILE.csv --out OUT.csv [--probs]
    python -m src predict --pack DIR [--exp EXP] --input FILE.csv --out OUT.csv [--probs]

FILE has the competition's id and text columns (named as in its test.csv). Each fold model predicts the texts and
the folds are averaged as for test.csv (`probs`); a blend mixes its members' probabilities with its weights, a stack
applies its fold stackers to them (members are applied recursively, read from the same checkpoints folder). OUT
holds FILE's ids in FILE's order and one column per label: 0/1 decisions by the run's thresholds and rules
(`decide`), or probabilities with `--probs`. Nothing in the run folder or pack changes. On the competition's own
test.csv the decisions are the run's submission. `fold_probs` (each fold model's own probabilities; a blend's fold k
mixes its members' fold-k ones with the weights fitted without fold k) gives teachers predictions made without the
student's fold. The families' side of it is one function each, `predict_folds(cfg, rd, texts)`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from src import thresholds
from src.composite import Stackers, mix, percentiles
from src.config import Config, from_run_folder, load_config, load_run_config
from src.errors import ArgParser, UserError, cli
from src.fileio import read_csv, read_json, write_csv
from src.folds import folds_for_run
from src.models import FAMILIES, family
from src.rundir import RunDir, check_probs, partial_reason, read_probs
from src.runguard import check_idle, run_labels

COMPOSITES = ("ensemble", "stack")


@dataclass
class Run:
    """A finished run opened for prediction: its settings, folder and labels."""
    cfg: Config
    rd: RunDir
    labels: list[str]

    @property
    def covers(self) -> str:
        """"" for a complete run, else which folds (a partial run predicts with the folds it has)."""
        return partial_reason(self.cfg)


def open_run(exp: str, overrides: list[str] | None = None) -> Run:
    """A finished run's folder (complete or partial) under `output.checkpoints_dir` (default checkpoints/)."""
    cfg = load_run_config(exp, list(overrides or []), partial=True)
    rd = RunDir.of(cfg)
    check_idle(rd)
    return Run(cfg, rd, run_labels(rd))


def open_pack(pack_dir: str | Path, exp: str = "", cache_dir: str | Path = ".kit-cache") -> Run:
    """A run inside a pack, read where it lies (read-only); feature caches go to `cache_dir`."""
    pack_dir = Path(pack_dir)
    if not (pack_dir / "pack.json").is_file():
        raise UserError(f"{pack_dir} is not a pack (no pack.json): make one with python -m src pack")
    manifest = read_json(pack_dir / "pack.json")
    runs = list(manifest.get("top") or manifest.get("runs") or [])
    if not exp and len(runs) != 1:
        raise UserError(f"{pack_dir} holds {len(runs)} runs ({', '.join(runs)}): name the one to predict (--exp)")
    exp = exp or runs[0]
    source = pack_dir / "checkpoints" / exp
    config = source / ("config.yaml" if (source / "config.yaml").is_file() else "partial/config.yaml")
    if not config.is_file():
        raise UserError(f"{source} is not a packed run (runs in {pack_dir}: {', '.join(runs) or 'none'})")
    cfg = from_run_folder(load_config(config, [f"exp={exp}", f"output.checkpoints_dir={pack_dir / 'checkpoints'}",
                                               f"probe.cache_dir={cache_dir}", "output.plots=false"]), [])
    rd = RunDir.of(cfg)
    return Run(cfg, rd, run_labels(rd))


def member_runs(run: Run) -> list[Run]:
    """A blend's or stack's members, opened from the same checkpoints folder (a pack holds them beside it)."""
    names = run.cfg.extra.get(run.cfg.model_type, {}).get("members") or []
    if not names:
        raise UserError(f"{run.rd.config} names no members under extra.{run.cfg.model_type}")
    out = []
    for name in names:
        rd = RunDir(Path(run.cfg.output.checkpoints_dir) / name, run.rd.submissions_dir)
        config = rd.config if rd.config.is_file() else rd.root / "partial" / "config.yaml"
        if not config.is_file():
            raise UserError(f"{run.rd.root.name}'s member {name} is not in {rd.root.parent} (a pack holds its members: "
                            f"python -m src pack {run.rd.root.name})")
        cfg = from_run_folder(load_config(config, [
            f"exp={name}", f"output.checkpoints_dir={run.cfg.output.checkpoints_dir}",
            f"probe.cache_dir={run.cfg.probe.cache_dir}", f"data.data_dir={run.cfg.data.data_dir}"]), [])
        cfg.model.trust_remote_code = run.cfg.model.trust_remote_code  # what this command allowed, not the file
        out.append(Run(cfg, RunDir.of(cfg), run_labels(RunDir.of(cfg))))
    return out


def _aligned(member: Run, P: np.ndarray, labels: list[str]) -> np.ndarray:
    """A member's probabilities with its label columns put in the composite's order (matched by name)."""
    if member.labels == labels:
        return P
    if sorted(member.labels) != sorted(labels):
        raise UserError(f"member {member.rd.root.name} predicts labels {member.labels}, not {labels}")
    return P[:, [member.labels.index(lab) for lab in labels]]


def as_written(P: np.ndarray) -> np.ndarray:
    """Probabilities as a probability file holds them (6 significant digits, rundir.write_probs): decisions taken on
    them equal the ones finalize took from test.csv."""
    return np.array([float(f"{v:.6g}") for v in np.asarray(P, dtype=np.float64).ravel()]).reshape(np.shape(P))


def _rank_scale(member: Run, P: np.ndarray, labels: list[str]) -> np.ndarray:
    """A rank blend's scale: each value's percentile within the member's own OOF values."""
    oof = read_probs(member.rd.oof, labels)
    return percentiles(oof[labels].to_numpy(np.float64), P)


def _combine(run: Run, parts: list[np.ndarray], members: list[Run], k: int | None) -> np.ndarray:
    """A blend's or stack's probabilities from its members' (`k`: their fold-k ones, with fold k's weights)."""
    X = np.stack([_aligned(m, p, run.labels) for m, p in zip(members, parts)])
    if run.cfg.model_type == "stack":
        return Stackers.load(Stackers.path(run.rd)).predict(X, k)
    info = run.cfg.extra["ensemble"]
    if info.get("method") == "rank":
        X = np.stack([_rank_scale(m, x, run.labels) for m, x in zip(members, X)])
    by_fold = {int(f): w for f, w in (info.get("fold_weights") or {}).items()}
    w = by_fold[k] if k is not None and k in by_fold else [info["weights"][m.rd.root.name] for m in members]
    return mix(np.asarray(w, dtype=np.float64), X)


def fold_probs(run: Run, texts: list[str]) -> dict[int, np.ndarray]:
    """Each fold model's probabilities for `texts` [rows, labels] (composites: their members' fold-k mixed)."""
    kind = run.cfg.model_type
    if kind in FAMILIES:
        out = family(kind).predict_folds(run.cfg, run.rd, list(texts))
    elif kind in COMPOSITES:
        members = member_runs(run)
        per = [fold_probs(m, texts) for m in members]
        out = {k: _combine(run, [as_written(p[k]) for p in per], members, k) for k in folds_for_run(run.cfg)}
    else:
        raise UserError(f"{run.rd.root}: model_type {kind!r} cannot be applied to texts")
    return {k: check_probs(p, run.labels, f"{run.rd.root.name} fold {k}") for k, p in out.items()}


def probs(run: Run, texts: list[str]) -> np.ndarray:
    """The run's probabilities for `texts` as test.csv holds them: the mean of its fold models (composites: their
    members' such probabilities combined)."""
    if run.cfg.model_type in COMPOSITES:
        members = member_runs(run)
        P = _combine(run, [probs(m, texts) for m in members], members, None)
    else:
        per = fold_probs(run, texts)
        P = np.mean([per[k].astype(np.float64) for k in sorted(per)], axis=0)
    return as_written(check_probs(P, run.labels, run.rd.root.name))


def decide(run: Run, P: np.ndarray) -> np.ndarray:
    """0/1 decisions by the rule the run fitted on its OOF for its metric (thresholds.json: per-label thresholds and
    row rules, or the relative-to-max rule)."""
    if not run.rd.thresholds.is_file():
        raise UserError(f"{run.rd.thresholds} does not exist: finalize the run first (python -m src finalize --exp "
                        f"{run.rd.root.name})")
    return thresholds.Decider.from_json(read_json(run.rd.thresholds), run.labels, run.cfg.thresholds)(P)


def read_input(path: str | Path, run: Run) -> tuple[list[str], list[str]]:
    """(ids, texts) of an input file with the competition's id and text columns (as named in its test.csv)."""
    frame = read_csv(Path(path), str(path), dtype=str)
    doc = read_json(run.rd.data_record)
    id_col, text_col = doc.get("id_col") or run.cfg.data.id_col, doc.get("text_col") or run.cfg.data.text_col
    if not (id_col and text_col):  # a run.json of an older kit: the file's two columns
        if len(frame.columns) != 2:
            raise UserError(f"{path}: give the id and text columns (data.id_col, data.text_col) of {frame.columns}")
        id_col, text_col = frame.columns
    missing = [c for c in (id_col, text_col) if c not in frame.columns]
    if missing:
        raise UserError(f"{path} lacks the column(s) {missing} (it needs the competition's id and text columns: "
                        f"{id_col}, {text_col}; it has {list(frame.columns)})")
    ids = frame[id_col].tolist()
    twice = frame[id_col][frame[id_col].duplicated()]
    if len(twice) or frame[id_col].isna().any():
        raise UserError(f"{path}: ids must be given once each, " + (f"{twice.iloc[0]!r} appears twice" if len(twice)
                                                                   else "some rows have none"))
    return ids, frame[text_col].fillna("").tolist()


def apply(run: Run, input_file: str | Path, out: str | Path, with_probs: bool = False) -> pd.DataFrame:
    """Write OUT: the input's ids and the run's decisions (or probabilities) for its texts; returns the frame."""
    t0 = time.time()
    ids, texts = read_input(input_file, run)
    if run.covers:
        print(f"note: {run.rd.root.name} is a partial run ({run.covers}): its predictions come from those folds only")
    P = probs(run, texts)
    values = P if with_probs else decide(run, P).astype(np.int64)
    doc = read_json(run.rd.data_record)
    frame = pd.DataFrame(values, columns=run.labels)
    frame.insert(0, doc.get("id_col") or "id", ids)
    write_csv(Path(out), frame, float_format="%.6g")
    print(f"[{run.rd.root.name}] {len(ids)} texts -> {out} ({'probabilities' if with_probs else 'decisions'}, "
          f"{time.time() - t0:.1f} s)")
    return frame


@cli
def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = ArgParser(prog="python -m src predict --input", description="Apply a finished run to new texts.")
    p.add_argument("--exp", default="", help="the run's name (a run folder, or one run of --pack)")
    p.add_argument("--pack", default="", help="a pack folder (python -m src pack), read-only is fine")
    p.add_argument("--input", required=True, help="a CSV with the competition's id and text columns")
    p.add_argument("--out", required=True, help="the CSV to write: the input's ids, one column per label")
    p.add_argument("--probs", action="store_true", help="probabilities instead of 0/1 decisions")
    p.add_argument("overrides", nargs="*", help="key=value overrides (e.g. output.checkpoints_dir=...)")
    a = p.parse_intermixed_args(argv)
    if not a.pack and not a.exp:
        p.error("give --exp (a run folder) or --pack (a pack folder)")
    run = open_pack(a.pack, a.exp) if a.pack else open_run(a.exp, a.overrides)
    return apply(run, a.input, a.out, a.probs)
