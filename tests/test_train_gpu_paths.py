"""The training loop's GPU code paths, checked on CPU: memory released between folds, one W&B run per fold and a
per-process RNG resume under 2-process DDP (bf16), CUDA-graph compile modes refused with gradient accumulation,
skipped fp16 steps, layer-wise LR decay of embeddings, fused AdamW and a real inductor compile."""

from __future__ import annotations

import os
import subprocess
import sys
import weakref
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from test_train import history, overrides, setup, steps
from test_transformer import make_tiny
from wandb_log import logged_runs

import src.train as train_module
from src.config import load_config
from src.ema import EMA
from src.errors import UserError
from src.models import transformer as tm
from src.rundir import RunDir
from src.train import check_train_config, param_groups, train_folds

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).parent / "accelerate"


def held_out_texts(comp, folds, k: int = 0) -> list[str]:
    return [comp.train_texts[i] for i in np.flatnonzero(folds["fold"].to_numpy() == k)]


# ---------------------------------------------------------------- item 1: memory between folds

@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_each_fold_releases_its_model_optimizer_and_ema_before_the_next(workdir, comp_dir, tiny_root, monkeypatch,
                                                                        compiled):
    """One Accelerator serves every fold; fold 0's model, optimizer (and its schedule), EMA and torch.compile
    wrapper (aot_eager backend: no C++ build) must be gone (weakrefs dead, no gc.collect by the test) while fold 1
    trains, not kept alive by acc._models/_optimizers or by dynamo's caches."""
    refs: list[dict] = []
    fused = []
    build, make_opt, ema_cls = tm.build_model, train_module.make_optimizer, train_module.EMA

    def build_model(*a, **kw):
        model, tok = build(*a, **kw)
        refs.append({"model": weakref.ref(model)})
        return model, tok

    def make_optimizer_(*a, **kw):
        opt, sched = make_opt(*a, **kw)
        refs[-1].update(opt=weakref.ref(opt), sched=weakref.ref(sched))
        fused.append(opt.defaults["fused"])
        return opt, sched

    def ema(*a, **kw):
        e = ema_cls(*a, **kw)
        refs[-1]["ema"] = weakref.ref(e)
        return e

    monkeypatch.setattr(tm, "build_model", build_model)
    monkeypatch.setattr(train_module, "make_optimizer", make_optimizer_)
    monkeypatch.setattr(train_module, "EMA", ema)
    compile_ = torch.compile

    def aot_eager(model, mode=None, **kw):
        wrapper = compile_(model, backend="aot_eager", **kw)
        refs[-1]["compiled"] = weakref.ref(wrapper)
        return wrapper

    monkeypatch.setattr(torch, "compile", aot_eager)
    seen = []

    def check(record):
        alive = lambda k: {name: ref() is not None for name, ref in refs[k].items()}
        seen.append((record["fold"], alive(0), alive(record["fold"])))

    cfg = load_config(None, overrides(comp_dir, make_tiny("bert", tiny_root), "free", "folds.run=[0,1]",
                                      "train.max_steps=2", "train.eval_every=2", "train.ema=0.9",
                                      f"train.compile={'default' if compiled else 'none'}", "train.pad_to_multiple=64",
                                      "train.drop_last=true"))
    comp, folds, rd = setup(cfg)
    train_folds(cfg, comp, folds, rd, callbacks=(check,))
    everything = {"model": True, "opt": True, "sched": True, "ema": True} | ({"compiled": True} if compiled else {})
    assert len(refs) == 2 and [fold for fold, _, _ in seen] == [0, 1]
    assert seen[0][1] == everything  # fold 0 alive while it trains (the weakrefs do track the objects)
    assert seen[1][1] == dict.fromkeys(everything, False)  # ... and released before fold 1 trains
    assert seen[1][2] == everything
    assert all(ref() is None for ref in refs[1].values())  # the last fold too, once train_folds returns
    assert fused == [True, True]  # the training loop's AdamW is the fused one on CPU too (item 6)


