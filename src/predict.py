"""OOF and test probabilities from the selected checkpoints, then thresholds and the submission.

    python -m src.predict --config configs/X.yaml [key=value ...]

For every fold of the run (`folds.run`, default all) the checkpoint named in `selection.yaml` gives
- the OOF rows: its `valid_probs.npy` (saved at evaluation time: no second pass over the held-out rows);
- test probabilities: the fold model loaded and run over test.csv, cached as `fold<k>/step<N>/test_probs.npy`
  with `test_probs.json` holding the key (`test_key`: test ids+texts, labels and the inference settings); a changed
  selection or test.csv recomputes only the folds whose key no longer matches.
Every probability is checked (finite, in [0, 1]): a damaged cache is recomputed after a note, a damaged
valid_probs.npy or a model giving NaN is a one-line error. `preflight` checks settings, folds and selection first.
oof.csv and the fold-averaged test.csv go through `write_fold_outputs`, thresholds and the submission through
`pipeline.finalize`. This module is also the transformer family: `run` = train every fold -> select -> predict.
"""

from __future__ import annotations

import gc
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from src import checkpoints
from src.config import Config, dump_config, load_config, load_run_config
from src.data import Competition, load_competition
from src.errors import ArgParser, UserError, cli
from src.fileio import atomic_path, write_json, write_text
from src.folds import ensure_folds, folds_for_run
from src.progress import tqdm
from src.rundir import RunDir, check_probs, write_fold_outputs
from src.runguard import check_run_data, prepare_outputs, run_labels, run_lock

# (cfg, step_dir, labels, texts) -> probabilities [len(texts), len(labels)]
Predictor = Callable[[Config, Path, list[str], list[str]], np.ndarray]


def predict_checkpoint(cfg: Config, step_dir: Path, labels: list[str], texts: list[str]) -> np.ndarray:
    """Load one fold's checkpoint and return its sigmoid probabilities for `texts` (then free the model)."""
    import torch

    from src.models.transformer import load_checkpoint, predict_probs

    model, tokenizer = load_checkpoint(cfg, step_dir, labels)
    try:
        return predict_probs(model, tokenizer, texts, cfg)
    finally:
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def test_key(cfg: Config, comp: Competition) -> dict:
    """What a cached test_probs.npy depends on besides the checkpoint itself (the precision as resolved on this
    machine: `auto` autocasts differently on CPU, a T4 and an A100)."""
    from src.precision import resolve_precision

    h = hashlib.sha1()
    for i, t in zip(comp.test_ids, comp.test_texts):
        h.update(f"{i}\t{t}\n".encode())
    return {"test_sha1": h.hexdigest(), "labels": list(comp.labels), "max_length": cfg.model.max_length,
            "text_prefix": cfg.model.text_prefix, "name_or_path": cfg.model.name_or_path,
            "padding_side": cfg.model.padding_side, "dtype": cfg.model.dtype,
            "precision": resolve_precision(cfg.train.precision)}


def _cached_test_probs(step_dir: Path, key: dict, labels: list[str], n_rows: int) -> np.ndarray | None:
    """The cached test probabilities of `step_dir` if made under `key`; a damaged cache (unreadable, wrong shape,
    NaN or out-of-[0, 1] values) gets a one-line note and None (it is recomputed)."""
    npy, meta = step_dir / "test_probs.npy", step_dir / "test_probs.json"
    if not (npy.is_file() and meta.is_file()):
        return None
    try:
        if json.loads(meta.read_text(encoding="utf-8")) != key:
            return None
        probs = check_probs(np.load(npy), labels, str(npy))
        if len(probs) != n_rows:
            raise UserError(f"{npy} has {len(probs)} rows, test.csv {n_rows}")
    except (ValueError, OSError, EOFError, UserError) as e:
        print(f"note: the cached {npy} is damaged ({str(e).splitlines()[0][:160]}): recomputing it")
        return None
    return probs


def _valid_probs(rd: RunDir, k: int, step: int, n_rows: int, n_labels: int) -> np.ndarray:
    """valid_probs.npy of fold k's `step`, checked; a missing or damaged file is a UserError naming it."""
    path = rd.step(k, step) / "valid_probs.npy"
    if not path.is_file():
        raise UserError(f"{path} is missing: fold {k} step {step} cannot give OOF probabilities")
    try:
        probs = checkpoints.load_valid_probs(path, n_labels)
    except UserError as e:
        raise UserError(f"{e}; pick another step of fold {k} (python -m src.checkpoints select), or delete "
                        f"{rd.fold(k)} and train it again") from None
    if len(probs) != n_rows:
        raise UserError(f"{path} has shape {probs.shape}, fold {k} has {n_rows} held-out rows x {n_labels} labels "
                        "(was it trained with another fold file?)")
    return probs


