"""model_type llm_finetune: answer-only loss masking, and a few LoRA steps per fold on a tiny random decoder."""

import json

import numpy as np
import pandas as pd
import pytest
from synth import make_frame
from tiny_lm import bytelevel_tokenizer, save_decoder, single_threaded, tiny_decoder  # noqa: F401 (autouse)

from src.config import LLMConfig, load_config
from src.llm.causal import collate, encode_example
from src.llm.prompts import Prompter
from src.pipeline import run

CORPUS = make_frame(200)["Tweet"].tolist() + ["anger joy fear trust none"] * 3


@pytest.mark.parametrize("chat", [True, False])
def test_loss_covers_only_the_answer(chat):
    tok = bytelevel_tokenizer(CORPUS, prefix_space=True)
    prompter = Prompter.build(tok, LLMConfig(chat_template=chat), ["anger", "joy", "fear"])
    answer = prompter.multi_answer([1, 0, 1])
    assert answer == "anger, fear" and prompter.multi_answer([0, 0, 0]) == "none"
    ids, labels = encode_example(tok, prompter, "the angery day", answer)
    prompt, _ = prompter.training_texts(prompter.multi_user("the angery day"), answer)
    n_prompt = len(tok(prompt, add_special_tokens=not chat)["input_ids"])
    assert len(ids) == len(labels) and labels[:n_prompt] == [-100] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:] and all(t != -100 for t in labels[n_prompt:])
    learned = tok.decode(ids[n_prompt:])
    assert learned == prompter.answer_start + answer + "<|im_end|>"  # the answer and the end of turn, nothing else
    batch = collate([(ids, labels), (ids[:5], [-100] * 5)], tok.pad_token_id)
    assert (batch["labels"][1] == -100).all() and batch["attention_mask"][1].sum() == 5


def test_finetune_folds_and_resume(workdir, comp_dir, tmp_path, capsys):
    decoder = save_decoder(tmp_path / "lm", CORPUS)
    overrides = [f"data.data_dir={comp_dir}", "exp=ft", "model_type=llm_finetune", "folds.n_folds=5",
                 "folds.run=[0,1]", f"model.name_or_path={decoder}", "llm.max_train_rows=12", "llm.max_test_rows=4",
                 "llm.max_new_tokens=4", "train.max_steps=3", "train.batch_size=4", "train.lr=1e-3", "lora.r=4"]
    result = run(load_config(None, overrides))
    assert not result["complete"] and result["folds"] == [0, 1] and result["oof_rows"] <= 12
    root = workdir / "checkpoints/ft"
    for k in (0, 1):
        done = json.loads((root / f"fold{k}/done.json").read_text())
        assert done["steps"] == 3 and done["train_rows"] == 160 and done["peak_memory"]["ram_gb"] > 0.1
        assert (root / f"fold{k}/adapter/adapter_config.json").is_file()
    partial = root / "partial"  # two folds, a subset of rows: beside a complete run's outputs, not over them
    assert len(pd.read_csv(partial / "test.csv")) == 4 and (partial / "methods/max_oof.csv").is_file()
    assert not (root / "oof.csv").exists()
    capsys.readouterr()
    run(load_config(None, overrides))  # the finished folds are reused, not retrained
    assert capsys.readouterr().out.count("reusing it") == 2


def _lora_setup(*extra: str):
    import torch

    from src.llm.causal import lora_model

    tok = bytelevel_tokenizer(CORPUS, prefix_space=True)
    cfg = load_config(None, ["model_type=llm_finetune", "train.max_steps=2", "train.batch_size=4", "train.lr=1e-2",
                             "train.scheduler=constant", "lora.r=4", *extra])
    prompter = Prompter.build(tok, cfg.llm, ["anger", "joy", "fear"])
    examples = [encode_example(tok, prompter, t, prompter.multi_answer([i % 2, 1, 0]))
                for i, t in enumerate(CORPUS[:8])]
    torch.manual_seed(0)
    return lora_model(tiny_decoder(tok), cfg), examples, cfg, tok


def test_no_clipping_with_max_grad_norm_zero_and_fused_adamw(monkeypatch):
    import torch

    from src.llm.causal import train

    model, examples, cfg, tok = _lora_setup("train.max_grad_norm=0")
    b_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    assert b_before and all((p == 0).all() for p in b_before.values())  # LoRA starts with B = 0
    made = []
    adamw = torch.optim.AdamW
    monkeypatch.setattr(torch.optim, "AdamW", lambda *a, **k: made.append(k) or adamw(*a, **k))
    losses = train(model, examples, cfg, tok.pad_token_id, seed=0)
    assert len(losses) == 2 and all(np.isfinite(losses))
    named = dict(model.named_parameters())
    assert all(named[n].abs().sum() > 0 for n in b_before)  # the gradients were not clipped to zero
    assert made and made[0]["fused"] is True  # fused AdamW on CPU too


@pytest.mark.parametrize(("precision", "dtype"), [("bf16", "torch.bfloat16"), ("auto", "torch.float32"),
                                                  ("no", "torch.float32")])
def test_cpu_autocast_follows_train_precision(precision, dtype):
    from src.llm.causal import train

    model, examples, cfg, tok = _lora_setup(f"train.precision={precision}", "train.max_steps=1")
    seen = set()
    q = next(m for n, m in model.named_modules() if n.endswith("layers.0.self_attn.q_proj.base_layer"))
    q.register_forward_hook(lambda mod, args, out: seen.add(str(out.dtype)))
    train(model, examples, cfg, tok.pad_token_id, seed=0)
    assert seen == {dtype}


def test_no_autocast_loads_a_float32_base_on_cuda(monkeypatch):
    import torch

    from src.llm import causal

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a T4: emulated bf16 "supported", fp16 native
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (7, 5))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    asked = []

    class Loaded(Exception):
        pass

    def load(mc, dtype=None):
        asked.append(dtype or mc.dtype)
        raise Loaded

    monkeypatch.setattr(causal, "load_causal_lm", load)
    for setting in ("train.precision=no", "train.precision=auto", "model.dtype=bfloat16"):
        with pytest.raises(Loaded):
            causal.run_fold(load_config(None, ["model_type=llm_finetune", setting]), None, 0, np.arange(4),
                            np.arange(4, 8), None, None)
    assert asked == ["float32", "auto", "bfloat16"]
    assert causal.precision.llm_dtype("auto") == torch.float16  # auto on a T4: fp16 weights, fp16 autocast
