"""Load a causal LM and its tokenizer (hub id or local folder) for scoring or fine-tuning."""

from __future__ import annotations

import torch

from src import precision
from src.config import ModelConfig
from src.errors import UserError
from src.hub import resolve_path
from src.models.transformer import dtype_kw, quiet_hf

DTYPES = precision.DTYPES


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(name: str) -> torch.dtype:
    """`auto`: bfloat16 on an Ampere+ GPU, float16 on an older one (no native bf16), float32 on CPU (bf16 matmuls
    are slow there); see src/precision.py."""
    return precision.llm_dtype(name)


def dtype_kwargs(name: str) -> dict:
    """`from_pretrained` keyword for the dtype (`dtype=` in transformers 5, `torch_dtype=` before 4.56)."""
    return {dtype_kw(): resolve_dtype(name)}


def model_path(mc: ModelConfig) -> str:
    """model.name_or_path as a local folder (`~`, `$VARS` expanded) or a hub id (src/models/transformer.py)."""
    return resolve_path(mc.name_or_path)


def load_tokenizer(mc: ModelConfig):
    """The tokenizer, with a pad token (the EOS token when it has none)."""
    from transformers import AutoTokenizer

    path = model_path(mc)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=mc.trust_remote_code)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load the tokenizer of {path!r}: {str(e).splitlines()[0]}") from None
    if tok.pad_token_id is None:
        if tok.eos_token is None:
            raise UserError(f"tokenizer of {path!r} has neither a pad nor an EOS token")
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(mc: ModelConfig, dtype: str | None = None):
    """`(model, tokenizer)`: the causal LM in eval mode on the GPU if there is one, else the CPU; `dtype` (a
    `model.dtype` name) replaces mc.dtype."""
    from transformers import AutoModelForCausalLM

    precision.check_gpu()  # a torch without kernels for this card: the fix now, not "no kernel image" later
    tok = load_tokenizer(mc)
    path = model_path(mc)
    try:
        with quiet_hf():
            model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=mc.trust_remote_code,
                                                         **dtype_kwargs(dtype or mc.dtype))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load a causal LM from {path!r}: {str(e).splitlines()[0]}") from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    return model.to(device()).eval(), tok


def stop_token_ids(model, tok) -> list[int]:
    """Token ids that end an answer: the tokenizer's EOS and the generation config's EOS ids."""
    ids = {tok.eos_token_id}
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(eos if isinstance(eos, (list, tuple)) else [eos])
    return sorted(i for i in ids if i is not None)