def selected_steps(cfg: Config, rd: RunDir) -> dict[int, int]:
    """{fold: step} for the run's folds from selection.yaml; folds without an entry get the rule's pick."""
    run_folds = folds_for_run(cfg)
    not_done = [k for k in run_folds if not checkpoints.fold_done(rd, k)]
    if not_done:
        raise UserError(f"folds {not_done} of {rd.root} have not finished training (no done.json); train them "
                        f"(python -m src.train --config ...) or set folds.run to the finished folds")
    saved = checkpoints.read_selection(rd)
    missing = [k for k in run_folds if k not in saved]
    if missing:
        rule, tolerance = checkpoints.saved_rule(rd)
        checkpoints.select(cfg, rd, rule=rule, tolerance=tolerance, folds=missing)
        saved = checkpoints.read_selection(rd)
        empty = [k for k in run_folds if k not in saved]
        if empty:
            raise UserError(f"folds {empty} of {rd.root} have no checkpoints to predict from")
    return {k: int(saved[k]["step"]) for k in run_folds}


def predict(cfg: Config, comp: Competition, folds: pd.DataFrame, rd: RunDir,
            predictor: Predictor | None = None, cache: bool = True) -> dict[int, int]:
    """Write oof.csv and test.csv from the selected checkpoints; returns {fold: step} used. `cache=False` (read-only
    checkpoints, e.g. a pack in /kaggle/input): test probabilities are neither read from nor written beside them."""
    predictor = predictor or predict_checkpoint
    steps = selected_steps(cfg, rd)
    fold = folds["fold"].to_numpy()
    key, n_labels, texts = test_key(cfg, comp), len(comp.labels), comp.test_texts
    per_fold, computed = {}, []
    for k, step in tqdm(steps.items(), desc="test predictions", unit="fold"):
        step_dir = rd.step(k, step)
        valid = _valid_probs(rd, k, step, int((fold == k).sum()), n_labels)
        test = _cached_test_probs(step_dir, key, comp.labels, len(texts)) if cache else None
        if test is None:
            test = np.asarray(predictor(cfg, step_dir, comp.labels, texts), dtype=np.float32)
            if test.shape != (len(texts), n_labels):
                raise UserError(f"{step_dir}: the model gave probabilities of shape {test.shape} for {len(texts)} "
                                f"texts x {n_labels} labels")
            check_probs(test, comp.labels, f"test predictions of {step_dir}", comp.test_ids)  # never cached if bad
            if cache:
                with atomic_path(step_dir / "test_probs.npy") as tmp, open(tmp, "wb") as f:
                    np.save(f, test)
                write_json(step_dir / "test_probs.json", key)
            computed.append(k)
        per_fold[k] = (valid, test.astype(np.float64))
    write_fold_outputs(rd, comp, folds, per_fold)
    cached = [k for k in steps if k not in computed]
    print(f"[{cfg.exp}] checkpoints {', '.join(f'fold{k}/step{s}' for k, s in steps.items())}; test probabilities "
          f"computed for folds {computed or 'none'}, cached for {cached or 'none'}")
    return steps


def check_trained_settings(cfg: Config, rd: RunDir, sections=("model", "lora")) -> None:
    """Predict only with the settings the run was trained with (its config.yaml): a config that differs in `sections`
    (a forgotten max_length override, another model) is a UserError naming each key."""
    from src.config import load_saved_sections, to_dict
    from src.fingerprint import changes

    if not rd.root.joinpath("config.yaml").is_file():
        return
    saved = to_dict(load_saved_sections(rd.root / "config.yaml", list(sections)))
    now = to_dict(cfg)
    differ, _ = changes({s: saved[s] for s in sections}, {s: now[s] for s in sections})
    if differ:
        raise UserError(f"{rd.root} was trained with other settings than this config's ({', '.join(differ)}): "
                        f"predict with the run's own settings (python -m src predict --exp {rd.root.name}), or fix "
                        "the overrides")


