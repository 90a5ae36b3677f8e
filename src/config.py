"""The config dataclasses: YAML loading, `key=value` overrides and the resolved-config dump.

One `Config` drives the CLI, `train.sh` and the notebooks. A YAML file sets any subset of fields;
`section.field=value` overrides come last. Unknown keys are errors, so no option is silently ignored. An override
of a string field is taken literally (no YAML: `data.data_dir=/d/comp #v2` keeps its `#v2`); other fields parse
YAML. Once the overrides are in, every number is range-checked (RANGES), list shapes too (LIST_RULES), and `exp`
must be a plain name.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from src.errors import ArgParser, UserError, cli
from src.fileio import read_utf8
from src.text import MODES as NORMALIZE_MODES


@dataclass
class DataConfig:
    data_dir: str = "data"  # competition folder: train.csv, test.csv, sample_submission.csv
    name: str = ""  # dataset name used in fold file names; default: the data folder's name
    id_col: str = ""  # default: first column of sample_submission.csv
    text_col: str = ""  # default: the one non-id column of test.csv
    labels: list[str] = field(default_factory=list)  # default: sample_submission's columns after the id
    normalize: str = "none"  # none | tweet: HTML entities, mentions, links, emoji names (src/text.py)
    # the competition's metric, which decisions, checkpoint selection, blend weights and stacking optimize:
    # macro_f1 | micro_f1 | samples_f1 | jaccard | roc_auc | log_loss (src/metrics.py)
    metric: str = "macro_f1"


@dataclass
class FoldsConfig:
    n_folds: int = 10
    seed: int = 42
    dir: str = "folds"
    run: list[int] = field(default_factory=list)  # folds to train; empty = all


@dataclass
class TfidfConfig:
    word_ngram: list[int] = field(default_factory=lambda: [1, 2])
    char_ngram: list[int] = field(default_factory=lambda: [2, 5])
    char_analyzer: str = "char_wb"
    min_df: int = 2
    max_features: int = 200_000  # per vectorizer
    sublinear_tf: bool = True
    lowercase: bool = True
    classifier: str = "logreg"  # logreg | svc (linear SVM, sigmoid-calibrated) | cnb (complement naive Bayes)
    C: float = 1.0  # logreg/svc regularization; cnb: alpha = 1 / C
    solver: str = "lbfgs"  # logreg: lbfgs (~4x faster than liblinear on 28 labels x 44k rows, same F1) | liblinear
    class_weight: str = "balanced"  # balanced | none
    grid_search: bool = False  # GridSearchCV over grid_C x grid_word_ngram, scored by data.metric
    grid_C: list[float] = field(default_factory=lambda: [0.3, 1.0, 3.0])
    grid_word_ngram: list[list[int]] = field(default_factory=lambda: [[1, 1], [1, 2]])
    grid_cv: int = 3
    n_jobs: int = 2  # folds fitted in parallel


@dataclass
class ModelConfig:
    """A fine-tuned transformer: hub id or local folder, and how much of it trains."""

    name_or_path: str = ""
    kind: str = "auto"  # auto | encoder | decoder
    method: str = "full"  # full | last_n | lora | qlora
    last_n_layers: int = 2  # with method=last_n: layers trained besides the head
    max_length: int = 128
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16: weights as loaded
    gradient_checkpointing: bool = False  # less memory, more time, the same model (a fold may resume with it on)
    trust_remote_code: bool = False
    padding_side: str = "auto"  # auto | left | right (decoders pool the last non-pad token)
    text_prefix: str = ""  # prepended to every text (e.g. the label names, SpanEmo-style)
    multi_sample_dropout: int = 0  # >0: average the head over this many dropout masks


@dataclass
class LoraConfig:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # empty = attention + MLP projections of the architecture (src/models/transformer.py DEFAULT_TARGETS);
    # or module-name suffixes, or ["all-linear"]
    target_modules: list[str] = field(default_factory=list)
    bias: str = "none"
    modules_to_save: list[str] = field(default_factory=list)  # default: the classification head


@dataclass
class TrainConfig:
    epochs: float = 3.0
    max_steps: int = 0  # >0 overrides epochs
    batch_size: int = 32
    eval_batch_size: int = 64
    grad_accum: int = 1
    lr: float = 3e-5
    head_lr: float = 0.0  # 0 = same as lr
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    scheduler: str = "linear"  # linear | cosine | constant
    layer_lr_decay: float = 1.0  # <1: layer-wise LR decay towards the embeddings
    max_grad_norm: float = 1.0
    loss: str = "bce"  # bce | focal | asl
    pos_weight: str = "balanced"  # balanced | sqrt | none (see src/weights.py)
    pos_weight_clip: float = 0.0  # >0: clip pos_weight to this
    focal_gamma: float = 2.0
    asl_gamma_neg: float = 4.0
    asl_gamma_pos: float = 0.0
    asl_clip: float = 0.05
    label_smoothing: float = 0.0
    precision: str = "auto"  # auto | bf16 | fp16 | no
    eval_every: int = 0  # steps between evaluations; 0 = once per epoch only
    # checkpoints kept per fold, the best by keep_metric (0 = every evaluation's). 3 holds what the best_f1 and
    # balanced rules pick; a full fine-tune's weights per checkpoint: MiniLM-L6 ~90 MB, base models ~0.5 GB
    keep_top_k: int = 3
    checkpoint_dtype: str = "float32"  # float16 | bfloat16: full/last_n weight files in half the disk (LoRA: float32)
    keep_metric: str = "score"  # for keep_top_k: score (the run's data.metric) | f1_tuned | f1_at_0.5 | val_loss
    group_by_length: bool = True
    ema: float = 0.0  # >0: evaluate and save a moving average of the weights with this decay (e.g. 0.999)
    compile: str = "none"  # none | default | reduce-overhead | max-autotune: torch.compile the training model
    pad_to_multiple: int = 0  # training batches padded to a multiple of this (0: 8 on GPU, 1 on CPU)
    drop_last: bool = False  # drop each epoch's last partial batch (one batch shape for compile's CUDA graphs)
    resume_state: bool = True  # false: no optimizer/RNG state (a killed fold restarts) and no checkpoint written
    #                            that keep_top_k would delete at once: less disk traffic for short runs
    seed: int = 42  # fold k uses seed + k
    report_to: str = "none"  # none | wandb
    log_every: int = 10


@dataclass
class SelectConfig:
    rule: str = "best_f1"  # best_f1 | best_loss | balanced
    tolerance: float = 0.005  # balanced: within this of the best score (data.metric), take the lowest val loss


@dataclass
class ThresholdConfig:
    mode: str = "per_label"  # per_label | global | fixed
    fixed: float = 0.5
    min_one: bool = False  # every row gets at least its top label
    shrink: float = 0.0  # per_label: pull thresholds towards the global one with weight shrink / (n_pos + shrink)
    min_positives: int = 0  # per_label: labels with fewer OOF positives take the global threshold
    exclusive: list[str] = field(default_factory=list)  # labels that stand alone (e.g. [neutral]): a row keeps
    #                         either the exclusive label or the others, whichever is further above its threshold


@dataclass
class LLMConfig:
    """Label probabilities read from a causal LM (model_type llm / llm_finetune; the LM is model.name_or_path).

    Templates use {text}, {labels} (the label words joined by `separator`), {none} and, in unary prompts, {label}.
    """

    prompt: str = "multi"  # multi: list the labels, read every label step of the answer | unary: yes/no per label
    method: str = "max"  # multi prompt, what goes to oof.csv: max | first | mean over label steps | parsed (text)
    system: str = "You are an expert annotator of emotions in short texts."  # "" = no system message
    multi_template: str = (
        "Which of these emotions does the text express: {labels}? Answer with the emotions that apply, "
        "separated by commas, or {none} if none apply.\n\nText: {text}"
    )
    unary_template: str = "Text: {text}\n\nAnswer yes or no. Does this text express {label}?"
    label_names: list[str] = field(default_factory=list)  # words for the label columns in prompts; default: columns
    separator: str = ", "
    none_answer: str = "none"  # multi: the answer for rows without labels, a candidate at every step; "" = none
    yes_words: list[str] = field(default_factory=lambda: ["Yes", "yes"])  # unary: P(yes) sums these
    no_words: list[str] = field(default_factory=lambda: ["No", "no"])
    chat_template: bool = True  # use the tokenizer's chat template when it has one (false: plain "Answer:")
    n_shots: int = 0  # few-shot examples drawn from the fold's training rows (test rows: from all train rows)
    max_new_tokens: int = 32  # multi: greedy answer length
    max_steps: int = 0  # multi: label steps read per row; 0 = number of labels
    max_train_rows: int = 0  # >0: score this many train rows (fixed seeded choice): partial OOF, no submission
    max_test_rows: int = 0  # >0: score this many test rows; 0 = all; -1 = none
    batch_size: int = 8  # rows per generation batch
    kv_cache: bool = True  # reuse the key/value cache of shared prompt prefixes


@dataclass
class ProbeConfig:
    """A linear (or small MLP) probe on frozen hidden states of model.name_or_path (model_type probe)."""

    layer: int = -1  # hidden_states index: 0 = embeddings, -1 = last layer
    pooling: str = "mean"  # mean | last (last non-pad token, for decoders) | cls (first token)
    classifier: str = "logreg"  # logreg | mlp
    C: float = 1.0  # logreg inverse regularization
    class_weight: str = "balanced"  # logreg: balanced | none
    hidden: int = 256  # mlp hidden units
    max_iter: int = 1000
    batch_size: int = 64  # feature extraction batch
    cache_dir: str = "checkpoints/_features"  # features cached by model, layer, pooling, max_length, texts
    n_jobs: int = 2  # folds fitted in parallel


@dataclass
class TeacherConfig:
    """Pseudo-labels and distillation: a finished run or blend (`exp`) teaches this one (src/teacher.py)."""

    exp: str = ""  # the teacher's run name under output.checkpoints_dir ("" = off); same data and fold file
    mode: str = "soft"  # test texts' targets: soft (the teacher's probabilities) | hard (0/1 at its thresholds)
    keep: float = 1.0  # share of test texts added, the teacher's most certain first (0 = none)
    train_alpha: float = 0.0  # labeled rows' targets: (1 - a) * label + a * teacher OOF (a > 0: optimistic OOF)
    per_fold: bool = True  # fold k learns from the teacher's fold-k models only (honest OOF); false: fold mean
    source: str = ""  # a CSV of unlabeled texts (id and text columns as test.csv's) to label instead of test.csv


@dataclass
class OutputConfig:
    checkpoints_dir: str = "checkpoints"
    submissions_dir: str = "submissions"
    plots: bool = True


@dataclass
class Config:
    exp: str = ""  # experiment name: checkpoints/<exp>/, submissions/<exp>.csv; default: config file stem
    model_type: str = "tfidf"  # tfidf | transformer | llm | probe
    data: DataConfig = field(default_factory=DataConfig)
    folds: FoldsConfig = field(default_factory=FoldsConfig)
    tfidf: TfidfConfig = field(default_factory=TfidfConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    thresholds: ThresholdConfig = field(default_factory=ThresholdConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form section for model families' own options


# The allowed range of every int/float field, checked once the overrides are applied (NaN and inf are refused too).
# A rule is "in [a, b]" (a bracket closes the end, a parenthesis opens it), ">= a", "> a", a single number, "any",
# or alternatives joined by " or ". List-valued numbers have their shape rules in LIST_RULES.
SEED = "in [0, 2147483647]"
RANGES: dict[str, str] = {
    "folds.n_folds": ">= 2", "folds.seed": SEED,
    "tfidf.min_df": ">= 1", "tfidf.max_features": ">= 1", "tfidf.C": "> 0", "tfidf.grid_cv": ">= 2",
    "tfidf.n_jobs": ">= 1 or -1",
    "model.last_n_layers": ">= 0", "model.max_length": ">= 1", "model.multi_sample_dropout": ">= 0",
    "lora.r": ">= 1", "lora.alpha": ">= 1", "lora.dropout": "in [0, 1)",
    "train.epochs": "in [0, 10000]", "train.max_steps": "in [0, 100000000]", "train.batch_size": ">= 1",
    "train.eval_batch_size": ">= 1",
    "train.grad_accum": ">= 1", "train.lr": "in (0, 1]", "train.head_lr": "in [0, 1]",
    "train.weight_decay": "in [0, 1]", "train.warmup_ratio": "in [0, 1]", "train.layer_lr_decay": "in (0, 1]",
    "train.max_grad_norm": ">= 0", "train.pos_weight_clip": ">= 0", "train.focal_gamma": ">= 0",
    "train.asl_gamma_neg": ">= 0", "train.asl_gamma_pos": ">= 0", "train.asl_clip": "in [0, 1)",
    "train.label_smoothing": "in [0, 1)", "train.eval_every": ">= 0", "train.keep_top_k": ">= 0",
    "train.ema": "in [0, 1)", "train.pad_to_multiple": ">= 0", "train.seed": SEED, "train.log_every": ">= 1",
    "select.tolerance": "in [0, 1]",
    "thresholds.fixed": "in [0, 1]", "thresholds.shrink": ">= 0", "thresholds.min_positives": ">= 0",
    "llm.n_shots": ">= 0", "llm.max_new_tokens": ">= 1", "llm.max_steps": ">= 0", "llm.max_train_rows": ">= 0",
    "llm.max_test_rows": ">= 0 or -1", "llm.batch_size": ">= 1",
    "probe.layer": "any",  # checked against the model's layers in src/llm/features.py
    "probe.C": "> 0", "probe.hidden": ">= 1", "probe.max_iter": ">= 1", "probe.batch_size": ">= 1",
    "probe.n_jobs": ">= 1 or -1",
    "teacher.keep": "in [0, 1]", "teacher.train_alpha": "in [0, 1]",
}
NGRAM = "[min, max] with 1 <= min <= max"
LIST_RULES: dict[str, str] = {
    "tfidf.word_ngram": NGRAM, "tfidf.char_ngram": NGRAM,
    "tfidf.grid_word_ngram": f"a non-empty list of {NGRAM}", "tfidf.grid_C": "a non-empty list of numbers > 0",
    "folds.run": "distinct folds in 0..folds.n_folds-1 (empty: every fold)",
}
EXP_NAME = re.compile(r"[A-Za-z0-9_+@,][A-Za-z0-9_.\-+@,]{0,199}")  # no leading - or ., no =: CLI arguments
_INTERVAL = re.compile(r"in ([\[(])(\S+), (\S+)([\])])")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert a YAML value to the annotated field type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _coerce(value, args[0], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"config '{key}' must be a mapping, got {value!r}")
        return _build(tp, value, key + ".")
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_coerce(v, inner, key) for v in value]
    if origin is dict or tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise UserError(f"config '{key}' must be true/false, got {value!r}")
    if tp in (int, float) and isinstance(value, bool):
        raise UserError(f"config '{key}' must be a number, got {value!r}")
    if tp is float and isinstance(value, (int, float)):
        return float(value)
    if tp is int and isinstance(value, int):
        return value
    if tp is int and isinstance(value, float):
        if not value.is_integer():
            raise UserError(f"config '{key}' must be a whole number, got {value!r}")
        return int(value)
    if tp is str:
        if isinstance(value, bool):  # YAML 1.1 reads no/yes/off/on as booleans: `precision: no` means "no"
            return "yes" if value else "no"
        if isinstance(value, (list, dict)):
            raise UserError(f"config '{key}' must be a string, got {value!r}")
        return "" if value is None else str(value)
    try:
        return tp(value)
    except (TypeError, ValueError):
        raise UserError(f"config '{key}' must be {tp.__name__}, got {value!r}") from None


def _build(cls: type, values: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise _unknown_key(prefix, unknown[0], names)
    obj = cls()
    for k, v in values.items():
        current = getattr(obj, k)
        if dataclasses.is_dataclass(current) and isinstance(v, dict):
            merged = {**dataclasses.asdict(current), **v}
            setattr(obj, k, _build(type(current), merged, f"{prefix}{k}."))
        else:
            setattr(obj, k, _coerce(v, hints[k], prefix + k))
    return obj


def _key_type(key: str) -> Any:
    """The annotated type of a dotted config key (Any inside `extra`); an unknown key is a UserError."""
    tp: Any = Config
    parts = key.split(".")
    for i, part in enumerate(parts):
        if tp is Any or typing.get_origin(tp) is dict:
            return Any
        hints = typing.get_type_hints(tp) if dataclasses.is_dataclass(tp) else {}
        if part not in hints:
            raise _unknown_key("".join(f"{x}." for x in parts[:i]), part, hints, key)
        tp = hints[part]
    return tp


def _unknown_key(prefix: str, part: str, names, key: str = "") -> UserError:
    """The error for config key `key` (default prefix + part) whose `part` is not among `names`: the closest valid
    name, the valid ones at that level, and where to list every key."""
    close = difflib.get_close_matches(part, names, n=1)
    return UserError(f"unknown config key '{key or prefix + part}'"
                     + (f"; did you mean '{prefix}{close[0]}'?" if close else "")
                     + (f" (valid here: {', '.join(sorted(names))}; every key: python -m src config --keys)"
                        if names else ""))


def _yaml_problem(e: yaml.YAMLError) -> str:
    return getattr(e, "problem", None) or str(e).splitlines()[0]


def _str_list(raw: str, key: str) -> list[str]:
    """A list of strings from `[a, 'b, c']` (YAML flow list; unquoted items kept as written) or `a, b`."""
    if not raw.strip().startswith("["):
        return [v.strip() for v in raw.split(",") if v.strip()]
    try:
        node = yaml.compose(raw)
    except yaml.YAMLError as e:
        problem = _yaml_problem(e)
        raise UserError(f"config '{key}' = {raw!r} is not a valid list ({problem}); e.g. {key}=[a, b]") from None
    if not isinstance(node, yaml.SequenceNode) or not all(isinstance(n, yaml.ScalarNode) for n in node.value):
        raise UserError(f"config '{key}' = {raw!r} must be a list of strings, e.g. {key}=[a, b] or {key}=a,b")
    return [n.value for n in node.value]


def _parse_value(raw: str, tp: Any, key: str) -> Any:
    """An override's value: the raw text for a string field, strings for list[str], YAML for everything else."""
    if tp is str:
        return raw
    if tp == list[str]:
        return _str_list(raw, key)
    if not raw:
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise UserError(f"config '{key}' = {raw!r} is not valid YAML ({_yaml_problem(e)})") from None