# ---------------------------------------------------------------- item 3: CUDA graphs and gradient accumulation

def test_cuda_graph_compile_modes_with_grad_accum_are_refused(tiny_root):
    base = ["model_type=transformer", f"model.name_or_path={make_tiny('bert', tiny_root)}"]
    for mode in ("reduce-overhead", "max-autotune"):
        with pytest.raises(UserError) as e:
            check_train_config(load_config(None, [*base, f"train.compile={mode}", "train.grad_accum=2"]))
        message = str(e.value)
        assert "\n" not in message and f"train.compile={mode}" in message and "train.grad_accum=2" in message
        assert "max-autotune-no-cudagraphs" in message and "train.grad_accum=1" in message
        check_train_config(load_config(None, [*base, f"train.compile={mode}", "train.grad_accum=1"]))
    for mode in ("none", "default", "max-autotune-no-cudagraphs"):  # no CUDA graphs: accumulating is fine
        check_train_config(load_config(None, [*base, f"train.compile={mode}", "train.grad_accum=4"]))


# ---------------------------------------------------------------- item 5: skipped steps, layer-wise LR decay

def _tiny_step_setup(fused: bool = False):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, fused=fused)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    ema = EMA(model, 0.5)
    return model, opt, sched, ema


def _backward(model, bad: bool = False, scaler=None):
    loss = model(torch.ones(2, 4)).sum()
    if bad:
        loss = loss * float("inf")
    (scaler.scale(loss) if scaler is not None else loss).backward()  # as acc.backward with fp16


def test_a_skipped_optimizer_step_advances_neither_the_schedule_nor_the_ema():
    """An fp16 step the GradScaler skips (inf/nan gradients, `acc.optimizer_step_was_skipped`) must not advance
    the LR schedule or the EMA; a taken step advances both. Fake accelerator, real optimizer/schedule/EMA."""
    model, opt, sched, ema = _tiny_step_setup()
    clipped = []
    acc = SimpleNamespace(optimizer_step_was_skipped=True, clip_grad_norm_=lambda ps, norm: clipped.append(norm))
    weights = model.weight.detach().clone()
    model.weight.data.add_(1.0)  # the EMA lags the weights: an update would move it
    _backward(model)
    assert train_module.optimizer_step(acc, model, opt, sched, ema, 0, max_grad_norm=1.0) is False
    assert sched.last_epoch == 0 and opt.param_groups[0]["lr"] == pytest.approx(0.1)
    torch.testing.assert_close(ema.shadow[0], weights)
    assert clipped == [1.0] and model.weight.grad is None  # clipped, stepped and zeroed as always

    acc.optimizer_step_was_skipped = False
    _backward(model)
    assert train_module.optimizer_step(acc, model, opt, sched, ema, 1, max_grad_norm=0.0) is True
    assert sched.last_epoch == 1 and opt.param_groups[0]["lr"] == pytest.approx(0.05)
    assert (ema.shadow[0] - weights).abs().min() > 0.1 and clipped == [1.0]


