"""Fine-tune a transformer per fold: the training loop (accelerate), a checkpoint at every evaluation, resume.

    python -m src.train --config configs/minilm-l6.yaml [--folds 0,3] [key=value ...]
    accelerate launch --multi_gpu --num_processes 2 -m src.train --config ...   # 2 GPUs (or 2 CPU processes)

The same code runs on CPU, one GPU or several (DDP through `accelerate launch`; on a machine without CUDA the
processes train on CPU). Per fold k, in checkpoints/<exp>/fold<k>/:
    step<N>/       at every evaluation (each `train.eval_every` steps, each epoch end, the last step):
                   weights (full/last_n) or LoRA adapter + head, tokenizer, metrics.json, valid_probs.npy;
                   the newest one also holds resume.pt (optimizer, scheduler, each process's RNG, data position)
    history.jsonl  training loss every `train.log_every` steps, every evaluation, every resume
    done.json      the fold is finished: later runs skip it (delete the fold's folder to train it again)
A killed run restarts where it stopped: finished folds are skipped, an unfinished fold continues from its newest
checkpoint (each process with its own RNG state, so a multi-GPU resume is exact too; a damaged newest resume state
falls back to the newest intact one, else the fold starts again, with a note). done.json and resume.pt hold the
fold's fingerprint: the training settings and digests of train.csv's ids, texts and labels and the fold's held-out
ids; `preflight` checks every fold's against the current one before any fold trains, and a mismatch is an error
naming what changed ("settings changed (train.lr ...)", "data changed (train texts)"). NaN/inf held-out outputs
stop the fold ("diverged") before that evaluation's checkpoint is written. `train.keep_top_k` keeps the
K best checkpoints by `train.keep_metric` (plus, while training, the newest, which resuming needs). `val_loss` is
the plain (unweighted) BCE of the held-out rows; `train_loss` is the training criterion (`train.loss`, pos_weight,
label smoothing) averaged since the previous evaluation.
Switches: `train.ema` evaluates and saves a moving average of the weights (resume keeps both);
`train.compile` runs the training forward/backward through torch.compile (`pad_to_multiple` + `drop_last` keep the
batch shapes few, for CUDA graphs with `reduce-overhead`); `train.resume_state: false` skips the optimizer state
and any checkpoint keep_top_k would delete at once (short GPU runs, where writing them costs more than a restart).
`train.report_to: wandb` logs to Weights & Biases (project `extra.wandb_project`, default multilabel-text; one run
per fold); the API key comes from the environment (WANDB_API_KEY) or `wandb login`, never from the config.
After each fold its model, optimizer and W&B run are released (`release_fold`), so folds do not pile up in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from src import metrics, precision, teacher, thresholds
from src.checkpoints import (
    CHECKPOINT_DTYPES,
    RESUME,
    check_disk,
    find_resume,
    footprint,
    makes_top_k,
    prune,
    read_metrics,
    repair_resume,
    save_checkpoint,
)
from src.config import Config, ThresholdConfig, dump_config, load_config, to_dict
from src.data import Competition, digest
from src.ema import EMA
from src.errors import ArgParser, UserError, cli
from src.fileio import read_json, write_json, write_text
from src.folds import folds_for_run, parse_folds
from src.losses import make_loss
from src.models import transformer as tm
from src.progress import tqdm
from src.rundir import RunDir, check_probs, checkpoint_dirs
from src.runguard import check_run_data, prepare_outputs, record_run_data, run_lock
from src.weights import pos_weight

KEEP_METRICS = ("f1_tuned", "f1_at_0.5", "val_loss")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
GRAPH_MODES = ("reduce-overhead", "max-autotune")  # the modes that replay CUDA graphs
# Weights below the first layer, shared by every layer or outside the numbered ones: token/position embeddings
# (BERT word_embeddings, GPT-2 wte/wpe, T5 shared), MPNet's relative_attention_bias, DeBERTa's rel_embeddings.
EMBEDDING = re.compile(r"embed|position|(^|\.)(wte|wpe|shared|relative_attention_bias)(\.|$)")


# ---------------------------------------------------------------- optimizer, schedule, batches

def param_groups(model, cfg: Config) -> list[dict]:
    """AdamW groups: no weight decay on biases/norms, `train.head_lr` for the head, and with `train.layer_lr_decay`
    < 1 the LR shrinks by that factor per layer from the top layer down to the embeddings (`EMBEDDING`: depth 0)."""
    t = cfg.train
    heads = set(tm.head_modules(model))
    n_layers = tm.hf_model(model).config.num_hidden_layers
    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        name = re.sub(r"^(module\.)?(base_model\.model\.)?", "", name)
        if name.split(".")[0] in heads:
            lr = t.head_lr or t.lr
        else:
            layer = re.search(r"\.(?:layer|layers|h|block|blocks)\.(\d+)\.", name)
            depth = int(layer.group(1)) + 1 if layer else (0 if EMBEDDING.search(name) else n_layers + 1)
            lr = t.lr * t.layer_lr_decay ** (n_layers + 1 - depth)
        decay = 0.0 if p.ndim < 2 or "norm" in name.lower() else t.weight_decay
        groups.setdefault((lr, decay), []).append(p)
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """LR multiplier for optimizer step `step` (0-based): linear warmup, then linear/cosine decay or constant."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return 1.0


