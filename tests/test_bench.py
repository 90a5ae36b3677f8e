"""The benchmark scripts run end to end on synthetic data (their figures come from real runs; see README)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

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
