"""Smoke runs: a small synthetic competition folder and tiny random models, so notebooks, train.sh and tests run
end to end on a CPU in seconds (no data, no model hub).

    overrides = setup("configs/roberta-base.yaml", "smoke")   # data + a tiny random RoBERTa under smoke/

`setup` writes `<root>/data/` (texts carry label keywords, so a model can learn them) and
`<root>/models/<arch>/` (a random model of the config's architecture family, with a tokenizer trained on the
synthetic texts), and returns the `key=value` overrides that point the config at them with 2 folds, a few
steps, float32 on CPU and every output under `<root>/`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from src.errors import UserError

LABELS = ["anger", "joy", "fear", "trust"]
FILLER = "the a of to and in that it is was for on with as at by this day time people".split()

# substring of model.name_or_path (lowercased) -> tiny architecture; the first match wins
ARCH_OF = [("distilroberta", "roberta"), ("distilbert", "distilbert"), ("roberta", "roberta"),
           ("deberta", "deberta-v2"), ("mpnet", "mpnet"), ("minilm", "bert"), ("bert", "bert"),
           ("gemma", "gemma"), ("llama", "llama"), ("smollm", "llama"), ("stella", "qwen2"), ("qwen", "qwen2"),
           ("mistral", "mistral")]
DECODERS = {"llama", "gemma", "qwen2", "mistral"}
_SIZE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
             max_position_embeddings=128)
TINY = {  # arch -> config kwargs of a tiny random model (vocab size and special ids are added)
    "bert": _SIZE,
    "roberta": _SIZE,
    "deberta-v2": {**_SIZE, "relative_attention": True, "pos_att_type": ["p2c", "c2p"]},
    "mpnet": _SIZE,
    "distilbert": dict(dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=128),
    "llama": {**_SIZE, "num_key_value_heads": 1},
    "gemma": {**_SIZE, "num_key_value_heads": 1, "head_dim": 16},
    "qwen2": {**_SIZE, "num_key_value_heads": 1},
    "mistral": {**_SIZE, "num_key_value_heads": 1, "sliding_window": None},
}


def make_frame(n: int, labels=LABELS, seed: int = 0, with_labels: bool = True, prefix: str = "tr") -> pd.DataFrame:
    """`n` rows of ID, Tweet (filler words plus `<label>y` for most of the row's labels), and 0/1 label columns."""
    rng = np.random.default_rng(seed)
    rates = np.linspace(0.45, 0.15, len(labels))
    Y = (rng.random((n, len(labels))) < rates).astype(int)
    texts = []
    for i in range(n):
        words = list(rng.choice(FILLER, size=6))
        for j, lab in enumerate(labels):
            if Y[i, j] and rng.random() < 0.9:
                words.insert(int(rng.integers(len(words) + 1)), lab + "y")
        texts.append(" ".join(words))
    df = pd.DataFrame({"ID": [f"{prefix}-{i:05d}" for i in range(n)], "Tweet": texts})
    if with_labels:
        for j, lab in enumerate(labels):
            df[lab] = Y[:, j]
    return df


def make_competition(root: Path, n_train: int = 200, n_test: int = 60, labels=LABELS, seed: int = 0) -> Path:
    """Write train.csv, test.csv and sample_submission.csv under `root`; return it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    train = make_frame(n_train, labels, seed)
    test = make_frame(n_test, labels, seed + 1, with_labels=False, prefix="te")
    sample = test[["ID"]].copy()
    for lab in labels:
        sample[lab] = 0
    train.to_csv(root / "train.csv", index=False)
    test.to_csv(root / "test.csv", index=False)
    sample.to_csv(root / "sample_submission.csv", index=False)
    return root


def arch_of(name_or_path: str) -> str:
    """The tiny architecture standing in for a model id (e.g. 'Qwen/Qwen2.5-14B-Instruct' -> 'qwen2')."""
    name = name_or_path.lower()
    for key, arch in ARCH_OF:
        if key in name:
            return arch
    raise UserError(f"no tiny smoke architecture for model '{name_or_path}' (known: {', '.join(sorted(TINY))})")


def tiny_tokenizer(arch: str, texts: list[str], vocab_size: int = 300):
    """A fast tokenizer of at most `vocab_size` tokens trained on `texts`: WordPiece with [CLS]/[SEP] for BERT-like
    encoders, byte-level BPE with <s>/</s> for RoBERTa, byte-level BPE with a BOS token and a pad token for
    decoders."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if arch in ("bert", "distilbert", "deberta-v2", "mpnet"):
        special = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                   "mask_token": "[MASK]"}
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(special.values()))
        template = ("[CLS] $A [SEP]", "[CLS] $A [SEP] $B:1 [SEP]:1", ["[CLS]", "[SEP]"])
    else:
        if arch == "roberta":
            special = {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>",
                       "cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>"}
            template = ("<s> $A </s>", "<s> $A </s> </s> $B </s>", ["<s>", "</s>"])
        else:
            special = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
            template = ("<s> $A", "<s> $A <s> $B", ["<s>"])
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=arch == "roberta")
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(dict.fromkeys(special.values())),
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    single, pair, names = template
    tok.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[(t, tok.token_to_id(t)) for t in names])
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=128, **special)