def test_fused_adamw_skip_under_a_real_grad_scaler_is_detected():
    """A fused AdamW takes the GradScaler's found-inf flag itself, so the scaler always calls its step and
    accelerate's step_was_skipped stays False; optimizer_step still sees the skip (the scale dropped)."""
    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer

    Accelerator(cpu=True)  # the state AcceleratedOptimizer reads (as train_folds makes it)
    model, opt, sched, ema = _tiny_step_setup(fused=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    wrapped = AcceleratedOptimizer(opt, device_placement=False, scaler=scaler)

    class Acc:  # the two Accelerator members optimizer_step reads with fp16 (no clipping here)
        scaler = None
        optimizer_step_was_skipped = property(lambda self: wrapped.step_was_skipped)

    acc = Acc()
    acc.scaler = scaler
    weights, shadow = model.weight.detach().clone(), ema.shadow[0].clone()
    _backward(model, bad=True, scaler=scaler)
    assert train_module.optimizer_step(acc, model, wrapped, sched, ema, 0, max_grad_norm=0.0) is False
    assert not wrapped.step_was_skipped  # what accelerate alone would have concluded
    assert scaler.get_scale() == 2.0 ** 7 and sched.last_epoch == 0
    torch.testing.assert_close(model.weight.detach(), weights)  # the fused kernel did skip the update
    torch.testing.assert_close(ema.shadow[0], shadow)

    _backward(model, scaler=scaler)
    assert train_module.optimizer_step(acc, model, wrapped, sched, ema, 1, max_grad_norm=0.0) is True
    assert sched.last_epoch == 1 and not torch.equal(model.weight.detach(), weights)


def _lrs(model, cfg) -> dict[str, float]:
    lr_of = {id(p): g["lr"] for g in param_groups(model, cfg) for p in g["params"]}
    return {name: lr_of[id(p)] for name, p in model.named_parameters()}


def test_layer_lr_decay_gives_embeddings_and_shared_position_biases_the_lowest_lr():
    """MPNet's relative_attention_bias (shared by every layer) and GPT-2's wte/wpe embeddings get the embeddings'
    LR (depth 0), not the top layer's; numbered layers, the final norm and the head keep theirs."""
    import transformers as tf

    cfg = load_config(None, ["model_type=transformer", "train.lr=1e-3", "train.head_lr=1e-2",
                             "train.layer_lr_decay=0.5"])
    size = dict(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                max_position_embeddings=40, num_labels=3)
    bottom, top = 1e-3 * 0.5 ** 3, 1e-3
    lrs = _lrs(tf.MPNetForSequenceClassification(tf.MPNetConfig(**size)), cfg)
    assert lrs["mpnet.encoder.relative_attention_bias.weight"] == bottom
    assert lrs["mpnet.embeddings.position_embeddings.weight"] == bottom
    assert lrs["mpnet.embeddings.word_embeddings.weight"] == bottom
    assert lrs["mpnet.encoder.layer.0.attention.attn.q.weight"] == 1e-3 * 0.25
    assert lrs["mpnet.encoder.layer.1.attention.attn.q.weight"] == 1e-3 * 0.5
    assert lrs["classifier.dense.weight"] == 1e-2

    gpt2 = tf.GPT2ForSequenceClassification(tf.GPT2Config(vocab_size=64, n_embd=16, n_layer=2, n_head=2,
                                                           n_positions=40, num_labels=3, pad_token_id=0))
    lrs = _lrs(gpt2, cfg)
    assert lrs["transformer.wte.weight"] == lrs["transformer.wpe.weight"] == bottom
    assert lrs["transformer.h.0.attn.c_attn.weight"] == 1e-3 * 0.25
    assert lrs["transformer.h.1.mlp.c_fc.weight"] == 1e-3 * 0.5
    assert lrs["transformer.ln_f.weight"] == top  # above the last layer
    assert lrs["score.weight"] == 1e-2


# ---------------------------------------------------------------- item 6: fused AdamW

def test_adamw_is_fused_on_cpu_too(tiny_root, monkeypatch):
    """The optimizer of a CPU model is the fused AdamW, as on the GPU; parameters without a fused kernel (here
    complex ones) get the default AdamW instead of an error."""
    cfg = load_config(None, ["model_type=transformer", f"model.name_or_path={make_tiny('bert', tiny_root)}"])
    model, _ = tm.build_model(cfg, ["a", "b"])
    opt, sched = train_module.make_optimizer(model, cfg, total=10)
    assert next(model.parameters()).device.type == "cpu"
    assert opt.defaults["fused"] is True and all(g["fused"] for g in opt.param_groups)
    assert sched.last_epoch == 0
    odd = torch.nn.Parameter(torch.zeros(2, 2, dtype=torch.complex64))
    monkeypatch.setattr(train_module, "param_groups", lambda model, cfg: [{"params": [odd], "lr": 1e-3}])
    fallback, _ = train_module.make_optimizer(None, cfg, total=10)
    assert not fallback.defaults["fused"]
    odd.grad = torch.ones_like(odd)
    fallback.step()  # a fused one would raise here, at its first step
    assert odd.abs().max() > 0


# ---------------------------------------------------------------- item 7: a real inductor compile

def one_layer_bert(root: Path) -> Path:
    """make_tiny's BERT cut to one layer without dropout: half the code for inductor to generate and compile."""
    import transformers as tf

    out = Path(root) / "bert-1layer"
    if not (out / "config.json").is_file():
        bert = make_tiny("bert", root)
        config = tf.BertConfig.from_pretrained(bert)
        config.update({"num_hidden_layers": 1, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
        torch.manual_seed(0)
        tf.BertModel(config).save_pretrained(out)
        tf.AutoTokenizer.from_pretrained(bert).save_pretrained(out)
    return out


def test_inductor_compile_trains_and_its_checkpoint_reloads(workdir, comp_dir, tiny_root, monkeypatch):
    """train.compile=default with the real inductor backend (C++ code generation on CPU; its own cache dir, so
    nothing is reused from other runs): it trains, and the saved plain module reloads to the probabilities saved."""
    cache = workdir / "inductor-cache"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(cache))
    torch._dynamo.reset()
    cfg = load_config(None, overrides(comp_dir, one_layer_bert(tiny_root), "inductor", "train.max_steps=2",
                                      "train.eval_every=2", "train.log_every=1", "train.compile=default",
                                      "train.pad_to_multiple=64", "train.drop_last=true", "train.batch_size=8"))
    comp, folds, rd = setup(cfg)
    train_folds(cfg, comp, folds, rd)
    assert steps(rd) == [2] and any(cache.rglob("*.so"))  # inductor generated and compiled C++ kernels
    losses = [h["train_loss"] for h in history(rd) if "train_loss" in h and "event" not in h]
    assert len(losses) == 2 and np.isfinite(losses).all()
    model, tok = tm.load_checkpoint(cfg, rd.step(0, 2), comp.labels)
    np.testing.assert_allclose(tm.predict_probs(model, tok, held_out_texts(comp, folds), cfg),
                               np.load(rd.step(0, 2) / "valid_probs.npy"), atol=1e-5)


# ---------------------------------------------------------------- items 2, 4, 8: one 2-process launch

DRIVER = '''"""2-process driver: the CLI on two folds, then fold 0 again cut at its 2nd evaluation and resumed."""
import os
import shutil
import sys
from pathlib import Path

import torch

import src.train as train

config, out = sys.argv[1], Path(sys.argv[2])
rank = int(os.environ["RANK"])
train.main(["--config", config, "--folds", "0,1"])


class Interrupt(Exception):
    pass


evaluate, calls = train.evaluate, []


def cut(*args, **kwargs):  # on every process, before the 2nd evaluation: the 1st checkpoint keeps resume.pt
    calls.append(1)
    if len(calls) == 2:
        raise Interrupt
    return evaluate(*args, **kwargs)


cut_args = ["--config", config, "--folds", "0", "exp=cut", "train.report_to=none"]
train.evaluate = cut
try:
    train.main(cut_args)
    raise SystemExit("the cut run was not interrupted")
except Interrupt:
    pass
train.evaluate = evaluate
if rank == 0:
    shutil.copy(next(Path("checkpoints/cut/fold0").glob("step*/resume.pt")), out / "resume.pt")
set_rng = train._set_rng_state


def record(state, device):  # what each process restores
    set_rng(state, device)
    torch.save(torch.get_rng_state(), out / f"restored_rank{rank}.pt")


train._set_rng_state = record
train.main(cut_args)
'''


@pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate CLI not installed")
def test_two_process_bf16_wandb_two_folds_and_exact_resume(workdir, comp_dir, tiny_root):
    """`accelerate launch` of 2 CPU processes with train.precision=bf16 and train.report_to=wandb (the real wandb,
    offline): both folds train, evaluate and reload; W&B gets one run per fold, from the main process only, each
    finished (end_training used to destroy the process group after fold 0). Then fold 0 again, interrupted after its
    first checkpoint and resumed: resume.pt holds each rank's own RNG state, each rank restores its own, and the
    resumed run ends with the uninterrupted run's held-out probabilities."""
    driver, out, wb = workdir / "driver.py", workdir / "out", workdir / "wb"
    driver.write_text(DRIVER)
    out.mkdir()
    config = workdir / "ddp.yaml"
    config.write_text(yaml.safe_dump({
        "exp": "ddp", "model_type": "transformer", "data": {"data_dir": str(comp_dir)}, "folds": {"n_folds": 5},
        "model": {"name_or_path": str(make_tiny("bert", tiny_root))},
        "train": {"batch_size": 8, "lr": 5e-3, "log_every": 2, "max_steps": 4, "eval_every": 2, "precision": "bf16",
                  "report_to": "wandb"}}))
    for sub in ("cache", "data", "config"):
        (wb / sub).mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline",
           "WANDB_DIR": str(wb), "WANDB_CACHE_DIR": str(wb / "cache"), "WANDB_DATA_DIR": str(wb / "data"),
           "WANDB_CONFIG_DIR": str(wb / "config"), "WANDB_SILENT": "true"}
    cmd = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "bf16", "--dynamo_backend", "no", str(driver), str(config), str(out)]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]

    cfg = load_config(config)
    comp, folds, rd = setup(cfg)
    assert "precision bf16" in proc.stdout + proc.stderr
    for k in (0, 1):  # both folds trained, evaluated and saved under DDP + bf16; the checkpoint reloads
        assert history(rd, k)[0]["processes"] == 2 and steps(rd, k) == [2, 4]
        assert (rd.fold(k) / "done.json").is_file()
        probs = np.load(rd.step(k, 4) / "valid_probs.npy")
        model, tok = tm.load_checkpoint(cfg, rd.step(k, 4), comp.labels)
        reloaded = tm.predict_probs(model, tok, held_out_texts(comp, folds, k), cfg)
        np.testing.assert_allclose(reloaded, probs, atol=2e-3)  # bf16 autocast, other batch shapes
        assert np.abs(np.load(rd.step(k, 2) / "valid_probs.npy") - probs).max() > 2e-2  # it did train

    # W&B: exactly one run per fold (a second process logging would add runs), each finished, grouped by the exp,
    # with the fold's evaluations at their steps
    runs = logged_runs(wb)
    assert sorted(runs) == ["ddp-fold0", "ddp-fold1"] and all(r["finished"] for r in runs.values())
    assert all(r["group"] == "ddp" for r in runs.values())
    for name, r in runs.items():
        assert [h["_step"] for h in r["history"] if "eval/f1_tuned" in h] == [2, 4], name

    # resume: a distinct RNG state per rank was saved, and each rank restored its own
    state = torch.load(out / "resume.pt", weights_only=False)
    assert state["processes"] == 2 and state["position"]["step"] == 2
    saved = state["rng"]
    assert isinstance(saved, list) and len(saved) == 2
    assert not torch.equal(saved[0]["torch"], saved[1]["torch"])  # the ranks' dropout streams differ
    for r in (0, 1):
        assert torch.equal(torch.load(out / f"restored_rank{r}.pt"), saved[r]["torch"])
    cut = RunDir.of(load_config(config, ["exp=cut"]))
    assert [h["step"] for h in history(cut) if h.get("event") in ("start", "resume")] == [0, 2]
    np.testing.assert_allclose(np.load(cut.step(0, 4) / "valid_probs.npy"), np.load(rd.step(0, 4) / "valid_probs.npy"),
                               atol=1e-6)


