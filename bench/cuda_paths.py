"""The GPU-only code paths on a tiny random Llama built on the spot (no upload needed): one line each in a summary.

    python bench/cuda_paths.py [--variants lora-bf16 lora-fp16 qlora compile folds] [--out DIR]

Each variant trains through `src.train.train_folds` on synthetic data in its own process (accelerate keeps one
mixed-precision state per process) and reports: it ran or why not, first/last eval loss, seconds, and per fold the
GPU memory allocated when the fold starts and its peak. `folds` trains three folds in one process: the memory at the
start of folds 1 and 2 must equal fold 0's (each fold's model and optimizer are freed). `fp16` needs CUDA; the others
also run on a CPU (the dry run in tests/test_bench.py).
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
}


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
    t0 = time.time()
    tr.train_folds(cfg, comp, folds, RunDir.of(cfg), callbacks=(lambda r: evals.append(r["val_loss"]),))
    rec = {"variant": name, "status": "ok", "precision": tr.tm.resolve_precision(cfg), "seconds": round(time.time()
           - t0, 1), "val_loss": [round(v, 4) for v in evals], "memory": mem}
    if name == "folds" and cuda:
        rec["freed"] = all(abs(m["start_mib"] - mem[0]["start_mib"]) < 1 for m in mem)
    return rec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
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
        proc = subprocess.run([sys.executable, __file__, "--one", name, "--out", str(a.out)], capture_output=True,
                              text=True)
        (a.out / f"{name}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode == 0 and res.is_file():
            rec = json.loads(res.read_text())
        else:
            last = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()][-1:]
            rec = {"variant": name, "status": f"FAILED (exit {proc.returncode}): {' '.join(last)[:300]}"}
        lines.append(json.dumps(rec))
        print(lines[-1], flush=True)
    (a.out / "summary.jsonl").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