# Real model shapes with random weights (speed measures need no pretrained weights): arch, config, tokenizer vocab
SHAPES = {
    "mpnet-base": ("mpnet", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                 intermediate_size=3072, max_position_embeddings=514, vocab_size=30527), 30000),
    "llama-3.2-1b": ("llama", dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
                                   num_key_value_heads=8, intermediate_size=8192, max_position_embeddings=2048,
                                   rope_theta=500000.0, tie_word_embeddings=True, vocab_size=128256), 30000),
}


def tiny_model(arch: str, out_dir: str | Path, texts: list[str], seed: int = 0, shape: str = "") -> Path:
    """Save a tiny random model of `arch` (the hub layout: a masked-LM or causal-LM checkpoint) and its
    tokenizer to `out_dir`; loadable with `from_pretrained(out_dir)` like a hub model. Reused if present.
    `shape` (a SHAPES name): that real model's size instead, random weights and a tokenizer trained on `texts`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

    out = Path(out_dir)
    if (out / "config.json").is_file():
        return out
    if arch not in TINY:
        raise UserError(f"unknown tiny architecture '{arch}' (known: {', '.join(sorted(TINY))})")
    size, vocab = (TINY[arch], 300) if not shape else (SHAPES[shape][1], SHAPES[shape][2])
    tokenizer = tiny_tokenizer(arch, texts, vocab)
    ids = {k: tokenizer.convert_tokens_to_ids(v) for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
    special = {f"{k[:-6]}_token_id": ids[k] for k in ("pad_token", "bos_token", "eos_token") if k in ids}
    config = AutoConfig.for_model(arch, **{"vocab_size": len(tokenizer), **size}, **special)
    torch.manual_seed(seed)
    auto = AutoModelForCausalLM if arch in DECODERS else AutoModelForMaskedLM
    with torch.device("cuda" if shape and torch.cuda.is_available() else "cpu"):  # a full size builds on the GPU
        model = auto.from_config(config)
    if shape and arch in DECODERS:
        model = model.to(torch.bfloat16)  # as decoders are published (half the file to write)
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    return out


def setup(config: str | Path, root: str | Path = "smoke", n_train: int = 120, n_test: int = 40,
          max_steps: int = 4) -> list[str]:
    """Write synthetic data (and, for a transformer config, a tiny random model of its architecture) under
    `root`; return overrides that run `config` on them quickly on a CPU with every output under `root`."""
    from src.config import load_config

    root = Path(root).resolve()
    cfg = load_config(config)
    data = make_competition(root / "data", n_train=n_train, n_test=n_test)
    overrides = [f"data.data_dir={data}", "data.name=smoke", "folds.n_folds=2", "folds.run=[]",
                 f"folds.dir={root / 'folds'}", f"output.checkpoints_dir={root / 'checkpoints'}",
                 f"output.submissions_dir={root / 'submissions'}", "output.plots=true"]
    if cfg.model_type == "tfidf":
        return [*overrides, "tfidf.min_df=1", "tfidf.n_jobs=1"]
    if cfg.model_type != "transformer":
        raise UserError(f"no smoke setup for model_type '{cfg.model_type}'")
    arch = arch_of(cfg.model.name_or_path)
    texts = pd.read_csv(data / "train.csv")["Tweet"].tolist()
    model = tiny_model(arch, root / "models" / arch, texts)
    method = "lora" if cfg.model.method == "qlora" else cfg.model.method  # QLoRA needs CUDA (bitsandbytes)
    return [*overrides, f"model.name_or_path={model}", f"model.method={method}", "model.max_length=32",
            "model.dtype=float32", "model.trust_remote_code=false", "model.gradient_checkpointing=false",
            f"train.max_steps={max_steps}", f"train.eval_every={max(1, max_steps // 2)}", "train.batch_size=8",
            "train.eval_batch_size=32", "train.grad_accum=1", "train.precision=auto", "train.report_to=none",
            "train.keep_top_k=0", "train.log_every=1"]
