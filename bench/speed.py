"""The project's training loop against a plain Hugging Face `Trainer` peer, side by side in one process.

Same model, data, fold, hyperparameters, precision and batch size; the peer uses `DataCollatorWithPadding`,
pos_weight BCE, an evaluation + checkpoint per epoch and the best-F1 checkpoint, like the reference recipe.
Prints train examples/s of each and their ratio, tokens/s, model FLOPs utilisation (given a peak), peak memory,
held-out macro-F1 (tuned and at 0.5), and test-prediction examples/s.

    python bench/speed.py --config configs/mpnet-base.yaml --data-dir DIR --fold 0          # GPU
    python bench/speed.py --tiny --data-dir DIR --fold 0 train.max_steps=60 train.batch_size=16   # CPU smoke
"""

from __future__ import annotations

import argparse
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

from src import metrics, thresholds, train  # noqa: E402
from src.config import ThresholdConfig, load_config  # noqa: E402
from src.data import load_competition  # noqa: E402
from src.errors import cli  # noqa: E402
from src.folds import ensure_folds  # noqa: E402
from src.models import transformer as tm  # noqa: E402
from src.rundir import RunDir  # noqa: E402
from src.weights import pos_weight  # noqa: E402

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16


def f1s(Y: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    th = thresholds.tune(Y, probs, ThresholdConfig())
    return metrics.macro_f1(Y, thresholds.apply(probs, th)), metrics.macro_f1(Y, probs >= 0.5)


def peak_mem_gb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1e9
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # process RSS high-water mark (Linux: KiB)


def reset_mem() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def project(cfg, comp, folds, k: int, out: Path) -> dict:
    """One fold through src.train (evaluation + checkpoint per epoch), then test prediction from its best step."""
    reset_mem()
    rd = RunDir(out / "project", out)
    acc = train.accelerator(cfg)
    t0 = time.perf_counter()
    train.train_fold(cfg, comp, folds, rd, k, acc)
    wall = time.perf_counter() - t0
    done = json.loads((rd.fold(k) / "done.json").read_text())
    rates = [h["samples_per_s"] for h in map(json.loads, (rd.fold(k) / "history.jsonl").read_text().splitlines())
             if "samples_per_s" in h]
    step = done["best_f1_tuned"]["step"]
    probs = np.load(rd.step(k, step) / "valid_probs.npy")
    model, tok = tm.load_checkpoint(cfg, rd.step(k, step), comp.labels)
    t1 = time.perf_counter()
    tm.predict_probs(model, tok, comp.test_texts, cfg)
    infer = time.perf_counter() - t1
    return {"wall_s": wall, "probs": probs, "infer_s": infer, "peak_gb": peak_mem_gb(), "steps": done["steps"],
            "steady_ex_s": float(np.median(rates)) if rates else float("nan")}


def peer(cfg, comp, folds, k: int, out: Path) -> dict:
    """The same fold with transformers.Trainer (the plain recipe)."""
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer, TrainingArguments

    reset_mem()
    t, path = cfg.train, tm.resolve_path(cfg.model.name_or_path)
    in_valid = folds["fold"].to_numpy() == k
    Y = comp.Y.astype(np.float32)
    model, tok = tm.build_model(cfg, comp.labels)  # same weights, head and pad-token handling as the project
    del model
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(comp.labels), problem_type="multi_label_classification", dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    pw = torch.from_numpy(pos_weight(comp.Y[~in_valid], t.pos_weight, t.pos_weight_clip))

    def ds(rows, with_labels=True):  # a list of feature dicts is all Trainer needs
        texts = [comp.train_texts[i] for i in rows] if with_labels else rows
        enc = tok(texts, truncation=True, max_length=cfg.model.max_length)
        feats = [{key: enc[key][i] for key in enc} for i in range(len(texts))]
        if with_labels:
            for f, y in zip(feats, Y[rows]):
                f["labels"] = y.tolist()
        return feats

    class WeightedTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, **kw):
            labels = inputs.pop("labels")
            out = model(**inputs)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                out.logits.float(), labels.float(), pos_weight=pw.to(labels.device))
            return (loss, out) if return_outputs else loss

    def compute_metrics(pred):
        probs = 1 / (1 + np.exp(-pred.predictions))
        tuned, at05 = f1s(comp.Y[in_valid], probs)
        return {"f1_tuned": tuned, "f1_at_0.5": at05}

    precision = tm.resolve_precision(cfg)
    v5 = "warmup_ratio" not in inspect.signature(TrainingArguments).parameters  # v5: a float warmup_steps is a ratio
    warmup = {"warmup_steps": t.warmup_ratio} if v5 else {"warmup_ratio": t.warmup_ratio}
    args = TrainingArguments(
        output_dir=str(out / "peer"), per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size, gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr, weight_decay=t.weight_decay, lr_scheduler_type=t.scheduler, **warmup,
        num_train_epochs=t.epochs, max_steps=t.max_steps if t.max_steps > 0 else -1, bf16=precision == "bf16",
        fp16=precision == "fp16", eval_strategy="epoch" if t.max_steps <= 0 else "steps",
        save_strategy="epoch" if t.max_steps <= 0 else "steps", eval_steps=t.max_steps or None,
        save_steps=t.max_steps or None, load_best_model_at_end=True, metric_for_best_model="f1_tuned",
        save_total_limit=2, report_to=[], seed=t.seed + k, logging_steps=t.log_every,
        use_cpu=not torch.cuda.is_available())
    trainer = WeightedTrainer(model=model, args=args, train_dataset=ds(np.flatnonzero(~in_valid)),
                              eval_dataset=ds(np.flatnonzero(in_valid)), processing_class=tok,
                              data_collator=DataCollatorWithPadding(tok), compute_metrics=compute_metrics)
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    pred = trainer.predict(ds(np.flatnonzero(in_valid)))
    probs = 1 / (1 + np.exp(-pred.predictions))
    t1 = time.perf_counter()
    trainer.predict(ds(comp.test_texts, with_labels=False))
    infer = time.perf_counter() - t1
    return {"wall_s": wall, "probs": probs, "infer_s": infer, "peak_gb": peak_mem_gb(),
            "steps": trainer.state.global_step}


