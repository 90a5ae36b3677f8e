"""Peak memory per fold and per process (src/memory.py): RAM from the resident-set high-water mark, reset per fold;
CUDA through the caching allocator's counters (a stand-in for torch.cuda on this CPU)."""

from __future__ import annotations

import numpy as np
import pytest

from src import memory


def touch(mb: int) -> np.ndarray:
    a = np.ones(mb * 2**20, dtype=np.uint8)  # written: resident, not just reserved
    return a


def test_a_fold_s_peak_counts_what_it_held_and_the_process_peak_keeps_every_fold():
    memory.reset_peak()
    base = memory.peak()["ram_gb"]
    big = touch(400)
    first = memory.peak()["ram_gb"]
    assert first - base > 0.35  # the 400 MB the "fold" held
    del big
    memory.reset_peak()  # the next fold
    second = memory.peak()["ram_gb"]
    if second > first - 0.3:
        pytest.skip("this kernel does not let a process reset its VmHWM (the lifetime peak is used)")
    assert memory.process_peak()["ram_gb"] >= first  # the first fold's peak is not forgotten
    assert memory.peak()["gpu_gb"] is None and memory.describe(memory.peak()).endswith("GB RAM")


def test_the_process_peak_is_never_below_a_peak_a_fold_reported(monkeypatch):
    """Two readings of one high-water mark can differ by a page (per-CPU RSS counters; CI saw 1.125 then 1.124 GB):
    the run's peak must still be at least every fold's."""
    readings = iter([1.125, 1.124, 0.5, 0.5])  # the fold's reading, the reset's, then the next fold's
    monkeypatch.setattr(memory, "_ram_gb", lambda: next(readings))
    fold = memory.peak()["ram_gb"]
    memory.reset_peak()
    assert memory.peak()["ram_gb"] == 0.5
    assert memory.process_peak()["ram_gb"] >= fold == 1.125


def test_without_proc_the_lifetime_peak_is_used(monkeypatch, tmp_path):
    monkeypatch.setattr(memory, "STATUS", tmp_path / "absent")
    monkeypatch.setattr(memory, "CLEAR_REFS", tmp_path / "no" / "clear_refs")
    memory.reset_peak()  # nothing to reset: no error
    assert memory.peak()["ram_gb"] > 0.01


class FakeCuda:
    """torch.cuda's peak counters, as on a GPU."""

    def __init__(self):
        self.reserved, self.peak = 0, 0

    def alloc(self, gb: float):
        self.reserved += int(gb * 2**30)
        self.peak = max(self.peak, self.reserved)

    def free(self, gb: float):
        self.reserved -= int(gb * 2**30)

    def max_memory_reserved(self):
        return self.peak

    def reset_peak_memory_stats(self):
        self.peak = self.reserved


def test_gpu_peaks_are_per_fold_and_the_process_keeps_the_highest(monkeypatch):
    cuda = FakeCuda()
    monkeypatch.setattr(memory, "_cuda", lambda: cuda)
    memory.reset_peak()
    cuda.alloc(1.0), cuda.alloc(20.0), cuda.free(20.0)
    assert memory.peak()["gpu_gb"] == 21.0
    memory.reset_peak()
    cuda.alloc(4.0)
    assert memory.peak()["gpu_gb"] == 5.0 and memory.process_peak()["gpu_gb"] == 21.0
    assert "5.0 GB GPU" in memory.describe(memory.peak())


def test_a_cuda_that_cannot_report_leaves_the_figure_empty_and_the_run_going(monkeypatch):
    class Broken:
        def max_memory_reserved(self):
            raise RuntimeError("CUDA driver error")

        def reset_peak_memory_stats(self):
            raise AssertionError("Torch not compiled with CUDA enabled")

    monkeypatch.setattr(memory, "_cuda", lambda: Broken())
    memory.reset_peak()
    assert memory.peak()["gpu_gb"] is None and memory.peak()["ram_gb"] > 0