def make_optimizer(model, cfg: Config, total: int):
    """AdamW and its LR schedule. AdamW is fused wherever torch has the kernel for the parameters' device and dtype
    (CUDA and CPU alike, so CPU runs test the GPU's optimizer), else the default (foreach) one."""
    t = cfg.train
    groups = param_groups(model, cfg)
    fused = precision.fused_adamw(p for g in groups for p in g["params"])  # else the first step() would raise
    opt = torch.optim.AdamW(groups, lr=t.lr, fused=fused)
    warmup = round(t.warmup_ratio * total)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warmup, t.scheduler))
    return opt, sched


def optimizer_step(acc, model, opt, sched, ema: EMA | None, step: int, max_grad_norm: float) -> bool:
    """Clip, step and zero the gradients; the LR schedule and the EMA advance only when the update was applied, not
    when the fp16 GradScaler skipped it for inf/nan gradients. A fused AdamW takes the scaler's found-inf flag
    itself, so accelerate's `optimizer_step_was_skipped` misses those skips: a drop of the scale marks them too."""
    if max_grad_norm > 0:
        acc.clip_grad_norm_(model.parameters(), max_grad_norm)
    scaler = getattr(acc, "scaler", None)
    scale = scaler.get_scale() if scaler is not None else None  # fp16 only: a host sync, as the scaler's own
    opt.step()
    opt.zero_grad(set_to_none=True)
    if acc.optimizer_step_was_skipped or (scaler is not None and scaler.get_scale() < scale):
        return False
    sched.step()
    if ema is not None:
        ema.update(step)
    return True


def epoch_batches(lengths: np.ndarray, batch_size: int, world: int, seed: int, by_length: bool,
                  drop_last: bool = False) -> list[np.ndarray]:
    """One epoch of global batches (positions into `lengths`, `batch_size` rows per process): shuffled, and with
    `by_length` sorted by length inside chunks of 50 batches so each batch pads little (longest batch first).
    `drop_last` drops a last batch smaller than the others."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(lengths))
    size = batch_size * world
    if by_length:
        chunk = size * 50
        idx = np.concatenate([c[np.argsort(-lengths[c], kind="stable")]
                              for c in np.array_split(idx, range(chunk, len(idx), chunk))])
    batches = [idx[i:i + size] for i in range(0, len(idx), size)]
    if len(batches[-1]) < (size if drop_last and len(batches) > 1 else world):  # every process needs a row
        batches.pop()
    if by_length:
        order = rng.permutation(len(batches))
        longest = int(np.argmax([lengths[b].max() for b in batches]))
        order = np.r_[longest, order[order != longest]]
        batches = [batches[i] for i in order]
    return batches


# ---------------------------------------------------------------- evaluation and checkpoints

def eval_metrics(Y: np.ndarray, logits: np.ndarray, labels: list[str]) -> tuple[dict, np.ndarray]:
    """Held-out metrics (val_loss = plain BCE, macro-F1 at 0.5 and at per-label tuned thresholds) and the probs."""
    lt = torch.from_numpy(logits)
    probs = check_probs(torch.sigmoid(lt).numpy(), labels, "held-out probabilities")  # never NaN into a checkpoint
    val_loss = F.binary_cross_entropy_with_logits(lt, torch.from_numpy(Y.astype(np.float32))).item()
    th = thresholds.tune(Y, probs, ThresholdConfig(mode="per_label"))
    f1_tuned = metrics.f1_per_label(Y, thresholds.apply(probs, th))
    f1_05 = metrics.f1_per_label(Y, probs >= 0.5)
    return {
        "val_loss": val_loss,
        "f1_at_0.5": float(f1_05.mean()),
        "f1_tuned": float(f1_tuned.mean()),
        "per_label_f1": dict(zip(labels, map(float, f1_tuned))),
        "per_label_f1_at_0.5": dict(zip(labels, map(float, f1_05))),
        "thresholds": dict(zip(labels, map(float, th))),
    }, probs.astype(np.float32)


def evaluate(acc, model, seqs: list, rows: np.ndarray, pad_id: int, side: str, batch_size: int) -> np.ndarray:
    """Logits of the held-out rows (in `rows` order), each process scoring every world-th row."""
    from accelerate.utils import gather_object

    mine = np.arange(len(rows))[acc.process_index::acc.num_processes]
    net = acc.unwrap_model(model, keep_torch_compile=False)
    net.eval()
    with acc.autocast():
        logits = tm.predict_logits(net, [seqs[rows[i]] for i in mine], pad_id, side, batch_size, progress=False)
    net.train()
    parts = gather_object([(mine, logits.cpu().numpy())]) if acc.num_processes > 1 else [(mine, logits.cpu().numpy())]
    out = np.zeros((len(rows), logits.shape[1]), dtype=np.float32)
    for pos, part in parts:
        out[pos] = part
    return out


def _rng_state(device: torch.device) -> dict:
    """This process's RNG state: python, numpy, torch CPU and its own GPU's (dropout)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def rng_states(acc) -> list[dict]:
    """Every process's RNG state, index = process rank (a collective: all processes call it)."""
    from accelerate.utils import gather_object

    mine = _rng_state(acc.device)
    return gather_object([mine]) if acc.num_processes > 1 else [mine]