# short names for keys people type often: `metric=jaccard` is data.metric=jaccard
ALIASES = {"metric": "data.metric"}


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply `section.key=value` strings and return a new Config.

    A string field takes the text after the first `=` literally (spaces, `#`, quotes, `: `, `[` and `null`
    included; `key=` is the empty string). A list of strings takes a YAML flow list `[a, "b, c"]` (unquoted items
    as written) or comma-separated text (items stripped). Every other field parses the text as YAML.
    """
    tree = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override '{item}' is not key=value")
        key, raw = item.split("=", 1)
        key = ALIASES.get(key.strip(), key.strip())
        value = _parse_value(raw, _key_type(key), key)
        if key == "exp":
            check_exp(value)  # also refuses `exp=` (e.g. an unset shell variable), not a silent default
        node = tree
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise UserError(f"unknown config key '{key}'")
            node = node[p]
        if parts[-1] not in node and node is not tree.get("extra"):
            raise UserError(f"unknown config key '{key}'")
        node[parts[-1]] = value
    return _build(Config, tree)


def check_cli_overrides(overrides: list[str]) -> None:
    """Command-line rules on top of load_config's: `folds.run=` or `folds.run=[]` names no fold, an error.

    (Leaving folds.run out trains every fold; in Python, load_config keeps `folds.run=[]` = every fold.)
    """
    for item in overrides:
        key, sep, raw = item.partition("=")
        if sep and key.strip() == "folds.run" and not _coerce(_parse_value(raw, list[int], "folds.run"),
                                                                list[int], "folds.run"):
            raise UserError(f"folds.run={raw} names no fold: give the folds to train (e.g. folds.run=[0,3]), or "
                            "leave folds.run out to train every fold")


def check_exp(exp: str) -> None:
    """`exp` names checkpoints/<exp>/ and submissions/<exp>.csv: a plain file name, nothing else."""
    if not EXP_NAME.fullmatch(exp):
        rule = ("a plain name: letters, digits and -_.+@, (no / or \\ or =, not starting with - or ., at most 200 "
                "characters), as it names checkpoints/<exp>/ and submissions/<exp>.csv and is typed as a command's "
                "argument")
        raise UserError(f"exp={exp!r} must be {rule}" if exp else f"exp is empty: it must be {rule}")


def _allowed(value: float, alt: str) -> bool:
    if alt == "any":
        return True
    if m := _INTERVAL.fullmatch(alt):
        lo, hi = float(m[2]), float(m[3])
        return (lo <= value if m[1] == "[" else lo < value) and (value <= hi if m[4] == "]" else value < hi)
    op, _, num = alt.partition(" ")
    if not num:
        return value == float(op)
    return value >= float(num) if op == ">=" else value > float(num)


def _check_number(key: str, value: float, rule: str) -> None:
    if not math.isfinite(value):
        raise UserError(f"config '{key}' = {value} is not a finite number")
    if not any(_allowed(value, alt) for alt in rule.split(" or ")):
        raise UserError(f"config '{key}' = {value} is out of range: it must be {rule}")


def _check_ngram(key: str, value: list[int]) -> None:
    if not (len(value) == 2 and 1 <= value[0] <= value[1]):
        raise UserError(f"config '{key}' = {value} must be {NGRAM}, e.g. [1, 2]")


def _check_lists(cfg: Config) -> None:
    t, run, n = cfg.tfidf, cfg.folds.run, cfg.folds.n_folds
    _check_ngram("tfidf.word_ngram", t.word_ngram)
    _check_ngram("tfidf.char_ngram", t.char_ngram)
    if not t.grid_word_ngram:
        raise UserError(f"config 'tfidf.grid_word_ngram' is empty: it must be {LIST_RULES['tfidf.grid_word_ngram']}")
    for i, r in enumerate(t.grid_word_ngram):
        _check_ngram(f"tfidf.grid_word_ngram[{i}]", r)
    if not t.grid_C:
        raise UserError(f"config 'tfidf.grid_C' is empty: it must be {LIST_RULES['tfidf.grid_C']}, e.g. [0.3, 1, 3]")
    for i, c in enumerate(t.grid_C):
        _check_number(f"tfidf.grid_C[{i}]", c, "> 0")
    bad = [k for k in run if not 0 <= k < n]
    if bad:
        raise UserError(f"config 'folds.run' = {run} has folds outside 0..{n - 1} (folds.n_folds={n}): {bad}")
    twice = sorted({k for k in run if run.count(k) > 1})
    if twice:
        raise UserError(f"config 'folds.run' = {run} names fold(s) {twice} more than once")


def check(cfg: Config, need_exp: bool = True) -> Config:
    """Refuse a bad exp name (an empty one only if need_exp), an out-of-range number or a badly shaped list."""
    if cfg.exp or need_exp:
        check_exp(cfg.exp)
    for key, rule in RANGES.items():
        section, name = key.split(".")
        _check_number(key, getattr(getattr(cfg, section), name), rule)
    _check_lists(cfg)
    from src.metrics import check_metric

    check_metric(cfg.data.metric)
    if cfg.data.normalize not in NORMALIZE_MODES:
        raise UserError(f"config 'data.normalize' = {cfg.data.normalize!r}: use one of {', '.join(NORMALIZE_MODES)}")
    return cfg


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key given twice in one mapping (plain YAML keeps the last one silently: two
    `tfidf:` sections would drop the first)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _read_yaml(p: Path, what: str):
    """The YAML document in `p`; unreadable, non-UTF-8 or invalid YAML (a key twice too) is a one-line error naming
    the file."""
    text = read_utf8(p, what)
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise UserError(f"{what} {p} is not valid YAML{where}: {_yaml_problem(e)}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Config from a YAML file (or defaults when path is None) plus overrides, checked (see `check`)."""
    values: dict = {}
    if path is not None:
        p = Path(path)
        values = _read_yaml(p, "config file") or {}
        if not isinstance(values, dict):
            raise UserError(f"config file {p} must hold a mapping")
    cfg = _build(Config, values)
    if path is not None and not cfg.exp:
        cfg.exp = Path(path).stem
    cfg = apply_overrides(cfg, overrides or [])
    if not cfg.exp:
        cfg.exp = cfg.model_type
    return check(cfg)