@cli
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "mpnet-base.yaml"))
    p.add_argument("--data-dir", default="data")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="a tiny random BERT instead of the config's model (CPU)")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for MFU (default: known GPUs)")
    p.add_argument("--only", choices=["project", "peer"], default=None)
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    out = Path(tempfile.mkdtemp(prefix="speed-"))
    overrides = [f"data.data_dir={a.data_dir}", *a.overrides]
    cfg = load_config(a.config, overrides)
    comp = load_competition(cfg.data)
    if a.tiny:
        from src.smoke import tiny_model

        path = tiny_model("bert", out / "tiny-bert", comp.train_texts[:2000])
        cfg = load_config(a.config, [*overrides, f"model.name_or_path={path}", "model.method=full"])
    folds, _ = ensure_folds(cfg, comp, verbose=False)
    in_valid = folds["fold"].to_numpy() == a.fold
    model, tok = tm.build_model(cfg, comp.labels)
    n_params = sum(p.numel() for p in model.parameters())
    del model
    seqs = tm.encode(tok, comp.train_texts, cfg)
    n_train, tokens = int((~in_valid).sum()), sum(len(s) for s, v in zip(seqs, in_valid) if not v)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    peak = a.peak_tflops or next((v for key, v in PEAK_TFLOPS.items() if key in device), 0.0)
    name = "tiny random BERT" if a.tiny else cfg.model.name_or_path
    print(f"speed bench: {name} ({n_params / 1e6:.2f}M params), "
          f"fold {a.fold}: {n_train} train rows, {tokens} tokens/epoch, batch {cfg.train.batch_size}, "
          f"precision {tm.resolve_precision(cfg)}, device {device}")

    results = {}
    for name, fn in (("project", project), ("hf_trainer", peer)):
        if a.only and fn.__name__ != a.only:
            continue
        r = fn(cfg, comp, folds, a.fold, out)
        epochs = r["steps"] * cfg.train.batch_size * cfg.train.grad_accum / n_train
        r["ex_s"] = epochs * n_train / r["wall_s"]
        r["tok_s"] = epochs * tokens / r["wall_s"]
        r["mfu"] = 6 * n_params * r["tok_s"] / (peak * 1e12) if peak else float("nan")
        r["f1_tuned"], r["f1_at_0.5"] = f1s(comp.Y[in_valid], r["probs"])
        r["infer_ex_s"] = len(comp.test) / r["infer_s"]
        results[name] = r
        mfu = "n/a (no peak: --peak-tflops)" if np.isnan(r["mfu"]) else f"{r['mfu']:.1%}"
        print(f"{name:>10}: {r['steps']} steps in {r['wall_s']:.1f} s (evaluation and checkpoints included), "
              f"{r['ex_s']:.0f} train ex/s, {r['tok_s']:.0f} tokens/s, MFU {mfu}, peak mem "
              f"{r['peak_gb']:.2f} GB, held-out macro-F1 {r['f1_tuned']:.4f} (at 0.5: {r['f1_at_0.5']:.4f}), "
              f"test prediction {r['infer_ex_s']:.0f} ex/s"
              + (f"; between evaluations (median of logged rates, no compile/eval/saving): {r['steady_ex_s']:.0f} "
                 "train ex/s" if "steady_ex_s" in r else ""))
    if len(results) == 2:
        proj, hf = results["project"], results["hf_trainer"]
        print(f"throughput ratio project / HF Trainer: {proj['ex_s'] / hf['ex_s']:.2f}x (train), "
              f"{proj['infer_ex_s'] / hf['infer_ex_s']:.2f}x (inference)")
    return results


if __name__ == "__main__":
    main()