def restore_rng(saved: list[dict] | dict, acc) -> None:
    """Put back this process's own saved RNG state (a dict: one state saved for all, as older resume files hold)."""
    _set_rng_state(saved[acc.process_index] if isinstance(saved, list) else saved, acc.device)


NOT_IN_FINGERPRINT = ("report_to", "log_every", "keep_top_k", "keep_metric", "eval_batch_size", "compile",
                      "pad_to_multiple", "resume_state", "checkpoint_dtype")


def fingerprint_parts(cfg: Config, comp: Competition, held_out_ids, sections=("model", "lora", "train")) -> dict:
    """What a fold's trained model depends on: the config `sections` (minus logging/bookkeeping fields) and, under
    "data", the label names and digests of train.csv's ids, texts and label values and of the fold's held-out ids
    (the fold assignment). Stored in done.json / resume.pt, so a mismatch can name what changed."""
    tree = to_dict(cfg)
    parts = {s: {key: v for key, v in tree[s].items() if not (s == "train" and key in NOT_IN_FINGERPRINT)}
             for s in sections}
    parts["data"] = {"label names": list(comp.labels), "train ids": digest(comp.train_ids),
                     "train texts": digest(comp.train_texts), "train labels": digest(comp.Y.tolist()),
                     "held-out ids": digest([str(i) for i in held_out_ids])}
    return json.loads(json.dumps(parts, default=str))  # as read back from JSON: tuples are lists


def fingerprint(parts: dict) -> str:
    """The hash of `fingerprint_parts`: a finished or resumable fold is reused only under the same one."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def fold_parts(cfg: Config, comp: Competition, folds, k: int) -> dict:
    parts = fingerprint_parts(cfg, comp, folds["id"].to_numpy()[folds["fold"].to_numpy() == k])
    lessons = teacher.fingerprint_part(cfg, comp, folds)
    if lessons is not None:  # only with a teacher: folds trained without one keep their fingerprint
        parts["teacher"] = lessons
    return parts


def fold_fingerprint(cfg: Config, comp: Competition, folds, k: int) -> str:
    return fingerprint(fold_parts(cfg, comp, folds, k))


_MISSING = object()


def _show(value) -> str:
    return "(unset)" if value is _MISSING else json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def changes(saved: dict, current: dict) -> tuple[list[str], list[str]]:
    """What differs between saved and current fingerprint parts: (settings like "train.lr 2e-05 -> 3e-05",
    data like "train texts")."""
    settings, data = [], []
    for section in sorted(set(saved) | set(current)):
        old, new = saved.get(section), current.get(section)
        if not (isinstance(old, dict) and isinstance(new, dict)):
            if old != new:
                (data if section == "data" else settings).append(section)
            continue
        for key in sorted(set(old) | set(new)):
            before, after = old.get(key, _MISSING), new.get(key, _MISSING)
            if before == after:
                continue
            if section == "data":
                data.append(f"{key} {_show(before)} -> {_show(after)}" if key == "label names" else key)
            else:
                settings.append(f"{section}.{key} {_show(before)} -> {_show(after)}")
    return settings, data


def mismatch(saved: dict, current: dict) -> str | None:
    """Why a done.json / resume state (`saved`: "fingerprint", "fingerprint_parts") does not fit the `current`
    parts, or None when it does (or holds no fingerprint at all)."""
    old = saved.get("fingerprint")
    if old is None or old == fingerprint(current):
        return None
    parts = saved.get("fingerprint_parts")
    if not isinstance(parts, dict):  # written before the parts were stored: only the hash to compare
        return (f"settings or data changed (fingerprint {old}, now {fingerprint(current)}; an older kit's fold "
                "records no details)")
    settings, data = changes(parts, current)
    why = [f"settings changed ({', '.join(settings)})"] if settings else []
    why += [f"data changed ({', '.join(data)})"] if data else []
    return " and ".join(why) or f"fingerprint changed ({old}, now {fingerprint(current)})"


def check_reuse(fold_dir: Path, saved: dict, current: dict, what: str) -> None:
    """A UserError naming the fold folder, what changed and how to retrain, unless `saved` fits `current`."""
    why = mismatch(saved, current)
    if why:
        raise UserError(f"{fold_dir} holds a {what} that no longer matches: {why}; delete {fold_dir} to train it "
                        "again, or use another exp name")


def read_done(fold_dir: Path) -> dict:
    """A fold's done.json; a damaged one is a UserError saying how to retrain the fold."""
    path = fold_dir / "done.json"
    try:
        done = read_json(path)
    except UserError as e:
        raise UserError(f"{e}; delete {fold_dir} to train the fold again") from None
    if not isinstance(done, dict):
        raise UserError(f"{path} holds no mapping (truncated or corrupted?); delete {fold_dir} to train the fold again")
    return done


