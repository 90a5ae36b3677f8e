"""The project's training loop against the plain Hugging Face peer, side by side in one script.

The peer is `transformers.Trainer` (with peft `LoraConfig(task_type="SEQ_CLS")` for LoRA/QLoRA configs) on the same
model, data, fold, LoRA r/alpha/targets, LR, steps, batch, max length, precision and pos_weight BCE. Two measures:

  throughput  both loops train `--steps` updates of fold `--folds`[0] in this process, one after the other, with no
              evaluation: train examples/s between logging steps (median of the intervals, the first one, with any
              compile, left out), tokens/s, peak memory (RAM, and GPU where there is one: src/memory.py) and MFU
              (model FLOPs 6N per token for full fine-tuning, 4N with frozen base weights, against the device's
              dense bf16 peak or --peak-tflops)
  quality     (--quality) every fold of `--folds` trained in full by both, evaluating every `train.eval_every`
              steps: held-out macro-F1 at per-label tuned thresholds (and at 0.5) of each side's best evaluation,
              wall time and examples/s with evaluation, and a 95% paired bootstrap interval of the mean
              difference (held-out rows resampled within each fold, each side's decisions fixed): the size of the
              gap that the held-out rows alone can make. The project's folds train in the config's own run folder,
              so the folds of a finished ten-fold run are reused; the peer's go to `--work` (default: a temp
              folder), where a finished peer fold is reused too (its best checkpoint reloaded and predicted).
              Both sides' held-out probabilities are saved to <work>/quality_probs.npz.

    python bench/speed.py --config configs/mpnet-base-fast.yaml --data-dir DIR --steps 200           # GPU
    python bench/speed.py --config configs/smollm2-135m-cpu.yaml --data-dir DIR --steps 30 --quality --folds 0-2
    python bench/speed.py --tiny --data-dir DIR --steps 6 folds.n_folds=5 train.batch_size=16        # CPU smoke
"""

from __future__ import annotations

import argparse
import copy
import gc
import inspect
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from src import memory, metrics, thresholds, train  # noqa: E402
from src.config import Config, ThresholdConfig, load_config  # noqa: E402
from src.data import load_competition  # noqa: E402
from src.errors import cli  # noqa: E402
from src.folds import ensure_folds, parse_folds  # noqa: E402
from src.hub import resolve_path  # noqa: E402
from src.models import transformer as tm  # noqa: E402
from src.rundir import RunDir  # noqa: E402
from src.weights import pos_weight  # noqa: E402

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10G": 125.0}  # dense bf16