def load_run_config(exp: str, overrides: list[str] | None = None, partial: bool = False) -> Config:
    """A run's own settings: checkpoints/<exp>/config.yaml (the folder from an `output.checkpoints_dir=` override,
    else the default), then `overrides` (e.g. data.data_dir on another machine), checked. `partial`: a run of some
    folds (its partial/config.yaml) is read too."""
    overrides = list(overrides or [])
    where = load_config(None, [o for o in overrides if o.startswith("output.checkpoints_dir=")] + [f"exp={exp}"])
    path = Path(where.output.checkpoints_dir) / exp / "config.yaml"
    if not path.is_file() and (path.parent / "partial" / "config.yaml").is_file():
        if not partial:
            raise UserError(f"{path.parent} holds only a partial run (its outputs are in partial/): run every fold "
                            "first")
        path = path.parent / "partial" / "config.yaml"
    if not path.is_file():
        raise UserError(f"{path.absolute()} does not exist: is '{exp}' a run here? (set output.checkpoints_dir= to "
                        "the folder that holds its checkpoints)")
    cfg = from_run_folder(load_config(path, [*overrides, f"exp={exp}"]), overrides)
    saved = ((_read_yaml(path, "the run config") or {}).get("output") or {}).get("checkpoints_dir")
    where_now = path.parent.parent.parent if path.parent.name == "partial" else path.parent.parent
    return _where_it_is(cfg, Path(saved or where_now), where_now, {o.partition("=")[0].strip() for o in overrides})


