"""Transformer multi-label classifiers: build from a hub id or a local folder, reload a checkpoint, predict.

Every model is `AutoModelForSequenceClassification(problem_type="multi_label_classification")`, trained by
`model.method`:
  full     every weight
  last_n   the last `model.last_n_layers` transformer layers + the head; everything else frozen
  lora     PEFT LoRA on `lora.target_modules` (empty: attention + MLP projections), the head in modules_to_save
  qlora    LoRA on a 4-bit NF4 base (bitsandbytes, double quant; computing in `train.precision`'s dtype), the head
           kept unquantized; on the GPU, or on the CPU when there is none (bitsandbytes >= 0.48 quantizes there too)
Decoders (Llama, Gemma, Qwen2, Mistral, stella, ...) pool the last non-pad token, so the tokenizer always has a pad
token (its EOS when it has none) and `config.pad_token_id` equals it; batches are padded on the right
(`model.padding_side: left` also works for decoders: position ids then come from the attention mask).
`model.name_or_path` is a hub id (a local copy under `MODELS_DIR` is used when there is one, src/hub.py) or a folder.
Weights load as float32 on CPU; LoRA/QLoRA bases load on CUDA in the autocast dtype of `train.precision` (bf16 on
Ampere+, fp16 before; float32 with `precision: no`), `model.dtype` overrides; trainable weights are always float32
and mixed precision comes from autocast (src/precision.py decides bf16 vs fp16 on the GPU's compute capability).
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn

from src import precision
from src.config import Config
from src.errors import UserError
from src.hub import remote_code, resolve_path
from src.progress import tqdm

METHODS = ("full", "last_n", "lora", "qlora")
DECODER_TYPES = {
    "llama", "mistral", "mixtral", "gemma", "gemma2", "gemma3", "gemma3_text", "qwen2", "qwen2_moe", "qwen3",
    "qwen3_moe", "phi", "phi3", "gpt2", "gpt_neox", "gptj", "falcon", "starcoder2", "olmo", "olmo2", "granite",
    "stablelm", "cohere", "smollm3", "ministral",
}
# LoRA targets when `lora.target_modules` is empty: the attention and MLP projections of each architecture.
DEFAULT_TARGETS = {
    "decoder": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "bert": ["query", "key", "value", "dense"],
    "roberta": ["query", "key", "value", "dense"],
    "xlm-roberta": ["query", "key", "value", "dense"],
    "electra": ["query", "key", "value", "dense"],
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"],
    "mpnet": ["q", "k", "v", "o", "dense"],
    "deberta": ["in_proj", "dense"],
    "deberta-v2": ["query_proj", "key_proj", "value_proj", "dense"],
}
HEAD_NAMES = ("score", "classifier", "pre_classifier")  # kept out of 4-bit quantization


def dtype_kw() -> str:
    """`dtype=` (transformers >= 4.56) or the older `torch_dtype=`."""
    import transformers
    from packaging.version import Version

    return "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


def resolve_precision(cfg: Config) -> str:
    """Mixed precision for training/prediction: bf16 | fp16 | no (`train.precision: auto` = bf16 on an Ampere+ GPU,
    fp16 on an older one, no on CPU; see src/precision.py)."""
    return precision.resolve_precision(cfg.train.precision)


def autocast_dtype(cfg: Config, device_type: str | None = None) -> torch.dtype | None:
    """The autocast dtype of `train.precision` (None: none), on `device_type` when given (CPU: bf16 only)."""
    return precision.autocast_dtype(cfg.train.precision, device_type)


def weights_dtype(cfg: Config) -> torch.dtype:
    """Load dtype: `model.dtype`, else for a LoRA/QLoRA base on CUDA the autocast dtype of `train.precision`
    (float32 with `precision: no`, whose float32 head could not take half activations), else float32."""
    d = cfg.model.dtype
    if d != "auto":
        if d not in ("float32", "bfloat16", "float16"):
            raise UserError(f"model.dtype must be auto, float32, bfloat16 or float16, got {d!r}")
        return getattr(torch, d)
    if torch.cuda.is_available() and cfg.model.method in ("lora", "qlora"):
        return autocast_dtype(cfg) or torch.float32
    return torch.float32


def model_kind(cfg: Config, hf_config) -> str:
    """encoder | decoder: `model.kind`, or guessed from the config's model_type / architectures."""
    kind = cfg.model.kind
    if kind in ("encoder", "decoder"):
        return kind
    if kind != "auto":
        raise UserError(f"model.kind must be auto, encoder or decoder, got {kind!r}")
    archs = getattr(hf_config, "architectures", None) or []
    if hf_config.model_type in DECODER_TYPES or any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return "decoder"
    return "encoder"


