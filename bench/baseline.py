"""Time the TF-IDF baseline's full 10-fold pipeline and print its OOF figures.

    .venv/bin/python bench/baseline.py --data-dir ../shared/data/emotion-detection [key=value ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from src.config import load_config  # noqa: E402
from src.errors import cli  # noqa: E402
from src.pipeline import run  # noqa: E402


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
    print(f"\nbench tfidf: {os.cpu_count()} CPUs, {len(r['per_fold_macro_f1'])} folds, wall {wall:.1f} s "
          f"(target <= 60 s); OOF macro-F1 {r['oof']['macro_f1']:.4f} (target >= 0.53), "
          f"at 0.5 {r['oof_at_0.5']['macro_f1']:.4f}, micro-F1 {r['oof']['micro_f1']:.4f}, "
          f"Jaccard {r['oof']['jaccard']:.4f}")


if __name__ == "__main__":
    main()