def check_fold(cfg: Config, comp: Competition, folds, rd: RunDir, k: int) -> bool:
    """Whether fold k is finished (done.json). Raises a UserError when its done.json or its newest intact resume
    state was made with other settings or data, when done.json is damaged, or when it has checkpoints but no
    resume state (train.resume_state=false). A damaged newest resume state is left to `repair_resume`."""
    fold_dir, current = rd.fold(k), fold_parts(cfg, comp, folds, k)
    if (fold_dir / "done.json").is_file():
        check_reuse(fold_dir, read_done(fold_dir), current, "finished fold")
        return True
    _, state, broken = find_resume(fold_dir, mmap=True)
    if state is not None:
        check_reuse(fold_dir, state, current, "half-trained fold")
    elif not broken and checkpoint_dirs(fold_dir):
        raise UserError(f"{fold_dir} has checkpoints but no resume state or done.json (train.resume_state=false "
                        f"keeps none): delete it to train fold {k} again")
    return False


def preflight(cfg: Config, comp: Competition, folds, rd: RunDir) -> None:
    """Everything checkable before training starts: the settings (`check_train_config`), the run folder holding this
    data's run (`check_run_data`), and every run fold's done.json or resume state against its fingerprint (a
    mismatch on fold 7 is found before fold 0 trains)."""
    check_train_config(cfg)
    check_run_data(cfg, comp, rd)
    teacher.check(cfg, comp, folds)
    for k in folds_for_run(cfg):
        check_fold(cfg, comp, folds, rd, k)


def _append(path: Path, record: dict) -> None:
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e} (check that the folder is writable and the disk "
                        "has space)") from None


# ---------------------------------------------------------------- the loop

