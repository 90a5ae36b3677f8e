"""Full pipeline for a list of configs (10 folds -> selection -> OOF/test -> thresholds -> submission), one table.

    python bench/quality.py --data-dir DIR configs/tfidf.yaml configs/probe_minilm.yaml [--blend] [key=value ...]

Prints config, OOF macro-F1 / micro-F1 / Jaccard, per-label F1, wall time and peak GPU memory; with --blend,
blends the runs on OOF and prints the blend's row. Each run's submission is copied to bench/results/<exp>.csv
(ids and 0/1 only) so a leaderboard can score it. Runs already finished are reused (the pipeline resumes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pandas as pd  # noqa: E402

from src.config import load_config  # noqa: E402
from src.ensemble import blend  # noqa: E402
from src.errors import cli  # noqa: E402
from src.pipeline import run  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def peak_gpu_gb() -> float:
    try:
        import torch

        return torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else float("nan")
    except ImportError:
        return float("nan")


def row(name: str, m: dict, wall: float, peak: float) -> dict:
    return {"config": name, "metric": m["metric"], "macro_f1": m["oof"]["macro_f1"],
            "at_0.5": m["oof_at_0.5"]["macro_f1"],
            "micro_f1": m["oof"]["micro_f1"], "jaccard": m["oof"]["jaccard"], "wall_s": wall, "peak_gpu_gb": peak,
            **{f"f1_{k}": v for k, v in m["per_label_f1"].items()}}


def keep_submission(m: dict, results: Path) -> None:
    if m.get("submission"):
        results.mkdir(parents=True, exist_ok=True)
        shutil.copy(m["submission"], results / Path(m["submission"]).name)


@cli
def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("configs", nargs="+", help="config files, then optional key=value overrides for every run")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--blend", action="store_true", help="blend the runs on OOF and add the blend's row")
    p.add_argument("--blend-name", default="quality_blend")
    p.add_argument("--results", type=Path, default=RESULTS, help="where submissions are copied (bench/results)")
    a = p.parse_intermixed_args(argv)
    configs = [c for c in a.configs if "=" not in c]
    overrides = [f"data.data_dir={a.data_dir}", *[c for c in a.configs if "=" in c]]
    rows, names = [], []
    for path in configs:
        cfg = load_config(path, overrides)
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
        except ImportError:
            pass
        t0 = time.perf_counter()
        m = run(cfg)
        rows.append(row(cfg.exp, m, time.perf_counter() - t0, peak_gpu_gb()))
        names.append(cfg.exp)
        keep_submission(m, a.results)
    if a.blend and len(names) > 1:
        t0 = time.perf_counter()
        m = blend(names, a.blend_name, [f"data.data_dir={a.data_dir}"])
        r = row(f"{a.blend_name} (blend)", m, time.perf_counter() - t0, float("nan"))
        r[f"nested_{m['metric']}"] = m["ensemble"].get(f"nested_{m['metric']}")  # the blend's data.metric
        rows.append(r)
        keep_submission(m, a.results)
    table = pd.DataFrame(rows).set_index("config")
    pd.set_option("display.width", 250)
    print("\nquality bench (OOF, per-label thresholds tuned on OOF):")
    print(table[[c for c in table.columns if not c.startswith("f1_")]].round(4).to_string())
    print("\nper-label OOF F1:")
    print(table[[c for c in table.columns if c.startswith("f1_")]].round(3).to_string())
    return table


if __name__ == "__main__":
    main()
