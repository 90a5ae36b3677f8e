"""Mixed precision and 16-bit dtypes, decided in one place.

Native bf16 means a CUDA GPU of compute capability >= 8.0 (Ampere and newer). `torch.cuda.is_bf16_supported()` is
not used for that: it also counts emulated bf16, so it is True on a T4/V100/P100, which have fast fp16 only.
On the CPU bf16 autocast is allowed (when asked for), fp16 is not.
"""

from __future__ import annotations

import torch

from src.errors import UserError

PRECISIONS = ("auto", "bf16", "fp16", "no")
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}  # model.dtype names


def has_cuda() -> bool:
    return torch.cuda.is_available()


def native_bf16() -> bool:
    """Whether the current CUDA GPU computes bf16 natively (compute capability >= 8.0); False without CUDA."""
    return has_cuda() and tuple(torch.cuda.get_device_capability()) >= (8, 0)


def cuda_half_dtype() -> torch.dtype:
    """The CUDA GPU's fast 16-bit dtype: bfloat16 from Ampere on, float16 before."""
    return torch.bfloat16 if native_bf16() else torch.float16


def compute_dtype_4bit() -> torch.dtype:
    """Compute dtype of 4-bit (QLoRA) layers: float16 on a pre-Ampere CUDA GPU, else bfloat16 (CPU included)."""
    return cuda_half_dtype() if has_cuda() else torch.bfloat16


def resolve_precision(precision: str) -> str:
    """bf16 | fp16 | no from `train.precision` (`auto`: bf16 on an Ampere+ GPU, fp16 on an older one, no on CPU)."""
    if precision not in PRECISIONS:
        raise UserError(f"train.precision must be auto, bf16, fp16 or no, got {precision!r}")
    cuda = has_cuda()
    if precision == "auto":
        return ("bf16" if native_bf16() else "fp16") if cuda else "no"
    if precision == "fp16" and not cuda:
        raise UserError("train.precision=fp16 needs a CUDA GPU; use bf16 or no on CPU")
    return precision


def autocast_dtype(precision: str, device_type: str | None = None) -> torch.dtype | None:
    """The autocast dtype of `precision` (None: no autocast); on `device_type` cpu only bf16 autocasts."""
    dtype = AUTOCAST.get(resolve_precision(precision))
    if device_type is not None and device_type != "cuda" and dtype is not torch.bfloat16:
        return None
    return dtype


def llm_dtype(name: str = "auto") -> torch.dtype:
    """Weights dtype of a causal LM: `auto` = the GPU's 16-bit dtype (bf16 on Ampere+, fp16 before), float32 on CPU."""
    if name == "auto":
        return cuda_half_dtype() if has_cuda() else torch.float32
    if name not in DTYPES:
        raise UserError(f"model.dtype must be auto or one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def fused_adamw(params) -> bool:
    """Whether torch's fused AdamW kernel takes these parameters (floating point, on a device it supports)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # older torch: CUDA only
        devices = {"cuda"}
    params = list(params)
    return bool(params) and all(p.device.type in devices and torch.is_floating_point(p) for p in params)