def _where_it_is(cfg: Config, saved: Path, checkpoints: Path, given: set[str]) -> Config:
    """A run folder found under `checkpoints` whose config.yaml names another (absolute) checkpoints folder was moved:
    its fold file and submission are then read and written beside it (`checkpoints/../folds`, `../submissions`),
    never in the old folders, unless the command line says where."""
    cfg.output.checkpoints_dir = str(checkpoints)
    if saved.absolute() == checkpoints.absolute():
        return cfg
    for key, beside in (("folds.dir", "folds"), ("output.submissions_dir", "submissions")):
        if key not in given:
            section, name = key.split(".")
            setattr(getattr(cfg, section), name, str(checkpoints.parent / beside))
    print(f"note: run '{cfg.exp}' was moved from {saved.parent} to {checkpoints.absolute().parent}: its fold file and "
          f"submission are read and written there ({cfg.folds.dir}, {cfg.output.submissions_dir})")
    return cfg


def from_run_folder(cfg: Config, overrides: list[str]) -> Config:
    """A config read from a run folder or a pack, which travel between people: `model.trust_remote_code` comes from
    this command line's overrides only, never from the file (remote code runs only when the user asks for it)."""
    asked = [o for o in overrides if o.partition("=")[0].strip() == "model.trust_remote_code"]
    cfg.model.trust_remote_code = load_config(None, asked).model.trust_remote_code if asked else False
    return cfg