# Encoders whose learned position table starts after the padding index (RoBERTa's scheme): pad_token_id + 1 fewer
OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "mpnet", "data2vec-text", "longformer", "xlm-roberta-xl"}


def position_limit(hf_config) -> int | None:
    """The most tokens (special tokens included) an encoder with a learned position table takes; None where
    positions are not a fixed table (decoders' rotary positions, DeBERTa's relative ones)."""
    limit = getattr(hf_config, "max_position_embeddings", None)
    if not limit or hf_config.model_type.startswith("deberta") or hf_config.model_type in DECODER_TYPES:
        return None
    return limit - (hf_config.pad_token_id + 1 if hf_config.model_type in OFFSET_POSITIONS else 0)


def check_max_length(cfg: Config) -> None:
    """`model.max_length` within the model's position table: past it an encoder fails at its first long batch
    (an index error, after training steps), so it is refused before training starts."""
    from transformers import AutoConfig

    try:
        path = resolve_path(cfg.model.name_or_path)
        hf_config = AutoConfig.from_pretrained(path, trust_remote_code=cfg.model.trust_remote_code)
    except (UserError, OSError, ValueError):
        return  # no model to look at yet: its load says what is wrong
    limit = position_limit(hf_config)
    if limit is not None and cfg.model.max_length > limit:
        raise UserError(f"model.max_length={cfg.model.max_length} is more than {cfg.model.name_or_path} takes ({limit} "
                        f"tokens, special tokens included): set model.max_length={limit} or less")


def padding_side(cfg: Config, kind: str) -> str:
    side = cfg.model.padding_side
    if side == "auto":
        return "right"
    if side not in ("left", "right"):
        raise UserError(f"model.padding_side must be auto, left or right, got {side!r}")
    if side == "left" and kind == "encoder":
        raise UserError("model.padding_side=left is only supported for decoders; use right (or auto)")
    return side


def is_peft(model) -> bool:
    """Whether `model` is a PEFT (LoRA/QLoRA) wrapper: its checkpoints hold the adapter and head only."""
    return hasattr(model, "get_base_model")


def hf_model(model) -> nn.Module:
    """The transformers model inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if is_peft(model) else model


def head_modules(model) -> list[str]:
    """Names of the top-level modules outside the backbone that hold weights: the classification head
    (classifier, score; DistilBERT's pre_classifier; DeBERTa's pooler)."""
    model = hf_model(model)
    backbone = model.base_model_prefix
    return [n for n, m in model.named_children() if n != backbone and any(True for _ in m.parameters())]


def transformer_layers(model) -> nn.ModuleList:
    """The backbone's list of transformer layers (the ModuleList with num_hidden_layers entries)."""
    model = hf_model(model)
    n = model.config.num_hidden_layers
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise UserError(f"cannot find the {n} transformer layers of {type(model).__name__} for method=last_n")


def n_weights(p) -> int:
    """The weights a parameter holds: a 4-bit (bitsandbytes) one packs two per byte, its quant_state has the shape."""
    shape = getattr(getattr(p, "quant_state", None), "shape", None)
    return int(torch.Size(shape).numel()) if shape is not None else p.numel()


