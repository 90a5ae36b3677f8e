"""Experiment tracking (Weights & Biases): what `train.report_to` may say, checked before any work, and the summary
run every finished run logs (`log_run`): its metrics, per-label table and thresholds, and its outputs (oof.csv,
test.csv, thresholds.json, metrics.json, per_label.csv, config.yaml, the submission) as an artifact. Transformer
runs also log one run per fold with the training curves (src/train.py), in the same W&B group (the run's exp).

The API key comes from the environment (`WANDB_API_KEY`) or `wandb login` (~/.netrc), never from a config;
`WANDB_MODE=offline` logs to ./wandb without one (`wandb sync` uploads it later), `WANDB_MODE=disabled` logs nothing.
"""

from __future__ import annotations

import importlib.util
import netrc
import os
import re
from pathlib import Path

import pandas as pd

from src.config import Config, to_dict
from src.errors import UserError
from src.fileio import read_json
from src.rundir import RunDir

REPORT_TO = ("none", "", "wandb")


def has_wandb_key() -> bool:
    """Whether W&B can authenticate here: WANDB_API_KEY, or a key `wandb login` left in the netrc file."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return netrc.netrc(str(path)).authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def check(report_to: str) -> None:
    """`train.report_to` is none or wandb; wandb needs the package and a key (or WANDB_MODE offline/disabled), found
    now rather than after the model has loaded."""
    if report_to not in REPORT_TO:
        raise UserError(f"train.report_to must be none or wandb, got {report_to!r}")
    if report_to != "wandb":
        return
    if importlib.util.find_spec("wandb") is None:
        raise UserError("train.report_to=wandb needs the wandb package: pip install wandb")
    if os.environ.get("WANDB_MODE", "").lower() not in ("offline", "disabled", "dryrun") and not has_wandb_key():
        raise UserError("train.report_to=wandb (--wandb) has no W&B credentials here: set WANDB_API_KEY (or run "
                        "`wandb login`), or WANDB_MODE=offline to log locally and `wandb sync` later")


def project(cfg: Config) -> str:
    """The W&B project: `extra.wandb_project`, default multilabel-text."""
    return str(cfg.extra.get("wandb_project", "multilabel-text"))


def flat(result: dict) -> dict:
    """metrics.json as W&B summary keys: "oof/jaccard", "oof_crossfit/macro_f1", "per_label_f1/joy", "ensemble/
    nested_macro_f1", ... (numbers, strings and booleans; nested dicts joined with "/")."""
    out = {}
    for key, value in result.items():
        if isinstance(value, dict):
            out |= {f"{key}/{k}": v for k, v in flat(value).items()}
        elif isinstance(value, (int, float, str, bool)):
            out[key] = value
    return out


def log_run(cfg: Config, rd: RunDir) -> None:
    """With `train.report_to: wandb`: one W&B run (job_type "summary", group = the exp) for this finished run of any
    kind: the config, metrics.json's figures as its summary, the per-label table and thresholds as tables, and the
    run's output files as an artifact of type run-outputs."""
    if cfg.train.report_to != "wandb":
        return
    import wandb

    result = read_json(rd.metrics)
    name = cfg.exp + ("-partial" if rd.partial else "")
    with wandb.init(project=project(cfg), name=name, group=cfg.exp, job_type="summary", config=to_dict(cfg)) as run:
        run.summary.update(flat(result))
        th = read_json(rd.thresholds).get("thresholds", {})
        run.log({"per_label": wandb.Table(dataframe=pd.read_csv(rd.per_label)),
                 "thresholds": wandb.Table(columns=["label", "threshold"], data=[[k, v] for k, v in th.items()])})
        outputs = wandb.Artifact(re.sub(r"[^\w.-]", "_", name) + "-outputs", type="run-outputs",
                                 metadata={"metric": result.get("metric"), "complete": result.get("complete")})
        for path in (rd.oof, rd.test, rd.thresholds, rd.metrics, rd.per_label, rd.config, result.get("submission")):
            if path and Path(path).is_file():
                outputs.add_file(str(path))
        run.log_artifact(outputs)
    print(f"[{cfg.exp}] W&B: summary run {name!r} in project {project(cfg)!r} (group {cfg.exp!r})")