def train_fold(cfg: Config, comp: Competition, folds, rd: RunDir, k: int, acc,
               callbacks: tuple[Callable[[dict], None], ...] = ()) -> None:
    """Train fold k on its training rows, evaluating and checkpointing on its held-out rows."""
    from accelerate.utils import set_seed

    t = cfg.train
    t0 = time.time()
    fold_dir = rd.fold(k)
    main = acc.is_main_process
    if main:
        try:
            fold_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create {fold_dir}: {e.strerror or e}") from None
        for tmp in fold_dir.glob(".tmp-step*"):  # a checkpoint interrupted while being written
            shutil.rmtree(tmp, ignore_errors=True)
        repair_resume(fold_dir, k)  # a damaged newest resume state: the newest intact one, or step 0
    acc.wait_for_everyone()
    parts = fold_parts(cfg, comp, folds, k)
    fp = fingerprint(parts)
    resume, state, _ = find_resume(fold_dir)
    if resume is None and checkpoint_dirs(fold_dir):
        raise UserError(f"{fold_dir} has checkpoints but no resume state or done.json (train.resume_state=false "
                        f"keeps none): delete it to train fold {k} again")
    if state is not None:
        check_reuse(fold_dir, state, parts, "half-trained fold")
    set_seed(t.seed + k)

    model, tokenizer = tm.build_model(cfg, comp.labels, checkpoint=resume)
    if state is not None and "weights" in state:  # half-precision weight files: the exact weights are in resume.pt
        model.load_state_dict(state["weights"])
    in_valid = folds["fold"].to_numpy() == k
    valid_rows = np.flatnonzero(in_valid)
    texts, Y, train_rows = teacher.training_set(cfg, comp, folds, k)  # train.csv (+ a teacher's pseudo-labels)
    seqs = tm.encode(tokenizer, texts, cfg)
    lengths = np.array([len(s) for s in seqs])[train_rows]
    pad_id, side = tokenizer.pad_token_id, tokenizer.padding_side
    weights = pos_weight(comp.Y[~in_valid].astype(np.float32), t.pos_weight, t.pos_weight_clip)  # labeled rows
    loss_fn = make_loss(t, torch.from_numpy(weights))

    world, rank = acc.num_processes, acc.process_index
    n_micro = len(epoch_batches(lengths, t.batch_size, world, 0, False, t.drop_last))
    steps_per_epoch = math.ceil(n_micro / t.grad_accum)
    total = t.max_steps if t.max_steps > 0 else math.ceil(t.epochs * steps_per_epoch)
    if main:  # the run's checkpoints must fit the disk: found now, not hours in
        evals = len({*range(t.eval_every, total + 1, t.eval_every or total + 1),
                     *range(steps_per_epoch, total + 1, steps_per_epoch), total})
        todo = [j for j in folds_for_run(cfg) if not (rd.fold(j) / "done.json").is_file()]
        check_disk(fold_dir, cfg, *footprint(model, cfg), kept=t.keep_top_k or evals, folds_left=len(todo))
    if cfg.model.method != "qlora":  # a 4-bit model is placed on its GPU when loaded and cannot be moved
        model.to(acc.device)
    opt, sched = make_optimizer(model, cfg, total)
    ema = EMA(model, t.ema) if t.ema > 0 else None  # resumed: the checkpoint holds the averaged weights
    if world > 1:  # same initial weights everywhere (seeded above), then a dropout stream of each process's own
        set_seed(t.seed + k, device_specific=True)
    pos = {"step": 0, "epoch": 0, "micro": 0, "elapsed_s": 0.0}
    if state is not None:
        if state.get("processes", world) != world:
            raise UserError(f"{resume} was saved by {state['processes']} processes; resume it with as many")
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        restore_rng(state["rng"], acc)
        if ema is not None:  # back to the raw weights the optimizer was training
            ema.load_raw(state["raw_params"])
        pos = state["position"]
    model, opt = acc.prepare(model, opt)
    if t.compile != "none":  # evaluation and saving use the plain module (unwrap_model(keep_torch_compile=False))
        model = torch.compile(model, mode=None if t.compile == "default" else t.compile)
    model.train()
    cuda = acc.device.type == "cuda"
    multiple = t.pad_to_multiple or (8 if cuda else 1)
    graphs = t.compile in GRAPH_MODES

    step, epoch, start_micro = pos["step"], pos["epoch"], pos["micro"]
    history = fold_dir / "history.jsonl"
    if main:
        acc.print(f"[{cfg.exp}] fold {k}: {len(train_rows)} train / {len(valid_rows)} held-out rows, {total} steps "
                  f"({steps_per_epoch}/epoch, batch {t.batch_size}x{world} proc x{t.grad_accum} accum), "
                  f"{tm.describe(model)}, precision {tm.resolve_precision(cfg)}, device {acc.device}"
                  + (f"; resuming at step {step} from {resume}" if resume else ""))
        if cfg.teacher.exp:
            acc.print(f"[{cfg.exp}] fold {k}: {teacher.describe(cfg, comp, folds, k)}")
        _append(history, {"event": "resume" if resume else "start", "step": step, "total_steps": total,
                          "processes": world})
    if t.report_to == "wandb":
        acc.init_trackers(cfg.extra.get("wandb_project", "multilabel-text"), config=to_dict(cfg),
                          init_kwargs={"wandb": {"name": f"{cfg.exp}-fold{k}", "group": cfg.exp}})

    zero = torch.zeros((), device=acc.device)
    step_loss, log_loss, eval_loss = zero.clone(), zero.clone(), zero.clone()
    log_steps = eval_steps = log_rows = 0
    t_log, last_f1 = time.time(), float("nan")
    bar = tqdm(total=total, initial=step, desc=f"fold {k}", unit="step", disable=not main, dynamic_ncols=True)
    while step < total:
        batches = epoch_batches(lengths, t.batch_size, world, t.seed + k + 7919 * epoch, t.group_by_length,
                                t.drop_last)
        for i in range(start_micro, len(batches)):
            rows = train_rows[batches[i][rank::world]]
            group = min(t.grad_accum, len(batches) - (i - i % t.grad_accum))  # micro-batches in this update
            sync = (i + 1) % t.grad_accum == 0 or i + 1 == len(batches)
            batch = tm.pad_batch([seqs[r] for r in rows], pad_id, side, multiple)
            batch["labels"] = torch.from_numpy(Y[rows])
            if cuda:  # pinned host memory makes the copies asynchronous
                batch = {key: v.pin_memory() for key, v in batch.items()}
            batch = {key: v.to(acc.device, non_blocking=True) for key, v in batch.items()}
            y = batch.pop("labels")
            if graphs:  # a new iteration: outputs of the previous replay may be overwritten
                torch.compiler.cudagraph_mark_step_begin()
            with contextlib.nullcontext() if sync else acc.no_sync(model):
                loss = loss_fn(model(**batch).logits, y) / group
                acc.backward(loss)
            step_loss += loss.detach()
            log_rows += len(rows) * world
            if not sync:
                continue
            lr = t.lr * lr_factor(sched.last_epoch, total, round(t.warmup_ratio * total), t.scheduler)  # this step's
            optimizer_step(acc, model, opt, sched, ema, step, t.max_grad_norm)
            step += 1  # counts updates tried, skipped ones too (they still used their batches)
            log_loss += step_loss
            eval_loss += step_loss
            step_loss.zero_()
            log_steps += 1
            eval_steps += 1
            bar.update(1)

            if step % t.log_every == 0 or step == total:  # the only host syncs besides evaluation
                train_loss = log_loss.item() / log_steps
                rate = log_rows / (time.time() - t_log)
                bar.set_postfix(loss=f"{train_loss:.4f}", f1=f"{last_f1:.4f}", lr=f"{lr:.2e}")
                if main:
                    _append(history, {"step": step, "train_loss": train_loss, "lr": lr, "samples_per_s": rate})
                acc.log({"train/loss": train_loss, "train/lr": lr, "train/samples_per_s": rate}, step=step)
                log_loss.zero_()
                log_steps, log_rows, t_log = 0, 0, time.time()

            epoch_end = i + 1 == len(batches)
            if (t.eval_every > 0 and step % t.eval_every == 0) or epoch_end or step == total:
                train_loss = acc.reduce(eval_loss, "mean").item() / max(eval_steps, 1)
                eval_loss.zero_()
                eval_steps = 0
                nxt = {"epoch": epoch + 1, "micro": 0} if epoch_end else {"epoch": epoch, "micro": i + 1}
                elapsed = pos["elapsed_s"] + time.time() - t0
                with ema.applied() if ema is not None else contextlib.nullcontext() as raw:
                    logits = evaluate(acc, model, seqs, valid_rows, pad_id, side, t.eval_batch_size)
                    if not np.isfinite(logits).all():  # every process holds all logits: all stop, nothing saved
                        raise UserError(f"fold {k} diverged at step {step} (NaN/inf outputs): lower train.lr (now "
                                        f"{t.lr:g}), raise train.warmup_ratio or keep train.max_grad_norm > 0 "
                                        f"(fp16: try train.precision=bf16), then delete {fold_dir} to train it again")
                    rngs = rng_states(acc) if t.resume_state else None  # each process resumes with its own
                    if main:
                        scores, probs = eval_metrics(comp.Y[valid_rows], logits, comp.labels)
                        record = {"fold": k, "step": step, "epoch": round(step / steps_per_epoch, 4),
                                  "train_loss": train_loss, "val_loss": scores.pop("val_loss"), **scores,
                                  "lr": lr, "elapsed_s": round(elapsed, 2)}
                        state = None
                        if t.resume_state:
                            state = {"fingerprint": fp, "fingerprint_parts": parts, "processes": world,
                                     "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rngs,
                                     "position": {"step": step, **nxt, "elapsed_s": elapsed}}
                            if raw is not None:  # the checkpoint holds the averaged weights, resuming the raw ones
                                state["raw_params"] = [w.cpu() for w in raw]
                        plain = acc.unwrap_model(model, keep_torch_compile=False)
                        half = t.checkpoint_dtype != "float32" and not tm.is_peft(plain)
                        if state is not None and half:  # the weight files are rounded: resume from exact ones
                            state["weights"] = {n: w.detach().cpu() for n, w in plain.state_dict().items()}
                        kept = state is not None or makes_top_k(fold_dir, record, t.keep_top_k, t.keep_metric)
                        if kept:
                            saved = save_checkpoint(fold_dir, step, plain, tokenizer, record, probs, state,
                                                    t.checkpoint_dtype if half else None)
                            prune(fold_dir, t.keep_top_k, t.keep_metric, protect=saved if state else None)
                        bar.write(f"[{cfg.exp}] fold {k} step {step}/{total} (epoch {record['epoch']:.2f}): "
                                  f"train loss {train_loss:.4f}, val loss {record['val_loss']:.4f}, macro-F1 "
                                  f"{record['f1_at_0.5']:.4f} at 0.5 / {record['f1_tuned']:.4f} tuned"
                                  + ("" if kept else f" (not in the top {t.keep_top_k}: not saved)"))
                        _append(history, {"event": "eval", **{key: record[key] for key in (
                            "step", "epoch", "train_loss", "val_loss", "f1_at_0.5", "f1_tuned", "elapsed_s")}})
                        last_f1 = record["f1_tuned"]
                        bar.set_postfix(loss=f"{train_loss:.4f}", f1=f"{last_f1:.4f}", lr=f"{lr:.2e}")
                        acc.log({f"eval/{key}": record[key] for key in ("val_loss", "f1_at_0.5", "f1_tuned")},
                                step=step)
                        for callback in callbacks:
                            callback(record)
                    acc.wait_for_everyone()
            if step >= total:
                break
        else:
            epoch, start_micro = epoch + 1, 0
    bar.close()
    _finish_fold(cfg, fold_dir, k, step, pos["elapsed_s"] + time.time() - t0, acc, parts)


