"""Model building for every architecture family, through the real loading path, on tiny random models.

`make_tiny(family, root, texts)` saves a hidden-32, 2-layer random model the way a hub checkpoint looks (backbone or
causal LM + tokenizer, no classification head); `build_model` then loads it like `roberta-base` or a Llama.
Decoder tokenizers have no pad token (like Llama-3's), so the pad-token handling is exercised.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from synth import make_frame

from src import hub
from src.config import load_config
from src.errors import UserError
from src.models import transformer as tm
from src.train import check_train_config

ENCODERS = ("bert", "roberta", "distilbert", "mpnet", "deberta-v2")
DECODERS = ("llama", "gemma", "gemma2", "qwen2", "mistral")
LABELS = ["anger", "joy", "fear", "trust"]
pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


def _tokenizer(texts: list[str], decoder: bool):
    """Decoders: byte-level BPE with <s>/</s> and no pad token (Llama-3/Qwen style); encoders: word-level with
    [CLS] ... [SEP] and [PAD] = 0 (BERT style)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if decoder:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def make_tiny(family: str, root: Path, texts: list[str] | None = None) -> Path:
    """Save a tiny random `family` model + tokenizer under root/family (once) and return the folder."""
    import transformers as tf

    out = Path(root) / family
    if (out / "config.json").is_file():
        return out
    texts = texts or make_frame(200)["Tweet"].tolist()
    decoder = family in DECODERS
    tokenizer = _tokenizer(texts, decoder)
    v = len(tokenizer) + 8  # room for specials a model type's tokenizer class adds (Qwen2: <|endoftext|>)
    enc = dict(vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
               max_position_embeddings=160, pad_token_id=0, initializer_range=0.2)
    dec = dict(vocab_size=v, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
               num_key_value_heads=1, max_position_embeddings=160, bos_token_id=1, eos_token_id=2,
               pad_token_id=None, tie_word_embeddings=False, initializer_range=0.2)
    models = {
        "bert": lambda: tf.BertModel(tf.BertConfig(**enc)),
        "roberta": lambda: tf.RobertaModel(tf.RobertaConfig(**enc)),
        "distilbert": lambda: tf.DistilBertModel(tf.DistilBertConfig(
            vocab_size=v, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=160, pad_token_id=0,
            initializer_range=0.2)),
        "mpnet": lambda: tf.MPNetModel(tf.MPNetConfig(**enc)),
        "deberta-v2": lambda: tf.DebertaV2Model(tf.DebertaV2Config(**enc)),
        "llama": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(**dec)),
        "gemma": lambda: tf.GemmaForCausalLM(tf.GemmaConfig(**dec, head_dim=16)),
        "gemma2": lambda: tf.Gemma2ForCausalLM(tf.Gemma2Config(**dec, head_dim=16)),
        "qwen2": lambda: tf.Qwen2ForCausalLM(tf.Qwen2Config(**dec)),
        "mistral": lambda: tf.MistralForCausalLM(tf.MistralConfig(**dec, head_dim=16)),
    }
    torch.manual_seed(0)
    models[family]().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def tiny_cfg(path: Path, *overrides: str, method: str = "full"):
    return load_config(None, ["model_type=transformer", f"model.name_or_path={path}", f"model.method={method}",
                              *overrides])


def count_layer_forwards(model, tok, cfg, steps: int = 2) -> tuple[list[int], bool]:
    """Train `steps` AdamW steps on a small batch; returns the forward calls per step of the first module inside the
    first transformer layer (2 per step when that layer is checkpointed: forward + recompute in backward, else 1),
    and whether that layer's trainable (LoRA) weights changed (gradients reached it)."""
    first = next(iter(tm.transformer_layers(model)[0].children()))
    calls = [0]
    handle = first.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    layer0 = {n: p.detach().clone() for n, p in model.named_parameters()
              if p.requires_grad and any(f".{s}.0." in n for s in ("layer", "layers"))}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    batch = tm.pad_batch(tm.encode(tok, make_frame(8, seed=4)["Tweet"].tolist(), cfg), tok.pad_token_id)
    y = torch.randint(0, 2, (8, len(LABELS))).float()
    model.train()
    per_step = []
    for _ in range(steps):
        calls[0] = 0
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(**batch).logits.float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        per_step.append(calls[0])
    handle.remove()
    named = dict(model.named_parameters())
    return per_step, bool(layer0) and any(not torch.equal(named[n], p) for n, p in layer0.items())


