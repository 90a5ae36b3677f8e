"""The GPU check, sized for a GPU lent for 15 minutes (a few of them to start it): one upload, one command.

    python bench/gpu_check.py prep [--data DIR]   # here: .gpucheck/ (the packages the GPU image lacks + the data);
                                                 # prints the upload's size, this tree included, and the command
    bash bench/gpu_check.sh                      # there (device tool: carry [".gpucheck"]); $OUT/summary.txt

No pretrained weights travel: mpnet-base and a Llama-3.2-1B-shaped decoder are built there with random weights and a
tokenizer trained on the data (`models`); speed does not depend on the weights' values. The steps, each capped so the
whole check ends within BUDGET seconds (default 450), summary.txt rewritten after every one (`summary`):
  env      the GPU, torch and the CUDA architectures it was built for
  models   the two random models, built on the GPU
  cuda     bench/cuda_paths.py on a tiny Llama: LoRA bf16 and fp16, QLoRA, compile, memory between folds (eager and
           under CUDA graphs, with the graphs dynamo compiled)
  encoder  bench/speed.py on mpnet-base (configs/mpnet-base-fast.yaml): the project loop vs HF Trainer, examples/s,
           ratio, MFU, peak memory
  decoder  bench/speed.py on the Llama-3.2-1B shape, LoRA (configs/llama-3.2-1b.yaml): the loop vs Trainer + peft
  tenfold  train.sh configs/mpnet-base-bs128.yaml: ten folds of mpnet-base to a validated submission, timed (the
           <= 120 s target on an H100/H200)
Real-weight F1 on a GPU is not part of it (the weights do not fit one upload): bench/speed.py --quality with a model
folder carried in parts (../shared/models/offline_models.py pack) is the separate, optional step.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from src import memory  # noqa: E402 (standard library only: the summary runs before any install)

LIMIT_MIB = 56  # one upload: the device tool takes 64 MiB, tree included; the rest is headroom
PACKAGES = ("bitsandbytes", "iterative-stratification", "skops", "prettytable")  # what the GPU image lacks
KEEP_LIBS = ("libbitsandbytes_cpu.so", "libbitsandbytes_cuda130.so", "libbitsandbytes_cuda132.so")  # its CUDA 13
DATA = ROOT.parent / "shared" / "data" / "emotion-detection"


def size_mib(paths) -> float:
    return sum(p.stat().st_size for p in paths if p.is_file()) / 2**20


def tree_files(root: Path) -> list[Path]:
    """The files the device tool sends: tracked ones and untracked ones git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=root, capture_output=True,
                         check=True).stdout
    return [root / f for f in out.decode().split("\0") if f]


def copy_package(name: str, site: Path) -> None:
    """An installed distribution's files (package and dist-info) into `site`, bitsandbytes without the libraries
    of other CUDA versions and ROCm (most of its 41 MiB wheel)."""
    dist = importlib.metadata.distribution(name)
    for f in dist.files or []:
        src = Path(dist.locate_file(f))
        other_lib = f.name.startswith("libbitsandbytes_") and f.name not in KEEP_LIBS
        if not src.is_file() or "__pycache__" in f.parts or f.parts[0] == "tests" or other_lib:
            continue
        dst = site / f
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def prep(out: Path, data: Path) -> float:
    """Make `out` (site/ with the packages, data/) and return the upload's size in MiB, tree included."""
    shutil.rmtree(out, ignore_errors=True)
    for name in PACKAGES:
        copy_package(name, out / "site")
    shutil.copytree(data, out / "data", ignore=shutil.ignore_patterns("*.md"))
    return size_mib(tree_files(ROOT)) + size_mib(out.rglob("*"))


def models(out: Path, data: Path, tiny: bool) -> None:
    """mpnet-base and the Llama-3.2-1B shape with random weights (tiny ones for the CPU dry run)."""
    import pandas as pd

    from src.smoke import tiny_model

    texts = pd.read_csv(data / "train.csv").iloc[:, 1].astype(str).tolist()
    for name, arch in (("mpnet-base", "mpnet"), ("llama-3.2-1b", "llama")):
        tiny_model(arch, out / name, texts, shape="" if tiny else name)
        print(f"{name}: {out / name}", flush=True)


def summary(work: Path) -> str:
    """Everything the check measured so far (from its WORK folder), in one text."""
    logs = work / "logs"
    parts = [("# steps", logs / "steps.txt"), ("# GPU", logs / "env.log")]
    text = []
    for title, path in parts:
        if path.is_file():
            text += [title, path.read_text().rstrip()]
    cuda = work / "cuda" / "summary.jsonl"
    if cuda.is_file():
        text += ["# CUDA paths (bench/cuda_paths.py)", cuda.read_text().rstrip()]
    for step in ("encoder", "decoder"):
        log = logs / f"{step}.log"
        if log.is_file():
            lines = [line for line in log.read_text().splitlines()
                     if line.startswith(("speed bench", "throughput", "quality", "error"))]
            text += [f"# {step} (bench/speed.py)", *lines]
    ten = logs / "tenfold.log"
    if ten.is_file():
        lines = [line for line in ten.read_text().splitlines() if " done in " in line or "error" in line
                 or "elapsed" in line.lower() or "submission" in line.lower()]
        text += ["# ten folds (train.sh configs/mpnet-base-bs128.yaml)", *lines[-14:]]
    done = sorted(work.glob("checkpoints/mpnet-base-bs128/fold*/done.json"))
    if done:
        docs = [json.loads(p.read_text()) for p in done]
        total = sum(d["elapsed_s"] for d in docs)
        peaks = {k: max((d.get("peak_memory") or {}).get(k) or 0.0 for d in docs) or None for k in ("ram_gb", "gpu_gb")}
        text.append(f"mpnet-base-bs128: {len(done)} folds trained in {total:.0f} s (training + evaluation, sum "
                    f"over folds), the largest fold's peak {memory.describe(peaks)}")
    return "\n".join(text) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a_prep = sub.add_parser("prep", help="make .gpucheck/ and print the upload's size")
    a_prep.add_argument("--out", type=Path, default=ROOT / ".gpucheck")
    a_prep.add_argument("--data", type=Path, default=DATA)
    a_models = sub.add_parser("models", help="build the random models (on the GPU)")
    a_models.add_argument("out", type=Path)
    a_models.add_argument("--data", type=Path, required=True)
    a_models.add_argument("--tiny", action="store_true")
    a_sum = sub.add_parser("summary", help="print summary.txt from a check's WORK folder")
    a_sum.add_argument("work", type=Path)
    a = p.parse_args(argv)
    if a.cmd == "prep":
        mib = prep(a.out, a.data)
        print(f"upload: {mib:.1f} MiB with the tree (limit {LIMIT_MIB}); device tool: run(command='bash "
              f"bench/gpu_check.sh', carry=['{a.out.relative_to(ROOT) if a.out.is_relative_to(ROOT) else a.out}'], "
              "timeout_s=540)")
        if mib > LIMIT_MIB:
            sys.exit(f"error: the upload is {mib:.1f} MiB, over {LIMIT_MIB} MiB")
    elif a.cmd == "models":
        models(a.out, a.data, a.tiny)
    else:
        print(summary(a.work), end="")


if __name__ == "__main__":
    main()
