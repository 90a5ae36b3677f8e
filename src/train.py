"""Fine-tune a transformer per fold: the training loop (accelerate), a checkpoint at every evaluation, resume.

    python -m src.train --config configs/minilm-l6.yaml [--folds 0,3] [key=value ...]
    accelerate launch --multi_gpu --num_processes 2 -m src.train --config ...   # 2 GPUs (or 2 CPU processes)

The same code runs on CPU, one GPU or several (DDP through `accelerate launch`; on a machine without CUDA the
processes train on CPU), and means the same training on each: `train.batch_size` x `train.grad_accum` rows per
update is the global batch, split over the processes (`batch_plan`). Per fold k, in checkpoints/<exp>/fold<k>/:
    step<N>/       at every evaluation (each `train.eval_every` steps, each epoch end, the last step):
                   weights (full/last_n) or LoRA adapter + head, tokenizer, metrics.json, valid_probs.npy;
                   the newest one also holds resume.pt (optimizer, scheduler, fp16 loss scale, each process's
                   RNG, data position; resumed by as many processes as saved it)
    history.jsonl  training loss every `train.log_every` steps, every evaluation, every resume
    done.json      the fold is finished (fingerprint, steps, processes, best checkpoint): later runs skip it
                   (delete the fold's folder to train it again)
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
import json
import math
import random
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from src import memory, metrics, precision, teacher, thresholds, tracking
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
    value,
)
from src.config import Config, ThresholdConfig, TrainConfig, dump_config, load_config, to_dict
from src.data import Competition
from src.ema import EMA
from src.errors import ArgParser, UserError, cli
from src.fileio import read_json, write_json, write_text
from src.fingerprint import check_reuse, fingerprint, fingerprint_parts, read_done
from src.folds import folds_for_run, parse_folds
from src.losses import make_loss
from src.models import transformer as tm
from src.progress import tqdm
from src.rundir import RunDir, check_probs, checkpoint_dirs
from src.runguard import check_run_data, prepare_outputs, record_run_data, run_lock
from src.weights import pos_weight

KEEP_METRICS = ("score", "f1_tuned", "f1_at_0.5", "val_loss")  # score: the run's metric (data.metric)
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

def eval_metrics(Y: np.ndarray, logits: np.ndarray, labels: list[str], metric: str = "macro_f1"
                 ) -> tuple[dict, np.ndarray]:
    """Held-out metrics (val_loss = plain BCE, macro-F1 at 0.5 and at per-label tuned thresholds, and `score`: the
    run's metric at decisions fitted on these rows, signed so that higher is better) and the probs."""
    lt = torch.from_numpy(logits)
    probs = check_probs(torch.sigmoid(lt).numpy(), labels, "held-out probabilities")  # never NaN into a checkpoint
    val_loss = F.binary_cross_entropy_with_logits(lt, torch.from_numpy(Y.astype(np.float32))).item()
    th = thresholds.tune(Y, probs, ThresholdConfig(mode="per_label"))
    f1_tuned = metrics.f1_per_label(Y, thresholds.apply(probs, th))
    f1_05 = metrics.f1_per_label(Y, probs >= 0.5)
    score = float(f1_tuned.mean()) if metric == "macro_f1" else thresholds.held_out_score(Y, probs, labels, metric)
    return {
        "val_loss": val_loss,
        "f1_at_0.5": float(f1_05.mean()),
        "f1_tuned": float(f1_tuned.mean()),
        "metric": metric,
        "score": score,
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
    """This process's RNG state: python, numpy, torch CPU and its own GPU's (dropout); numbers, lists and tensors
    only, so resume.pt loads with `weights_only=True`."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                     gauss), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]  # the key array as a tensor (an earlier version saved numpy's own array)
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
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


def fold_parts(cfg: Config, comp: Competition, folds, k: int) -> dict:
    parts = fingerprint_parts(cfg, comp, folds["id"].to_numpy()[folds["fold"].to_numpy() == k])
    lessons = teacher.fingerprint_part(cfg, comp, folds)
    if lessons is not None:  # only with a teacher: folds trained without one keep their fingerprint
        parts["teacher"] = lessons
    return parts


def fold_fingerprint(cfg: Config, comp: Competition, folds, k: int) -> str:
    return fingerprint(fold_parts(cfg, comp, folds, k))


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
    elif not broken and checkpoint_dirs(fold_dir) and cfg.train.resume_state:
        raise UserError(f"{fold_dir} has checkpoints but no resume state or done.json (a run with "
                        f"train.resume_state=false keeps none): delete it to train fold {k} again")
    return False


def preflight(cfg: Config, comp: Competition, folds, rd: RunDir) -> None:
    """Everything checkable before training starts: the settings (`check_train_config`), the run folder holding this
    data's run (`check_run_data`), and every run fold's done.json or resume state against its fingerprint (a
    mismatch on fold 7 is found before fold 0 trains)."""
    check_train_config(cfg)
    batch_plan(cfg.train, processes())  # the global batch splits over the processes
    tm.check_max_length(cfg)
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

def processes() -> int:
    """The number of training processes (`accelerate launch --num_processes`; 1 without it)."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available()).num_processes


@dataclass(frozen=True)
class BatchPlan:
    """How one update's `train.batch_size` x `train.grad_accum` rows are spread over the processes: `micro` rows
    per process per forward, `accum` forwards per update, `world` processes. The global batch is the config's on
    any number of GPUs, so a config means the same training (steps, LR schedule) on 1 or 8 of them."""
    micro: int
    accum: int
    world: int


def batch_plan(t: TrainConfig, world: int) -> BatchPlan:
    """The largest per-process micro-batch (at most `train.batch_size`) that splits the update's rows evenly; a
    global batch that does not split over the processes is a UserError."""
    rows = t.batch_size * t.grad_accum
    if rows % world:
        raise UserError(f"train.batch_size={t.batch_size} x train.grad_accum={t.grad_accum} = {rows} rows per update "
                        f"do not split over {world} processes: use a multiple of {world} (the global batch is kept "
                        "on any number of GPUs), or launch another number of processes (NUM_PROCESSES)")
    share = rows // world
    micro = max(m for m in range(1, min(t.batch_size, share) + 1) if share % m == 0)
    plan = BatchPlan(micro, share // micro, world)
    if t.compile in GRAPH_MODES and plan.accum > 1:
        raise UserError(f"train.compile={t.compile} (CUDA graphs) with {plan.accum} accumulated micro-batches per "
                        f"update (train.grad_accum={t.grad_accum}, {world} processes) overwrites the accumulated "
                        "gradients (pytorch#169545): use train.compile=default or max-autotune-no-cudagraphs, or "
                        "train.grad_accum=1")
    return plan


@dataclass
class Fold:
    """One fold's training, as `setup_fold` builds it: the model and optimizer (prepared by accelerate), the
    tokenized texts, the rows, the batch plan and the position to start from."""
    cfg: Config
    k: int
    dir: Path
    acc: Any
    model: Any
    tokenizer: Any
    opt: Any
    sched: Any
    ema: EMA | None
    loss_fn: Callable
    seqs: list  # token ids of train.csv's texts (+ a teacher's pseudo rows after them)
    Y: np.ndarray  # their training targets
    Y_valid: np.ndarray  # train.csv's labels of the held-out rows
    labels: list[str]
    train_rows: np.ndarray
    valid_rows: np.ndarray
    lengths: np.ndarray  # tokens of each training row
    plan: BatchPlan
    total: int
    steps_per_epoch: int
    parts: dict  # the fingerprint parts
    resume: Path | None
    pos: dict  # step, epoch, micro (the next micro-batch), elapsed_s
    t0: float = field(default_factory=time.time)

    @property
    def elapsed(self) -> float:
        return self.pos["elapsed_s"] + time.time() - self.t0


def _open_fold_dir(cfg: Config, fold_dir: Path, k: int, acc) -> None:
    """Create the fold folder, drop interrupted checkpoint writes and pass over a damaged newest resume state; a
    fold cut short under `train.resume_state: false` (checkpoints, nothing to resume from) starts again."""
    if acc.is_main_process:
        try:
            fold_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create {fold_dir}: {e.strerror or e}") from None
        for tmp in fold_dir.glob(".tmp-step*"):  # a checkpoint interrupted while being written
            shutil.rmtree(tmp, ignore_errors=True)
        repair_resume(fold_dir, k)  # a damaged newest resume state: the newest intact one, or step 0
        left = checkpoint_dirs(fold_dir)
        if left and not cfg.train.resume_state and find_resume(fold_dir, mmap=True)[0] is None:
            for _, d in left:
                shutil.rmtree(d, ignore_errors=True)
            print(f"note: fold {k} was cut short with train.resume_state=false (no state to resume from): it trains "
                  f"again from step 0 ({len(left)} checkpoint(s) of the cut run removed)", flush=True)
    acc.wait_for_everyone()


def _resume_point(fold_dir: Path, k: int, parts: dict) -> tuple[Path | None, dict | None]:
    """The newest intact checkpoint with resume state and that state (checked against the fold's fingerprint)."""
    resume, state, _ = find_resume(fold_dir)
    if resume is None and checkpoint_dirs(fold_dir):
        raise UserError(f"{fold_dir} has checkpoints but no resume state or done.json (a run with "
                        f"train.resume_state=false keeps none): delete it to train fold {k} again")
    if state is not None:
        check_reuse(fold_dir, state, parts, "half-trained fold")
    return resume, state


def _restore(f: Fold, state: dict) -> None:
    """Optimizer, schedule, fp16 loss scale, RNG, EMA and data position from a resume state."""
    if state.get("processes", f.plan.world) != f.plan.world:
        raise UserError(f"{f.resume} was saved by {state['processes']} processes; resume it with as many")
    f.opt.load_state_dict(state["optimizer"])
    f.sched.load_state_dict(state["scheduler"])
    scaler = getattr(f.acc, "scaler", None)
    if scaler is not None and state.get("scaler"):  # fp16: the loss scale it had reached, not 65536 again
        scaler.load_state_dict(state["scaler"])
    restore_rng(state["rng"], f.acc)
    if f.ema is not None:  # back to the raw weights the optimizer was training
        f.ema.load_raw(state["raw_params"])
    f.pos = state["position"]


def setup_fold(cfg: Config, comp: Competition, folds, rd: RunDir, k: int, acc) -> Fold:
    """Everything fold k's loop needs: the model (from its newest resume state, if any), tokenized texts, the
    loss with the fold's pos_weight (on the device once), the batch plan and step count, optimizer, schedule and
    EMA (restored when resuming), prepared by accelerate (and compiled with `train.compile`)."""
    from accelerate.utils import set_seed

    t = cfg.train
    fold_dir = rd.fold(k)
    _open_fold_dir(cfg, fold_dir, k, acc)
    parts = fold_parts(cfg, comp, folds, k)
    resume, state = _resume_point(fold_dir, k, parts)
    set_seed(t.seed + k)
    model, tokenizer = tm.build_model(cfg, comp.labels, checkpoint=resume)
    if state is not None and "weights" in state:  # half-precision weight files: the exact weights are in resume.pt
        model.load_state_dict(state["weights"])
    in_valid = folds["fold"].to_numpy() == k
    texts, Y, train_rows = teacher.training_set(cfg, comp, folds, k)  # train.csv (+ a teacher's pseudo-labels)
    weights = pos_weight(comp.Y[~in_valid].astype(np.float32), t.pos_weight, t.pos_weight_clip)  # labeled rows
    plan = batch_plan(t, acc.num_processes)
    seqs = tm.encode(tokenizer, texts, cfg)
    lengths = np.array([len(seqs[r]) for r in train_rows])
    n_micro = len(epoch_batches(lengths, plan.micro, plan.world, 0, False, t.drop_last))
    steps_per_epoch = math.ceil(n_micro / plan.accum)
    total = t.max_steps if t.max_steps > 0 else math.ceil(t.epochs * steps_per_epoch)
    if acc.is_main_process:  # the run's checkpoints must fit the disk: found now, not hours in
        _check_fold_disk(cfg, rd, fold_dir, model, total, steps_per_epoch)
    if cfg.model.method != "qlora":  # a 4-bit model is placed on its GPU when loaded and cannot be moved
        model.to(acc.device)
    opt, sched = make_optimizer(model, cfg, total)
    ema = EMA(model, t.ema) if t.ema > 0 else None  # resumed: the checkpoint holds the averaged weights
    if plan.world > 1:  # same initial weights everywhere (seeded above), then a dropout stream of each process's own
        set_seed(t.seed + k, device_specific=True)
    f = Fold(cfg, k, fold_dir, acc, model, tokenizer, opt, sched, ema,
             make_loss(t, torch.from_numpy(weights).to(acc.device)), seqs, Y, comp.Y[in_valid], list(comp.labels),
             train_rows, np.flatnonzero(in_valid), lengths, plan, total, steps_per_epoch, parts, resume,
             {"step": 0, "epoch": 0, "micro": 0, "elapsed_s": 0.0})
    if state is not None:
        _restore(f, state)
    f.model, f.opt = acc.prepare(model, opt)
    if t.compile != "none":  # evaluation and saving use the plain module (unwrap_model(keep_torch_compile=False))
        f.model = torch.compile(f.model, mode=None if t.compile == "default" else t.compile)
    f.model.train()
    return f


def evaluations(total: int, eval_every: int, steps_per_epoch: int) -> int:
    """How many evaluations a fold of `total` steps makes: every `eval_every` steps, at each epoch end and at the
    last step (counted, not listed: `train.max_steps` may be huge)."""
    every, epoch = eval_every or total + 1, steps_per_epoch
    both = math.lcm(every, epoch)
    n = total // every + total // epoch - total // both
    return n + (total % every != 0 and total % epoch != 0)


def _check_fold_disk(cfg: Config, rd: RunDir, fold_dir: Path, model, total: int, steps_per_epoch: int) -> None:
    t = cfg.train
    evals = evaluations(total, t.eval_every, steps_per_epoch)
    todo = [j for j in folds_for_run(cfg) if not (rd.fold(j) / "done.json").is_file()]
    check_disk(fold_dir, cfg, *footprint(model, cfg, tm.is_peft(model)), kept=t.keep_top_k or evals,
               folds_left=len(todo))


def device_batch(f: Fold, rows: np.ndarray) -> tuple[dict, torch.Tensor]:
    """The padded inputs and targets of `rows` on the training device (pinned host memory: asynchronous copies)."""
    t = f.cfg.train
    cuda = f.acc.device.type == "cuda"
    batch = tm.pad_batch([f.seqs[r] for r in rows], f.tokenizer.pad_token_id, f.tokenizer.padding_side,
                         t.pad_to_multiple or (8 if cuda else 1))
    batch["labels"] = torch.from_numpy(f.Y[rows])
    if cuda:
        batch = {key: v.pin_memory() for key, v in batch.items()}
    batch = {key: v.to(f.acc.device, non_blocking=True) for key, v in batch.items()}
    return batch, batch.pop("labels")


def update(f: Fold, group: list[np.ndarray], step: int) -> torch.Tensor:
    """One optimizer update from a group of global micro-batches (this process takes every world-th row of each;
    gradients are all-reduced on the group's last one only). Returns the update's loss, on the device."""
    acc, plan = f.acc, f.plan
    loss_sum = torch.zeros((), device=acc.device)
    for j, global_rows in enumerate(group):
        batch, y = device_batch(f, f.train_rows[global_rows[acc.process_index::plan.world]])
        if f.cfg.train.compile in GRAPH_MODES:  # a new iteration: outputs of the previous replay may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        with contextlib.nullcontext() if j + 1 == len(group) else acc.no_sync(f.model):
            loss = f.loss_fn(f.model(**batch).logits, y) / len(group)
            acc.backward(loss)
        loss_sum += loss.detach()
    optimizer_step(acc, f.model, f.opt, f.sched, f.ema, step, f.cfg.train.max_grad_norm)
    return loss_sum


class Meter:
    """The training loss and speed between logs and between evaluations, kept on the device (read only at a log
    or an evaluation: no host sync per step), the progress bar and history.jsonl's loss lines."""

    def __init__(self, f: Fold, step: int):
        self.f, self.main = f, f.acc.is_main_process
        zero = torch.zeros((), device=f.acc.device)
        self.log_loss, self.eval_loss = zero.clone(), zero.clone()
        self.log_steps = self.eval_steps = self.rows = 0
        self.t_log, self.shown = time.time(), {}
        self.bar = tqdm(total=f.total, initial=step, desc=f"fold {f.k}", unit="step", disable=not self.main,
                        dynamic_ncols=True)

    def add(self, loss: torch.Tensor, rows: int) -> None:
        self.log_loss += loss
        self.eval_loss += loss
        self.log_steps, self.eval_steps, self.rows = self.log_steps + 1, self.eval_steps + 1, self.rows + rows
        self.bar.update(1)

    def show(self, **values) -> None:
        self.shown.update(values)  # f1 appears once there is an evaluation
        self.bar.set_postfix(self.shown, refresh=False)  # shown at the bar's next refresh: a log stays quiet

    def log(self, step: int, lr: float) -> None:
        train_loss = self.log_loss.item() / self.log_steps
        rate = self.rows / (time.time() - self.t_log)
        self.show(loss=f"{train_loss:.4f}", lr=f"{lr:.2e}")
        if self.main:
            _append(self.f.dir / "history.jsonl", {"step": step, "train_loss": train_loss, "lr": lr,
                                                   "samples_per_s": rate})
        self.f.acc.log({"train/loss": train_loss, "train/lr": lr, "train/samples_per_s": rate}, step=step)
        self.log_loss.zero_()
        self.log_steps, self.rows, self.t_log = 0, 0, time.time()

    def take_eval_loss(self) -> float:
        """The training loss averaged over the updates since the last evaluation (and over the processes)."""
        mean = self.f.acc.reduce(self.eval_loss, "mean").item() / max(self.eval_steps, 1)
        self.eval_loss.zero_()
        self.eval_steps = 0
        return mean


def _resume_state(f: Fold, step: int, nxt: dict, rngs: list, raw) -> dict:
    """What resuming after this evaluation needs: fingerprint, optimizer, schedule, fp16 loss scale, every
    process's RNG, the data position, and the raw weights under an EMA or half-precision weight files."""
    state = {"fingerprint": fingerprint(f.parts), "fingerprint_parts": f.parts, "processes": f.plan.world,
             "optimizer": f.opt.state_dict(), "scheduler": f.sched.state_dict(), "rng": rngs,
             "position": {"step": step, **nxt, "elapsed_s": f.elapsed}}
    scaler = getattr(f.acc, "scaler", None)
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    if raw is not None:  # the checkpoint holds the averaged weights, resuming the raw ones
        state["raw_params"] = [w.cpu() for w in raw]
    plain = f.acc.unwrap_model(f.model, keep_torch_compile=False)
    if f.cfg.train.checkpoint_dtype != "float32" and not tm.is_peft(plain):  # rounded weight files: exact ones here
        state["weights"] = {n: w.detach().cpu() for n, w in plain.state_dict().items()}
    return state


def _save(f: Fold, step: int, record: dict, probs: np.ndarray, state: dict | None) -> bool:
    """Write step<N>/ when it is needed (resume state) or ranks in the top `train.keep_top_k`; prune the rest."""
    t = f.cfg.train
    if state is None and not makes_top_k(f.dir, record, t.keep_top_k, t.keep_metric):
        return False
    plain = f.acc.unwrap_model(f.model, keep_torch_compile=False)
    half = t.checkpoint_dtype != "float32" and not tm.is_peft(plain)
    saved = save_checkpoint(f.dir, step, plain, f.tokenizer, record, probs, state, t.checkpoint_dtype if half else None)
    prune(f.dir, t.keep_top_k, t.keep_metric, protect=saved if state else None)
    return True


def evaluate_and_checkpoint(f: Fold, step: int, nxt: dict, train_loss: float, lr: float, meter: Meter,
                            callbacks: tuple[Callable[[dict], None], ...]) -> None:
    """Score the held-out rows (every process), stop on NaN/inf before anything is written, then (main process)
    write the checkpoint if kept, log the evaluation and call the callbacks with its metrics record."""
    acc, t = f.acc, f.cfg.train
    with f.ema.applied() if f.ema is not None else contextlib.nullcontext() as raw:
        logits = evaluate(acc, f.model, f.seqs, f.valid_rows, f.tokenizer.pad_token_id, f.tokenizer.padding_side,
                          t.eval_batch_size)
        if not np.isfinite(logits).all():  # every process holds all logits: all stop, nothing saved
            raise UserError(f"fold {f.k} diverged at step {step} (NaN/inf outputs): lower train.lr (now {t.lr:g}), "
                            "raise train.warmup_ratio or keep train.max_grad_norm > 0 (fp16: try "
                            f"train.precision=bf16), then delete {f.dir} to train it again")
        rngs = rng_states(acc) if t.resume_state else None  # each process resumes with its own (a collective)
        if acc.is_main_process:
            scores, probs = eval_metrics(f.Y_valid, logits, f.labels, f.cfg.data.metric)
            record = {"fold": f.k, "step": step, "epoch": round(step / f.steps_per_epoch, 4),
                      "train_loss": train_loss, "val_loss": scores.pop("val_loss"), **scores, "lr": lr,
                      "elapsed_s": round(f.elapsed, 2)}
            kept = _save(f, step, record, probs, _resume_state(f, step, nxt, rngs, raw) if t.resume_state else None)
            meter.bar.write(f"[{f.cfg.exp}] fold {f.k} step {step}/{f.total} (epoch {record['epoch']:.2f}): train "
                            f"loss {train_loss:.4f} ({objective(t)}), val loss {record['val_loss']:.4f} (plain "
                            "BCE), macro-F1 "
                            f"{record['f1_at_0.5']:.4f} at 0.5 / {record['f1_tuned']:.4f} tuned"
                            + _other_metric(record)
                            + ("" if kept else f" (not in the top {t.keep_top_k}: not saved)"))
            _append(f.dir / "history.jsonl", {"event": "eval", **{key: record[key] for key in (
                "step", "epoch", "train_loss", "val_loss", "f1_at_0.5", "f1_tuned", "score", "elapsed_s")}})
            meter.show(loss=f"{train_loss:.4f}", f1=f"{record['f1_tuned']:.4f}", lr=f"{lr:.2e}")
            acc.log({f"eval/{key}": record[key] for key in ("val_loss", "f1_at_0.5", "f1_tuned")}
                    | {f"eval/{record['metric']}": abs(record["score"])}, step=step)
            for callback in callbacks:
                callback(record)
        acc.wait_for_everyone()


def _announce(f: Fold, comp: Competition, folds) -> None:
    """The fold's one-line plan (rows, steps, batch split, trainable parameters, precision, device), its history
    line and, with `train.report_to: wandb`, its W&B run."""
    cfg, acc, plan, step = f.cfg, f.acc, f.plan, f.pos["step"]
    if acc.is_main_process:
        acc.print(f"[{cfg.exp}] fold {f.k}: {len(f.train_rows)} train / {len(f.valid_rows)} held-out rows, {f.total} "
                  f"steps ({f.steps_per_epoch}/epoch, batch {plan.micro * plan.world * plan.accum} = {plan.micro} "
                  f"x {plan.world} proc x {plan.accum} accum), {tm.describe(f.model)}, precision "
                  f"{tm.resolve_precision(cfg)}, device {acc.device}"
                  + (f"; resuming at step {step} from {f.resume}" if f.resume else ""))
        if cfg.teacher.exp:
            acc.print(f"[{cfg.exp}] fold {f.k}: {teacher.describe(cfg, comp, folds, f.k)}")
        _append(f.dir / "history.jsonl", {"event": "resume" if f.resume else "start", "step": step,
                                          "total_steps": f.total, "processes": plan.world})
    if cfg.train.report_to == "wandb":
        acc.init_trackers(tracking.project(cfg), config=to_dict(cfg),
                          init_kwargs={"wandb": {"name": f"{cfg.exp}-fold{f.k}", "group": cfg.exp}})


def train_fold(cfg: Config, comp: Competition, folds, rd: RunDir, k: int, acc,
               callbacks: tuple[Callable[[dict], None], ...] = ()) -> None:
    """Train fold k on its training rows, evaluating and checkpointing on its held-out rows."""
    f = setup_fold(cfg, comp, folds, rd, k, acc)
    _announce(f, comp, folds)
    t, plan = cfg.train, f.plan
    step, epoch, start = f.pos["step"], f.pos["epoch"], f.pos["micro"]
    warmup = round(t.warmup_ratio * f.total)
    meter = Meter(f, step)
    while step < f.total:
        batches = epoch_batches(f.lengths, plan.micro, plan.world, t.seed + k + 7919 * epoch, t.group_by_length,
                                t.drop_last)
        for first in range(start, len(batches), plan.accum):
            group = batches[first:first + plan.accum]
            lr = t.lr * lr_factor(f.sched.last_epoch, f.total, warmup, t.scheduler)  # this update's
            meter.add(update(f, group, step), sum(len(b) for b in group))
            step += 1  # counts updates tried, skipped ones too (they still used their batches)
            if step % t.log_every == 0 or step == f.total:  # the only host syncs besides evaluation
                meter.log(step, lr)
            epoch_end = first + len(group) == len(batches)
            if (t.eval_every > 0 and step % t.eval_every == 0) or epoch_end or step == f.total:
                nxt = {"epoch": epoch + 1, "micro": 0} if epoch_end else {"epoch": epoch, "micro": first + len(group)}
                evaluate_and_checkpoint(f, step, nxt, meter.take_eval_loss(), lr, meter, callbacks)
            if step >= f.total:
                break
        else:
            epoch, start = epoch + 1, 0
    meter.bar.close()
    _finish_fold(f, step)


def _finish_fold(f: Fold, steps: int) -> None:
    """Prune to the best K, write done.json (fingerprint and its parts, process count, best checkpoint) and drop
    the resume state."""
    acc, t = f.acc, f.cfg.train
    if acc.is_main_process:
        prune(f.dir, t.keep_top_k, t.keep_metric)
        ckpts = checkpoint_dirs(f.dir)
        best: dict = {}
        for _, d in ckpts:
            m = read_metrics(d, ("f1_tuned", "f1_at_0.5", "val_loss"))  # a damaged one: skipped with a note
            if m is not None and (not best or value(m, "score") > best["score"]):
                best = {key: m.get(key) for key in ("step", "f1_tuned", "f1_at_0.5", "val_loss")}
                best["score"] = value(m, "score")
        elapsed, peak = f.elapsed, memory.peak()
        write_json(f.dir / "done.json", {"fold": f.k, "fingerprint": fingerprint(f.parts),
                                         "fingerprint_parts": f.parts, "steps": steps, "processes": f.plan.world,
                                         "elapsed_s": round(elapsed, 2), "peak_memory": peak,
                                         "checkpoints": [s for s, _ in ckpts], "best_f1_tuned": best})
        for _, d in ckpts:
            (d / RESUME).unlink(missing_ok=True)
        nan = float("nan")
        acc.print(f"[{f.cfg.exp}] fold {f.k} done in {elapsed:.0f} s (peak {memory.describe(peak)}): best macro-F1 "
                  f"{best.get('f1_tuned', nan):.4f} (at 0.5: {best.get('f1_at_0.5', nan):.4f})"
                  + _other_metric({"metric": f.cfg.data.metric, "score": best.get("score", nan)})
                  + f" at step {best.get('step')}")
    acc.wait_for_everyone()


def objective(t: TrainConfig) -> str:
    """What the train loss is, beside the plain-BCE val loss: "bce, pos_weight balanced", "focal, ..."."""
    parts = [t.loss, *([f"pos_weight {t.pos_weight}"] if t.pos_weight != "none" else []),
             *([f"smoothing {t.label_smoothing:g}"] if t.label_smoothing else [])]
    return ", ".join(parts)


def _other_metric(record: dict) -> str:
    """", jaccard 0.5123" for a run judged by another metric than macro-F1 (the score is signed: log-loss shown
    as itself)."""
    m = record.get("metric", "macro_f1")
    return "" if m == "macro_f1" else f", {m} {abs(record['score']):.4f}"


def release_fold(acc, graphs: bool) -> None:
    """After a fold (finished or not): finish its W&B run and forget it, so the next fold's `init_trackers` starts
    one run of its own (`acc.end_training()` would also destroy the process group later folds need), and drop the
    Accelerator's references to the fold's model and optimizer (`free_memory` also collects garbage and empties
    the CUDA cache). torch.compile's code is kept for the next fold (same shapes: nothing compiled again); with
    CUDA graphs (`graphs`) their trees are reset, whose memory pools hold the fold's tensors (the next fold records
    its graphs again, which takes a few steps, not a compile)."""
    for tracker in acc.trackers:
        tracker.finish()
    acc.trackers = []
    if graphs:
        from torch._inductor.cudagraph_trees import reset_cudagraph_trees

        reset_cudagraph_trees()
    acc.free_memory()


def accelerator(cfg: Config):
    """The Accelerator: mixed precision from `train.precision`, CPU processes when there is no CUDA GPU."""

    from accelerate import Accelerator

    tracking.check(cfg.train.report_to)
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
    batch_plan(t, 1)  # CUDA-graph compile modes refuse accumulation (`preflight` checks the processes' split too)
    if t.checkpoint_dtype not in CHECKPOINT_DTYPES:
        raise UserError(f"train.checkpoint_dtype must be one of {', '.join(CHECKPOINT_DTYPES)}, got "
                        f"{t.checkpoint_dtype!r}")
    if t.pad_to_multiple < 0:
        raise UserError(f"train.pad_to_multiple must be >= 0 (0 = 8 on GPU, 1 on CPU), got {t.pad_to_multiple}")
    if cfg.model.method == "qlora" and cfg.lora.bias != "none":
        raise UserError(f"lora.bias={cfg.lora.bias} with model.method=qlora: bitsandbytes recasts trainable biases of "
                        "4-bit layers to the compute dtype at every forward (fp16 cards then stop with 'Attempting to "
                        "unscale FP16 gradients'); use lora.bias=none")
    make_loss(t)  # checks train.loss and train.label_smoothing
    tm.resolve_precision(cfg)
    tracking.check(t.report_to)
    precision.check_gpu()
    precision.check_compile(t.compile)


def train_folds(cfg: Config, comp: Competition, folds, rd: RunDir,
                callbacks: tuple[Callable[[dict], None], ...] = ()) -> None:
    """Train every fold of `folds_for_run(cfg)`: skip finished folds (done.json), resume an unfinished one.
    `callbacks` get each checkpoint's metrics record (main process). Every fold is checked first (`preflight`)."""
    preflight(cfg, comp, folds, rd)
    acc = accelerator(cfg)
    if acc.is_main_process:
        record_run_data(cfg, comp, rd)
        report_token_lengths(cfg, comp, rd)
    todo = folds_for_run(cfg)
    for i, k in enumerate(todo):
        if check_fold(cfg, comp, folds, rd, k):
            acc.print(f"[{cfg.exp}] fold {k}: already trained ({rd.fold(k) / 'done.json'}), skipped")
            continue
        memory.reset_peak()
        try:
            train_fold(cfg, comp, folds, rd, k, acc, callbacks)
        finally:
            release_fold(acc, graphs=cfg.train.compile in GRAPH_MODES)
        acc.print(f"[{cfg.exp}] {remaining(rd, todo[i + 1:])}")


def remaining(rd: RunDir, left: list[int]) -> str:
    """The whole run's ETA after a fold: the folds this command has left, at the mean time of the run's finished
    folds (their done.json, whichever process trained them)."""
    times = []
    for d in rd.root.glob("fold*/done.json"):
        try:
            elapsed = read_json(d).get("elapsed_s")
        except (UserError, AttributeError):  # a damaged done.json is reported where it matters, not here
            continue
        if isinstance(elapsed, (int, float)) and not isinstance(elapsed, bool) and elapsed > 0:
            times.append(float(elapsed))
    left = [k for k in left if not (rd.fold(k) / "done.json").is_file()]
    if not left:
        return "every fold of this command is trained"
    plural = lambda n, word: f"{n} {word}{'s' * (n != 1)}"
    if not times:
        return f"{plural(len(left), 'fold')} left"
    each = sum(times) / len(times)
    clock = lambda s: time.strftime("%H:%M:%S", time.gmtime(s)) if s < 86400 else f"{s / 3600:.0f} h"
    return (f"{plural(len(left), 'fold')} left ({', '.join(map(str, left))}): about {clock(each * len(left))} at "
            f"the {clock(each)} per fold the {plural(len(times), 'finished fold')} took")


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