def _finish_fold(cfg: Config, fold_dir: Path, k: int, steps: int, elapsed: float, acc, parts: dict) -> None:
    """Prune to the best K, write done.json (with the fingerprint and its parts) and drop the resume state."""
    if acc.is_main_process:
        t = cfg.train
        prune(fold_dir, t.keep_top_k, t.keep_metric)
        ckpts = checkpoint_dirs(fold_dir)
        best: dict = {}
        for _, d in ckpts:
            m = read_metrics(d, ("f1_tuned", "f1_at_0.5", "val_loss"))  # a damaged one: skipped with a note
            if m is not None and (not best or m["f1_tuned"] > best["f1_tuned"]):
                best = {key: m.get(key) for key in ("step", "f1_tuned", "f1_at_0.5", "val_loss")}
        write_json(fold_dir / "done.json", {"fold": k, "fingerprint": fingerprint(parts),
                                            "fingerprint_parts": parts, "steps": steps,
                                            "elapsed_s": round(elapsed, 2),
                                            "checkpoints": [s for s, _ in ckpts], "best_f1_tuned": best})
        for _, d in ckpts:
            (d / RESUME).unlink(missing_ok=True)
        nan = float("nan")
        acc.print(f"[{cfg.exp}] fold {k} done in {elapsed:.0f} s: best macro-F1 {best.get('f1_tuned', nan):.4f} "
                  f"(at 0.5: {best.get('f1_at_0.5', nan):.4f}) at step {best.get('step')}")
    acc.wait_for_everyone()


