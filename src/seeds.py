"""Several seeds (or variants) of one config, each trained as its own run, then averaged with equal weights.

    python -m src.seeds --config configs/minilm-l6.yaml --seeds 42,43,44 [--out NAME] [key=value ...]
    python -m src.seeds --config configs/tfidf.yaml --vary tfidf.C=0.5,1,2 [--out NAME] [key=value ...]

`<exp>` is the config's exp after the overrides. Seed s is the run `<exp>-s<s>` (`train.seed=s`), a --vary value v
the run `<exp>-<key>=<v>` (key: the last part of KEY; v cleaned to an exp name). Each run goes through
`src.pipeline.run` (finished folds are reused: rerun the command to resume), then `src.ensemble.blend(equal=True)`
writes the average `<exp>-seeds<N>` (`<exp>-<key>-avg<N>` for --vary; --out names it), finalized like any run:
thresholds, metrics.json, report, submission. Every setting of every run is checked before the first one trains.
"""

from __future__ import annotations

import re
import time

import numpy as np

from src import pipeline
from src.config import Config, check_cli_overrides, check_exp, load_config, to_dict
from src.ensemble import blend
from src.errors import ArgParser, UserError, cli
from src.rundir import partial_reason


def seed_unused(cfg: Config) -> str:
    """Why train.seed cannot change this config's run ("" when it does)."""
    if cfg.model_type == "tfidf":
        return "its fits are deterministic"
    if cfg.model_type == "llm":
        return "zero-shot scoring is deterministic; the seed only samples llm.max_*_rows, which makes a partial run"
    if cfg.model_type == "probe" and cfg.probe.classifier != "mlp":
        return f"probe.classifier={cfg.probe.classifier} is deterministic (only mlp uses the seed)"
    return ""


def split_values(text: str) -> list[str]:
    """`a,b,[1, 2]` -> ['a', 'b', '[1, 2]']: commas inside brackets stay with their value."""
    values, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            values, cur = [*values, cur.strip()], ""
            continue
        depth += (ch in "[{(") - (ch in "]})")
        cur += ch
    return [*values, cur.strip()]


def plan(config: str | None, overrides: list[str], seeds: str | None, vary: str | None,
         out: str | None) -> tuple[list[Config], str]:
    """The member configs (each checked as `pipeline.run` would) and the average's name; nothing is written."""
    base = load_config(config, overrides)
    if seeds is not None:
        what, key, values = "--seeds", "train.seed", split_values(seeds)
        if bad := [v for v in values if not re.fullmatch(r"-?\d+", v)]:
            raise UserError(f"--seeds takes integers like 42,43,44, got {bad[0]!r}")
        values = [str(int(v)) for v in values]
        names, default_out = [f"{base.exp}-s{v}" for v in values], f"{base.exp}-seeds{len(values)}"
    else:
        what, (key, sep, raw) = "--vary", vary.partition("=")
        key, values, short = key.strip(), split_values(raw), key.strip().rsplit(".", 1)[-1]
        if not sep or not key:
            raise UserError(f"--vary takes KEY=V1,V2,..., e.g. --vary train.max_steps=500,1000; got {vary!r}")
        if key == "exp" or key.split(".")[0] in ("data", "folds", "output", "thresholds"):
            raise UserError(f"--vary {key}: the runs of an average share their name stem, data, folds, output folders "
                            "and threshold settings (thresholds: python -m src finalize --exp <exp> thresholds...)")
        clean = [re.sub(r"[^A-Za-z0-9_.\-+@,]+", "_", re.sub(r"[\[\](){}'\" ]", "", v)).strip("_") for v in values]
        names = [f"{base.exp}-{short}{c or 'empty'}" for c in clean]  # no "=": commands read KEY=VALUE as a setting
        default_out = f"{base.exp}-{short}-avg{len(values)}"
    if key == "train.seed" and (why := seed_unused(base)):
        raise UserError(f"{what}: model_type {base.model_type} does not use train.seed ({why}), so every seed "
                        "would give the same run; vary a setting instead (--vary KEY=V1,V2,...)")
    if len(values) < 2:
        raise UserError(f"{what} needs at least two values to average, got {', '.join(values)}")
    cfgs = [load_config(config, [*overrides, f"{key}={v}", f"exp={n}"]) for v, n in zip(values, names)]
    seen: dict[str, str] = {}
    for v, c in zip(values, cfgs):
        same = seen.setdefault(repr({**to_dict(c), "exp": ""}), v)
        if same != v or values.count(v) > 1:
            raise UserError(f"{what} names {v} twice" if same == v else f"{what}: {same} and {v} give the same config")
    if len(set(names)) < len(names):
        raise UserError(f"{what}: the values {', '.join(values)} give clashing run names ({', '.join(names)})")
    for c in cfgs:
        pipeline.check_config(c)
        if reason := partial_reason(c):
            raise UserError(f"{c.exp} would be a partial run ({reason}): an average needs complete runs")
    out = out or default_out
    check_exp(out)
    if out in names:
        raise UserError(f"--out '{out}' is one of the runs; choose a new name")
    return cfgs, out


