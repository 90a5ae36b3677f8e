"""model_type llm_finetune: LoRA causal-LM fine-tuning on "text -> label list", per fold; probabilities read out.

    python -m src run --config configs/llm_finetune_smollm2.yaml data.data_dir=...

Each fold trains a LoRA adapter on its training rows (prompt = llm.multi_template, answer = the gold label words
in column order, or llm.none_answer) with the loss on the answer tokens only, bounded by train.max_steps or
train.epochs. The held-out rows (and test rows) are then read out like the zero-shot multi-label prompt
(score.py): greedy answer, label distribution at each label step, not parsed from text. Per fold:
checkpoints/<exp>/fold<k>/adapter/, readout.npz, done.json. A finished fold is reused on rerun only under the same
fingerprint (settings, train.csv's ids/texts/labels, the fold's rows, the test rows and texts read out) and with an
intact readout; else it is trained again, after a note saying why. NaN/inf losses or readouts stop the fold.
llm.max_train_rows / llm.max_test_rows bound only the rows read out; training uses all of a fold's training rows.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import numpy as np
import torch

from src import memory, precision
from src.config import Config
from src.data import digest
from src.errors import UserError
from src.fileio import read_json, write_json
from src.fingerprint import fingerprint, fingerprint_parts, mismatch, read_done
from src.folds import folds_for_run
from src.llm import analysis, sampling
from src.llm.label_tokens import common_prefix
from src.llm.lm import load_causal_lm
from src.llm.outputs import read_jsonl, steps_path, write_jsonl, write_outputs
from src.llm.prompts import Prompter
from src.llm.score import main_method, score_multi
from src.models.transformer import DEFAULT_TARGETS, enable_checkpointing
from src.progress import tqdm
from src.rundir import check_probs


def encode_example(tok, prompter: Prompter, text: str, answer: str) -> tuple[list[int], list[int]]:
    """`(input_ids, labels)` of prompt + answer; labels are -100 on the prompt, so only the answer is learned."""
    prompt, full = prompter.training_texts(prompter.multi_user(text), answer)
    p_ids = tok(prompt, add_special_tokens=prompter.add_special_tokens)["input_ids"]
    ids = tok(full, add_special_tokens=prompter.add_special_tokens)["input_ids"]
    start = common_prefix([p_ids, ids])
    return ids, [-100] * start + ids[start:]


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in examples)
    ids = [e[0] + [pad_id] * (width - len(e[0])) for e in examples]
    labels = [e[1] + [-100] * (width - len(e[1])) for e in examples]
    mask = [[1] * len(e[0]) + [0] * (width - len(e[0])) for e in examples]
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}


def lora_model(model, cfg: Config):
    from peft import LoraConfig, get_peft_model

    targets = list(cfg.lora.target_modules)
    if not targets:  # the decoders' attention + MLP projections, as for sequence classification
        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        default = DEFAULT_TARGETS["decoder"]
        targets = default if set(default) <= names else "all-linear"
    if cfg.lora.bias not in ("none", "all", "lora_only"):
        raise UserError(f"lora.bias must be none, all or lora_only, got {cfg.lora.bias!r}")
    lc = LoraConfig(task_type="CAUSAL_LM", r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                    target_modules=targets, bias=cfg.lora.bias)
    model = get_peft_model(model, lc)
    for p in model.parameters():  # trainable weights in float32 (lora.bias=all on a half base); autocast does the rest
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return model


def total_steps(cfg: Config, n_examples: int) -> int:
    per_epoch = math.ceil(n_examples / cfg.train.batch_size / cfg.train.grad_accum)
    return cfg.train.max_steps if cfg.train.max_steps > 0 else max(1, math.ceil(cfg.train.epochs * per_epoch))


def train(model, examples: list[tuple[list[int], list[int]]], cfg: Config, pad_id: int, seed: int,
          desc: str = "train") -> list[float]:
    """The LoRA training loop (AdamW, fused where torch has the kernel; warmup + schedule, grad accumulation,
    clipping when `train.max_grad_norm` > 0; autocast from `train.precision`, with a GradScaler for fp16).
    Returns the step losses."""
    from transformers import get_scheduler

    if cfg.model.method == "qlora":
        raise UserError("llm_finetune trains LoRA adapters; QLoRA (4-bit) is not supported here: use model.method=lora")
    dev = next(model.parameters()).device
    steps = total_steps(cfg, len(examples))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                            fused=precision.fused_adamw(params))
    sched = get_scheduler(cfg.train.scheduler, opt, int(cfg.train.warmup_ratio * steps), steps)
    if cfg.model.gradient_checkpointing:
        enable_checkpointing(model)
    dtype = precision.autocast_dtype(cfg.train.precision, dev.type)
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype is torch.float16)  # fp16: loss scaling against underflow
    rng = np.random.default_rng(seed)
    order: list[int] = []
    losses: list[torch.Tensor] = []  # on the device: read only at logging steps (no host sync per step)
    model.train()
    bar = tqdm(range(steps), desc=desc, unit="step")
    for step in bar:
        total = torch.zeros((), device=dev)
        for _ in range(cfg.train.grad_accum):
            if len(order) < cfg.train.batch_size:
                order += rng.permutation(len(examples)).tolist()
            batch, order = order[: cfg.train.batch_size], order[cfg.train.batch_size:]
            inputs = {k: (v.pin_memory() if dev.type == "cuda" else v).to(dev, non_blocking=True)
                      for k, v in collate([examples[i] for i in batch], pad_id).items()}
            with torch.autocast(dev.type, dtype=dtype) if dtype else contextlib.nullcontext():
                loss = model(**inputs).loss / cfg.train.grad_accum
            scaler.scale(loss).backward()
            total += loss.detach()
        if cfg.train.max_grad_norm > 0:  # 0 = no clipping (clip_grad_norm_ with 0 would zero every gradient)
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm)
        scaler.step(opt)
        scaler.update()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(total)
        if (step + 1) % max(1, cfg.train.log_every) == 0 or step + 1 == steps:
            recent = torch.stack(losses[-cfg.train.log_every:]).float().cpu().numpy()
            if not np.isfinite(recent).all() and not scaler.is_enabled():  # fp16's scaler skips inf steps itself
                raise UserError(f"{desc}: diverged by step {step + 1} (NaN/inf loss): lower train.lr (now "
                                f"{cfg.train.lr:g}) or raise train.warmup_ratio, and run again")
            bar.set_postfix(loss=f"{recent.mean():.4f}")
    model.eval()
    return torch.stack(losses).float().cpu().tolist() if losses else []


def run_fold(cfg: Config, comp, k: int, train_rows: np.ndarray, valid_rows: np.ndarray,
             test_rows: np.ndarray | None, rd) -> dict:
    """Train fold k's adapter, read out its held-out and test rows; saved under fold<k>/."""
    t0 = time.time()
    memory.reset_peak()
    no_autocast = cfg.model.dtype == "auto" and precision.resolve_precision(cfg.train.precision) == "no"
    model, tok = load_causal_lm(cfg.model, dtype="float32" if no_autocast else None)  # no half base without autocast
    prompter = Prompter.build(tok, cfg.llm, comp.labels, cfg.model.max_length)
    texts, Y = comp.train_texts, comp.Y
    examples = [encode_example(tok, prompter, texts[i], prompter.multi_answer(Y[i])) for i in train_rows]
    torch.manual_seed(cfg.train.seed + k)
    model = lora_model(model, cfg)
    losses = train(model, examples, cfg, tok.pad_token_id, cfg.train.seed + k, desc=f"fold {k} train")
    model.save_pretrained(rd.fold(k) / "adapter")
    tok.save_pretrained(rd.fold(k) / "adapter")
    valid, valid_recs = score_multi(model, tok, prompter, [texts[i] for i in valid_rows], [], cfg, f"fold {k} oof")
    arrays = {f"valid_{m}": p for m, p in valid.items()}
    if test_rows is not None:
        test, _ = score_multi(model, tok, prompter, [comp.test_texts[i] for i in test_rows], [], cfg, f"fold {k} test")
        arrays.update({f"test_{m}": p for m, p in test.items()})
    for name, probs in arrays.items():  # nothing NaN is saved, let alone reused
        if not np.isfinite(probs).all():
            raise UserError(f"fold {k} diverged (NaN/inf {name} readout probabilities): lower train.lr (now "
                            f"{cfg.train.lr:g}) and run again")
        check_probs(probs, comp.labels, f"fold {k} {name} readout")
    np.savez(rd.fold(k) / "readout.npz", valid_rows=valid_rows, test_rows=_rows(test_rows), **arrays)
    write_jsonl(rd.fold(k) / "steps_oof.jsonl", [{"id": comp.train_ids[r], "fold": k, **rec}
                                                  for r, rec in zip(valid_rows, valid_recs)])
    parts = _parts(cfg, comp, train_rows, valid_rows, test_rows)
    done = {"fold": k, "fingerprint": fingerprint(parts), "fingerprint_parts": parts, "steps": len(losses),
            "train_rows": len(train_rows), "valid_rows": len(valid_rows),
            "first_loss": losses[0], "last_loss": float(np.mean(losses[-10:])), "elapsed_s": time.time() - t0,
            "peak_memory": memory.peak()}
    write_json(rd.fold(k) / "done.json", done)
    print(f"[{cfg.exp}] fold {k}: {len(losses)} steps, loss {losses[0]:.3f} -> {done['last_loss']:.3f}, "
          f"{done['elapsed_s']:.0f} s, peak {memory.describe(done['peak_memory'])}")
    return done


