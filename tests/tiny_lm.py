"""Tiny random decoders / encoders and small trained tokenizers for the LLM and probe tests (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIAL = ["<pad>", "<s>", "<|im_start|>", "<|im_end|>", "[UNK]"]
# label words the tiny vocabulary must split into several tokens (and two sharing their first ones)
HARD_WORDS = ["pessimism", "pessimistic", "anticipation", "Yes", "No", "yes", "no", "none", "Answer", "Text"]


def bytelevel_tokenizer(corpus: list[str], prefix_space: bool, chat: bool = True,
                        vocab_size: int = 330) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer; with `prefix_space` it adds a space before the first word, like GPT-2/RoBERTa."""
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(corpus + HARD_WORDS, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="<|im_end|>",
                                  unk_token="[UNK]")
    if chat:
        tok.chat_template = CHATML
    return tok


def wordpiece_tokenizer(corpus: list[str]) -> PreTrainedTokenizerFast:
    tk = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"],
                                        show_progress=False)
    tk.train_from_iterator(corpus, trainer)
    from tokenizers.processors import TemplateProcessing

    tk.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[
        ("[CLS]", tk.token_to_id("[CLS]")), ("[SEP]", tk.token_to_id("[SEP]"))])
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]")


def tiny_decoder(tok, kind: str = "llama", seed: int = 0):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    torch.manual_seed(seed)
    common = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    config = LlamaConfig(**common) if kind == "llama" else Qwen2Config(**common)
    return AutoModelForCausalLM.from_config(config).eval()


def save_decoder(root: Path, corpus: list[str], kind: str = "llama", prefix_space: bool = True) -> Path:
    """A tiny random decoder + tokenizer saved like a hub folder; returns the folder."""
    tok = bytelevel_tokenizer(corpus, prefix_space)
    model = tiny_decoder(tok, kind)
    root.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(root)
    tok.save_pretrained(root)
    return root


def save_encoder(root: Path, corpus: list[str]) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    tok = wordpiece_tokenizer(corpus)
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, max_position_embeddings=128, pad_token_id=tok.pad_token_id))
    root.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(root)
    tok.save_pretrained(root)
    return root


@pytest.fixture(autouse=True, scope="module")
def single_threaded():
    """Tiny models run faster on one thread (torch and BLAS), and far faster when the CPU is shared."""
    import torch
    from threadpoolctl import threadpool_limits

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(n)
