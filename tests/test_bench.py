"""The benchmark scripts run end to end on synthetic data (their figures come from real runs; see README)."""

from __future__ import annotations

import importlib.util
import json
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


def test_thresholds_compares_rules_in_sample_and_cross_fitted(workdir, comp_dir, capsys):
    from src.config import load_config
    from src.pipeline import run

    run(load_config(None, [f"data.data_dir={comp_dir}", "exp=t", "folds.n_folds=5", "tfidf.min_df=1",
                           "output.plots=false"]))
    tables = bench("thresholds").main(["t", "--exclusive", "trust", "--results", str(workdir / "r")])
    table = tables["t"]
    assert len(table) == 9 * 4 and set(table["row_rule"]) == {"none", "min_one", "exclusive", "both"}
    plain = table[(table["thresholds"] == "per_label") & (table["row_rule"] == "none")].iloc[0]
    assert plain["in_sample"] == pytest.approx(json.loads((workdir / "checkpoints/t/metrics.json").read_text())
                                               ["oof"]["macro_f1"])  # the figure finalize reports
    assert plain["cross_fit"] <= plain["in_sample"] and table["cross_fit"].between(0, 1).all()
    assert (workdir / "r/thresholds_t.csv").is_file() and "sorted by the cross-fitted" in capsys.readouterr().out


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
    for f in ("train.sh", "setup.sh", "requirements.txt", "requirements-dev.txt"):
        shutil.copy(ROOT / f, repo / f)
    tiny_model("mpnet", tmp_path / "models" / "mpnet-base", pd.read_csv(comp_dir / "train.csv")["Tweet"].tolist())
    out = tmp_path / "out"
    env = {**os.environ, "PY": sys.executable, "MODELS": str(tmp_path / "models"), "DATA": str(comp_dir),
           "OUT": str(out), "OMP_NUM_THREADS": "1", "CUDA_VARIANTS": "lora-bf16 lora-fp16 qlora folds",
           "EXTRA": "folds.n_folds=2 train.max_steps=4 train.compile=none "
           "train.batch_size=16 train.log_every=2 tfidf.min_df=1 output.plots=false"}
    subprocess.run(["bash", "bench/gpu_job.sh", "cuda", "speed", "b128", "fast", "quality", "blend"], cwd=repo,
                   env=env, check=True, timeout=900, capture_output=True)
    steps = (out / "steps.txt").read_text()
    assert "!!" not in steps, steps
    for name in ("cuda", "speed", "b128", "fast", "quality", "blend"):
        assert f"== {name}: " in steps and (out / f"{name}.log").is_file()
    assert "throughput ratio project / HF Trainer" in (out / "speed.log").read_text()
    exps = ["mpnet-base-bs128", "mpnet-base-fast", "mpnet-base", "tfidf", "blend_tfidf_mpnet"]
    assert {p.name for p in (out / "results").iterdir()} == {f"{e}.csv" for e in exps}
    blend = (out / "blend.log").read_text()
    assert all(e in blend for e in exps[:3])  # every mpnet run is a blend member
    for exp in exps:
        assert {p.name for p in (out / "runs" / exp).iterdir()} == {"metrics.json", "oof.csv", "test.csv"}
    summary = (out / "summary.txt").read_text()
    cuda = {r["variant"]: r for r in map(json.loads, (out / "cuda" / "summary.jsonl").read_text().splitlines())}
    assert {v: r["status"] for v, r in cuda.items()} == {"lora-bf16": "ok", "lora-fp16": "skipped: needs CUDA",
                                                         "qlora": "ok", "folds": "ok"}
    assert [m["fold"] for m in cuda["folds"]["memory"]] == [0, 1, 2] and cuda["lora-bf16"]["precision"] == "bf16"
    assert all(json.dumps(r) in summary for r in cuda.values())
    assert "mpnet-base-bs128: 2 folds trained in" in summary and summary.rstrip().endswith("== done")


def test_carry_packs_model_wheels_and_data_into_parts_under_the_limit(tmp_path, comp_dir, monkeypatch):
    """Every upload part stays under the limit, wheels and data included (a 41 MiB bitsandbytes wheel does not fit
    beside a 50 MiB model chunk), and the parts copied into one folder unpack to the model."""
    offline = ROOT.parent / "shared" / "models" / "offline_models.py"
    if not offline.is_file():
        pytest.skip("../shared/models/offline_models.py is not here")
    model = tiny_model("bert", tmp_path / "model", pd.read_csv(comp_dir / "train.csv")["Tweet"].tolist())
    carry = bench("carry")
    limit = max(f.stat().st_size for f in model.iterdir()) + 2**16
    monkeypatch.setattr(carry, "PART_BYTES", limit)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in ("a-1.0-py3-none-any.whl", "b-1.0-py3-none-any.whl"):
        (wheels / name).write_bytes(b"w" * int(limit * 0.6))
    monkeypatch.setattr(sys, "argv", ["carry.py", str(model), "--data", str(comp_dir), "--wheels", str(wheels),
                                      "--out", str(tmp_path / "carry")])
    carry.main()
    parts = sorted((tmp_path / "carry" / "model").iterdir())
    assert len(parts) >= 2  # the two wheels cannot share a part
    assert all(carry.size_of(p) <= limit + 2**14 for p in parts)  # + offline_models.py in the last one
    merged = tmp_path / "w"
    for p in parts:
        shutil.copytree(p, merged, dirs_exist_ok=True)
    assert sorted(f.name for f in (merged / "wheels").iterdir()) == ["a-1.0-py3-none-any.whl", "b-1.0-py3-none-any.whl"]
    assert (merged / "data" / "train.csv").read_bytes() == (comp_dir / "train.csv").read_bytes()
    subprocess.run([sys.executable, str(merged / "offline_models.py"), "unpack", str(merged), str(tmp_path / "m")],
                   check=True, capture_output=True)
    assert json.loads((tmp_path / "m" / "config.json").read_text()) == json.loads((model / "config.json").read_text())


def test_cpu_precision_times_float32_and_bf16_steps(tmp_path, comp_dir, capsys):
    model = tiny_model("mpnet", tmp_path / "model", pd.read_csv(comp_dir / "train.csv")["Tweet"].tolist())
    times = bench("cpu_precision").main([str(model), "--batch", "4", "--length", "8", "--steps", "1"])
    assert set(times) == {"no", "bf16"} and min(times.values()) > 0
    out = capsys.readouterr().out
    assert "bf16 speedup: " in out and "CPU bf16 flags: " in out