def _rows(rows: np.ndarray | None) -> np.ndarray:
    return np.array([-1]) if rows is None else rows


def _parts(cfg: Config, comp, train_rows: np.ndarray, valid_rows: np.ndarray, test_rows: np.ndarray | None) -> dict:
    """What the fold's adapter and readouts depend on: the model, LoRA, training and LLM settings, train.csv (ids,
    texts, labels), the fold's training rows, the held-out rows read out and the test rows and texts read out."""
    parts = fingerprint_parts(cfg, comp, [comp.train_ids[i] for i in valid_rows],
                              sections=("model", "lora", "train", "llm"))
    parts["data"]["training ids"] = digest([comp.train_ids[i] for i in train_rows])
    parts["data"]["test texts"] = "none" if test_rows is None else digest(
        [[comp.test_ids[i], comp.test_texts[i]] for i in test_rows])
    return parts


def _readout_problem(path: Path, labels: list[str], valid_rows: np.ndarray, test_rows: np.ndarray | None) -> str | None:
    """Why a fold's readout.npz cannot be reused (missing, unreadable, other rows, NaN or out-of-[0, 1] values)."""
    if not path.is_file():
        return f"{path} is missing"
    try:
        with np.load(path) as data:
            arrays = {name: data[name] for name in data.files}
    except Exception as e:  # a truncated or garbage file: zip, pickle or format errors
        return f"{path} is damaged (truncated or corrupted?): {(str(e).splitlines() or [type(e).__name__])[0]}"
    if not (np.array_equal(arrays.get("valid_rows"), valid_rows)
            and np.array_equal(arrays.get("test_rows"), _rows(test_rows))):
        return f"{path} holds other rows"
    for name, probs in arrays.items():
        if name not in ("valid_rows", "test_rows"):
            try:
                check_probs(probs, labels, f"{path} ({name})")
            except UserError as e:
                return str(e)
    return None


