"""Precision decisions (src/precision.py) on faked CUDA GPUs, and CPU bf16 autocast at prediction time.

A T4 (compute capability 7.5) reports `torch.cuda.is_bf16_supported() == True` (emulated bf16), so every fake GPU
here does too: only the compute capability may decide.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import torch
from synth import LABELS
from test_train import overrides, setup
from test_transformer import make_tiny, tiny_cfg

from src import precision
from src.config import load_config
from src.errors import UserError
from src.llm import lm
from src.models import transformer as tm
from src.train import train_folds

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


def fake_gpu(monkeypatch, capability: tuple[int, int] | None) -> None:
    """CUDA present with this compute capability (None: no CUDA); bf16 'supported' either way, as torch says."""
    with contextlib.suppress(ImportError):  # imported for real first: bitsandbytes probes CUDA when imported
        import bitsandbytes  # noqa: F401
    monkeypatch.setattr(torch.cuda, "is_available", lambda: capability is not None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


def qlora_compute_dtype(c) -> torch.dtype:
    """The compute dtype build_model gives 4-bit layers (the helper's decision when bitsandbytes is missing)."""
    try:
        return tm._quantization_config(c).bnb_4bit_compute_dtype
    except UserError:
        return precision.compute_dtype_4bit(c.train.precision)


def cfg(*extra: str, method: str = "lora"):
    return tiny_cfg(Path("unused"), *extra, method=method)


@pytest.mark.parametrize("capability", [(6, 0), (7, 0), (7, 5)])  # P100, V100, T4
def test_pre_ampere_gpu_gets_fp16_everywhere(monkeypatch, capability):
    fake_gpu(monkeypatch, capability)
    assert tm.resolve_precision(cfg()) == "fp16"
    assert tm.autocast_dtype(cfg()) == torch.float16
    assert tm.weights_dtype(cfg()) == torch.float16  # LoRA base in the autocast dtype
    assert tm.weights_dtype(cfg(method="qlora")) == torch.float16
    assert qlora_compute_dtype(cfg()) == torch.float16
    assert qlora_compute_dtype(cfg("train.precision=no")) == torch.float32  # follows train.precision, not the card
    assert lm.resolve_dtype("auto") == torch.float16
    assert precision.autocast_dtype("auto", "cuda") == torch.float16
    assert tm.resolve_precision(cfg("train.precision=bf16")) == "bf16"  # asked for explicitly: emulated, but given


@pytest.mark.parametrize("capability", [(8, 0), (8, 9), (9, 0)])  # A100, L4, H100
def test_ampere_and_newer_get_bf16(monkeypatch, capability):
    fake_gpu(monkeypatch, capability)
    assert tm.resolve_precision(cfg()) == "bf16"
    assert tm.autocast_dtype(cfg()) == torch.bfloat16
    assert tm.weights_dtype(cfg()) == torch.bfloat16
    assert qlora_compute_dtype(cfg()) == torch.bfloat16
    assert qlora_compute_dtype(cfg("train.precision=fp16")) == torch.float16
    assert lm.resolve_dtype("auto") == torch.bfloat16
    assert tm.weights_dtype(cfg(method="full")) == torch.float32  # full fine-tuning keeps float32 weights
    assert tm.resolve_precision(cfg("train.precision=fp16")) == "fp16"


def test_cpu_decisions(monkeypatch):
    fake_gpu(monkeypatch, None)
    assert tm.resolve_precision(cfg()) == "no" and tm.autocast_dtype(cfg()) is None
    assert tm.weights_dtype(cfg()) == torch.float32 and lm.resolve_dtype("auto") == torch.float32
    assert qlora_compute_dtype(cfg()) == torch.float32  # no mixed precision: 4-bit layers compute in float32
    assert qlora_compute_dtype(cfg("train.precision=bf16")) == torch.bfloat16
    assert tm.autocast_dtype(cfg("train.precision=bf16"), "cpu") == torch.bfloat16
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        tm.resolve_precision(cfg("train.precision=fp16"))
    with pytest.raises(UserError, match="train.precision must be"):
        tm.resolve_precision(cfg("train.precision=half"))
    assert precision.fused_adamw([torch.zeros(2, requires_grad=True)])
    assert not precision.fused_adamw([torch.zeros(2, dtype=torch.long)])


@pytest.mark.parametrize("capability", [(7, 5), (8, 0)])
def test_lora_without_autocast_loads_a_float32_base(monkeypatch, tiny_root, capability):
    """`train.precision=no` on CUDA: no autocast, so a half base would meet the float32 head at the first forward."""
    path = make_tiny("llama", tiny_root)
    fake_gpu(monkeypatch, capability)
    no = tiny_cfg(path, "train.precision=no", method="lora")
    assert tm.weights_dtype(no) == torch.float32
    assert tm.weights_dtype(tiny_cfg(path, "train.precision=no", method="qlora")) == torch.float32
    assert tm.weights_dtype(tiny_cfg(path, "train.precision=no", "model.dtype=bfloat16")) == torch.bfloat16  # explicit
    assert tm.weights_dtype(tiny_cfg(path, "train.precision=fp16", method="lora")) == torch.float16
    assert tm.weights_dtype(tiny_cfg(path, "train.precision=bf16", method="lora")) == torch.bfloat16
    model, tok = tm.build_model(no, LABELS)  # the dtype decision of the CUDA run (the model itself stays on CPU)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    batch = tm.pad_batch(tm.encode(tok, ["a joyful day", "fear"], no), tok.pad_token_id)
    assert model(**batch).logits.shape == (2, 4)  # runs without autocast: no bf16/float32 mismatch


def test_causal_lm_dtype_follows_the_gpu(monkeypatch, tiny_root):
    fake_gpu(monkeypatch, (7, 5))
    assert lm.dtype_kwargs("auto") == {tm.dtype_kw(): torch.float16}
    assert lm.dtype_kwargs("float32") == {tm.dtype_kw(): torch.float32}
    with pytest.raises(UserError, match="model.dtype must be"):
        lm.resolve_dtype("fp8")


def test_cached_test_predictions_are_keyed_by_the_resolved_precision(monkeypatch):
    from types import SimpleNamespace

    from src.predict import test_key

    comp = SimpleNamespace(test_ids=["a"], test_texts=["x"], labels=LABELS)
    keys = []
    for capability in ((7, 5), (8, 0), None):  # `auto` autocasts in fp16, bf16, not at all
        fake_gpu(monkeypatch, capability)
        keys.append(test_key(cfg(), comp)["precision"])
    assert keys == ["fp16", "bf16", "no"]


def test_is_bf16_supported_is_asked_in_one_place():
    users = [p.relative_to(ROOT).as_posix() for p in (ROOT / "src").rglob("*.py")
             if "is_bf16_supported" in p.read_text(encoding="utf-8")]
    assert users == ["src/precision.py"]


def test_cpu_bf16_prediction_matches_the_saved_evaluation(workdir, comp_dir, tiny_root, fresh_accelerator):
    """train.precision=bf16 on CPU: evaluation runs under bf16 autocast, so reloaded predictions must too."""
    cfg = load_config(None, overrides(comp_dir, make_tiny("bert", tiny_root), "bf16", "train.precision=bf16",
                                      "train.max_steps=6", "train.eval_every=3"))
    comp, folds, rd = setup(cfg)
    train_folds(cfg, comp, folds, rd)
    texts = [comp.train_texts[i] for i in np.flatnonzero(folds["fold"].to_numpy() == 0)]
    for step in (3, 6):
        model, tok = tm.load_checkpoint(cfg, rd.step(0, step), comp.labels)
        saved = np.load(rd.step(0, step) / "valid_probs.npy")
        np.testing.assert_allclose(tm.predict_probs(model, tok, texts, cfg), saved, rtol=0, atol=1e-6)
    plain = load_config(None, overrides(comp_dir, make_tiny("bert", tiny_root), "bf16"))  # precision auto = no
    assert np.abs(tm.predict_probs(model, tok, texts, plain) - saved).max() > 1e-4  # bf16 really made a difference
