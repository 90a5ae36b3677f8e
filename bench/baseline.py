"""Time the TF-IDF baseline's full 10-fold pipeline and print its OOF figures.

    .venv/bin/python bench/baseline.py --data-dir ../shared/data/emotion-detection [key=value ...]
    .venv/bin/python bench/baseline.py --data-dir data/goemotions      # 28 labels, 48,836 rows: target <= 300 s
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from src.config import load_config  # noqa: E402
from src.errors import cli  # noqa: E402
from src.pipeline import run  # noqa: E402

TARGETS = {"emotion-detection": (60, 0.53), "goemotions": (300, None)}  # data folder -> (wall s, OOF macro-F1)


@cli
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--data-dir", default="data")
    p.add_argument("--config", default="configs/tfidf.yaml")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    cfg = load_config(a.config, [f"data.data_dir={a.data_dir}", "exp=bench-tfidf", *a.overrides])
    t0 = time.perf_counter()
    r = run(cfg)
    wall = time.perf_counter() - t0
    peak = max(resource.getrusage(w).ru_maxrss for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
    wall_target, f1_target = TARGETS.get(Path(cfg.data.data_dir).resolve().name, (None, None))
    print(f"\nbench tfidf: {os.cpu_count()} CPUs, {len(r['per_fold_macro_f1'])} folds, wall {wall:.1f} s"
          + (f" (target <= {wall_target} s)" if wall_target else "")
          + f", peak memory {peak:.0f} MB (largest process); OOF macro-F1 {r['oof']['macro_f1']:.4f}"
          + (f" (target >= {f1_target})" if f1_target else "")
          + f", cross-fitted thresholds {r['oof_crossfit']['macro_f1']:.4f}, at 0.5 {r['oof_at_0.5']['macro_f1']:.4f}, "
          f"micro-F1 {r['oof']['micro_f1']:.4f}, Jaccard {r['oof']['jaccard']:.4f}")


if __name__ == "__main__":
    main()