@pytest.mark.parametrize("family", ENCODERS + DECODERS)
def test_every_family_builds_and_padded_batches_match_single_rows(family, tiny_root):
    path = make_tiny(family, tiny_root)
    method = "lora" if family in DECODERS else "full"
    cfg = tiny_cfg(path, method=method)
    model, tok = tm.build_model(cfg, LABELS)
    hf = tm.hf_model(model)
    assert hf.config.num_labels == 4 and hf.config.problem_type == "multi_label_classification"
    assert tok.pad_token_id is not None and tok.padding_side == "right"
    if family in DECODERS:
        assert tm.model_kind(cfg, hf.config) == "decoder"
        assert hf.config.pad_token_id == tok.pad_token_id  # last-token pooling finds the padding with it
    texts = make_frame(12, seed=5)["Tweet"].tolist()
    texts[3] += " and a much longer tail of words so that this row forces padding on the others"
    batched = tm.predict_probs(model, tok, texts, cfg, batch_size=12)
    single = np.concatenate([tm.predict_probs(model, tok, [t], cfg, batch_size=1) for t in texts])
    assert batched.shape == (12, 4) and batched.dtype == np.float32
    assert np.ptp(batched, axis=0).max() > 1e-4  # rows differ, so a wrong pooled position would show
    np.testing.assert_allclose(batched, single, atol=2e-5)


def test_left_padding_decoder_matches_right(tiny_root):
    path = make_tiny("llama", tiny_root)
    texts = make_frame(8, seed=3)["Tweet"].tolist()
    texts[0] += " with some extra words"
    torch.manual_seed(1)
    m_right, tok_right = tm.build_model(tiny_cfg(path, method="lora"), LABELS)
    torch.manual_seed(1)
    cfg_left = tiny_cfg(path, "model.padding_side=left", method="lora")
    m_left, tok_left = tm.build_model(cfg_left, LABELS)
    assert tok_left.padding_side == "left"
    right = tm.predict_probs(m_right, tok_right, texts, tiny_cfg(path), batch_size=8)
    left = tm.predict_probs(m_left, tok_left, texts, cfg_left, batch_size=8)
    np.testing.assert_allclose(left, right, atol=2e-5)
    with pytest.raises(UserError, match="only supported for decoders"):
        tm.build_model(tiny_cfg(make_tiny("bert", tiny_root), "model.padding_side=left"), LABELS)


def test_lora_settings_reach_the_built_model(tiny_root):
    cfg = tiny_cfg(make_tiny("bert", tiny_root), "lora.r=4", "lora.alpha=12", "lora.dropout=0.2",
                   "lora.target_modules=[query,value]", "lora.bias=lora_only", method="lora")
    model, _ = tm.build_model(cfg, LABELS)
    pc = model.peft_config["default"]
    assert (pc.r, pc.lora_alpha, pc.lora_dropout, pc.bias) == (4, 12, 0.2, "lora_only")
    assert set(pc.target_modules) == {"query", "value"} and "classifier" in pc.modules_to_save
    layer = model.base_model.model.bert.encoder.layer[0].attention.self
    q = layer.query
    assert q.lora_A["default"].weight.shape == (4, 32) and q.lora_B["default"].weight.shape == (32, 4)
    assert q.scaling["default"] == 3.0 and q.lora_dropout["default"].p == 0.2
    assert not hasattr(layer.key, "lora_A")  # not a target
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("query.base_layer.bias" in n for n in trainable)  # bias=lora_only
    assert not any("key.bias" in n or "word_embeddings" in n for n in trainable)
    assert any(n.endswith("classifier.modules_to_save.default.weight") for n in trainable)