def load_saved_sections(path: str | Path, sections: list[str], overrides: list[str] | None = None) -> Config:
    """Defaults with `sections` taken from a run's saved config.yaml, then overrides, checked (exp only if set).

    For reading a finished run (checkpoints, blends): keys this version no longer has are skipped, so a run
    saved by an older version stays readable.
    """
    saved = _read_yaml(Path(path), "the run config") or {}
    tree = to_dict(Config())
    for sec in sections:
        values = saved.get(sec) if isinstance(saved, dict) else None
        if isinstance(tree[sec], dict) and isinstance(values, dict):
            tree[sec].update({k: v for k, v in values.items() if k in tree[sec]})
        elif values is not None:
            tree[sec] = values
    return check(apply_overrides(_build(Config, tree), overrides or []), need_exp=False)


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


PATH_KEYS = ("data.data_dir", "folds.dir", "output.checkpoints_dir", "output.submissions_dir", "probe.cache_dir")


def dump_config(cfg: Config, absolute: bool = False) -> str:
    """The config as YAML; `absolute` (a run's saved config.yaml): folder settings as absolute paths, so the run
    says where its data, folds and outputs were whatever folder it is read from later."""
    tree = to_dict(cfg)
    if absolute:
        for key in PATH_KEYS:
            section, name = key.split(".")
            if tree[section][name]:
                tree[section][name] = str(Path(tree[section][name]).expanduser().absolute())
    return yaml.safe_dump(tree, sort_keys=False)


