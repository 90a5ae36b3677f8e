import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from synth import make_competition  # noqa: E402


@pytest.fixture(autouse=True)
def own_memory_peaks(monkeypatch):
    """Each test its own process-peak record (src/memory.py), so a test that fakes a GPU leaves no GPU figure
    behind for the runs of the next."""
    from src import memory

    monkeypatch.setattr(memory, "_highest", {"ram_gb": 0.0, "gpu_gb": None})


@pytest.fixture
def comp_dir(tmp_path):
    """A synthetic competition folder (200 train / 60 test rows, 4 labels)."""
    return make_competition(tmp_path / "data")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run inside a temp folder so folds/, checkpoints/ and submissions/ land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest single-threaded, and the CI/dev machines are small and shared."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """A folder for tiny random models, shared by one test module."""
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture
def fresh_accelerator():
    """accelerate keeps one process-wide state: a bf16 Accelerator would refuse the next test's `no` one."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