def test_default_lora_targets_and_head(tiny_root):
    llama, _ = tm.build_model(tiny_cfg(make_tiny("llama", tiny_root), method="lora"), LABELS)
    block = llama.base_model.model.model.layers[1]
    for mod in (block.self_attn.q_proj, block.self_attn.k_proj, block.self_attn.v_proj, block.self_attn.o_proj,
                block.mlp.gate_proj, block.mlp.up_proj, block.mlp.down_proj):
        assert hasattr(mod, "lora_A")  # attention and MLP projections
    assert llama.peft_config["default"].modules_to_save[:1] == ["score"]
    distil, _ = tm.build_model(tiny_cfg(make_tiny("distilbert", tiny_root), method="lora"), LABELS)
    assert {"pre_classifier", "classifier"} <= set(distil.peft_config["default"].modules_to_save)
    deberta, _ = tm.build_model(tiny_cfg(make_tiny("deberta-v2", tiny_root), method="lora"), LABELS)
    assert {"pooler", "classifier"} <= set(deberta.peft_config["default"].modules_to_save)
    with pytest.raises(UserError, match="match no layer"):
        tm.build_model(tiny_cfg(make_tiny("bert", tiny_root), "lora.target_modules=[q_proj]", method="lora"), LABELS)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_gradient_checkpointing_really_recomputes_lora_layers(family, tiny_root):
    path = make_tiny(family, tiny_root)
    cfg = tiny_cfg(path, "model.gradient_checkpointing=true", method="lora")
    model, tok = tm.build_model(cfg, LABELS)
    assert tm.checkpointing_on(tm.hf_model(model))
    per_step, changed = count_layer_forwards(model, tok, cfg)
    assert per_step == [2, 2] and changed  # forward + recompute in backward, and gradients still reach layer 0
    plain, tok = tm.build_model(tiny_cfg(path, method="lora"), LABELS)
    per_step, changed = count_layer_forwards(plain, tok, cfg)
    assert per_step == [1, 1] and changed
    frozen, _ = tm.build_model(cfg, LABELS, trainable=False)  # a model loaded to predict is not checkpointed
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not tm.checkpointing_on(tm.hf_model(frozen))
    assert not [w for w in caught if issubclass(w.category, FutureWarning)]  # asked under its transformers 5 name


def test_gradient_checkpointing_runs_in_the_training_loop(workdir, comp_dir, tiny_root, monkeypatch):
    import transformers.modeling_utils as mu
    from test_train import overrides, setup

    from src.train import train_folds

    calls = []
    real = mu.checkpoint  # what transformers binds as each layer's checkpoint function when enabled
    monkeypatch.setattr(mu, "checkpoint", lambda *a, **k: calls.append(k.get("use_reentrant")) or real(*a, **k))
    cfg = load_config(None, overrides(comp_dir, make_tiny("llama", tiny_root), "gc", "model.method=lora",
                                      "model.gradient_checkpointing=true", "train.max_steps=3", "train.eval_every=2"))
    train_folds(cfg, *setup(cfg))
    assert calls == [False] * (2 * 3)  # both layers, every training step, non-reentrant; none while evaluating


def test_last_n_trains_only_the_top_layers_and_the_head(tiny_root):
    cfg = tiny_cfg(make_tiny("distilbert", tiny_root), "model.last_n_layers=1", method="last_n")
    model, _ = tm.build_model(cfg, LABELS)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("distilbert.transformer.layer.1.", "pre_classifier.", "classifier."))
                             for n in trainable)
    assert any(n.startswith("distilbert.transformer.layer.1.") for n in trainable)
    assert any(n.startswith("pre_classifier.") for n in trainable)


def test_multi_sample_dropout_only_while_training(tiny_root):
    path = make_tiny("bert", tiny_root)
    torch.manual_seed(0)
    plain, tok = tm.build_model(tiny_cfg(path), LABELS)
    torch.manual_seed(0)
    msd, _ = tm.build_model(tiny_cfg(path, "model.multi_sample_dropout=4"), LABELS)
    batch = tm.pad_batch(tm.encode(tok, ["the joyy day", "a fear"], tiny_cfg(path)), tok.pad_token_id)
    plain.eval()
    msd.eval()
    torch.testing.assert_close(msd(**batch).logits, plain(**batch).logits)  # same weights, no effect in eval
    msd.train()
    torch.manual_seed(3)
    a = msd(**batch).logits
    torch.manual_seed(3)
    b = msd(**batch).logits
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, plain(**batch).logits)
    assert plain.dropout.p > 0 and msd.dropout.p == 0  # the masks replace the head's own dropout


