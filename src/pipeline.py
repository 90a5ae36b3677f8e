"""The end-to-end run: data -> folds -> a model family's OOF/test probabilities -> thresholds -> submission.

    python -m src run --config configs/tfidf.yaml [key=value ...]
    python -m src finalize --config configs/tfidf.yaml    # thresholds/metrics/submission from oof.csv + test.csv
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import pandas as pd
import yaml

from src import memory, metrics, report, submission, teacher, thresholds, tracking
from src.config import Config, dump_config, to_dict
from src.data import Competition, load_competition
from src.errors import UserError
from src.fileio import read_text, write_csv, write_json, write_text
from src.folds import ensure_folds
from src.models import family
from src.rundir import RunDir, partial_reason, read_probs
from src.runguard import check_made_from, check_run_data, prepare_outputs, run_lock


def check_config(cfg: Config) -> None:
    """Settings used only after training, checked before it starts (a typo should not cost a training run)."""
    from src.checkpoints import RULES

    family(cfg.model_type)
    tracking.check(cfg.train.report_to)
    if cfg.thresholds.mode not in thresholds.MODES:
        raise UserError(f"thresholds.mode must be one of {', '.join(thresholds.MODES)}, got {cfg.thresholds.mode!r}")
    if cfg.select.rule not in RULES:
        raise UserError(f"select.rule must be one of {', '.join(RULES)}, got {cfg.select.rule!r}")


def preflight(cfg: Config, comp: Competition, folds: pd.DataFrame, rd: RunDir) -> None:
    """The run folder is this data's (`check_run_data`), then the model family's own checks of settings and reusable
    state (`preflight` in its module), before any write."""
    check_run_data(cfg, comp, rd)
    thresholds.exclusive_columns(cfg.thresholds, comp.labels)
    teacher.check(cfg, comp, folds)
    check = getattr(family(cfg.model_type), "preflight", None)
    if check is not None:
        check(cfg, comp, folds, rd)


def setup_run(cfg: Config, verbose: bool = True) -> tuple[Competition, pd.DataFrame, RunDir]:
    """(competition, folds, run folder) of a config: the data loaded and checked, the fold file made once; nothing
    else is written (a notebook's first step; training and `run` check everything else before they write)."""
    check_config(cfg)
    comp = load_competition(cfg.data)
    rd = RunDir.of(cfg)
    check_run_data(cfg, comp, rd)  # another dataset's run folder: refused before the fold file is made
    folds, _ = ensure_folds(cfg, comp, verbose=verbose)
    return comp, folds, rd


def run(cfg: Config, callbacks: tuple = ()) -> dict:
    """Train every fold of the configured model, then finalize. Returns the run's metrics. `callbacks` (transformer
    runs: src.tune's pruning) get each evaluation's record (`src.train.train_folds`).

    Everything that can be checked is checked before the first write (config, data, folds, the family's settings
    and reusable folds, writable output folders), so a bad run leaves the previous run's files as they were."""
    t0 = time.time()
    check_config(cfg)
    comp = load_competition(cfg.data)
    rd = RunDir.of(cfg)
    check_run_data(cfg, comp, rd)  # another dataset's run folder: refused before the fold file is made
    folds, fold_file = ensure_folds(cfg, comp)
    preflight(cfg, comp, folds, rd)
    with run_lock(rd):
        prepare_outputs(rd, cfg, comp)
        return _run_in(cfg, comp, folds, rd, fold_file, t0, callbacks)


def _run_in(cfg: Config, comp: Competition, folds: pd.DataFrame, rd: RunDir, fold_file, t0: float,
            callbacks: tuple = ()) -> dict:
    """The locked part of `run`: config.yaml (put back if the run fails), the family's run, finalize."""
    with kept_on_failure(rd.config):
        say_decision_changes(rd, cfg)
        write_text(rd.config, dump_config(cfg, absolute=True))
        print(f"[{cfg.exp}] {cfg.model_type} on {comp.name}: {len(comp.train)} train / {len(comp.test)} test rows, "
              f"{len(comp.labels)} labels, folds {fold_file}"
              + (f"; partial run ({partial_reason(cfg)}): outputs in {rd.out}" if rd.partial else ""))
        family(cfg.model_type).run(cfg, comp, folds, rd, **({"callbacks": callbacks} if callbacks else {}))
        return finalize(cfg, comp, folds, wall_s=time.time() - t0)


def say_decision_changes(rd: RunDir, cfg: Config) -> None:
    """A rerun decides with this command's settings; where the run's config.yaml holds others (a `finalize --exp X
    thresholds.min_one=true` recorded them), say so, one line each, with the override that keeps them."""
    try:
        saved = yaml.safe_load(read_text(rd.config)) if rd.config.is_file() else None
    except (UserError, yaml.YAMLError):
        return
    if not isinstance(saved, dict):
        return
    now = to_dict(cfg)
    for section, key in [("data", "metric"), *(("thresholds", k) for k in now["thresholds"])]:
        before = (saved.get(section) or {}).get(key) if isinstance(saved.get(section), dict) else None
        if before is not None and before != now[section][key]:
            keep = yaml.safe_dump(before, default_flow_style=True).removesuffix("...\n").strip()
            print(f"[{cfg.exp}] note: {section}.{key} is {before!r} in {rd.config} (set by a finalize?), "
                  f"{now[section][key]!r} in this config: this run decides with {now[section][key]!r}; pass "
                  f"{section}.{key}={keep} to keep it")


@contextlib.contextmanager
def kept_on_failure(path):
    """A run that fails (a setting refused inside a fold, a diverged model) puts back the file it replaced (a
    finished run's config.yaml keeps describing that run's outputs), or removes the one it made."""
    before = path.read_bytes() if path.is_file() else None
    try:
        yield
    except Exception:  # an error (not Ctrl-C: a stopped run resumes with the settings it was started with)
        if before is None:
            path.unlink(missing_ok=True)
        elif not path.is_file() or path.read_bytes() != before:
            path.write_bytes(before)
        raise


def check_ids(path, ids: pd.Series, expected: list[str], source: str, partial: bool) -> None:
    """A probability file's ids: each once, only `expected` ones (those of `source`), and every one of them unless
    the run is partial; else a UserError naming the file."""
    twice = ids[ids.duplicated()]
    if len(twice):
        raise UserError(f"{path} lists {twice.nunique()} ids more than once (e.g. {twice.iloc[0]})")
    unknown = sorted(set(ids) - set(expected))
    if unknown:
        raise UserError(f"{path} has {len(unknown)} ids that are not in {source} (e.g. {unknown[0]})")
    if len(ids) != len(expected) and not partial:
        missing = sorted(set(expected) - set(ids))
        raise UserError(f"{path} covers {len(ids)} of {len(expected)} {source.removesuffix('.csv')} rows (missing "
                        f"e.g. {missing[0]}): a damaged file or an unfinished run; run the config again to rewrite it")


def load_oof(rd: RunDir, comp: Competition, folds: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, bool]:
    """OOF frame in train order (rows present, their train row numbers in `rows`), its probabilities, and whether it
    covers every train id."""
    if not rd.oof.is_file():
        raise UserError(f"{rd.oof} does not exist: run this config first (python -m src run --config ...)")
    oof = read_probs(rd.oof, comp.labels)
    check_ids(rd.oof, oof["id"], comp.train_ids, "train.csv", rd.partial)
    order = pd.Series(range(len(comp.train)), index=comp.train_ids)
    rows = order.loc[oof["id"]].to_numpy()
    if "fold" in oof.columns:
        if not (oof["fold"].to_numpy() == folds["fold"].to_numpy()[rows]).all():
            raise UserError(f"{rd.oof} was made with another fold file than this run's")
    keep = np.argsort(rows, kind="stable")
    oof = oof.iloc[keep].reset_index(drop=True)
    oof.attrs["rows"] = rows[keep]
    return oof, oof[comp.labels].to_numpy(np.float64), len(oof) == len(comp.train)


def load_test(rd: RunDir, comp: Competition) -> pd.DataFrame | None:
    """test.csv checked (`check_ids`); None for a partial run without one."""
    if not rd.test.is_file():
        if rd.partial:
            return None
        raise UserError(f"{rd.test} does not exist: run this config again to write it")
    test = read_probs(rd.test, comp.labels)
    check_ids(rd.test, test["id"], comp.test_ids, "test.csv", rd.partial)
    return test


def finalize(cfg: Config, comp: Competition | None = None, folds: pd.DataFrame | None = None,
             wall_s: float | None = None, partial_submission: bool = False, track: bool = True) -> dict:
    """Tune thresholds on oof.csv, write metrics, plots and (for complete runs, or with `partial_submission` for a
    run of some folds: submissions/<exp>-partial.csv from those folds' models) the submission; with
    `train.report_to: wandb` log the run's W&B summary (`track=False`: the caller adds to metrics.json and logs it)."""
    comp = comp or load_competition(cfg.data)
    if folds is None:
        folds, _ = ensure_folds(cfg, comp, verbose=False)
    rd = RunDir.of(cfg)
    check_run_data(cfg, comp, rd)
    check_made_from(rd, comp, f"run '{cfg.exp}'", f"run it again (python -m src run ... exp={cfg.exp}) before "
                    "finalizing it")
    with run_lock(rd):
        result = _finalize(cfg, comp, folds, rd, wall_s, partial_submission)
        record_thresholds(rd, cfg)
        if track:
            tracking.log_run(cfg, rd)
        return result


def _say(cfg: Config, rd: RunDir, table: pd.DataFrame, result: dict, n_train: int, wall_s: float | None) -> None:
    """The per-label table and the run's figures, on the screen."""
    print(table.round(3).to_string())
    print(f"[{cfg.exp}] the worst OOF errors per label (false positives/negatives, with texts): "
          f"{rd.report / 'errors.csv'}")
    cross, m = result["oof_crossfit"], result["metric"]
    first = "" if m == "macro_f1" else f"{m} {result['oof'][m]:.4f} (decided on the other folds: " + (
        f"{cross[m]:.4f}; " if cross else "") + f"at 0.5: {result['oof_at_0.5'][m]:.4f}), "
    print(f"[{cfg.exp}] OOF {first}macro-F1 {result['oof']['macro_f1']:.4f} ("
          + (f"thresholds tuned on the other folds: {cross['macro_f1']:.4f}; " if cross else "")
          + f"at 0.5: {result['oof_at_0.5']['macro_f1']:.4f}), "
          f"micro-F1 {result['oof']['micro_f1']:.4f}, Jaccard {result['oof']['jaccard']:.4f}"
          + (f", {wall_s:.1f} s, peak {memory.describe(result['peak_memory'])}" if wall_s is not None else ""))
    if rd.partial:
        print(f"[{cfg.exp}] partial run ({partial_reason(cfg)}): OOF covers {result['oof_rows']} of {n_train} train "
              f"rows (folds {result['folds']}); its outputs are in {rd.out}; the complete run's oof.csv, test.csv and "
              f"{rd.submission} are untouched")


def record_thresholds(rd: RunDir, cfg: Config) -> None:
    """Keep config.yaml true to the outputs: a finalize with other threshold settings or another `data.metric`
    (`finalize --exp X data.metric=jaccard`: the run decided again for another metric) rewrites them."""
    if not rd.config.is_file():
        return
    saved = yaml.safe_load(read_text(rd.config)) or {}
    now = to_dict(cfg)
    if not isinstance(saved, dict):
        return
    changed = saved.get("thresholds") != now["thresholds"] or (saved.get("data") or {}).get("metric") != cfg.data.metric
    if changed:
        saved["thresholds"] = now["thresholds"]
        saved.setdefault("data", {})["metric"] = cfg.data.metric
        write_text(rd.config, yaml.safe_dump(saved, sort_keys=False))
        print(f"[{cfg.exp}] {rd.config}: thresholds and metric updated to this finalize's settings")


def _finalize(cfg: Config, comp: Competition, folds: pd.DataFrame, rd: RunDir, wall_s: float | None,
              partial_submission: bool = False) -> dict:
    oof, probs, complete = load_oof(rd, comp, folds)
    test = load_test(rd, comp)  # both files checked before anything is written
    rows = oof.attrs["rows"]
    Y = comp.Y[rows]
    metric = cfg.data.metric
    decide = thresholds.fit(Y, probs, cfg.thresholds, comp.labels, metric)
    P = decide(probs)
    table = metrics.per_label_table(Y, P, probs, comp.labels)
    fold_of_row = folds["fold"].to_numpy()[rows]
    several = len(np.unique(fold_of_row)) > 1
    result = {
        "exp": cfg.exp,
        "model_type": cfg.model_type,
        "metric": metric,
        "complete": complete,
        "folds": sorted(map(int, np.unique(fold_of_row))),
        "oof_rows": len(oof),
        "oof": metrics.summary(Y, P, probs, first=metric),
        "oof_at_0.5": metrics.summary(Y, probs >= 0.5, probs, first=metric),
        # honest: each fold's rows decided by a rule fitted on the other folds (null for a one-fold run)
        "oof_crossfit": metrics.summary(Y, thresholds.crossfit(Y, probs, fold_of_row, cfg.thresholds, comp.labels,
                                                               metric), probs, first=metric) if several else None,
        "per_label_f1": table["f1"].round(6).to_dict(),
        "per_fold_macro_f1": {int(k): metrics.macro_f1(Y[fold_of_row == k], P[fold_of_row == k])
                              for k in np.unique(fold_of_row)},
        "mean_roc_auc": float(table["roc_auc"].mean()),
    }
    if wall_s is not None:  # this process did the run's work: its time and peak memory are the run's
        result["wall_s"] = round(wall_s, 2)
        result["peak_memory"] = memory.process_peak()
    as_probs = metric in metrics.THRESHOLD_FREE and submission.holds_floats(comp.sample)
    submit = not rd.partial or (partial_submission and test is not None)
    sub = None if not submit else submission.build(
        test["id"].tolist(), (lambda p: p if as_probs else decide(p))(test[comp.labels].to_numpy()), comp.sample,
        probabilities=as_probs)
    if sub is not None:
        submission.validate(sub, comp.sample, f"refusing to write {rd.submission}", as_probs)
    write_json(rd.thresholds, decide.to_json(comp.labels, cfg.thresholds))
    write_csv(rd.per_label, table.reset_index(), float_format="%.4f")
    errors = report.error_table([comp.train_ids[i] for i in rows], [comp.train_texts[i] for i in rows], Y, probs,
                                np.asarray(decide.thresholds, dtype=np.float64), comp.labels)
    write_csv(rd.report / "errors.csv", errors)
    if cfg.output.plots:
        report.write_all(rd.report, Y, probs, P, table, comp.labels)
    _say(cfg, rd, table, result, len(comp.train), wall_s)
    if sub is not None:
        path = rd.submissions_dir / f"{cfg.exp}-partial.csv" if rd.partial else rd.submission
        submission.write(sub, comp.sample, path, as_probs)
        result["submission"] = str(path)
        print(f"[{cfg.exp}] submission: {path}" + (f" (from folds {result['folds']} only)" if rd.partial else ""))
    write_json(rd.metrics, result)
    return result
