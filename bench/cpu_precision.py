"""Training-step time on the CPU in float32 and in bf16 autocast: is `train.precision=bf16` worth it on this CPU?

Times full fine-tuning steps (forward, BCE, backward, AdamW) of a sequence classifier on random tokens, after two
warm-up steps, once per precision, and prints seconds per step and the bf16 speedup. CPUs with AMX or avx512_bf16
(Xeon Sapphire Rapids and newer) run bf16 matmuls natively; on others bf16 can be slower than float32.

    python bench/cpu_precision.py ~/.cache/offline-models/mpnet-base --threads 1 --batch 32 --length 48
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from src.hub import resolve_path  # noqa: E402
from src.precision import autocast_dtype  # noqa: E402


def bf16_flags() -> str:
    """The CPU's bf16-related flags from /proc/cpuinfo ('' where none or not Linux)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return ""
    return " ".join(f for f in flags.split() if f in {"avx512_bf16", "amx_bf16", "amx_tile", "avx512f"})


def seconds_per_step(model, precision: str, batch: int, length: int, steps: int) -> float:
    """Mean wall seconds of `steps` training steps (after 2 warm-up steps) at `precision` (no | bf16), autocast as
    the training loop decides it (src/precision.py)."""
    dtype = autocast_dtype(precision, "cpu")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, model.config.vocab_size, (batch, length), generator=gen)
    target = torch.rand(batch, model.config.num_labels, generator=gen)

    def step():
        with torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), target).backward()
        opt.step()
        opt.zero_grad()

    step()
    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="a local model folder or hub id")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: one fold process per core)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=48, help="tokens per row (tweets: ~48 after dynamic padding)")
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args(argv)
    from transformers import AutoModelForSequenceClassification

    torch.set_num_threads(args.threads)
    model = AutoModelForSequenceClassification.from_pretrained(
        resolve_path(args.model), num_labels=11, problem_type="multi_label_classification")
    model.train()
    print(f"CPU bf16 flags: {bf16_flags() or 'none'}; torch {torch.__version__}, {args.threads} thread(s), "
          f"batch {args.batch} x {args.length} tokens")
    times = {prec: seconds_per_step(model, prec, args.batch, args.length, args.steps) for prec in ("no", "bf16")}
    for prec, sec in times.items():
        print(f"{'float32' if prec == 'no' else 'bf16 autocast':>14}: {sec:.3f} s/step, "
              f"{args.batch / sec:.1f} train examples/s")
    print(f"bf16 speedup: {times['no'] / times['bf16']:.2f}x")
    return times


if __name__ == "__main__":
    main()