def tuned_decisions(Y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """0/1 decisions at per-label thresholds tuned on these rows."""
    return thresholds.apply(probs, thresholds.tune(Y, probs, ThresholdConfig()))


def f1s(Y: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """Macro-F1 at per-label thresholds tuned on these rows, and at 0.5."""
    return metrics.macro_f1(Y, tuned_decisions(Y, probs)), metrics.macro_f1(Y, probs >= 0.5)


def reset_mem() -> None:
    """Measure the next loop's peak memory on its own (the previous loop's objects collected first)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    memory.reset_peak()


def steady_rate(times: list[tuple[int, float, int]]) -> float:
    """Median examples/s over the logged intervals [(step, time, rows so far)], the first interval left out."""
    rates = [(r1 - r0) / (t1 - t0) for (_, t0, r0), (_, t1, r1) in zip(times[1:], times[2:]) if t1 > t0]
    return float(np.median(rates)) if rates else float("nan")


# ---------------------------------------------------------------- the project's loop

def variant(cfg: Config, **changes) -> Config:
    """A copy of cfg with `section__key=value` changes."""
    cfg = copy.deepcopy(cfg)
    for name, value in changes.items():
        section, key = name.split("__")
        setattr(getattr(cfg, section), key, value)
    return cfg


def project_throughput(cfg: Config, comp, folds, k: int, steps: int, out: Path) -> dict:
    """`steps` updates of fold k through src.train (no evaluation until the end); rates from its history.jsonl."""
    cfg = variant(cfg, train__max_steps=steps, train__eval_every=0, train__keep_top_k=1, train__resume_state=False,
                  train__report_to="none", output__checkpoints_dir=str(out / "project"))
    reset_mem()
    rd = RunDir.of(cfg)
    train.train_fold(cfg, comp, folds, rd, k, train.accelerator(cfg))
    history = [json.loads(line) for line in (rd.fold(k) / "history.jsonl").read_text().splitlines()]
    rates = [h["samples_per_s"] for h in history if "samples_per_s" in h][1:]
    return {"ex_s": float(np.median(rates)) if rates else float("nan"), "peak": memory.peak()}


def project_quality(cfg: Config, comp, folds, k: int) -> dict:
    """Fold k trained in full in the config's run folder (a finished fold is reused); its best evaluation."""
    cfg = variant(cfg, folds__run=[k])
    rd = RunDir.of(cfg)
    reused = (rd.fold(k) / "done.json").is_file()  # a finished fold of the same settings (else train_run refuses)
    train.train_run(cfg, comp, folds, rd)
    done = json.loads((rd.fold(k) / "done.json").read_text())
    probs = np.load(rd.step(k, done["best_f1_tuned"]["step"]) / "valid_probs.npy")
    return {"probs": probs, "wall_s": done["elapsed_s"], "steps": done["steps"],
            "reused": reused}


# ---------------------------------------------------------------- the peer

def peer_base(cfg: Config, comp, tok):
    """The plain recipe's model before LoRA: AutoModelForSequenceClassification (4-bit and prepared for k-bit
    training for qlora)."""
    from transformers import AutoModelForSequenceClassification

    m = cfg.model
    kwargs = {tm.dtype_kw(): tm.weights_dtype(cfg)}
    if m.method == "qlora":
        kwargs |= {"quantization_config": tm._quantization_config(cfg), "device_map": tm._quantized_device_map()}
    model = AutoModelForSequenceClassification.from_pretrained(
        resolve_path(m.name_or_path), num_labels=len(comp.labels), problem_type="multi_label_classification",
        **kwargs)
    model.config.pad_token_id = tok.pad_token_id
    if m.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    return model


def peer_model(cfg: Config, comp, tok):
    """The plain recipe's model: peer_base, with peft LoRA (SEQ_CLS) for lora/qlora."""
    model = peer_base(cfg, comp, tok)
    if cfg.model.method in ("lora", "qlora"):
        from peft import LoraConfig, TaskType, get_peft_model

        lc = cfg.lora
        model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=lc.r, lora_alpha=lc.alpha,
                                                 lora_dropout=lc.dropout, bias=lc.bias,
                                                 target_modules=list(lc.target_modules) or None))
    return model


def finished_peer(out: Path, k: int) -> Path | None:
    """The best checkpoint of a finished peer fold k under `out` (its last trainer_state.json at max_steps), or
    None."""
    states = sorted((out / f"peer{k}").glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name[11:]))
    if not states:
        return None
    state = json.loads(states[-1].read_text())
    best = Path(state.get("best_model_checkpoint") or "")
    if not best.is_absolute():  # a work folder that moved: the checkpoint beside the state
        best = states[-1].parents[1] / best.name
    return best if state.get("global_step") == state.get("max_steps") and best.name and best.is_dir() else None


def peer_reload(cfg: Config, comp, tok, ckpt: Path):
    """A finished peer checkpoint as the peer built it: the base model with its LoRA adapter (and head), or the
    whole fine-tuned model."""
    from peft import PeftModel

    if not (ckpt / "adapter_config.json").is_file():
        return peer_base(variant(cfg, model__name_or_path=str(ckpt)), comp, tok)
    return PeftModel.from_pretrained(peer_base(cfg, comp, tok), str(ckpt))


