"""The benchmark scripts run end to end on synthetic data (their figures come from real runs; see README)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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

    by = bench("thresholds").main(["t", "--by-metric", "--results", str(workdir / "r")])["t"].set_index("decided_for")
    assert list(by.index) == ["macro_f1", "micro_f1", "samples_f1", "jaccard"]
    assert (workdir / "r/metrics_t.csv").is_file()
    assert by.loc["macro_f1", "macro_f1 (OOF)"] == pytest.approx(plain["in_sample"])
    for m in ("micro_f1", "samples_f1", "jaccard"):  # their searches start from the macro-F1 thresholds
        assert by.loc[m, f"{m} (OOF)"] >= by.loc["macro_f1", f"{m} (OOF)"]
    assert by.drop(columns="run").stack().between(0, 1).all()
    assert "decisions fitted for each metric" in capsys.readouterr().out


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_speed_compares_the_loop_with_a_trainer_peer(workdir, comp_dir, capsys, family):
    """Throughput side by side and, with --quality, both loops trained on two folds (LoRA: Trainer + peft); a rerun
    with the same --work reuses both sides' finished folds and gives the same figures (the peer's best checkpoint
    reloaded from disk predicts what its trained model did)."""
    args = ["--tiny", family, "--data-dir", str(comp_dir), "--folds", "0-1", "--quality", "--work", "peer",
            "folds.n_folds=5", "train.max_steps=8", "train.eval_every=4", "train.batch_size=16", "train.log_every=2"]
    results = bench("speed").main([*args, "--steps", "6"])
    speed = results["throughput"]
    assert speed["project"]["ex_s"] > 0 and speed["hf_trainer"]["ex_s"] > 0
    assert speed["ratio"] == pytest.approx(speed["project"]["ex_s"] / speed["hf_trainer"]["ex_s"])
    assert all(speed[side]["peak"]["ram_gb"] > 0.1 for side in ("project", "hf_trainer"))  # each loop's own peak
    folds = results["quality"]["folds"]
    assert sorted(folds) == [0, 1]
    for k in (0, 1):
        for r in folds[k].values():
            assert r["steps"] == 8 and r["probs"].shape == (40, 4) and 0 <= r["f1_tuned"] <= 1
    assert any((workdir / "checkpoints").glob("*/fold1/done.json"))  # the project's folds train in its run folder
    out = capsys.readouterr().out
    assert "throughput ratio project / HF Trainer" in out and "quality mean over folds [0, 1]" in out
    assert "GB RAM (8 updates" not in out and "GB RAM (6 updates of 16 rows" in out
    lo, hi = results["quality"]["interval"]
    diff = results["quality"]["mean"]["project"] - results["quality"]["mean"]["hf_trainer"]
    assert lo < hi and lo - 0.05 <= diff <= hi + 0.05  # decisions tuned on the rows: near, not always inside
    saved = np.load(workdir / "peer" / "quality_probs.npz")
    assert sorted(saved.files) == ["fold0_hf_trainer", "fold0_project", "fold1_hf_trainer", "fold1_project"]

    again = bench("speed").main([*args, "--steps", "0"])["quality"]
    out = capsys.readouterr().out
    assert out.count("(reused from") == 2 and out.count("(the run folder's finished fold)") == 2
    for k in (0, 1):
        for side in ("project", "hf_trainer"):
            np.testing.assert_allclose(again["folds"][k][side]["probs"], folds[k][side]["probs"], atol=1e-6)
            assert again["folds"][k][side]["steps"] == 8
    assert again["folds"][0]["hf_trainer"]["wall_s"] == folds[0]["hf_trainer"]["wall_s"]  # its record, not a rerun


def test_gpu_check_fits_one_upload_and_runs_end_to_end_on_cpu(tmp_path, comp_dir):
    """bench/gpu_check.py prep + bench/gpu_check.sh with tiny models on the CPU (a typo in it would waste a rare GPU
    lease): one upload under the limit, this tree included; every step ran; summary.txt holds the figures."""
    check = bench("gpu_check")
    kit = tmp_path / "kit"
    mib = check.prep(kit, comp_dir)
    real_data_mib = 1.6  # the emotion competition's three files, which the real upload carries instead
    assert mib + real_data_mib <= check.LIMIT_MIB, mib
    assert (kit / "site" / "iterstrat").is_dir() and (kit / "site" / "bitsandbytes").is_dir()
    assert not [p for p in kit.rglob("libbitsandbytes_cuda12*")]  # other CUDA versions' libraries stay behind
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "PY": sys.executable, "KIT": str(kit), "OUT": str(out), "WORK": str(work), "TINY": "1",
           "BUDGET": "900", "OMP_NUM_THREADS": "1",
           "EXTRA": "folds.n_folds=2 train.max_steps=4 train.compile=none train.batch_size=16 train.log_every=2 "
                    "model.max_length=64"}
    subprocess.run(["bash", "bench/gpu_check.sh"], cwd=ROOT, env=env, check=True, timeout=900, capture_output=True)
    steps = (work / "logs" / "steps.txt").read_text()
    for name in ("env", "models", "cuda", "encoder", "decoder", "tenfold"):
        assert f"== {name}: exit 0 " in steps, steps
        assert "kernels-community" not in (work / "logs" / f"{name}.log").read_text()  # no hub kernel asked for
    summary = (out / "summary.txt").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["logs.tgz", "summary.txt"]  # what the device tool returns
    cuda = {r["variant"]: r for r in map(json.loads, (work / "cuda" / "summary.jsonl").read_text().splitlines())}
    assert {v: r["status"] for v, r in cuda.items()} == {"lora-bf16": "ok", "lora-fp16": "skipped: needs CUDA",
                                                         "qlora": "ok", "folds": "ok"}
    assert all(json.dumps(r) in summary for r in cuda.values())
    assert summary.count("throughput ratio project / HF Trainer") == 2  # encoder and decoder
    assert "mpnet-base-bs128: 2 folds trained in" in summary and "== done in" in summary
    assert "the largest fold's peak " in summary and " GB RAM" in summary  # (and GB GPU on a GPU)
    assert (work / "results" / "mpnet-base-bs128.csv").is_file()


def test_cpu_precision_times_float32_and_bf16_steps(tmp_path, comp_dir, capsys):
    model = tiny_model("mpnet", tmp_path / "model", pd.read_csv(comp_dir / "train.csv")["Tweet"].tolist())
    times = bench("cpu_precision").main([str(model), "--batch", "4", "--length", "8", "--steps", "1"])
    assert set(times) == {"no", "bf16"} and min(times.values()) > 0
    out = capsys.readouterr().out
    assert "bf16 speedup: " in out and "CPU bf16 flags: " in out


@pytest.mark.parametrize("lane2", ["", "model.gradient_checkpointing=true train.log_every=5"])
def test_finetune_lanes_share_the_run_and_lane2_goes_to_the_second_alone(tmp_path, lane2):
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "py"
    fake.write_text(f'#!/usr/bin/env bash\necho "$*" >> {calls}\n')
    fake.chmod(0o755)
    script = (f"set -euo pipefail; PY={fake} D=data.data_dir=DIR TIMES={tmp_path / 'times.txt'}; "
              f"source {ROOT / 'bench/lib.sh'}; sleep() {{ :; }}; finetune c.yaml e k=v")
    subprocess.run(["bash", "-c", script], check=True, env={**os.environ, "LANE2": lane2})
    lines = sorted(calls.read_text().splitlines())
    base = "--config c.yaml exp=e data.data_dir=DIR k=v"
    assert lines == sorted([f"-m src.train --folds 0-4 {base}", f"-m src.train --folds 5-9 {base} {lane2}".strip(),
                            f"-m src run {base}"])
    assert sorted(line.split(":")[0] for line in (tmp_path / "times.txt").read_text().splitlines()) == [
        "e-folds-0-4", "e-folds-5-9", "e-predict"]