def keys(cls: type = None, prefix: str = "") -> list[tuple[str, str, Any]]:
    """(dotted key, type, default) of every config field, sections expanded."""
    cls = cls or Config
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = getattr(cls(), f.name)
        if dataclasses.is_dataclass(default):
            out += keys(type(default), f"{prefix}{f.name}.")
        else:
            out.append((prefix + f.name, getattr(hints[f.name], "__name__", str(hints[f.name])), default))
    return out


def _flow(value: Any) -> str:
    """A value as one line of YAML."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**9).removesuffix("\n...\n").strip()


@cli
def main(argv: list[str] | None = None) -> None:
    """python -m src config [--config X] [key=value ...] [--get KEY | --keys]: the resolved config, one value, or
    every key with its type and default."""
    p = ArgParser(prog="python -m src config", description="Print the resolved config (YAML), one value, or every "
                                                           "valid key.")
    p.add_argument("--config", default=None, help="YAML config (default: the TF-IDF baseline's defaults)")
    p.add_argument("--get", metavar="KEY", help="print only this key's value (e.g. exp, data.data_dir)")
    p.add_argument("--keys", action="store_true", help="list every key with its type and default")
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    a = p.parse_intermixed_args(argv)
    if a.keys:
        for key, tp, default in keys():
            print(f"{key:34} {tp:12} {_flow(default)}")
        return
    cfg = load_config(a.config, a.overrides)
    if a.get:
        _key_type(a.get)
        value = cfg
        for part in a.get.split("."):
            value = value[part] if isinstance(value, dict) else getattr(value, part)
        print(value if isinstance(value, str) else _flow(value))
        return
    print(dump_config(cfg), end="")


if __name__ == "__main__":
    main()
