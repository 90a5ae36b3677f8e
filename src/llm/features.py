"""Frozen hidden-state features of any encoder or decoder, cached on disk once.

The cache file is keyed by the model (hub id, or a local folder's path and weight files' sizes and times),
layer, pooling, max_length, dtype and a hash of the texts, so a second run with the same settings loads it
and a changed layer (or any of the others) computes a new one:

    <probe.cache_dir>/<model>_L<layer>_<pooling>_<key>.npy   float32 [texts, hidden]
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import torch

from src.config import ModelConfig, ProbeConfig
from src.errors import UserError
from src.fileio import atomic_path, write_json
from src.llm.lm import device, dtype_kwargs, load_tokenizer, model_path, resolve_dtype
from src.models.transformer import quiet_hf
from src.progress import tqdm

POOLINGS = ("mean", "last", "cls")


def model_identity(name_or_path: str) -> dict:
    path = Path(name_or_path)
    if not path.is_dir():
        return {"hub": name_or_path}
    weights = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth"))
    return {"path": str(path.resolve()), "weights": [[p.name, p.stat().st_size, p.stat().st_mtime_ns]
                                                     for p in weights]}


def texts_hash(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def cache_path(mc: ModelConfig, pc: ProbeConfig, texts: list[str]) -> Path:
    spec = {"model": model_identity(model_path(mc)), "layer": pc.layer, "pooling": pc.pooling,
            "max_length": mc.max_length, "dtype": str(resolve_dtype(mc.dtype)), "texts": texts_hash(texts),
            "n": len(texts)}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(model_path(mc).rstrip("/")).name or "model")
    return Path(pc.cache_dir) / f"{slug}_L{pc.layer}_{pc.pooling}_{key}.npy"


def load_encoder(mc: ModelConfig):
    """The bare model (no head) that returns hidden states; decoders come as their base model."""
    from transformers import AutoModel

    try:
        with quiet_hf():
            model = AutoModel.from_pretrained(model_path(mc), trust_remote_code=mc.trust_remote_code,
                                              **dtype_kwargs(mc.dtype))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load a model from {mc.name_or_path!r}: {str(e).splitlines()[0]}") from None
    if getattr(model.config, "is_encoder_decoder", False):
        model = model.get_encoder()
    return model.to(device()).eval()


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """[batch, time, dim] -> [batch, dim]: mean over real tokens, the last real token, or the first token."""
    if how == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1)
    if how == "last":
        return hidden[torch.arange(len(hidden), device=hidden.device), mask.sum(1) - 1]
    return hidden[:, 0]


@torch.inference_mode()
def extract(model, tok, texts: list[str], mc: ModelConfig, pc: ProbeConfig, desc: str = "features") -> np.ndarray:
    """Pooled hidden states of `pc.layer` for each text (length-sorted batches, right padding)."""
    n_states = model.config.num_hidden_layers + 1
    if not -n_states <= pc.layer < n_states:
        raise UserError(f"probe.layer must be in {-n_states}..{n_states - 1} for this model, got {pc.layer}")
    tok.padding_side = "right"
    enc = tok(texts, truncation=True, max_length=mc.max_length)["input_ids"]
    order = np.argsort([len(e) for e in enc], kind="stable")
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    dev = next(model.parameters()).device
    for s in tqdm(range(0, len(texts), pc.batch_size), desc=desc, unit="batch"):
        idx = order[s: s + pc.batch_size]
        batch = tok.pad({"input_ids": [enc[i] for i in idx]}, return_tensors="pt").to(dev)
        states = model(**batch, output_hidden_states=True).hidden_states
        out[idx] = pool(states[pc.layer].float(), batch["attention_mask"], pc.pooling).cpu().numpy()
    return out


def _cached(path: Path, rows: int) -> np.ndarray | None:
    """A cached feature matrix, or None when there is none or it is damaged (unreadable, other rows, non-finite
    values: a note, then it is recomputed)."""
    if not path.is_file():
        return None
    try:
        out = np.load(path)
        problem = (f"shape {out.shape}, expected [{rows}, hidden]" if out.ndim != 2 or len(out) != rows
                   else "non-finite values" if not np.isfinite(out).all() else "")
    except (ValueError, OSError, EOFError) as e:
        problem = (str(e).splitlines() or [type(e).__name__])[0][:160]
    if problem:
        print(f"note: the cached {path} is damaged ({problem}): recomputing it")
        return None
    return out


def features(mc: ModelConfig, pc: ProbeConfig, splits: dict[str, list[str]]) -> tuple[dict[str, np.ndarray],
                                                                                       dict[str, bool]]:
    """`({split: features}, {split: cache hit})`; the model loads only if some split is not cached."""
    if pc.pooling not in POOLINGS:
        raise UserError(f"probe.pooling must be one of {list(POOLINGS)}, got {pc.pooling!r}")
    paths = {s: cache_path(mc, pc, texts) for s, texts in splits.items()}
    out = {s: f for s, p in paths.items() if (f := _cached(p, len(splits[s]))) is not None}
    hits = {s: s in out for s in splits}
    missing = [s for s in splits if not hits[s]]
    if missing:
        model, tok = load_encoder(mc), load_tokenizer(mc)
        for s in missing:
            out[s] = extract(model, tok, splits[s], mc, pc, desc=f"{s} features")
            with atomic_path(paths[s]) as tmp, open(tmp, "wb") as f:
                np.save(f, out[s])
            write_json(paths[s].with_suffix(".json"), {"model": mc.name_or_path, "layer": pc.layer,
                                                       "pooling": pc.pooling, "max_length": mc.max_length,
                                                       "rows": len(splits[s])})
    for s in splits:
        print(f"{s} features {out[s].shape}: {'cache hit' if hits[s] else 'computed'} {paths[s]}")
    return out, hits