def preflight(cfg: Config, comp: Competition, folds: pd.DataFrame, rd: RunDir, predict_only: bool = False) -> None:
    """Checks before any work. The family run (`run`: train -> select -> predict): `src.train.preflight` (settings,
    every run fold's done.json / resume state against its fingerprint) and a readable selection.yaml whose manual
    picks of finished folds exist. `predict_only` (python -m src.predict): the settings, every run fold finished
    under its current fingerprint (train.csv edited since: an error), selection.yaml readable and each selected
    checkpoint intact."""
    from src import train

    run_folds = folds_for_run(cfg)
    if predict_only:
        train.check_train_config(cfg)
        check_run_data(cfg, comp, rd)
        not_done = [k for k in run_folds if not checkpoints.fold_done(rd, k)]
        if not_done:
            raise UserError(f"folds {not_done} of {rd.root} have not finished training (no done.json); train them "
                            f"(python -m src.train --config ...) or set folds.run to the finished folds")
        check_trained_settings(cfg, rd)
        for k in run_folds:
            train.check_fold(cfg, comp, folds, rd, k)
    else:
        train.preflight(cfg, comp, folds, rd)
    saved = checkpoints.read_selection(rd)
    checkpoints.saved_rule(rd)
    for k in run_folds:
        entry = saved.get(k)
        if entry is None or not checkpoints.fold_done(rd, k) or not (predict_only or entry["rule"] == "manual"):
            continue
        d = rd.step(k, int(entry["step"]))
        problem = (f"{d} does not exist" if not (d / "metrics.json").is_file()
                   else checkpoints.checkpoint_problem(d))
        if problem:
            raise UserError(f"{rd.selection} picks fold {k} step {entry['step']}, but {problem}: pick another step "
                            f"(python -m src.checkpoints select {rd.root.name} --fold {k} --step N)")


def predict_folds(cfg: Config, rd: RunDir, texts: list[str]) -> dict[int, np.ndarray]:
    """Each fold's selected checkpoint (selection.yaml, read only) applied to `texts` (normalized as the run's were)."""
    from src.text import normalize

    saved, labels = checkpoints.read_selection(rd), run_labels(rd)
    missing = [k for k in folds_for_run(cfg) if k not in saved]
    if missing:
        raise UserError(f"{rd.selection} picks no checkpoint for folds {missing}: finish the run (python -m src run "
                        f"... exp={rd.root.name}) first")
    texts = normalize(texts, cfg.data.normalize)
    return {k: predict_checkpoint(cfg, rd.step(k, int(saved[k]["step"])), labels, texts)
            for k in tqdm(folds_for_run(cfg), desc=f"predicting with {rd.root.name}", unit="fold")}


def run(cfg: Config, comp: Competition, folds: pd.DataFrame, rd: RunDir, callbacks: tuple = ()) -> None:
    """The transformer family: train every fold (resuming), select checkpoints by the config's rule, predict."""
    from src.train import train_folds

    train_folds(cfg, comp, folds, rd, callbacks)
    checkpoints.select(cfg, rd, folds=folds_for_run(cfg))
    predict(cfg, comp, folds, rd)


@cli
def main(argv: list[str] | None = None) -> dict:
    from src.pipeline import finalize

    if any(a == "--input" or a.startswith("--input=") for a in (sys.argv[1:] if argv is None else argv)):
        from src.apply import main as apply_main  # any finished run (or pack) applied to new texts

        return apply_main(argv)
    p = ArgParser(prog="python -m src.predict", description="Predict from selected checkpoints.")
    p.add_argument("--config", default=None, help="the config the run was trained with (or --exp)")
    p.add_argument("--exp", default=None, help="a run's name: predict with its own saved config (no --config)")
    p.add_argument("overrides", nargs="*", help="key=value config overrides (e.g. data.data_dir on another machine)")
    a = p.parse_intermixed_args(argv)
    if bool(a.config) == bool(a.exp):
        p.error("give --config (the one the run was trained with) or --exp (the run's saved config)")
    t0 = time.time()
    cfg = load_run_config(a.exp, a.overrides) if a.exp else load_config(a.config, a.overrides)
    if cfg.model_type != "transformer":
        raise UserError(f"src.predict predicts from transformer checkpoints; this config's model_type is "
                        f"{cfg.model_type!r} (run it with python -m src run --config {a.config})")
    comp = load_competition(cfg.data)
    rd = RunDir.of(cfg)
    check_run_data(cfg, comp, rd)  # another dataset's run folder: refused before the fold file is made
    folds, _ = ensure_folds(cfg, comp)
    preflight(cfg, comp, folds, rd, predict_only=True)
    with run_lock(rd):
        prepare_outputs(rd, cfg, comp)
        if not rd.config.is_file():
            write_text(rd.config, dump_config(cfg, absolute=True))
        predict(cfg, comp, folds, rd)
        return finalize(cfg, comp, folds, wall_s=time.time() - t0)


if __name__ == "__main__":
    main()