@cli
def main(argv: list[str] | None = None) -> dict:
    p = ArgParser(prog="python -m src.seeds", description="Train several seeds (or variants) of a config, average.")
    p.add_argument("--config", default=None, help="YAML config (default: the TF-IDF baseline's defaults)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--seeds", help="train.seed values, e.g. 42,43,44")
    which.add_argument("--vary", metavar="KEY=V1,V2,...", help="one setting's values, e.g. train.max_steps=500,1000")
    p.add_argument("--out", default=None, help="the average's run name (default <exp>-seeds<N> / <exp>-<key>-avg<N>)")
    p.add_argument("overrides", nargs="*", help="key=value config overrides for every run")
    a = p.parse_intermixed_args(argv)
    check_cli_overrides(a.overrides)
    cfgs, out = plan(a.config, a.overrides, a.seeds, a.vary, a.out)
    runs = []
    for cfg in cfgs:
        t0 = time.time()
        runs.append((cfg.exp, pipeline.run(cfg), time.time() - t0))
    o = cfgs[0].output
    t0 = time.time()
    avg = blend([name for name, _, _ in runs], out,
                [*(x for x in a.overrides if not x.startswith("exp=")), f"output.checkpoints_dir={o.checkpoints_dir}",
                 f"output.submissions_dir={o.submissions_dir}", f"output.plots={str(o.plots).lower()}"], equal=True)
    info, width = avg["ensemble"], max(len(n) for n in [out, "mean of the runs", *(n for n, _, _ in runs)]) + 2
    m = info["metric"]  # data.metric: each run's figure, the nested ones and the average's, all of it
    own = np.array([r["oof"][m] for _, r, _ in runs])
    print(f"\n[{out}] equal-weight average of {len(runs)} runs (OOF {m} after decisions fitted for it):")
    print(f"  {'run':<{width}}{'OOF':>8}{'nested':>8}{'wall s':>9}")
    for name, r, wall in runs:
        print(f"  {name:<{width}}{r['oof'][m]:>8.4f}{info['members'][name][f'nested_{m}']:>8.4f}{wall:>9.1f}")
    print(f"  {'mean of the runs':<{width}}{own.mean():>8.4f}  (sd {own.std(ddof=1):.4f})")
    print(f"  {out:<{width}}{info[f'oof_{m}']:>8.4f}{info[f'nested_{m}']:>8.4f}{time.time() - t0:>9.1f}")
    print("  nested: each fold's rows decided by a rule fitted on the other folds; submission: "
          f"{avg.get('submission')}")
    return {"metric": m, "runs": {name: {f"oof_{m}": r["oof"][m], "wall_s": round(wall, 2)} for name, r, wall in runs},
            "average": avg}

if __name__ == "__main__":
    main()