def release_fold(acc, compiled: bool) -> None:
    """After a fold (finished or not): finish its W&B run and forget it, so the next fold's `init_trackers` starts
    one run of its own (`acc.end_training()` would also destroy the process group later folds need), and drop the
    Accelerator's references to the fold's model and optimizer (`free_memory` also collects garbage and empties
    the CUDA cache), with torch.compile's caches (and CUDA graph pools) when the fold compiled its model."""
    for tracker in acc.trackers:
        tracker.finish()
    acc.trackers = []
    if compiled:
        torch._dynamo.reset()
    acc.free_memory()


def accelerator(cfg: Config):
    """The Accelerator: mixed precision from `train.precision`, CPU processes when there is no CUDA GPU."""
    import importlib.util

    from accelerate import Accelerator

    if cfg.train.report_to not in ("none", "", "wandb"):
        raise UserError(f"train.report_to must be none or wandb, got {cfg.train.report_to!r}")
    if cfg.train.report_to == "wandb" and importlib.util.find_spec("wandb") is None:
        raise UserError("train.report_to=wandb needs `pip install wandb` and WANDB_API_KEY in the environment")
    if torch.cuda.is_available():  # TF32 matmuls for whatever still runs in float32
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Accelerator(mixed_precision=tm.resolve_precision(cfg), cpu=not torch.cuda.is_available(),
                       log_with="wandb" if cfg.train.report_to == "wandb" else None)


def check_train_config(cfg: Config) -> None:
    t = cfg.train
    if cfg.model_type != "transformer":
        raise UserError(f"src.train fine-tunes transformers: the config's model_type is {cfg.model_type!r}")
    if t.keep_metric not in KEEP_METRICS:
        raise UserError(f"train.keep_metric must be one of {KEEP_METRICS}, got {t.keep_metric!r}")
    for name in ("batch_size", "eval_batch_size", "grad_accum", "log_every"):
        if getattr(t, name) < 1:
            raise UserError(f"train.{name} must be >= 1, got {getattr(t, name)}")
    if t.max_steps <= 0 and t.epochs <= 0:
        raise UserError("set train.epochs > 0 or train.max_steps > 0")
    if cfg.model.method not in tm.METHODS:
        raise UserError(f"model.method must be one of {tm.METHODS}, got {cfg.model.method!r}")
    if t.scheduler not in ("linear", "cosine", "constant"):
        raise UserError(f"train.scheduler must be linear, cosine or constant, got {t.scheduler!r}")
    if not 0 < t.layer_lr_decay <= 1:
        raise UserError(f"train.layer_lr_decay must be in (0, 1], got {t.layer_lr_decay}")
    if not 0 <= t.ema < 1:
        raise UserError(f"train.ema must be in [0, 1) (0 = off; e.g. 0.999), got {t.ema}")
    if t.compile not in COMPILE_MODES:
        raise UserError(f"train.compile must be one of {COMPILE_MODES}, got {t.compile!r}")
    if t.compile in GRAPH_MODES and t.grad_accum > 1:
        raise UserError(f"train.compile={t.compile} (CUDA graphs) with train.grad_accum={t.grad_accum} overwrites the "
                        "accumulated gradients (pytorch#169545): use train.compile=default or "
                        "max-autotune-no-cudagraphs, or train.grad_accum=1")
    if t.checkpoint_dtype not in CHECKPOINT_DTYPES:
        raise UserError(f"train.checkpoint_dtype must be one of {', '.join(CHECKPOINT_DTYPES)}, got "
                        f"{t.checkpoint_dtype!r}")
    if t.pad_to_multiple < 0:
        raise UserError(f"train.pad_to_multiple must be >= 0 (0 = 8 on GPU, 1 on CPU), got {t.pad_to_multiple}")
    make_loss(t)  # checks train.loss and train.label_smoothing
    tm.resolve_precision(cfg)