def peer_run(cfg: Config, comp, folds, k: int, tok, out: Path, steps: int, evaluate: bool) -> dict:
    """Fold k with transformers.Trainer: `steps` updates (0: the config's epochs/max_steps); with `evaluate`, an
    evaluation + checkpoint every `train.eval_every` steps and the best-F1 one loaded at the end. `tok`: the
    project's tokenizer of the model (its pad token and right padding), so both sides read the same tokens."""
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

    reset_mem()
    t = cfg.train
    in_valid = folds["fold"].to_numpy() == k
    best = finished_peer(out, k) if evaluate else None
    model = peer_model(cfg, comp, tok) if best is None else peer_reload(cfg, comp, tok, best)
    pw = torch.from_numpy(pos_weight(comp.Y[~in_valid], t.pos_weight, t.pos_weight_clip))

    def rows(idx):  # a list of feature dicts is all Trainer needs
        enc = tok([comp.train_texts[i] for i in idx], truncation=True, max_length=cfg.model.max_length)
        return [{"input_ids": ids, "attention_mask": mask, "labels": comp.Y[i].astype(np.float32).tolist()}
                for ids, mask, i in zip(enc["input_ids"], enc["attention_mask"], idx)]

    class WeightedTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, **kw):
            labels = inputs.pop("labels")
            out = model(**inputs)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                out.logits.float(), labels.float(), pos_weight=pw.to(labels.device))
            return (loss, out) if return_outputs else loss

    class Clock(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_end(self, args, state, control, **kw):
            if state.global_step % t.log_every == 0:
                self.times.append((state.global_step, time.perf_counter(),
                                   state.global_step * t.batch_size * t.grad_accum))

    def compute_metrics(pred):
        tuned, at05 = f1s(comp.Y[in_valid], 1 / (1 + np.exp(-pred.predictions)))
        return {"f1_tuned": tuned, "f1_at_0.5": at05}

    precision = tm.resolve_precision(cfg)
    v5 = "warmup_ratio" not in inspect.signature(TrainingArguments).parameters  # v5: a float warmup_steps is a ratio
    every = (t.eval_every or steps or t.max_steps) if evaluate else 0
    args = TrainingArguments(
        output_dir=str(out / f"peer{k}"), per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size, gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr, weight_decay=t.weight_decay, lr_scheduler_type=t.scheduler,
        **({"warmup_steps": t.warmup_ratio} if v5 else {"warmup_ratio": t.warmup_ratio}),
        num_train_epochs=t.epochs, max_steps=steps or (t.max_steps if t.max_steps > 0 else -1),
        bf16=precision == "bf16", fp16=precision == "fp16", seed=t.seed + k, logging_steps=t.log_every,
        eval_strategy="steps" if every else "no", save_strategy="steps" if every else "no",
        eval_steps=every or None, save_steps=every or None, load_best_model_at_end=bool(every),
        metric_for_best_model="f1_tuned", save_total_limit=2, report_to=[], use_cpu=not torch.cuda.is_available())
    clock = Clock()
    trainer = WeightedTrainer(model=model, args=args, train_dataset=rows(np.flatnonzero(~in_valid)),
                              eval_dataset=rows(np.flatnonzero(in_valid)) if every else None, processing_class=tok,
                              data_collator=DataCollatorWithPadding(tok), compute_metrics=compute_metrics,
                              callbacks=[clock])
    record = out / f"peer{k}" / "wall.json"  # a reused fold's training figures (NaN for one trained before it)
    if best is None:
        t0 = time.perf_counter()
        trainer.train()
        result = {"wall_s": time.perf_counter() - t0, "steps": trainer.state.global_step, "ex_s": steady_rate(
            [(0, t0, 0), *clock.times]), "peak": memory.peak()}
        if every:
            record.write_text(json.dumps(result))
    else:
        saved = json.loads(record.read_text()) if record.is_file() else {}
        result = {"wall_s": float("nan"), "ex_s": float("nan"), "peak": {}, **saved, "reused": True,
                  "steps": json.loads((best / "trainer_state.json").read_text())["max_steps"]}
    if every:
        result["probs"] = 1 / (1 + np.exp(-trainer.predict(rows(np.flatnonzero(in_valid))).predictions))
    return result


# ---------------------------------------------------------------- the report

def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"


def throughput(cfg: Config, comp, folds, k: int, steps: int, out: Path, peak: float) -> dict:
    """Both loops `steps` updates of fold k, one after the other; examples/s, tokens/s, MFU, peak memory."""
    model, tok = tm.build_model(cfg, comp.labels)
    n_params = sum(tm.n_weights(p) for p in model.parameters())
    frozen = any(not p.requires_grad for p in model.parameters())
    del model
    lengths = np.array([len(s) for s in tm.encode(tok, comp.train_texts, cfg)])
    tokens_per_row = float(lengths[folds["fold"].to_numpy() != k].mean())
    flops_per_token = (4 if frozen else 6) * n_params
    results = {"project": project_throughput(cfg, comp, folds, k, steps, out),
               "hf_trainer": peer_run(cfg, comp, folds, k, tok, out, steps, evaluate=False)}
    for name, r in results.items():
        r["tok_s"] = r["ex_s"] * tokens_per_row
        r["mfu"] = flops_per_token * r["tok_s"] / (peak * 1e12) if peak else float("nan")
        mem = memory.describe(r["peak"])
        mfu = "n/a (no peak: --peak-tflops)" if np.isnan(r["mfu"]) else f"{r['mfu']:.1%}"
        print(f"throughput {name:>10}: {r['ex_s']:.1f} train ex/s, {r['tok_s']:.0f} tokens/s, MFU {mfu}, peak "
              f"memory {mem} ({steps} updates of {cfg.train.batch_size * cfg.train.grad_accum} rows, no evaluation)",
              flush=True)
    ratio = results["project"]["ex_s"] / results["hf_trainer"]["ex_s"]
    print(f"throughput ratio project / HF Trainer: {ratio:.2f}x", flush=True)
    results["ratio"] = ratio
    return results


def paired_interval(Ys: list, As: list, Bs: list, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the mean over folds of macro-F1(A) - macro-F1(B): each fold's held-out rows
    resampled (the same rows for both sides), the 0/1 decisions `As`, `Bs` fixed."""
    rng = np.random.default_rng(seed)
    diffs = np.empty(n)
    for i in range(n):
        d = []
        for Y, A, B in zip(Ys, As, Bs):
            idx = rng.integers(0, len(Y), len(Y))
            d.append(metrics.macro_f1(Y[idx], A[idx]) - metrics.macro_f1(Y[idx], B[idx]))
        diffs[i] = np.mean(d)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return float(lo), float(hi)


def quality(cfg: Config, comp, folds, ks: list[int], out: Path) -> dict:
    """Every fold in `ks` trained in full by both loops: held-out macro-F1 of each side's best evaluation, and how
    much of the difference the held-out rows alone could make."""
    rows, decided, saved = {}, {"project": [], "hf_trainer": []}, {}
    model, tok = tm.build_model(cfg, comp.labels)
    del model
    for k in ks:
        Y = comp.Y[folds["fold"].to_numpy() == k]
        proj, peer = project_quality(cfg, comp, folds, k), peer_run(cfg, comp, folds, k, tok, out, 0, evaluate=True)
        n = int((folds["fold"].to_numpy() != k).sum())
        for name, r in (("project", proj), ("hf_trainer", peer)):
            decided[name].append(tuned_decisions(Y, r["probs"]))
            r["f1_tuned"] = metrics.macro_f1(Y, decided[name][-1])
            r["f1_at_0.5"] = metrics.macro_f1(Y, r["probs"] >= 0.5)
            saved[f"fold{k}_{name}"] = r["probs"]
            ex_s = r["steps"] * cfg.train.batch_size * cfg.train.grad_accum / r["wall_s"]
            where = "the run folder's finished fold" if name == "project" else f"reused from {out / f'peer{k}'}"
            print(f"quality fold {k} {name:>10}: held-out macro-F1 {r['f1_tuned']:.4f} tuned / {r['f1_at_0.5']:.4f} "
                  f"at 0.5, {r['steps']} steps in {r['wall_s']:.0f} s ({ex_s:.1f} ex/s with evaluation, {n} train "
                  f"rows){f' ({where})' if r.get('reused') else ''}", flush=True)
        rows[k] = {"project": proj, "hf_trainer": peer}
    np.savez(out / "quality_probs.npz", **saved)
    mean = {name: float(np.mean([rows[k][name]["f1_tuned"] for k in ks])) for name in ("project", "hf_trainer")}
    Ys = [comp.Y[folds["fold"].to_numpy() == k] for k in ks]
    lo, hi = paired_interval(Ys, decided["project"], decided["hf_trainer"])
    print(f"quality mean over folds {ks}: project {mean['project']:.4f}, HF Trainer {mean['hf_trainer']:.4f} "
          f"(difference {mean['project'] - mean['hf_trainer']:+.4f}; 95% paired bootstrap interval over the "
          f"held-out rows {lo:+.4f} to {hi:+.4f}); held-out probabilities: {out / 'quality_probs.npz'}", flush=True)
    return {"folds": rows, "mean": mean, "interval": (lo, hi)}


@cli
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "mpnet-base.yaml"))
    p.add_argument("--data-dir", default="data")
    p.add_argument("--folds", default="0", help="folds: the first for throughput, all for --quality (e.g. 0-2)")
    p.add_argument("--steps", type=int, default=100, help="updates of the throughput measure (0: none)")
    p.add_argument("--quality", action="store_true", help="also train --folds in full with both loops")
    p.add_argument("--tiny", nargs="?", const="bert", choices=["bert", "llama"],
                   help="a tiny random BERT (full fine-tune) or Llama (LoRA) instead of the config's model (CPU)")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for MFU (default: known GPUs)")
    p.add_argument("--work", default="", help="the peer's folder (default: a new temp folder); finished peer folds "
                   "in it are reused")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    out = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="speed-"))
    out.mkdir(parents=True, exist_ok=True)
    overrides = [f"data.data_dir={a.data_dir}", *a.overrides]
    cfg = load_config(a.config, overrides)
    comp = load_competition(cfg.data)
    if a.tiny:
        from src.smoke import tiny_model

        path = tiny_model(a.tiny, out / f"tiny-{a.tiny}", comp.train_texts[:2000])
        method = "full" if a.tiny == "bert" else "lora"
        cfg = load_config(a.config, [*overrides, f"model.name_or_path={path}", f"model.method={method}"])
    folds, _ = ensure_folds(cfg, comp, verbose=False)
    ks = parse_folds(a.folds, cfg.folds.n_folds)
    peak = a.peak_tflops or next((v for key, v in PEAK_TFLOPS.items() if key in device_name()), 0.0)
    print(f"speed bench: {f'tiny random {a.tiny}' if a.tiny else cfg.model.name_or_path} ({cfg.model.method}), "
          f"batch {cfg.train.batch_size}x{cfg.train.grad_accum}, max length {cfg.model.max_length}, precision "
          f"{tm.resolve_precision(cfg)}, device {device_name()}", flush=True)
    results = {}
    if a.steps > 0:
        results["throughput"] = throughput(cfg, comp, folds, ks[0], a.steps, out, peak)
    if a.quality:
        results["quality"] = quality(cfg, comp, folds, ks, out)
    return results


if __name__ == "__main__":
    main()
