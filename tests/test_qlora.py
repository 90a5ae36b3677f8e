"""QLoRA (`model.method=qlora`) on the CPU: a real 4-bit NF4 base (bitsandbytes), trained through the real loop,
reloaded to the probabilities it saved, with bitsandbytes' CPU weight repacking kept out of training.

The tiny Llama has hidden size 64, a multiple of bitsandbytes' block size, so its AVX512-BF16 repacking path (on
CPUs that have it) could run; with it on, an evaluation followed by training backpropagates through a kernel without
autograd and torch warns "silently incorrect behavior".
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from synth import LABELS, make_frame
from test_train import history, overrides, setup
from test_transformer import _tokenizer, count_layer_forwards, tiny_cfg

from src.config import load_config
from src.models import transformer as tm
from src.train import train_folds

bnb = pytest.importorskip("bitsandbytes")
pytestmark = pytest.mark.usefixtures("one_thread")
SILENT = "silently incorrect"


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    """A tiny random LlamaForSequenceClassification (2 layers, hidden 64) + byte-level tokenizer, saved like a hub
    folder."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    out = tmp_path_factory.mktemp("qlora") / "llama64"
    tok = _tokenizer(make_frame(200)["Tweet"].tolist(), decoder=True)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok) + 8, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=160, bos_token_id=1,
                         eos_token_id=2, pad_token_id=2, tie_word_embeddings=False, initializer_range=0.2,
                         num_labels=len(LABELS))
    LlamaForSequenceClassification(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def silent_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if SILENT in str(w.message)]


def test_qlora_base_is_really_4bit_nf4_with_a_float32_head_and_adapters(llama):
    model, tok = tm.build_model(tiny_cfg(llama, method="qlora"), LABELS)
    hf = tm.hf_model(model)
    quantized = {n: m for n, m in hf.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert len(quantized) == 2 * 7  # q, k, v, o, gate, up, down of both layers
    for name, module in quantized.items():
        w = module.weight
        assert isinstance(w, bnb.nn.Params4bit) and w.dtype == torch.uint8, name
        assert w.quant_state.quant_type == "nf4" and w.quant_state.nested, name  # NF4, double quantization
        assert w.numel() * 2 == module.in_features * module.out_features  # two 4-bit values per byte
        assert module.compute_dtype == torch.float32 and not w.requires_grad, name  # train.precision=no here
        assert module.support_avx512bf16_for_cpu is False, name  # no repacking behind training's back
    assert not any("score" in n for n in quantized)  # the head stays out of quantization
    head = hf.score.modules_to_save["default"]
    assert type(head) is torch.nn.Linear and head.weight.dtype == torch.float32 and head.weight.requires_grad
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 and ("lora_" in n or "score" in n) for n, p in trainable)
    assert model.peft_config["default"].modules_to_save[:1] == ["score"]
    probs = tm.predict_probs(model, tok, make_frame(5, seed=2)["Tweet"].tolist(), tiny_cfg(llama, method="qlora"))
    assert probs.shape == (5, 4) and np.isfinite(probs).all()


def test_qlora_trains_through_the_loop_and_reloads_to_the_saved_probabilities(workdir, comp_dir, llama):
    cfg = load_config(None, overrides(comp_dir, llama, "qlora", "model.method=qlora", "train.max_steps=40",
                                      "train.eval_every=10", "train.lr=1e-2", "lora.r=8"))
    comp, folds, rd = setup(cfg)
    with warnings.catch_warnings(record=True) as caught:  # evaluations sit between training steps
        warnings.simplefilter("always")
        train_folds(cfg, comp, folds, rd)
    assert silent_warnings(caught) == []  # no backward through bitsandbytes' autograd-less CPU kernel
    evals = [h for h in history(rd) if h.get("event") == "eval"]
    assert [e["step"] for e in evals] == [10, 20, 30, 40]
    assert evals[-1]["train_loss"] < 0.8 * evals[0]["train_loss"]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    step = rd.step(0, 40)
    assert (step / "adapter_model.safetensors").is_file() and not (step / "model.safetensors").exists()
    assert "score" in json.loads((step / "adapter_config.json").read_text())["modules_to_save"]
    model, tok = tm.load_checkpoint(cfg, step, comp.labels)
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()) == 14
    texts = [comp.train_texts[i] for i in np.flatnonzero(folds["fold"].to_numpy() == 0)]
    np.testing.assert_array_equal(tm.predict_probs(model, tok, texts, cfg), np.load(step / "valid_probs.npy"))


def test_qlora_gradient_checkpointing_recomputes_layers_on_cpu(llama):
    cfg = tiny_cfg(llama, "model.gradient_checkpointing=true", method="qlora")
    with warnings.catch_warnings(record=True) as setup_warnings:
        warnings.simplefilter("always")
        model, tok = tm.build_model(cfg, LABELS)
    assert tm.checkpointing_on(tm.hf_model(model))
    # switched on through the transformers 5 API, not peft's call of the deprecated gradient_checkpointing_enable
    assert not [str(w.message) for w in setup_warnings if "gradient_checkpointing_enable" in str(w.message)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        per_step, changed = count_layer_forwards(model, tok, cfg, steps=2)
    assert per_step == [2, 2] and changed  # forward + recompute in backward; the adapters learn
    assert silent_warnings(caught) == []


def test_training_after_an_evaluation_gets_the_same_gradients(llama):
    cfg = tiny_cfg(llama, method="qlora")
    texts = make_frame(8, seed=4)["Tweet"].tolist()
    grads = []
    for evaluate_first in (False, True):
        torch.manual_seed(0)
        model, tok = tm.build_model(cfg, LABELS)
        if evaluate_first:  # an eval-mode, inference-mode forward, as at every evaluation
            tm.predict_probs(model, tok, texts, cfg)
        model.train()
        batch = tm.pad_batch(tm.encode(tok, texts, cfg), tok.pad_token_id)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model(**batch).logits.float().pow(2).sum().backward()
        assert silent_warnings(caught) == []
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    layer0 = [n for n in grads[0] if ".layers.0." in n and "lora_B" in n]  # lora_A: 0 while B = 0
    assert layer0 and all(grads[0][n].abs().sum() > 0 for n in layer0)  # gradients reach the bottom layer
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=0, atol=0, msg=n)