# ---------------------------------------------------------------- round 3: the review of the GPU paths

def fake_gpu(monkeypatch, capability: tuple[int, int], archs: list[str], name: str = "Tesla P100-PCIE-16GB"):
    """CUDA present: a card of this compute capability, a torch built for `archs`."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: capability)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: archs)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: name)


@pytest.mark.parametrize("batch, accum, world, plan", [
    (32, 1, 1, (32, 1)), (32, 1, 8, (4, 1)), (16, 2, 8, (4, 1)), (4, 4, 8, (2, 1)), (2, 4, 4, (2, 1)),
    (8, 4, 2, (8, 2)), (6, 1, 4, None), (8, 1, 3, None)])
def test_the_global_batch_is_the_config_s_on_any_number_of_processes(batch, accum, world, plan):
    """Item 2: rows per update = batch_size x grad_accum whatever the process count (so steps and LR schedule
    stay); each process's micro-batch is at most batch_size; a batch that does not split is one line."""
    t = load_config(None, [f"train.batch_size={batch}", f"train.grad_accum={accum}"]).train
    if plan is None:
        with pytest.raises(UserError, match=rf"{batch * accum} rows per update do not split over {world} processes"):
            train_module.batch_plan(t, world)
        return
    p = train_module.batch_plan(t, world)
    assert (p.micro, p.accum, p.world) == (*plan, world)
    assert p.micro * p.accum * p.world == batch * accum and p.micro <= batch


