"""One entry point: `python -m src <command> ...` (each command is also `python -m src.<module>`).

commands:
  run        train every fold of a config, then thresholds, metrics, plots, submission
  finalize   thresholds, metrics, plots and submission from a run's oof.csv + test.csv
  config     print the resolved config, one key (--get exp) or every valid key (--keys)
  folds      make or check the fold file and print per-fold label counts
  data       convert original SemEval-2018 E-c / GoEmotions files into a competition folder
  validate   check a submission CSV against sample_submission.csv
  train      fine-tune transformers per fold (checkpoints per evaluation)
  checkpoints  list / select checkpoints
  predict    OOF and test probabilities from the selected checkpoints
  ensemble   blend runs on OOF
  stack      per-label logistic regression over runs' OOF logits, fitted fold-wise
  seeds      train several seeds (or --vary values) of a config, then their equal-weight average
  pack       pack finished runs (selected checkpoints + code) for an offline Kaggle notebook
  runs       one table of every run: metric, honest figure, folds, wall time, peak memory, submission
  tune       hyperparameter search (Optuna): each trial a run, the study resumable and shareable
"""

from __future__ import annotations

import importlib
import sys

from src.config import check_cli_overrides, load_config, load_run_config
from src.errors import ArgParser, cli
from src.folds import parse_folds

MODULES = {"config": "src.config", "folds": "src.folds", "data": "src.data", "validate": "src.submission",
           "train": "src.train", "checkpoints": "src.checkpoints", "predict": "src.predict", "ensemble": "src.ensemble",
           "stack": "src.stack", "seeds": "src.seeds", "pack": "src.pack", "runs": "src.runs",
           "tune": "src.tune"}


@cli
def _check_args(argv: list[str] | None) -> None:
    """Command-line rules for every command (an explicit empty `folds.run=` is an error), before any work."""
    check_cli_overrides(argv or [])


@cli
def _pipeline(argv: list[str] | None) -> None:
    from src import pipeline

    p = ArgParser(prog=f"python -m src {argv[0]}")
    p.add_argument("--config", default=None, help="YAML config (default: the TF-IDF baseline's defaults)")
    if argv[0] == "finalize":
        p.add_argument("--exp", default=None, help="a run's name: its own saved config instead of --config")
        p.add_argument("--partial-submission", action="store_true",
                       help="a run of some folds: write a submission from those folds' models anyway")
    p.add_argument("--folds", default=None, help="folds to run, e.g. 0,3 or 0-4 (sets folds.run; default: all)")
    p.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. data.data_dir=/kaggle/input/x")
    a = p.parse_intermixed_args(argv[1:])
    if getattr(a, "exp", None) and a.config:
        p.error("give --config or --exp, not both")
    exp = getattr(a, "exp", None)
    cfg = load_run_config(exp, a.overrides, partial=True) if exp else load_config(a.config, a.overrides)
    if a.folds is not None:
        cfg.folds.run = parse_folds(a.folds, cfg.folds.n_folds)
    if argv[0] == "run":
        pipeline.run(cfg)
    else:
        pipeline.finalize(cfg, partial_submission=a.partial_submission)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    _check_args(argv[1:])
    if argv[0] in ("run", "finalize"):
        return _pipeline(argv)
    if argv[0] not in MODULES:
        print(f"{__doc__}\nerror: unknown command {argv[0]!r} (commands: run, finalize, {', '.join(MODULES)})",
              file=sys.stderr)
        raise SystemExit(2)
    importlib.import_module(MODULES[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    main()
