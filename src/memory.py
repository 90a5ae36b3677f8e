"""Peak memory of this process, per fold and over its whole life: host RAM (resident set) and CUDA memory.

    reset_peak()     # at a fold's start: the fold's peak is measured from here
    peak()           # {"ram_gb": ..., "gpu_gb": ...} since the last reset_peak() (gpu_gb None without CUDA)
    process_peak()   # the same over the whole process (every fold, prediction included)

RAM is Linux's high-water mark of the resident set (VmHWM, reset through /proc/self/clear_refs); where it cannot be
reset or read (macOS, some containers) it is the process's lifetime peak (getrusage), which is still an upper bound.
GPU memory is what the CUDA caching allocator reserved at its peak (what the card must hold; `nvidia-smi` shows a
little more for the CUDA context), reset with torch.cuda.reset_peak_memory_stats().
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

STATUS, CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")
_highest = {"ram_gb": 0.0, "gpu_gb": None}  # the highest figures read so far in this process


def _ram_gb() -> float:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB
    except (OSError, ValueError, IndexError):
        pass
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform == "darwin" else 1)  # bytes there
    return kb / 2**20


def _cuda():
    """torch.cuda where this process imported torch and has a GPU, else None (a TF-IDF run never imports torch)."""
    torch = sys.modules.get("torch")
    return torch.cuda if torch is not None and torch.cuda.is_available() else None


def _gpu_gb() -> float | None:
    try:
        cuda = _cuda()
        return cuda.max_memory_reserved() / 2**30 if cuda is not None else None
    except (RuntimeError, AssertionError):  # a figure is never a reason to stop a run
        return None


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _rounded(d: dict) -> dict:
    return {k: None if v is None else round(v, 3) for k, v in d.items()}


def peak() -> dict:
    """Peak RAM and GPU memory (GiB) since the last `reset_peak()`.

    Every figure handed out is kept for `process_peak`, which can then never report less than a fold did (the kernel's
    RSS counters are batched per CPU, so two readings of one high-water mark can differ by a few pages)."""
    now = _rounded({"ram_gb": _ram_gb(), "gpu_gb": _gpu_gb()})
    _highest.update({k: _max(_highest[k], now[k]) for k in _highest})
    return now


def process_peak() -> dict:
    """Peak RAM and GPU memory (GiB) over the whole process."""
    peak()
    return dict(_highest)


def reset_peak() -> None:
    """Start measuring a new peak (the process peak so far is kept for `process_peak`)."""
    peak()
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        pass
    try:
        if (cuda := _cuda()) is not None:
            cuda.reset_peak_memory_stats()
    except (RuntimeError, AssertionError):
        pass


def describe(d: dict | None) -> str:
    """"5.9 GB RAM, 21.3 GB GPU" ("" when nothing was measured)."""
    d = d or {}
    parts = [f"{d[k]:.1f} GB {name}" for k, name in (("ram_gb", "RAM"), ("gpu_gb", "GPU"))
             if isinstance(d.get(k), (int, float))]
    return ", ".join(parts)