def describe(model) -> str:
    total = sum(n_weights(p) for p in model.parameters())
    trainable = sum(n_weights(p) for p in model.parameters() if p.requires_grad)
    return f"{trainable / 1e6:.2f}M of {total / 1e6:.2f}M parameters trainable ({100 * trainable / max(total, 1):.2f}%)"


def _load_tokenizer(path: str, cfg: Config):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.model.trust_remote_code)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load the tokenizer of '{path}': {str(e).strip().splitlines()[0]}") from None


def _set_pad_token(tokenizer, hf_config, kind: str, side: str) -> None:
    """Give the tokenizer a pad token (EOS, else UNK) and make `config.pad_token_id` match it for decoders."""
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise UserError("the tokenizer has no pad, eos or unk token to pad batches with")
        tokenizer.pad_token = fallback
    tokenizer.padding_side = side
    if kind == "decoder" or getattr(hf_config, "pad_token_id", None) is None:
        hf_config.pad_token_id = tokenizer.pad_token_id
    if kind == "decoder":
        hf_config.use_cache = False


def _quantization_config(cfg: Config):
    """4-bit NF4 with double quantization (QLoRA), computing in the dtype of `train.precision` (bf16, fp16, or
    float32 with `precision: no`); the head unquantized."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError("model.method=qlora needs bitsandbytes: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=precision.compute_dtype_4bit(cfg.train.precision),
        llm_int8_skip_modules=list(HEAD_NAMES),
    )


def _quantized_device_map() -> dict:
    """Where a 4-bit model is loaded (it cannot be moved later): this process's GPU, else the CPU."""
    if not torch.cuda.is_available():
        return {"": "cpu"}
    from accelerate import PartialState

    return {"": PartialState().local_process_index}