def test_the_split_is_checked_before_anything_is_written(workdir, comp_dir, tiny_root, monkeypatch):
    cfg = load_config(None, overrides(comp_dir, make_tiny("bert", tiny_root), "split", "train.batch_size=9"))
    comp, folds, rd = setup(cfg)
    monkeypatch.setattr(train_module, "processes", lambda: 2)
    with pytest.raises(UserError, match="9 rows per update do not split over 2 processes"):
        train_module.train_run(cfg, comp, folds, rd)
    assert not rd.root.exists()


def test_pos_weight_is_moved_to_the_device_once_not_at_every_step(monkeypatch):
    """Item 3: the loss holds pos_weight where the logits are; no copy (`.to`) per micro-batch."""
    from src.losses import make_loss

    pw = torch.tensor([1.0, 2.0, 3.0])
    copies = []
    real_to = torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: copies.append(a) or real_to(self, *a, **k))
    for name in ("bce", "focal", "asl"):
        loss = make_loss(load_config(None, [f"train.loss={name}"]).train, pw)
        for _ in range(3):
            loss(torch.randn(4, 3), torch.ones(4, 3))
    assert copies == []


def test_the_llm_finetune_loop_reads_its_loss_only_at_logging_steps(monkeypatch):
    """Item 3: `llm_finetune`'s loop keeps step losses on the device; `.item()` (a host sync) never runs per step."""
    from test_llm_finetune import _lora_setup

    from src.llm import causal

    model, examples, cfg, tok = _lora_setup("train.max_steps=6", "train.log_every=3")
    items = []
    real_item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda self: items.append(1) or real_item(self))
    losses = causal.train(model, examples, cfg, tok.pad_token_id, seed=0)
    assert len(losses) == 6 and np.isfinite(losses).all() and items == []


