"""What the notebooks' settings cells call: the run's config from the cell's settings (`resolve`), a short summary of
it (`summary`), and smoke overrides for every model family (`smoke_overrides`).

    cfg = resolve("configs/roberta-base.yaml", folds=[0, 1], overrides=["model.name_or_path=roberta-large"])
    print(summary(cfg, "configs/roberta-base.yaml"))    # exp roberta-base-roberta-large, its folders, what changed
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from src import progress, smoke  # noqa: F401  (progress first: quiets tqdm's IProgress warning in notebooks)
from src.config import Config, load_config, to_dict
from src.data import find_data_dir
from src.rundir import RunDir, partial_reason

# model_type -> overrides that make a smoke run of a family without a smoke.setup of its own quick on a CPU
SMOKE_FAMILY = {
    "probe": ["probe.n_jobs=1", "probe.max_iter=200"],
    "llm": ["llm.max_new_tokens=4", "llm.batch_size=16"],
    "llm_finetune": ["llm.max_new_tokens=4", "llm.batch_size=16", "train.max_steps=2", "train.batch_size=8",
                     "lora.r=4"],
}
SMOKE_MEMBERS = ("configs/tfidf.yaml", "configs/tfidf_cnb.yaml")  # the runs a smoke blend trains and blends
SHOWN = {"exp", "model_type", "model.name_or_path", "data.data_dir", "folds.run", "folds.n_folds",
         "output.checkpoints_dir", "output.submissions_dir"}  # in the summary's own lines, not among the changes


def smoke_overrides(config: str | Path, root: str | Path = "smoke") -> list[str]:
    """`smoke.setup` for a transformer or TF-IDF config; for a probe or LLM config the same synthetic data and
    output folders (smoke.setup of the TF-IDF defaults), a tiny random model of its architecture and short runs."""
    cfg = load_config(config)
    if cfg.model_type not in SMOKE_FAMILY:
        return smoke.setup(config, root)
    overrides = smoke.setup(None, root)
    root = Path(root).resolve()
    arch = smoke.arch_of(cfg.model.name_or_path)
    texts = pd.read_csv(root / "data" / "train.csv")["Tweet"].tolist()
    model = smoke.tiny_model(arch, root / "models" / arch, texts)
    return [*overrides, f"model.name_or_path={model}", "model.dtype=float32", "model.max_length=32",
            "model.trust_remote_code=false", f"probe.cache_dir={root / 'checkpoints' / '_features'}",
            *SMOKE_FAMILY[cfg.model_type]]


def model_exp(config: str | Path | None, overrides: list[str]) -> str:
    """`<config stem>-<last part of the model path>` when `overrides` change model.name_or_path from the config
    file's and set no exp (so a second model gets its own run folder); else ""."""
    given = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep:
            given[key.strip()] = value
    model = given.get("model.name_or_path", "")
    if config is None or "exp" in given or not model or model == load_config(config).model.name_or_path:
        return ""
    last = re.split(r"[/\\]", model.rstrip("/\\"))[-1]
    return f"{Path(config).stem}-{re.sub(r'[^A-Za-z0-9_.+=@,-]', '-', last)}".rstrip(".")


def settings_overrides(config: str | Path | None, overrides: list[str] = (), data_dir: str | Path = "",
                       out_dir: str | Path = "", smoke_run: bool = False, smoke_dir: str | Path = "smoke") -> list[str]:
    """The overrides a settings cell stands for: the data folder (`data_dir`, else found by `find_data_dir`; a smoke
    run: synthetic data and a tiny model under `smoke_dir`), `out_dir`'s checkpoints/ and submissions/, the cell's
    `overrides`, and an exp named after the model when `overrides` switch it (`model_exp`)."""
    overrides = list(overrides)
    out = ([f"output.checkpoints_dir={out_dir}/checkpoints", f"output.submissions_dir={out_dir}/submissions"]
           if str(out_dir) else [])
    exp = model_exp(config, overrides)
    named = [f"exp={exp}"] if exp else []
    if smoke_run:
        return [*out, *overrides, *named, *smoke_overrides(config or SMOKE_MEMBERS[0], smoke_dir)]
    return [f"data.data_dir={find_data_dir(data_dir)}", *out, *overrides, *named]


def resolve(config: str | Path, folds: list[int] = (), overrides: list[str] = (), data_dir: str | Path = "",
            out_dir: str | Path = "", smoke_run: bool = False, smoke_dir: str | Path = "smoke") -> Config:
    """The config a notebook runs: `config` with `folds` to train ([] = every fold) and `settings_overrides`."""
    return load_config(config, [f"folds.run={list(folds)}",
                                *settings_overrides(config, overrides, data_dir, out_dir, smoke_run, smoke_dir)])


def blend_setup(runs: list[str], overrides: list[str] = (), data_dir: str | Path = "", out_dir: str | Path = "",
                smoke_run: bool = False, smoke_dir: str | Path = "smoke") -> tuple[list[str], list[str]]:
    """(runs, overrides) for `src.ensemble.blend`; a smoke run first trains SMOKE_MEMBERS on the synthetic data and
    blends those instead of `runs`."""
    from src.pipeline import run

    overrides = settings_overrides(None, overrides, data_dir, out_dir, smoke_run, smoke_dir)
    if not smoke_run:
        return list(runs), overrides
    members = [run(load_config(config, overrides))["exp"] for config in SMOKE_MEMBERS]
    return members, overrides


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "extra":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def changes(cfg: Config, config: str | Path | None) -> dict[str, tuple]:
    """{key: (the config file's value, cfg's value)} for every setting that differs from the file."""
    base, now = _flat(to_dict(load_config(config))), _flat(to_dict(cfg))
    return {k: (base.get(k), v) for k, v in now.items() if base.get(k) != v}


def summary(cfg: Config, config: str | Path | None) -> str:
    """A few lines for the settings cell: exp, model type and model, data folder, folds, where the outputs go, and
    the settings that differ from the config file (the whole config is saved as the run's config.yaml)."""
    rd = RunDir.of(cfg)
    folds = f"{cfg.folds.run} of {cfg.folds.n_folds}" if cfg.folds.run else f"all {cfg.folds.n_folds}"
    partial = partial_reason(cfg)
    lines = [("exp", cfg.exp), ("model_type", cfg.model_type)]
    if cfg.model_type != "tfidf":
        lines.append(("model", cfg.model.name_or_path))
    lines += [("data", cfg.data.data_dir), ("folds", folds), ("checkpoints", rd.out),
              ("submission", f"none: partial run ({partial})" if partial else rd.submission)]
    changed = {k: v for k, v in changes(cfg, config).items() if k not in SHOWN}
    lines += [("changed" if i == 0 else "", f"{k}: {old!r} -> {new!r}") for i, (k, (old, new)) in
              enumerate(changed.items())]
    return "\n".join(f"{name:12} {value}" for name, value in lines)