def _reusable(cfg: Config, comp, rd, k: int, train_rows: np.ndarray, valid_rows: np.ndarray,
              test_rows: np.ndarray | None, quiet: bool = False) -> bool:
    """Whether finished fold k can be reused: made with the same settings, data and rows (else it is trained again,
    with a note saying what changed) and its readout intact. A damaged done.json is a UserError."""
    fold_dir = rd.fold(k)
    if not (fold_dir / "done.json").is_file():
        return False
    why = mismatch(read_done(fold_dir), _parts(cfg, comp, train_rows, valid_rows, test_rows))
    why = why or _readout_problem(fold_dir / "readout.npz", comp.labels, valid_rows, test_rows)
    if why is None:
        try:
            read_jsonl(fold_dir / "steps_oof.jsonl")
        except UserError as e:
            why = str(e)
    if why and not quiet:
        print(f"[{cfg.exp}] fold {k}: {why}; training it again")
    return why is None


def _check_settings(cfg: Config) -> str:
    main = main_method(cfg)
    if cfg.llm.prompt != "multi":
        raise UserError("llm_finetune trains the multi-label answer: set llm.prompt=multi")
    if cfg.model.method == "qlora":
        raise UserError("llm_finetune trains LoRA adapters; QLoRA (4-bit) is not supported here: use model.method=lora")
    if cfg.lora.bias not in ("none", "all", "lora_only"):
        raise UserError(f"lora.bias must be none, all or lora_only, got {cfg.lora.bias!r}")
    return main