def test_the_fp16_loss_scale_is_saved_and_restored_with_the_resume_state():
    """Item 8: resume.pt holds the GradScaler's state, so a resumed fp16 run keeps the scale it had reached instead
    of restarting at 65536 (and skipping its first steps)."""
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    scaler._scale = torch.tensor(1024.0)
    scaler._growth_tracker = torch.tensor(7, dtype=torch.int32)
    fake = SimpleNamespace(parts={}, plan=train_module.BatchPlan(8, 1, 1), opt=torch.optim.AdamW(
        [torch.nn.Parameter(torch.zeros(2))]), cfg=load_config(None, []), pos={"elapsed_s": 0.0}, t0=0.0,
        acc=SimpleNamespace(scaler=scaler, unwrap_model=lambda m, **k: m), model=torch.nn.Linear(2, 2),
        elapsed=1.0)
    fake.sched = torch.optim.lr_scheduler.LambdaLR(fake.opt, lambda s: 1.0)
    state = train_module._resume_state(fake, 3, {"epoch": 0, "micro": 3}, [], None)
    assert state["scaler"]["scale"] == 1024.0
    fresh = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    fake.acc = SimpleNamespace(scaler=fresh, process_index=0, device=torch.device("cpu"))
    fake.ema, fake.resume = None, None
    train_module._restore(fake, {**state, "rng": [train_module._rng_state(torch.device("cpu"))]})
    assert fresh.get_scale() == 1024.0 and fresh._get_growth_tracker() == 7


