"""The benchmark scripts run end to end on synthetic data (their figures come from real runs; see README)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from src.smoke import tiny_model

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def bench(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quality_runs_configs_blends_and_keeps_submissions(workdir, comp_dir, capsys):
    results = workdir / "results"
    table = bench("quality").main([str(ROOT / "configs/tfidf.yaml"), str(ROOT / "configs/tfidf_cnb.yaml"), "--blend",
                                   "--data-dir", str(comp_dir), "--results", str(results), "folds.n_folds=5",
                                   "tfidf.min_df=1", "output.plots=false"])
    assert list(table.index) == ["tfidf", "tfidf_cnb", "quality_blend (blend)"]
    assert table["macro_f1"].between(0, 1).all() and table.loc["tfidf", "wall_s"] > 0
    assert table.loc["quality_blend (blend)", "macro_f1"] >= table["macro_f1"].iloc[:2].max() - 1e-9
    assert sorted(p.name for p in results.iterdir()) == ["quality_blend.csv", "tfidf.csv", "tfidf_cnb.csv"]
    assert "per-label OOF F1" in capsys.readouterr().out


def test_speed_compares_the_loop_with_a_trainer_peer(workdir, comp_dir, capsys):
    results = bench("speed").main(["--tiny", "--data-dir", str(comp_dir), "--fold", "0", "folds.n_folds=5",
                                   "train.max_steps=6", "train.batch_size=16", "train.log_every=2"])
    assert set(results) == {"project", "hf_trainer"}
    for r in results.values():
        assert r["steps"] == 6 and r["ex_s"] > 0 and r["tok_s"] > r["ex_s"] and 0 <= r["f1_tuned"] <= 1
        assert r["probs"].shape == (40, 4)
    assert results["project"]["steady_ex_s"] > 0
    assert "throughput ratio project / HF Trainer" in capsys.readouterr().out


def test_gpu_job_dry_run_on_cpu(tmp_path, comp_dir):
    """bench/gpu_job.sh end to end with a tiny MPNet (a typo in it would waste a rare GPU session)."""
    repo = tmp_path / "repo"  # a copy, so folds/, checkpoints/ and bench/results/ land there
    for d in ("src", "bench", "configs"):
        shutil.copytree(ROOT / d, repo / d, ignore=shutil.ignore_patterns("__pycache__", "results"))
    tiny_model("mpnet", tmp_path / "models" / "mpnet-base", pd.read_csv(comp_dir / "train.csv")["Tweet"].tolist())
    out = tmp_path / "out"
    env = {**os.environ, "PY": sys.executable, "MODELS": str(tmp_path / "models"), "DATA": str(comp_dir),
           "OUT": str(out), "OMP_NUM_THREADS": "1", "EXTRA": "folds.n_folds=2 train.max_steps=4 train.compile=none "
           "train.batch_size=16 train.log_every=2 tfidf.min_df=1 output.plots=false"}
    subprocess.run(["bash", "bench/gpu_job.sh", "speed", "b128", "fast", "quality", "blend"], cwd=repo, env=env,
                   check=True, timeout=900, capture_output=True)
    steps = (out / "steps.txt").read_text()
    assert "!!" not in steps, steps
    for name in ("speed", "speed_eager", "b128", "fast", "quality", "blend"):
        assert f"== {name}: " in steps and (out / f"{name}.log").is_file()
    assert "throughput ratio project / HF Trainer" in (out / "speed.log").read_text()
    exps = ["mpnet-base-bs128", "mpnet-base-fast", "mpnet-base", "tfidf", "blend_tfidf_mpnet"]
    assert {p.name for p in (out / "results").iterdir()} == {f"{e}.csv" for e in exps}
    blend = (out / "blend.log").read_text()
    assert all(e in blend for e in exps[:3])  # every mpnet run is a blend member
    for exp in exps:
        assert {p.name for p in (out / "runs" / exp).iterdir()} == {"metrics.json", "oof.csv", "test.csv"}
