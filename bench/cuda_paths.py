"""The GPU-only code paths on a tiny random Llama built on the spot (no upload needed): one line each in a summary.

    python bench/cuda_paths.py [--variants lora-bf16 lora-fp16 qlora compile folds compile-folds] [--out DIR]

Each variant trains through `src.train.train_folds` on synthetic data in its own process (accelerate keeps one
mixed-precision state per process) and reports: it ran or why not, first/last eval loss, seconds, and per fold the
GPU memory allocated when the fold starts and its peak. `folds` (eager LoRA) and `compile-folds` (a full fine-tune
under CUDA graphs) train three folds in one process: folds 1 and 2 must start with the memory fold 1 started with
(each fold's model, optimizer and graph pools freed; fold 0 may start up to 64 MiB lower: cuBLAS keeps its workspace),
and the compiled variants report how many graphs dynamo compiled (one for every fold: nothing compiled again). `fp16`
needs CUDA; the others also run on a CPU (the dry run in tests/test_bench.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {  # name -> overrides on top of the tiny LoRA run
    "lora-bf16": ["model.method=lora", "train.precision=bf16"],
    "lora-fp16": ["model.method=lora", "train.precision=fp16"],
    "qlora": ["model.method=qlora", "model.gradient_checkpointing=true"],
    "compile": ["model.method=lora", "train.compile=default", "train.drop_last=true", "train.pad_to_multiple=16"],
    "folds": ["model.method=lora", "folds.run=[0,1,2]"],
    "compile-folds": ["model.method=full", "train.compile=reduce-overhead", "train.drop_last=true",
                      "train.pad_to_multiple=16", "folds.run=[0,1,2]"],
}
WORKSPACE_MIB = 64  # what may stay allocated after fold 0 (cuBLAS's workspace, ~32 MiB on an H100)


def one(name: str, work: Path) -> dict:
    """Run one variant here; return its summary record."""
    import torch

    from src import smoke
    from src import train as tr
    from src.config import load_config
    from src.data import load_competition
    from src.folds import ensure_folds
    from src.rundir import RunDir

    cuda = torch.cuda.is_available()
    if "fp16" in name and not cuda:
        return {"variant": name, "status": "skipped: needs CUDA"}
    data = smoke.make_competition(work / "data", n_train=400, n_test=40)
    model = smoke.tiny_model("llama", work / "llama", smoke.make_frame(400)["Tweet"].tolist())
    over = ["model_type=transformer", f"exp={name}", f"data.data_dir={data}", "folds.n_folds=5", "folds.run=[0]",
            f"folds.dir={work / 'folds'}", f"output.checkpoints_dir={work / 'checkpoints'}",
            f"model.name_or_path={model}", "model.max_length=32", "train.batch_size=16", "train.max_steps=40",
            "train.eval_every=20", "train.lr=5e-3", "train.log_every=10", "output.plots=false", *VARIANTS[name]]
    cfg = load_config(None, over)
    comp = load_competition(cfg.data)
    folds, _ = ensure_folds(cfg, comp, verbose=False)
    mem: list[dict] = []
    evals: list[float] = []
    original = tr.train_fold

    def measured(cfg, comp, folds, rd, k, acc, callbacks=()):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated() / 2**20 if cuda else None
        original(cfg, comp, folds, rd, k, acc, callbacks)
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
        mem.append({"fold": k, "start_mib": start and round(start, 1), "peak_mib": peak and round(peak, 1)})

    tr.train_fold = measured
    from torch._dynamo.utils import counters

    counters.clear()
    t0 = time.time()
    tr.train_folds(cfg, comp, folds, RunDir.of(cfg), callbacks=(lambda r: evals.append(r["val_loss"]),))
    rec = {"variant": name, "status": "ok", "precision": tr.tm.resolve_precision(cfg), "seconds": round(time.time()
           - t0, 1), "val_loss": [round(v, 4) for v in evals], "memory": mem}
    if "compile" in name:
        rec["graphs_compiled"] = counters["stats"]["unique_graphs"]
    if name.endswith("folds") and cuda:
        later = [m["start_mib"] for m in mem[1:]]
        rec["freed"] = (all(abs(v - later[0]) < 1 for v in later)
                        and 0 <= later[0] - mem[0]["start_mib"] <= WORKSPACE_MIB)
    return rec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--timeout", type=float, default=120, help="seconds a variant may take")
    p.add_argument("--out", type=Path, default=Path("logs/cuda_paths"))
    p.add_argument("--one", help=argparse.SUPPRESS)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.one:
        (a.out / f"{a.one}.json").write_text(json.dumps(one(a.one, a.out / a.one)))
        return
    lines = []
    for name in a.variants:
        res = a.out / f"{name}.json"
        res.unlink(missing_ok=True)
        try:
            proc = subprocess.run([sys.executable, __file__, "--one", name, "--out", str(a.out)], capture_output=True,
                                  text=True, timeout=a.timeout)
        except subprocess.TimeoutExpired as e:
            proc = subprocess.CompletedProcess(e.cmd, -9, str(e.stdout or ""), f"timed out after {a.timeout:.0f} s")
        (a.out / f"{name}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode == 0 and res.is_file():
            rec = json.loads(res.read_text())
        else:
            last = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()][-1:]
            rec = {"variant": name, "status": f"FAILED (exit {proc.returncode}): {' '.join(last)[:300]}"}
        lines.append(json.dumps(rec))
        print(lines[-1], flush=True)
        (a.out / "summary.jsonl").write_text("\n".join(lines) + "\n")  # after each variant: a cut run still reports


if __name__ == "__main__":
    main()
