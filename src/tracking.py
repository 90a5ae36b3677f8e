"""Experiment tracking (Weights & Biases): what `train.report_to` may say, checked before any work.

The API key comes from the environment (`WANDB_API_KEY`) or `wandb login` (~/.netrc), never from a config;
`WANDB_MODE=offline` logs to ./wandb without one (`wandb sync` uploads it later), `WANDB_MODE=disabled` logs nothing.
"""

from __future__ import annotations

import importlib.util
import netrc
import os
from pathlib import Path

from src.errors import UserError

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
