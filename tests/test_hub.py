"""What the kit takes from the Hugging Face Hub: no compiled kernels, even where a library asks for them."""

import subprocess
import sys

import pytest

import src  # noqa: F401  (importing the kit is what guards the process)


def test_a_hub_kernel_is_refused_without_a_download():
    kernels = pytest.importorskip("kernels")
    with pytest.raises(RuntimeError, match="kernels-community/quantization-bitsandbytes not loaded"):
        kernels.get_kernel("kernels-community/quantization-bitsandbytes", version=1)


def test_bitsandbytes_imported_after_the_kit_fetches_no_kernel_and_says_nothing_about_it():
    pytest.importorskip("bitsandbytes")
    code = ("import src, bitsandbytes, kernels\n"
            "print(kernels.get_kernel.__module__)")  # the kit's refusal, whatever the CPU
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "src.hub"
    assert "kernels-community" not in done.stderr
