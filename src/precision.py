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


# A build that no longer ships kernels for older cards (cu128+ wheels: no Pascal; CUDA 13: no Volta either) fails at
# the first kernel with "no kernel image"; PyTorch's CUDA 12.6 builds still carry sm_50 to sm_90.
CU126 = "https://download.pytorch.org/whl/cu126"


def _runs_on(archs: list[str], capability: tuple[int, int]) -> bool:
    """Whether a build for `archs` (torch.cuda.get_arch_list()) has code for a GPU of this compute capability: a
    cubin of the same major version and no newer minor, or PTX of no newer version (JIT-compiled)."""
    for arch in archs:
        kind, _, digits = arch.partition("_")
        if not digits.isdigit():
            continue
        major, minor = int(digits[:-1]), int(digits[-1])
        if (kind == "sm" and major == capability[0] and minor <= capability[1]) or (
                kind == "compute" and (major, minor) <= tuple(capability)):
            return True
    return False


def check_gpu() -> None:
    """Stop with the fix when this torch has no kernels for the GPU (instead of "no kernel image" mid-run)."""
    if not has_cuda():
        return
    capability = tuple(torch.cuda.get_device_capability())
    archs = torch.cuda.get_arch_list()
    if archs and not _runs_on(archs, capability):
        raise UserError(f"torch {torch.__version__} has no kernels for this GPU ({torch.cuda.get_device_name()}, "
                        f"sm_{capability[0]}{capability[1]}; it was built for {', '.join(archs)}): install a torch "
                        f"built for it, e.g. pip install 'torch<2.15' --index-url {CU126} (in .venv: "
                        f"TORCH_SPEC=\"torch<2.15 --index-url {CU126}\" bash setup.sh)")


def check_compile(mode: str) -> None:
    """torch.compile's GPU code (Triton) needs compute capability 7.0 or newer."""
    if mode != "none" and has_cuda() and tuple(torch.cuda.get_device_capability()) < (7, 0):
        major, minor = torch.cuda.get_device_capability()
        raise UserError(f"train.compile={mode} needs a GPU of compute capability 7.0 or newer (Triton); this one is "
                        f"sm_{major}{minor} ({torch.cuda.get_device_name()}): use train.compile=none")


def native_bf16() -> bool:
    """Whether the current CUDA GPU computes bf16 natively (compute capability >= 8.0); False without CUDA."""
    return has_cuda() and tuple(torch.cuda.get_device_capability()) >= (8, 0)


def cuda_half_dtype() -> torch.dtype:
    """The CUDA GPU's fast 16-bit dtype: bfloat16 from Ampere on, float16 before."""
    return torch.bfloat16 if native_bf16() else torch.float16


def compute_dtype_4bit(precision: str = "auto") -> torch.dtype:
    """Compute dtype of 4-bit (QLoRA) layers: the autocast dtype of `train.precision` (bf16 / fp16), float32 without
    mixed precision; so the 4-bit layers compute in what the rest of the model autocasts to."""
    return AUTOCAST.get(resolve_precision(precision), torch.float32)


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


# Model families whose activations overflow float16 (Gemma's large residual stream): fp16 training diverges.
FP16_OVERFLOWS = ("gemma", "gemma2", "gemma3", "gemma3_text")


def check_family(model_type: str, precision: str) -> None:
    """Refuse fp16 (asked for, or `auto` on a pre-Ampere GPU) for a model family known to overflow in it."""
    if model_type in FP16_OVERFLOWS and resolve_precision(precision) == "fp16":
        raise UserError(f"{model_type} overflows in fp16 (its training diverges): use train.precision=bf16 on an "
                        "Ampere or newer GPU (A100, L4, H100), or train.precision=no (float32, slower) on a "
                        "T4/P100/V100")


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