def test_paths_and_gated_options(tiny_root, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    folder = tmp_path / ".cache/offline-models/tiny"
    folder.mkdir(parents=True)
    assert hub.resolve_path("~/.cache/offline-models/tiny") == str(folder)
    monkeypatch.setattr(hub, "_hub_reachable", lambda: True)
    assert hub.resolve_path("roberta-base") == "roberta-base"  # a hub id stays as given
    with pytest.raises(UserError, match="model folder not found"):
        hub.resolve_path("~/.cache/offline-models/missing")
    with pytest.raises(UserError, match="name_or_path is empty"):
        tm.build_model(load_config(None, ["model_type=transformer"]), LABELS)
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # not installed: one line saying what to install
    with pytest.raises(UserError, match="qlora needs bitsandbytes: pip install bitsandbytes"):
        tm.build_model(tiny_cfg(make_tiny("llama", tiny_root), method="qlora"), LABELS)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
            tm.resolve_precision(tiny_cfg(tiny_root, "train.precision=fp16"))
        assert tm.resolve_precision(tiny_cfg(tiny_root)) == "no"
        assert tm.weights_dtype(tiny_cfg(tiny_root, method="lora")) == torch.float32


def test_checkpoint_reload_of_a_full_model_gives_identical_logits(tiny_root, tmp_path):
    cfg = tiny_cfg(make_tiny("roberta", tiny_root))
    model, tok = tm.build_model(cfg, LABELS)
    model.save_pretrained(tmp_path / "step1")
    tok.save_pretrained(tmp_path / "step1")
    texts = make_frame(6, seed=9)["Tweet"].tolist()
    before = tm.predict_probs(model, tok, texts, cfg)
    loaded, tok2 = tm.load_checkpoint(cfg, tmp_path / "step1", LABELS)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    np.testing.assert_allclose(tm.predict_probs(loaded, tok2, texts, cfg), before, atol=1e-6)
    with pytest.raises(UserError, match="not a checkpoint"):
        tm.load_checkpoint(cfg, tmp_path, LABELS)


OFFLINE = ("mpnet-base", "minilm-l6", "smollm2-135m", "qwen2.5-coder-0.5b")


def test_model_configs_load_and_are_documented():
    paths = sorted(p for p in (ROOT / "configs").glob("*.yaml")
                   if yaml.safe_load(p.read_text(encoding="utf-8")).get("model_type") == "transformer")
    names = {p.stem for p in paths}
    assert {"roberta-base", "distilbert-base-uncased", "distilroberta-base", "gemma-2b", "llama-3.2-1b",
            "stella-1.5b", "qwen2.5-1.5b", "llama-3.2-3b-instruct", "qwen2.5-14b-instruct-qlora",
            "distilbert-last2", *OFFLINE} <= names
    for p in paths:
        text = p.read_text(encoding="utf-8")
        raw = yaml.safe_load(text)
        cfg = load_config(p)
        assert raw["model_type"] == "transformer" and raw["exp"] == p.stem, p
        assert cfg.model.method in tm.METHODS and cfg.model.name_or_path, p
        check_train_config(cfg)  # every switch a config sets is a valid one
        header = text.split("\n", 1)[0]
        assert header.startswith("#") and "GPU memory" in text and "estimate" in text, p
        # a hub id (local copies: MODELS_DIR), or a checkpoint this kit trains (intermediate-task transfer)
        assert not hub.is_path(cfg.model.name_or_path) or cfg.model.name_or_path.startswith("checkpoints/"), p


def test_a_hub_id_without_network_fails_at_once_unless_cached(monkeypatch):
    import time

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # recorded, so the test's own setting is undone afterwards
    monkeypatch.setattr(hub, "_hub_reachable", lambda: False)
    monkeypatch.delenv("MODELS_DIR", raising=False)
    t0 = time.time()
    with pytest.raises(UserError, match="model 'org/not-cached' is a hub id, but huggingface.co cannot be reached"):
        tm.build_model(load_config(None, ["model_type=transformer", "model.name_or_path=org/not-cached"]), LABELS)
    assert time.time() - t0 < 5  # not a minute of retries
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda repo, name: "/cache/config.json")
    assert hub.resolve_path("org/cached") == "org/cached" and constants.HF_HUB_OFFLINE  # loads offline from the cache