def train_folds(cfg: Config, comp: Competition, folds, rd: RunDir,
                callbacks: tuple[Callable[[dict], None], ...] = ()) -> None:
    """Train every fold of `folds_for_run(cfg)`: skip finished folds (done.json), resume an unfinished one.
    `callbacks` get each checkpoint's metrics record (main process). Every fold is checked first (`preflight`)."""
    preflight(cfg, comp, folds, rd)
    acc = accelerator(cfg)
    if acc.is_main_process:
        record_run_data(cfg, comp, rd)
        report_token_lengths(cfg, comp, rd)
    for k in folds_for_run(cfg):
        if check_fold(cfg, comp, folds, rd, k):
            acc.print(f"[{cfg.exp}] fold {k}: already trained ({rd.fold(k) / 'done.json'}), skipped")
            continue
        try:
            train_fold(cfg, comp, folds, rd, k, acc, callbacks)
        finally:
            release_fold(acc, compiled=cfg.train.compile != "none")


def report_token_lengths(cfg: Config, comp: Competition, rd: RunDir) -> dict:
    """One line (and report/token_lengths.png) on how many texts `model.max_length` truncates, to choose it."""
    from src import report

    counts = tm.token_counts(cfg, comp.train_texts + comp.test_texts)
    stats = report.token_lengths(counts, cfg.model.max_length,
                                 rd.report / "token_lengths.png" if cfg.output.plots else None,
                                 f"Token lengths of train + test texts ({Path(cfg.model.name_or_path).name} tokenizer)")
    print(f"[{cfg.exp}] tokens per text (train + test): median {stats['p50']}, 95th percentile {stats['p95']}, max "
          f"{stats['max']}; model.max_length {cfg.model.max_length} truncates {100 * stats['truncated_share']:.1f}% "
          "of texts")
    return stats


def train_run(cfg: Config, comp: Competition, folds, rd: RunDir,
              callbacks: tuple[Callable[[dict], None], ...] = ()) -> None:
    """Every check (`preflight`: settings, this data's run folder, each fold's reuse), then under the run lock (a
    subset of folds: those folds' locks): writable outputs, config.yaml, and `train_folds`. What `python -m src.train`,
    train.sh and the notebooks run."""
    from accelerate import PartialState

    preflight(cfg, comp, folds, rd)  # every fold's reuse checked before any write
    main_process = PartialState().is_main_process
    some = folds_for_run(cfg) if cfg.folds.run else None  # a subset: other processes may train the other folds
    with run_lock(rd, some) if main_process else contextlib.nullcontext():
        if main_process:
            prepare_outputs(rd, cfg, comp, folds=some)
            write_text(rd.config, dump_config(cfg, absolute=True))
        train_folds(cfg, comp, folds, rd, callbacks)


@cli
def main(argv: list[str] | None = None) -> None:
    from accelerate import PartialState

    from src.pipeline import setup_run

    p = ArgParser(prog="python -m src.train", description="Fine-tune a transformer per fold.")
    p.add_argument("--config", required=True, help="YAML config with model_type: transformer")
    p.add_argument("--folds", default=None, help="folds to train, e.g. 0,3 or 0-4 (sets folds.run; default: all)")
    p.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. train.max_steps=300")
    a = p.parse_intermixed_args(argv)
    cfg = load_config(a.config, a.overrides)
    if a.folds is not None:
        cfg.folds.run = parse_folds(a.folds, cfg.folds.n_folds)
    check_train_config(cfg)
    state = PartialState(cpu=not torch.cuda.is_available())
    with state.main_process_first():  # the fold file made once
        comp, folds, rd = setup_run(cfg, verbose=state.is_main_process)
    train_run(cfg, comp, folds, rd)


if __name__ == "__main__":
    main()