def _no_cpu_repacking(model) -> None:
    """Keep bitsandbytes from repacking 4-bit weights for its AVX512-BF16 CPU kernel in eval-mode forwards: that
    kernel has no autograd (a later backward is silently wrong), it computes slightly different logits than
    training-time evaluation, and each save undoes the repacking."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def _float32_outside_4bit(model) -> None:
    """Every 16-bit weight outside the 4-bit layers (embeddings, norms, biases, the head's original) in float32, as
    `prepare_model_for_kbit_training` leaves a QLoRA base for training; done on every load (training, evaluation
    and reloaded checkpoints alike), so prediction runs the numerics the saved evaluations ran."""
    for p in model.parameters():
        if p.dtype in (torch.float16, torch.bfloat16) and type(p).__name__ != "Params4bit":
            p.data = p.data.float()


def lora_config(cfg: Config, model, kind: str):
    """The PEFT LoraConfig from the `lora` section; the head goes to modules_to_save."""
    from peft import LoraConfig, TaskType

    lc = cfg.lora
    default = DEFAULT_TARGETS.get("decoder" if kind == "decoder" else model.config.model_type)
    targets = list(lc.target_modules) or default
    if not targets:
        raise UserError(f"no default LoRA targets for model_type {model.config.model_type!r}: set lora.target_modules")
    if lc.bias not in ("none", "all", "lora_only"):
        raise UserError(f"lora.bias must be none, all or lora_only, got {lc.bias!r}")
    return LoraConfig(
        task_type=TaskType.SEQ_CLS, r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout, bias=lc.bias,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        modules_to_save=list(lc.modules_to_save) or head_modules(model),
    )


def enable_checkpointing(model) -> None:
    """Gradient (activation) checkpointing of every transformer layer, non-reentrant, with the input embeddings'
    output requiring grad so a frozen embedding (LoRA) still lets gradients through the checkpointed layers."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
        model.activation_checkpointing_enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    hf = hf_model(model)
    if not getattr(hf, "_require_grads_hooks", None) and not getattr(hf, "_require_grads_hook", None):
        hf.enable_input_require_grads()  # transformers >= 5 does it itself (inputs are input_ids)


def checkpointing_on(model) -> bool:
    """Whether gradient checkpointing is switched on (`is_activation_checkpointing` in transformers >= 5)."""
    if hasattr(model, "is_activation_checkpointing"):
        return bool(model.is_activation_checkpointing)
    return bool(getattr(model, "is_gradient_checkpointing", False))


def _freeze_all_but_last_n(model, n: int) -> None:
    layers = transformer_layers(model)
    if not 0 <= n <= len(layers):
        raise UserError(f"model.last_n_layers must be in 0..{len(layers)}, got {n}")
    heads = head_modules(model)
    for name, p in model.named_parameters():
        p.requires_grad = name.split(".")[0] in heads or ".pooler." in f".{name}"
    for layer in list(layers)[len(layers) - n:]:
        for p in layer.parameters():
            p.requires_grad = True


def _add_multi_sample_dropout(model, n: int, num_labels: int) -> None:
    """Average the head's output layer over `n` dropout masks while training (a forward hook: no new weights)."""
    hf = hf_model(model)
    c = hf.config
    p = next((v for v in (getattr(c, a, None) for a in ("classifier_dropout", "seq_classif_dropout",
                                                             "hidden_dropout_prob")) if v), 0.1)

    def hook(module, args, output):
        if not module.training:
            return output
        x = args[0]
        return torch.stack([F.linear(F.dropout(x, p, True), module.weight, module.bias) for _ in range(n)]).mean(0)

    heads = set(head_modules(hf))
    for owner in (hf, *(getattr(hf, h) for h in heads)):  # the dropout right before the head's output layer
        if isinstance(getattr(owner, "dropout", None), nn.Dropout):  # (BERT, DistilBERT, RoBERTa's head) is
            owner.dropout.p = 0.0  # replaced by the n masks, not stacked under them
    for name, module in model.named_modules():
        stripped = re.sub(r"^base_model\.model\.", "", name)
        if isinstance(module, nn.Linear) and module.out_features == num_labels and stripped.split(".")[0] in heads:
            module.register_forward_hook(hook)


@contextlib.contextmanager
def quiet_hf():
    """transformers without its per-load progress bar and load report (one per fold otherwise): `_load_note` says
    what matters once."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()


_noted_loads: set[str] = set()


def _load_note(weights: str, model, info: dict, new_head: bool) -> None:
    """Once per weights: the newly initialized head (`new_head`: not one a checkpoint then puts in); every time:
    backbone weights missing from the checkpoint."""
    head = set(head_modules(model))
    missing = list(info.get("missing_keys") or [])
    backbone = [k for k in missing if k.split(".")[0] not in head]
    if backbone:
        print(f"note: {len(backbone)} weights are not in {weights} and start random: {', '.join(backbone[:4])}"
              + (" ..." if len(backbone) > 4 else ""))
    elif missing and new_head and weights not in _noted_loads:
        _noted_loads.add(weights)
        print(f"{weights}: new classification head ({', '.join(sorted({k.split('.')[0] for k in missing}))}), "
              "randomly initialized")


def _other_task_labels(base, labels: list[str]) -> list[str]:
    """The label names of the model config `base` (as saved) when it is a sequence classifier trained on other labels
    than `labels` (e.g. a GoEmotions run's checkpoint as the start of an emotion run); else []."""
    if not any(a.endswith("ForSequenceClassification") for a in base.architectures or []):
        return []
    names = [str(base.id2label[i]) for i in sorted(base.id2label)]
    return [] if names == list(labels) or names == [f"LABEL_{i}" for i in range(len(names))] else names


def _reset_head(model, weights: str, old_labels: list[str]) -> None:
    """Give a checkpoint from another task a freshly initialized classification head (the backbone stays)."""
    for name in head_modules(model):
        for module in getattr(model, name).modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            if isinstance(module, nn.Linear):  # the HF initialization: normal(0, initializer_range), zero bias
                nn.init.normal_(module.weight, std=getattr(model.config, "initializer_range", 0.02))
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
    if weights in _noted_loads:
        return
    _noted_loads.add(weights)
    print(f"{weights}: trained on {len(old_labels)} other labels ({', '.join(old_labels[:4])}"
          f"{' ...' if len(old_labels) > 4 else ''}); its backbone is kept, the classification head starts new")


def _check_remote_code(folder: str, trusted: bool) -> None:
    """A local model folder that names its own code (`auto_map`) says so; untrusted, a model type transformers does
    not know itself is a UserError naming the files (nothing is imported)."""
    import json

    from transformers import CONFIG_MAPPING

    if not Path(folder).is_dir() or not (files := remote_code(folder, trusted)) or trusted:
        return
    try:
        model_type = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        model_type = None
    if model_type not in CONFIG_MAPPING:
        raise UserError(f"{folder} needs its own code to load ({', '.join(files)}; model type {model_type!r}), which "
                        "runs only with model.trust_remote_code=true given on the command line")


def _model_config(cfg: Config, weights: str, labels: list[str], tokenizer, new: bool):
    """(hf_config for `labels`, encoder | decoder, the other task's labels of a classifier starting a new head) of
    the model at `weights`; the tokenizer gets its pad token and side."""
    from transformers import AutoConfig

    try:
        hf_config = AutoConfig.from_pretrained(weights, trust_remote_code=cfg.model.trust_remote_code)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load the model config of '{weights}': {str(e).strip().splitlines()[0]}") from None
    other_task = _other_task_labels(hf_config, labels) if new else []
    hf_config.update({"problem_type": "multi_label_classification", "id2label": dict(enumerate(labels)),
                      "label2id": {lab: i for i, lab in enumerate(labels)}})  # num_labels follows id2label
    kind = model_kind(cfg, hf_config)
    _set_pad_token(tokenizer, hf_config, kind, padding_side(cfg, kind))
    vocab = getattr(hf_config, "vocab_size", None)
    if vocab and hf_config.pad_token_id is not None and hf_config.pad_token_id >= vocab:
        raise UserError(f"pad token id {hf_config.pad_token_id} is outside the model's vocabulary ({vocab})")
    precision.check_family(hf_config.model_type, cfg.train.precision)
    return hf_config, kind, other_task


def _load_weights(cfg: Config, weights: str, hf_config, other_task: list[str], saved: bool, new_head: bool):
    """The sequence classifier at `weights`: pretrained (in `weights_dtype`, 4-bit for QLoRA) or a saved full/last_n
    checkpoint (float32: its exact values, however training held them); `new_head`: no checkpoint brings one."""
    from transformers import AutoModelForSequenceClassification

    m = cfg.model
    kwargs = {dtype_kw(): torch.float32 if saved else weights_dtype(cfg), "trust_remote_code": m.trust_remote_code}
    if other_task:  # a classifier fine-tuned on another label set (intermediate-task transfer): a new head
        kwargs["ignore_mismatched_sizes"] = True
    if m.method == "qlora":
        kwargs |= {"quantization_config": _quantization_config(cfg), "device_map": _quantized_device_map()}
    try:
        with quiet_hf():
            model, info = AutoModelForSequenceClassification.from_pretrained(weights, config=hf_config,
                                                                             output_loading_info=True, **kwargs)
    except (OSError, SafetensorError) as e:  # no weights in the folder, a hub id without network, a corrupt file
        raise UserError(f"cannot load model weights from {weights}: {str(e).strip().splitlines()[0]}") from None
    _load_note(weights, model, info, new_head)
    if other_task:
        _reset_head(model, weights, other_task)
    if m.method == "qlora":
        _no_cpu_repacking(model)
        _float32_outside_4bit(model)
    return model


def _add_adapter(cfg: Config, model, kind: str, ckpt: str | None, trainable: bool):
    """The PEFT model: a new LoRA adapter (and head copy) from the `lora` section, or a checkpoint's, its weights
    trainable as in training (`load_adapter_weights` then puts in their exact saved values)."""
    from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training

    m = cfg.model
    if m.method == "qlora" and trainable:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)  # enabled before, as for LoRA
    if ckpt:
        if not (Path(ckpt) / "adapter_config.json").is_file():
            raise UserError(f"{ckpt} holds no LoRA adapter (adapter_config.json); was it trained with "
                            f"model.method={m.method}?")
        try:
            return PeftModel.from_pretrained(model, ckpt, is_trainable=True)
        except (OSError, SafetensorError) as e:  # a truncated or garbage adapter file
            raise UserError(f"cannot load the LoRA adapter in {ckpt}: {str(e).strip().splitlines()[0]}") from None
    try:
        return get_peft_model(model, lora_config(cfg, model, kind))
    except ValueError as e:
        if not any(s in str(e) for s in ("not found in the base model", "Target modules", "No modules were")):
            raise
        names = sorted({n.split(".")[-1] for n, mod in model.named_modules() if isinstance(mod, nn.Linear)})
        raise UserError(f"lora.target_modules {cfg.lora.target_modules} match no layer of "
                        f"{model.config.model_type}; its linear layers: {names}") from None


def load_adapter_weights(model, ckpt: str) -> None:
    """Copy a checkpoint's saved adapter and head weights into the (float32) trainable weights: PEFT's own load
    copies them into the head copy before it is made float32, rounding them to a 16-bit base's dtype."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(ckpt) / "adapter_model.safetensors"
    if path.is_file():
        set_peft_model_state_dict(model, load_file(path))


def _training_dtypes(model, frozen: torch.dtype | None) -> None:
    """The dtypes training has: trainable weights float32 (autocast gives the mixed precision); with `frozen`
    (a saved full/last_n checkpoint, loaded in float32) the weights training kept frozen back in that dtype."""
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
        elif frozen is not None and not p.requires_grad and p.is_floating_point() and p.dtype != frozen:
            p.data = p.data.to(frozen)


def build_model(cfg: Config, labels: list[str], checkpoint: str | Path | None = None, trainable: bool = True):
    """(model, tokenizer) ready to train: pretrained weights from `model.name_or_path` with a new head, or the
    trained weights of a checkpoint folder (full/last_n: the saved model; lora/qlora: base + saved adapter), with
    the dtypes training had (trainable weights float32, frozen ones in `weights_dtype`, a QLoRA base's non-4-bit
    weights float32), so a reloaded checkpoint computes what its evaluations computed. `trainable=False`: every
    weight frozen, eval mode."""
    m = cfg.model
    if m.method not in METHODS:
        raise UserError(f"model.method must be one of {METHODS}, got {m.method!r}")
    base = resolve_path(m.name_or_path)
    ckpt = str(checkpoint) if checkpoint is not None else None
    adapter = m.method in ("lora", "qlora")
    weights = ckpt if ckpt and not adapter else base
    for folder in dict.fromkeys((ckpt or base, weights)):
        _check_remote_code(folder, m.trust_remote_code)
    tokenizer = _load_tokenizer(ckpt or base, cfg)
    hf_config, kind, other_task = _model_config(cfg, weights, labels, tokenizer, new=ckpt is None)
    model = _load_weights(cfg, weights, hf_config, other_task, saved=weights == ckpt, new_head=ckpt is None)
    if m.gradient_checkpointing and trainable:
        enable_checkpointing(model)
    if m.method == "last_n":
        _freeze_all_but_last_n(model, m.last_n_layers)
    elif adapter:
        model = _add_adapter(cfg, model, kind, ckpt, trainable)
    if m.multi_sample_dropout > 0:
        _add_multi_sample_dropout(model, m.multi_sample_dropout, len(labels))
    _training_dtypes(model, weights_dtype(cfg) if weights == ckpt else None)
    if adapter and ckpt:
        load_adapter_weights(model, ckpt)
    if not trainable:
        model.requires_grad_(False)
        model.eval()
    return model, tokenizer


def load_checkpoint(cfg: Config, step_dir: str | Path, labels: list[str]):
    """(model, tokenizer) of a saved checkpoint, in eval mode, on the GPU when there is one."""
    from src.checkpoints import weights_problem

    step_dir = Path(step_dir)
    if not ((step_dir / "config.json").is_file() or (step_dir / "adapter_config.json").is_file()):
        raise UserError(f"{step_dir} is not a checkpoint (no config.json or adapter_config.json)")
    problem = weights_problem(step_dir, required=True)
    if problem:
        raise UserError(f"{problem}: pick another checkpoint (python -m src.checkpoints select), or delete "
                        f"{step_dir.parent} and train the fold again")
    model, tokenizer = build_model(cfg, labels, checkpoint=step_dir, trainable=False)
    if cfg.model.method != "qlora":
        model.to("cuda" if torch.cuda.is_available() else "cpu")
    return model, tokenizer


def token_counts(cfg: Config, texts: list[str]) -> np.ndarray:
    """Tokens per text (with `model.text_prefix`, special tokens included, nothing truncated)."""
    tokenizer = _load_tokenizer(resolve_path(cfg.model.name_or_path), cfg)
    prefix = cfg.model.text_prefix
    return np.array([len(ids) for ids in tokenizer([prefix + t for t in texts])["input_ids"]])


def encode(tokenizer, texts: list[str], cfg: Config) -> list[list[int]]:
    """Token ids of each text (with `model.text_prefix`), truncated to `model.max_length`; no padding."""
    prefix = cfg.model.text_prefix
    return tokenizer([prefix + t for t in texts], truncation=True, max_length=cfg.model.max_length)["input_ids"]


def pad_batch(seqs: list[list[int]], pad_id: int, side: str = "right", multiple_of: int = 1) -> dict:
    """input_ids + attention_mask padded to the longest sequence (dynamic padding); left padding adds position ids."""
    n = max(len(s) for s in seqs)
    n = -(-n // multiple_of) * multiple_of
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        span = slice(0, len(s)) if side == "right" else slice(n - len(s), n)
        ids[i, span] = torch.tensor(s, dtype=torch.long)
        mask[i, span] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if side == "left":
        batch["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
    return batch


@torch.inference_mode()
def predict_logits(model, seqs: list[list[int]], pad_id: int, side: str, batch_size: int,
                   dtype: torch.dtype | None = None, progress: bool = True) -> torch.Tensor:
    """Logits [len(seqs), num_labels] (float32, on the model's device) in the order of `seqs`; batches are
    formed from length-sorted sequences so padding stays small."""
    device = next(model.parameters()).device
    order = np.argsort([-len(s) for s in seqs], kind="stable")
    multiple = 8 if device.type == "cuda" else 1
    out = []
    for start in tqdm(range(0, len(seqs), batch_size), desc="predict", unit="batch", disable=not progress,
                      leave=False):
        idx = order[start:start + batch_size]
        batch = pad_batch([seqs[i] for i in idx], pad_id, side, multiple)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext():
            out.append(model(**batch).logits.float())
    n_labels = hf_model(model).config.num_labels
    logits = torch.cat(out) if out else torch.zeros((0, n_labels), device=device)
    result = torch.empty_like(logits)
    result[torch.as_tensor(order, device=device)] = logits
    return result


def predict_probs(model, tokenizer, texts: list[str], cfg: Config, batch_size: int | None = None) -> np.ndarray:
    """Sigmoid probabilities [len(texts), num_labels] (float32) in the order of `texts`."""
    model.eval()
    seqs = encode(tokenizer, texts, cfg)
    dtype = autocast_dtype(cfg, next(model.parameters()).device.type)  # the autocast of training-time evaluation
    logits = predict_logits(model, seqs, tokenizer.pad_token_id, tokenizer.padding_side,
                            batch_size or cfg.train.eval_batch_size, dtype)
    return torch.sigmoid(logits).cpu().numpy().astype(np.float32)