def _plan(cfg: Config, comp, folds) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(fold of each train row, the train rows read out, the test rows read out or None)."""
    fold = folds["fold"].to_numpy()
    seed = cfg.train.seed
    scored = sampling.subset(np.flatnonzero(np.isin(fold, folds_for_run(cfg))), cfg.llm.max_train_rows, seed)
    test_rows = None if cfg.llm.max_test_rows < 0 else sampling.subset(np.arange(len(comp.test)),
                                                                        cfg.llm.max_test_rows, seed)
    return fold, scored, test_rows


def preflight(cfg: Config, comp, folds, rd) -> None:
    """Before any work: the settings, and every run fold's done.json readable (its reuse decided quietly)."""
    _check_settings(cfg)
    fold, scored, test_rows = _plan(cfg, comp, folds)
    for k in folds_for_run(cfg):
        _reusable(cfg, comp, rd, k, np.flatnonzero(fold != k), scored[fold[scored] == k], test_rows, quiet=True)


def predict_folds(cfg: Config, rd, texts: list[str]) -> dict[int, np.ndarray]:
    """Each fold's adapter (fold<k>/adapter) on the base model, its label probabilities read out for `texts`."""
    from peft import PeftModel

    from src.runguard import run_labels
    from src.text import normalize

    texts, out = normalize(texts, cfg.data.normalize), {}
    main = _check_settings(cfg)
    no_autocast = cfg.model.dtype == "auto" and precision.resolve_precision(cfg.train.precision) == "no"
    for k in folds_for_run(cfg):
        base, tok = load_causal_lm(cfg.model, dtype="float32" if no_autocast else None)
        model = PeftModel.from_pretrained(base, rd.fold(k) / "adapter").eval()
        prompter = Prompter.build(tok, cfg.llm, run_labels(rd), cfg.model.max_length)
        methods, _ = score_multi(model, tok, prompter, texts, [], cfg, f"fold {k} input")
        out[k] = methods[main]
    return out


def run(cfg: Config, comp, folds, rd) -> None:
    main = _check_settings(cfg)
    fold, scored, test_rows = _plan(cfg, comp, folds)
    oof: dict[str, list] = {}
    test: dict[str, list] = {}
    rows, records = [], []
    for k in folds_for_run(cfg):
        valid_rows, train_rows = scored[fold[scored] == k], np.flatnonzero(fold != k)
        if _reusable(cfg, comp, rd, k, train_rows, valid_rows, test_rows):
            print(f"[{cfg.exp}] fold {k}: done ({read_json(rd.fold(k) / 'done.json').get('steps')} steps), reusing it")
        else:
            run_fold(cfg, comp, k, train_rows, valid_rows, test_rows, rd)
        data = np.load(rd.fold(k) / "readout.npz")
        rows.append(valid_rows)
        for name in data.files:
            if name.startswith("valid_") and name != "valid_rows":
                oof.setdefault(name[6:], []).append(data[name])
            elif name.startswith("test_") and name != "test_rows":
                test.setdefault(name[5:], []).append(data[name])
        records += read_jsonl(rd.fold(k) / "steps_oof.jsonl")
    order = np.argsort(np.concatenate(rows), kind="stable")
    oof_probs = {m: np.concatenate(v)[order] for m, v in oof.items()}
    test_probs = {m: np.mean(v, axis=0) for m, v in test.items()} if test_rows is not None else None
    write_jsonl(steps_path(rd, "oof"), [records[i] for i in order])
    write_outputs(rd, comp, folds, main, np.concatenate(rows)[order], oof_probs, test_rows, test_probs)
    analysis.write_report(cfg, comp, folds, rd)