def test_compiled_graphs_are_reused_by_the_next_fold_not_compiled_again(workdir, comp_dir, tiny_root, monkeypatch):
    """Item 8: `torch._dynamo.reset()` after every fold threw the compiled graphs away (a full compile per fold);
    without CUDA graphs the next fold reuses them (same shapes), and is still freed (the weakref test above)."""
    from torch._dynamo.utils import counters

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, mode=None: real_compile(model, backend="aot_eager"))
    torch._dynamo.reset()
    counters.clear()
    cfg = load_config(None, overrides(comp_dir, one_layer_bert(tiny_root), "graphs", "train.max_steps=2",
                                      "train.eval_every=2", "train.compile=default", "train.pad_to_multiple=64",
                                      "train.drop_last=true", "train.batch_size=8", "folds.run=[0,1,2]"))
    comp, folds, rd = setup(cfg)
    train_folds(cfg, comp, folds, rd)
    assert all((rd.fold(k) / "done.json").is_file() for k in range(3))
    assert counters["stats"]["unique_graphs"] == 1  # one compile for three folds


@pytest.mark.parametrize("capability, archs, ok", [
    ((6, 0), ["sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"], False),  # P100, cu128
    ((7, 0), ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"], False),  # V100, cu130
    ((6, 0), ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"], True),  # P100, cu126
    ((8, 9), ["sm_75", "sm_80", "sm_86", "sm_90"], True),  # L4 runs sm_86 code
    ((12, 1), ["sm_75", "sm_80", "sm_90", "compute_120"], True),  # PTX for newer cards
    ((7, 5), ["sm_80", "sm_90"], False)])
def test_a_torch_without_kernels_for_the_card_stops_with_the_fix(monkeypatch, capability, archs, ok):
    """Item 4: `torch.cuda.is_available()` is True on a P100 with a cu128 wheel, and the run dies at the first kernel
    ("no kernel image"); the config check compares the card with torch.cuda.get_arch_list() first."""
    from src import precision

    fake_gpu(monkeypatch, capability, archs)
    cfg = load_config(None, ["model_type=transformer", "model.name_or_path=x"])
    if ok:
        check_train_config(cfg)
        return
    with pytest.raises(UserError) as e:
        check_train_config(cfg)
    message = str(e.value)
    assert "\n" not in message and f"sm_{capability[0]}{capability[1]}" in message
    assert "--index-url https://download.pytorch.org/whl/cu126" in message and "TORCH_SPEC=" in message
    assert precision.CU126 in message


def test_compile_on_a_card_older_than_volta_is_refused(monkeypatch):
    """Item 5: inductor's Triton needs sm_70 (GPUTooOldForTriton inside the first step otherwise)."""
    fake_gpu(monkeypatch, (6, 0), ["sm_60"])
    with pytest.raises(UserError, match=r"train.compile=default needs a GPU of compute capability 7.0 .*sm_60"):
        check_train_config(load_config(None, ["model_type=transformer", "train.compile=default"]))
    check_train_config(load_config(None, ["model_type=transformer", "train.compile=none"]))
    fake_gpu(monkeypatch, (7, 5), ["sm_75"])
    check_train_config(load_config(None, ["model_type=transformer", "train.compile=default"]))


@pytest.mark.parametrize("bias", ["all", "lora_only"])
def test_qlora_with_trainable_biases_is_refused(bias):
    """Item 6: bitsandbytes recasts a trainable bias of a 4-bit layer to the compute dtype at every forward (fp16:
    'Attempting to unscale FP16 gradients')."""
    with pytest.raises(UserError, match=rf"lora.bias={bias} with model.method=qlora.*use lora.bias=none"):
        check_train_config(load_config(None, ["model_type=transformer", "model.method=qlora", f"lora.bias={bias}"]))
    check_train_config(load_config(None, ["model_type=transformer", "model.method=lora", f"lora.bias={bias}"]))


@pytest.mark.parametrize("family", ["gemma", "gemma2"])
def test_fp16_is_refused_for_families_that_overflow_in_it(monkeypatch, tiny_root, family):
    """Item 7: Gemma in fp16 diverges after a few hundred steps; `auto` on a T4 is fp16, so it is refused at the
    model's load, before any step; bf16 is taken; gemma-2b.yaml sets what its header says."""
    path = make_tiny(family, tiny_root)
    fake_gpu(monkeypatch, (7, 5), ["sm_75"], "Tesla T4")
    for precision in ("auto", "fp16"):
        cfg = load_config(None, ["model_type=transformer", f"model.name_or_path={path}", "model.method=full",
                                 f"train.precision={precision}"])
        with pytest.raises(UserError, match=f"{family} overflows in fp16"):
            tm.build_model(cfg, ["a", "b"])
    assert load_config(ROOT / "configs" / "gemma-2b.yaml").train.precision == "bf16"


def test_describe_counts_4bit_weights_as_weights_not_bytes(tiny_root):
    """Item 8: a 4-bit parameter packs two weights per byte; the trainable share was computed on half the base."""
    pytest.importorskip("bitsandbytes")
    path = make_tiny("llama", tiny_root)
    lora, _ = tm.build_model(load_config(None, ["model_type=transformer", f"model.name_or_path={path}",
                                                "model.method=lora"]), ["a", "b"])
    qlora, _ = tm.build_model(load_config(None, ["model_type=transformer", f"model.name_or_path={path}",
                                                 "model.method=qlora"]), ["a", "b"])
    assert tm.describe(qlora) == tm.describe(lora)


def test_cuda_graph_modes_free_their_graph_pools_between_folds_but_keep_the_compiled_code(monkeypatch):
    """Item 8: with CUDA graphs a fold's graph pools are released (cudagraph trees reset), while dynamo's compiled
    code stays for the next fold: `torch._dynamo.reset()` would compile everything again."""
    from torch._inductor import cudagraph_trees

    calls = []
    monkeypatch.setattr(torch._dynamo, "reset", lambda: calls.append("dynamo"))
    monkeypatch.setattr(cudagraph_trees, "reset_cudagraph_trees", lambda: calls.append("graphs"))
    acc = SimpleNamespace(trackers=[], free_memory=lambda: calls.append("free"))
    train_module.release_fold(acc, graphs=True)
    train_module.release_fold(acc, graphs=False)
    assert calls == ["graphs", "free", "free"]


def test_wandb_without_credentials_stops_before_any_work(tmp_path, monkeypatch):
    """--wandb (train.report_to=wandb) with no key and no offline mode: one line naming the fixes, at the config
    check (before the model loads), not two chained tracebacks at the first fold."""
    import importlib.util

    from src import tracking

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "wandb" else None)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    cfg = load_config(None, ["model_type=transformer", "train.report_to=wandb"])
    with pytest.raises(UserError, match=r"no W&B credentials here: set WANDB_API_KEY .* WANDB_MODE=offline"):
        check_train_config(cfg)
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password k3y\n")  # after `wandb login`
    assert tracking.has_wandb_key()
    check_train_config(cfg)
    (tmp_path / "netrc").unlink()
    monkeypatch.setenv("WANDB_MODE", "offline")
    check_train_config(cfg)