def test_a_hub_id_loads_its_local_copy_under_models_dir_and_without_one_says_how(tiny_root, tmp_path, monkeypatch):
    """Configs name hub ids; a machine without the hub reads `$MODELS_DIR/org--name` or `$MODELS_DIR/name`."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hub, "_hub_reachable", lambda: False)
    copies = tmp_path / "copies"
    copies.mkdir()
    cfg = load_config(None, ["model_type=transformer", "model.name_or_path=someorg/Tiny-Bert"])
    monkeypatch.delenv("MODELS_DIR", raising=False)
    with pytest.raises(UserError, match=r"'someorg/Tiny-Bert' is a hub id.*\$MODELS_DIR as someorg--Tiny-Bert or "
                                        r"Tiny-Bert \(set MODELS_DIR"):
        tm.build_model(cfg, LABELS)
    monkeypatch.setenv("MODELS_DIR", f"{tmp_path / 'elsewhere'}:{copies}")
    with pytest.raises(UserError, match=r"searched: .*elsewhere:.*copies"):
        tm.build_model(cfg, LABELS)
    (copies / "Tiny-Bert").symlink_to(make_tiny("bert", tiny_root))  # by its name ...
    model, _ = tm.build_model(cfg, LABELS)
    assert model.config.model_type == "bert" and hub.resolve_path("someorg/Tiny-Bert") == str(copies / "Tiny-Bert")
    (copies / "someorg--Tiny-Bert").symlink_to(make_tiny("roberta", tiny_root))  # ... org--name comes first
    assert tm.build_model(cfg, LABELS)[0].config.model_type == "roberta"
    assert not constants.HF_HUB_OFFLINE  # a local copy needs no offline switch


def test_loading_says_once_that_the_head_is_new_and_nothing_per_fold(tiny_root, capfd):
    cfg = load_config(None, ["model_type=transformer", f"model.name_or_path={make_tiny('bert', tiny_root)}"])
    tm._noted_loads.clear()
    capfd.readouterr()
    for _ in range(3):  # three folds
        tm.build_model(cfg, LABELS)
    out, err = capfd.readouterr()
    assert "LOAD REPORT" not in out + err and "Loading weights" not in out + err
    assert out.count("new classification head (classifier), randomly initialized") == 1


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_a_checkpoint_from_other_labels_starts_a_run_with_its_backbone_and_a_new_head(family, tiny_root, tmp_path,
                                                                                       capfd):
    """Intermediate-task transfer (e.g. a GoEmotions checkpoint as the start of an emotion run): the backbone comes
    from the checkpoint, the head is new whether the label count differs or only the names; the same labels keep
    their trained head (a run continued from its own checkpoint)."""
    base = make_tiny(family, tiny_root)
    for other in (["admiration", "amusement", "grief"], ["w", "x", "y", "z"]):
        src, _ = tm.build_model(tiny_cfg(base), other)
        with torch.no_grad():
            for p in src.parameters():
                p.add_(0.05)  # "fine-tuned": every weight moved away from the base's
        folder = tmp_path / f"{family}-{len(other)}"
        src.save_pretrained(folder)
        _, tok = tm.build_model(tiny_cfg(base), other)
        tok.save_pretrained(folder)
        tm._noted_loads.clear()
        capfd.readouterr()
        for _ in range(2):  # two folds
            model, _ = tm.build_model(tiny_cfg(folder), LABELS)
        out, err = capfd.readouterr()
        assert out.count(f"trained on {len(other)} other labels") == 1, out + err
        assert "incompatible" not in out + err and "LOAD REPORT" not in out + err
        head = set(tm.head_modules(model))
        theirs = dict(src.named_parameters())
        for name, p in model.named_parameters():
            if name.split(".")[0] in head:
                assert p.shape != theirs[name].shape or not torch.allclose(p, theirs[name]), name
            else:
                torch.testing.assert_close(p, theirs[name], msg=name)
        assert model.config.id2label == dict(enumerate(LABELS)) and model.config.num_labels == len(LABELS)
    same, _ = tm.build_model(tiny_cfg(base), LABELS)
    same.save_pretrained(tmp_path / "same")
    tok.save_pretrained(tmp_path / "same")
    again, _ = tm.build_model(tiny_cfg(tmp_path / "same"), LABELS)
    for (name, p), q in zip(same.named_parameters(), again.parameters()):
        torch.testing.assert_close(p, q, msg=name)
