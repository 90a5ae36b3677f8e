"""The per-fold training loop on tiny random models and synthetic data: learning, a checkpoint per evaluation, exact
LoRA reload, resume after an interruption, keep-top-K, the CLI's --folds, and a 2-process accelerate run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_transformer import make_tiny

from src.config import load_config
from src.data import load_competition
from src.errors import UserError
from src.folds import ensure_folds
from src.models import transformer as tm
from src.rundir import RunDir
from src.train import epoch_batches, lr_factor, main, param_groups, train_folds

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
CONTRACT_KEYS = {"fold", "step", "epoch", "train_loss", "val_loss", "f1_at_0.5", "f1_tuned", "per_label_f1",
                 "per_label_f1_at_0.5", "lr", "elapsed_s"}


def overrides(comp_dir: Path, model: Path, exp: str, *extra: str) -> list[str]:
    return ["model_type=transformer", f"exp={exp}", f"data.data_dir={comp_dir}", "folds.n_folds=5", "folds.run=[0]",
            f"model.name_or_path={model}", "train.batch_size=16", "train.lr=5e-3", "train.log_every=5",
            "output.plots=false", *extra]


def setup(cfg):
    comp = load_competition(cfg.data)
    folds, _ = ensure_folds(cfg, comp, verbose=False)
    return comp, folds, RunDir.of(cfg)


def history(rd: RunDir, k: int = 0) -> list[dict]:
    return [json.loads(line) for line in (rd.fold(k) / "history.jsonl").read_text().splitlines()]


def steps(rd: RunDir, k: int = 0) -> list[int]:
    return sorted(int(d.name[4:]) for d in rd.fold(k).glob("step*"))


def test_lora_decoder_learns_checkpoints_every_eval_and_reloads_exactly(workdir, comp_dir, tiny_root, capfd):
    cfg = load_config(None, overrides(comp_dir, make_tiny("llama", tiny_root), "lora", "model.method=lora",
                                      "model.gradient_checkpointing=true", "train.lr=1e-2", "train.epochs=6",
                                      "train.eval_every=15", "train.head_lr=2e-2", "train.keep_top_k=0"))
    comp, folds, rd = setup(cfg)
    train_folds(cfg, comp, folds, rd)
    evals = [h for h in history(rd) if h.get("event") == "eval"]
    # 160 training rows / batch 16 = 10 steps per epoch: evaluations every 15 steps and at each epoch end
    assert [e["step"] for e in evals] == [10, 15, 20, 30, 40, 45, 50, 60] == steps(rd)
    assert evals[-1]["train_loss"] < 0.6 * evals[0]["train_loss"]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    valid_rows = np.flatnonzero(folds["fold"].to_numpy() == 0)
    texts = [comp.train_texts[i] for i in valid_rows]
    for step in steps(rd):
        d = rd.step(0, step)
        m = json.loads((d / "metrics.json").read_text())
        assert CONTRACT_KEYS <= set(m) and m["fold"] == 0 and m["step"] == step
        assert set(m["per_label_f1"]) == set(comp.labels) and 0 <= m["f1_tuned"] <= 1
        assert m["f1_tuned"] >= m["f1_at_0.5"] - 1e-9  # thresholds tuned on the same rows
        probs = np.load(d / "valid_probs.npy")
        assert probs.shape == (40, 4) and probs.dtype == np.float32
        assert (d / "adapter_model.safetensors").is_file() and not (d / "model.safetensors").exists()
        assert not (d / "resume.pt").exists()  # dropped once the fold is done
    done = json.loads((rd.fold(0) / "done.json").read_text())
    assert done["steps"] == 60 and done["peak_memory"]["ram_gb"] > 0.1 and done["peak_memory"]["gpu_gb"] is None
    # the reloaded adapter + head give the logits the training run saw, and no note calls that head new
    tm._noted_loads.clear()  # as in a fresh process (predict)
    capfd.readouterr()
    model, tok = tm.load_checkpoint(cfg, rd.step(0, 60), comp.labels)
    assert "randomly initialized" not in "".join(capfd.readouterr())
    np.testing.assert_allclose(tm.predict_probs(model, tok, texts, cfg, batch_size=7),
                               np.load(rd.step(0, 60) / "valid_probs.npy"), atol=1e-5)
    assert tm.hf_model(model).config.pad_token_id == tok.pad_token_id


class Interrupt(Exception):
    pass


def stop_at(step: int):
    def callback(record):
        if record["step"] == step:
            raise Interrupt
    return callback


def test_resume_after_interruption_continues_exactly(workdir, comp_dir, tiny_root):
    model = make_tiny("bert", tiny_root)
    extra = ("train.epochs=3", "train.eval_every=5", "train.grad_accum=2", "train.batch_size=8", "train.keep_top_k=0")
    straight = load_config(None, overrides(comp_dir, model, "straight", *extra))
    comp, folds, rd_a = setup(straight)
    train_folds(straight, comp, folds, rd_a)

    cut = load_config(None, overrides(comp_dir, model, "cut", *extra))
    rd_b = RunDir.of(cut)
    with pytest.raises(Interrupt):
        train_folds(cut, comp, folds, rd_b, callbacks=(stop_at(10),))
    assert steps(rd_b) == [5, 10] and (rd_b.step(0, 10) / "resume.pt").is_file()
    assert not (rd_b.step(0, 5) / "resume.pt").exists() and not (rd_b.fold(0) / "done.json").exists()
    train_folds(cut, comp, folds, rd_b)
    assert [h["step"] for h in history(rd_b) if h.get("event") in ("start", "resume")] == [0, 10]
    assert steps(rd_b) == steps(rd_a) == [5, 10, 15, 20, 25, 30]
    for step in (15, 30):  # after the resume: same optimizer, schedule, data order and dropout as without the cut
        np.testing.assert_allclose(np.load(rd_b.step(0, step) / "valid_probs.npy"),
                                   np.load(rd_a.step(0, step) / "valid_probs.npy"), atol=1e-5)
    a = json.loads((rd_a.step(0, 30) / "metrics.json").read_text())
    b = json.loads((rd_b.step(0, 30) / "metrics.json").read_text())
    assert b["val_loss"] == pytest.approx(a["val_loss"], abs=1e-5) and b["lr"] == pytest.approx(a["lr"])

    done = rd_b.fold(0) / "done.json"
    before = done.stat().st_mtime_ns
    train_folds(cut, comp, folds, rd_b)  # a finished fold is skipped
    assert done.stat().st_mtime_ns == before and steps(rd_b) == [5, 10, 15, 20, 25, 30]
    changed = load_config(None, overrides(comp_dir, model, "cut", *extra, "train.lr=1e-3"))
    with pytest.raises(UserError, match=r"finished fold .*settings changed \(train.lr 0.005 -> 0.001\)"):
        train_folds(changed, comp, folds, rd_b)  # never reused silently
    refolded = folds.assign(fold=np.roll(folds["fold"].to_numpy(), 1))
    with pytest.raises(UserError, match=r"data changed \(held-out ids\); delete .*fold0 to train it again"):
        train_folds(cut, comp, refolded, rd_b)


def test_keep_top_k_never_deletes_the_checkpoint_needed_to_resume(workdir, comp_dir, tiny_root):
    cfg = load_config(None, overrides(comp_dir, make_tiny("bert", tiny_root), "topk", "train.epochs=3",
                                      "train.eval_every=5", "train.keep_top_k=1", "train.keep_metric=val_loss"))
    comp, folds, rd = setup(cfg)
    with pytest.raises(Interrupt):
        train_folds(cfg, comp, folds, rd, callbacks=(stop_at(20),))
    kept = steps(rd)
    assert 20 in kept and len(kept) <= 2 and (rd.step(0, 20) / "resume.pt").is_file()
    train_folds(cfg, comp, folds, rd)
    evals = {h["step"]: h["val_loss"] for h in history(rd) if h.get("event") == "eval"}
    assert steps(rd) == [min(evals, key=evals.get)]  # the single best by val_loss over every evaluation


def test_ema_weights_are_evaluated_saved_and_resumed_exactly(workdir, comp_dir, tiny_root):
    model = make_tiny("bert", tiny_root)
    extra = ("train.epochs=2", "train.eval_every=5", "train.batch_size=8", "train.keep_top_k=0")
    plain = load_config(None, overrides(comp_dir, model, "plain", *extra))
    comp, folds, rd_p = setup(plain)
    train_folds(plain, comp, folds, rd_p)
    straight = load_config(None, overrides(comp_dir, model, "ema", *extra, "train.ema=0.9"))
    rd_a = RunDir.of(straight)
    train_folds(straight, comp, folds, rd_a)
    last = steps(rd_a)[-1]
    averaged, raw = np.load(rd_a.step(0, last) / "valid_probs.npy"), np.load(rd_p.step(0, last) / "valid_probs.npy")
    assert np.abs(averaged - raw).max() > 1e-3  # same run, but the averaged weights score the rows
    texts = [comp.train_texts[i] for i in np.flatnonzero(folds["fold"].to_numpy() == 0)]
    reloaded, tok = tm.load_checkpoint(straight, rd_a.step(0, last), comp.labels)  # the saved weights are the EMA
    np.testing.assert_allclose(tm.predict_probs(reloaded, tok, texts, straight), averaged, atol=1e-5)

    cut = load_config(None, overrides(comp_dir, model, "ema-cut", *extra, "train.ema=0.9"))
    rd_b = RunDir.of(cut)
    with pytest.raises(Interrupt):
        train_folds(cut, comp, folds, rd_b, callbacks=(stop_at(10),))
    train_folds(cut, comp, folds, rd_b)  # resumes from the raw weights, with the average where it was
    assert steps(rd_b) == steps(rd_a)
    np.testing.assert_allclose(np.load(rd_b.step(0, last) / "valid_probs.npy"), averaged, atol=1e-5)


def test_without_resume_state_only_top_k_checkpoints_are_written(workdir, comp_dir, tiny_root, monkeypatch):
    import src.train as train_module

    cfg = load_config(None, overrides(comp_dir, make_tiny("bert", tiny_root), "lean", "train.epochs=3",
                                      "train.eval_every=5", "train.keep_top_k=1", "train.keep_metric=val_loss",
                                      "train.resume_state=false"))
    comp, folds, rd = setup(cfg)
    writes, seen = [], []
    save = train_module.save_checkpoint
    monkeypatch.setattr(train_module, "save_checkpoint", lambda d, step, *a: writes.append(step) or save(d, step, *a))
    written = lambda record: seen.append((record["step"], steps(rd), list(rd.fold(0).rglob("resume.pt"))))
    train_folds(cfg, comp, folds, rd, callbacks=(written,))
    evals = {h["step"]: h["val_loss"] for h in history(rd) if h.get("event") == "eval"}
    assert len(evals) == len(seen) == 6 and all(not resume for _, _, resume in seen)
    best_so_far = [min((s for s in evals if s <= step), key=evals.get) for step in sorted(evals)]
    assert [kept for _, kept, _ in seen] == [[b] for b in best_so_far]  # one checkpoint at any time: the best
    assert writes == sorted(set(best_so_far))  # and only the improving ones were written at all
    assert steps(rd) == [min(evals, key=evals.get)] and (rd.fold(0) / "done.json").is_file()


def test_a_fold_cut_short_without_resume_state_trains_again_on_the_next_run(workdir, comp_dir, tiny_root, capsys):
    """train.resume_state=false keeps no state to resume from: a killed fold starts again (it used to fail every
    rerun with "delete it to train fold 0 again"), and finishes as a straight run does."""
    extra = ("train.max_steps=20", "train.eval_every=5", "train.resume_state=false")
    straight = load_config(None, overrides(comp_dir, make_tiny("bert", tiny_root), "lean-a", *extra))
    comp, folds, rd_a = setup(straight)
    train_folds(straight, comp, folds, rd_a)
    cut = load_config(None, overrides(comp_dir, make_tiny("bert", tiny_root), "lean-b", *extra))
    rd_b = RunDir.of(cut)
    with pytest.raises(Interrupt):
        train_folds(cut, comp, folds, rd_b, callbacks=(stop_at(10),))
    assert steps(rd_b) and not (rd_b.fold(0) / "done.json").exists()
    capsys.readouterr()
    train_folds(cut, comp, folds, rd_b)
    out = capsys.readouterr().out
    assert "fold 0 was cut short with train.resume_state=false" in out
    assert steps(rd_b) == steps(rd_a) and (rd_b.fold(0) / "done.json").is_file()
    # the training objective named beside the plain-BCE val loss, so the two are not read as comparable
    assert re.search(r"train loss [\d.]+ \(bce, pos_weight balanced\), val loss [\d.]+ \(plain BCE\)", out)
    last = steps(rd_a)[-1]
    np.testing.assert_allclose(np.load(rd_b.step(0, last) / "valid_probs.npy"),
                               np.load(rd_a.step(0, last) / "valid_probs.npy"), atol=1e-6)


def test_compiled_training_model_evaluates_and_saves_the_plain_one(workdir, comp_dir, tiny_root, monkeypatch):
    """train.compile wraps the model in torch.compile; here with the aot_eager backend (dynamo and AOT autograd
    run, no C++ code generation) to keep the test fast. Batches of one padded shape: pad_to_multiple + drop_last."""
    import torch

    compile_ = torch.compile
    modes = []

    def aot_eager(model, mode=None, **kw):
        modes.append(mode)
        return compile_(model, backend="aot_eager", **kw)

    monkeypatch.setattr(torch, "compile", aot_eager)
    cfg = load_config(None, overrides(comp_dir, make_tiny("bert", tiny_root), "compiled", "train.max_steps=6",
                                      "train.eval_every=3", "train.compile=reduce-overhead", "train.pad_to_multiple=64",
                                      "train.drop_last=true"))
    comp, folds, rd = setup(cfg)
    train_folds(cfg, comp, folds, rd)
    assert modes == ["reduce-overhead"] and steps(rd) == [3, 6]
    saved = (rd.step(0, 6) / "model.safetensors").read_bytes()
    assert b"_orig_mod" not in saved[:20000]  # the plain module's names, loadable without compile
    texts = [comp.train_texts[i] for i in np.flatnonzero(folds["fold"].to_numpy() == 0)]
    model, tok = tm.load_checkpoint(cfg, rd.step(0, 6), comp.labels)
    np.testing.assert_allclose(tm.predict_probs(model, tok, texts, cfg), np.load(rd.step(0, 6) / "valid_probs.npy"),
                               atol=1e-5)
    lengths = np.arange(1, 20)
    assert [len(b) for b in epoch_batches(lengths, 8, 1, seed=0, by_length=True, drop_last=True)] == [8, 8]


def test_schedule_param_groups_and_batches(tiny_root):
    assert [round(lr_factor(s, 10, 2, "linear"), 3) for s in (0, 1, 2, 9)] == [0.5, 1.0, 1.0, 0.125]
    assert lr_factor(2, 10, 2, "cosine") == 1.0 and lr_factor(9, 10, 2, "cosine") < 0.05
    assert lr_factor(7, 10, 2, "constant") == 1.0
    cfg = load_config(None, ["model_type=transformer", f"model.name_or_path={make_tiny('bert', tiny_root)}",
                             "train.lr=1e-3", "train.head_lr=1e-2", "train.layer_lr_decay=0.5"])
    model, _ = tm.build_model(cfg, ["a", "b"])
    lr_of = {id(p): g["lr"] for g in param_groups(model, cfg) for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in param_groups(model, cfg) for p in g["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["classifier.weight"])] == 1e-2
    assert lr_of[id(named["bert.encoder.layer.1.attention.self.query.weight"])] == 1e-3 * 0.5
    assert lr_of[id(named["bert.encoder.layer.0.attention.self.query.weight"])] == 1e-3 * 0.25
    assert lr_of[id(named["bert.embeddings.word_embeddings.weight"])] == 1e-3 * 0.125
    assert wd_of[id(named["bert.embeddings.LayerNorm.weight"])] == 0.0
    assert wd_of[id(named["bert.encoder.layer.0.attention.self.query.bias"])] == 0.0
    assert wd_of[id(named["bert.encoder.layer.0.attention.self.query.weight"])] == 0.01

    lengths = np.random.default_rng(0).integers(5, 60, size=103)
    batches = epoch_batches(lengths, 8, 1, seed=1, by_length=True)
    assert sorted(np.concatenate(batches).tolist()) == list(range(103))
    assert lengths[batches[0]].max() == lengths.max()  # the longest batch first (memory errors show at once)
    pad = lambda bs: sum(len(b) * lengths[b].max() - lengths[b].sum() for b in bs)
    assert pad(batches) < 0.5 * pad(epoch_batches(lengths, 8, 1, seed=1, by_length=False))
    two = epoch_batches(lengths, 8, 2, seed=1, by_length=True)
    assert all(len(b) >= 2 for b in two) and len(np.concatenate(two)) >= 102  # a lone last row is dropped


def test_user_errors(workdir, comp_dir, tiny_root):
    base = overrides(comp_dir, make_tiny("bert", tiny_root), "bad")
    comp, folds, rd = setup(load_config(None, base))
    for extra, message in [("train.keep_metric=accuracy", "keep_metric"), ("train.loss=hinge", "train.loss"),
                           ("train.scheduler=step", "train.scheduler"), ("model.method=adapters", "model.method"),
                           ("train.ema=1", "train.ema"), ("train.compile=fast", "train.compile"),
                           ("train.pad_to_multiple=-8", "pad_to_multiple")]:
        with pytest.raises(UserError, match=message):
            train_folds(load_config(None, [*base, extra]), comp, folds, rd)
    try:
        import wandb  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="pip install wandb"):
            train_folds(load_config(None, [*base, "train.report_to=wandb"]), comp, folds, rd)


def write_config(path: Path, comp_dir: Path, model: Path, exp: str, **train) -> Path:
    cfg = {"exp": exp, "model_type": "transformer", "data": {"data_dir": str(comp_dir)},
           "folds": {"n_folds": 5}, "model": {"name_or_path": str(model), "method": "lora"},
           "train": {"batch_size": 16, "lr": 5e-3, "log_every": 2, **train}}
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_folds_option_reaches_the_run(workdir, comp_dir, tiny_root):
    config = write_config(workdir / "tiny.yaml", comp_dir, make_tiny("qwen2", tiny_root), "cli", max_steps=3)
    main(["--config", str(config), "--folds", "1", "train.eval_every=2"])
    rd = RunDir(workdir / "checkpoints/cli", workdir / "submissions")
    assert not rd.fold(0).exists() and (rd.fold(1) / "done.json").is_file()
    assert steps(rd, 1) == [2, 3]
    assert yaml.safe_load((rd.root / "partial/config.yaml").read_text())["folds"]["run"] == [1]  # partial
    with pytest.raises(SystemExit) as e:
        main(["--config", str(config), "--folds", "0,x"])
    assert e.value.code == 2


def test_cli_folds_train_beside_another_process_on_other_folds(workdir, comp_dir, tiny_root, capsys):
    """Folds 3-4 held by another live process: `--folds 0` still trains (the README's parallel fold processes)."""
    import json
    import socket
    import subprocess

    config = write_config(workdir / "tiny.yaml", comp_dir, make_tiny("bert", tiny_root), "par", max_steps=2)
    rd = RunDir(workdir / "checkpoints/par", workdir / "submissions")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        rd.root.mkdir(parents=True)
        for k in (3, 4):
            (rd.root / f".lock-fold{k}").write_text(json.dumps(
                {"pid": other.pid, "host": socket.gethostname(), "started": "now", "command": "x", "folds": [3, 4]}))
        main(["--config", str(config), "--folds", "0"])
        assert (rd.fold(0) / "done.json").is_file() and not (rd.root / ".lock-fold0").exists()
        with pytest.raises(SystemExit):
            main(["--config", str(config), "--folds", "4"])
        assert "in use by another run training its folds 3, 4" in capsys.readouterr().err
    finally:
        other.kill()
        other.wait()


@pytest.mark.skipif(shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None,
                    reason="accelerate CLI not installed")
def test_two_process_accelerate_launch(workdir, comp_dir, tiny_root):
    """DDP over 2 CPU processes (`accelerate launch --multi_gpu` starts them; without CUDA they train on CPU). The
    config means the same training as in one process: 8 rows per update (4 per process), so one epoch of the 160
    training rows is 20 updates, as in one process (not 10 of 16 rows)."""
    config = write_config(workdir / "ddp.yaml", comp_dir, make_tiny("bert", tiny_root), "ddp", epochs=0.2,
                          eval_every=2, batch_size=8)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "src.train",
           "--config", str(config), "--folds", "0"]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = load_config(config)
    comp, folds, rd = setup(cfg)
    assert history(rd)[0]["processes"] == 2 and history(rd)[0]["total_steps"] == 4 and steps(rd) == [2, 4]
    assert "batch 8 = 4 x 2 proc x 1 accum" in proc.stdout
    assert json.loads((rd.fold(0) / "done.json").read_text())["processes"] == 2
    # the held-out rows scored by the two processes are gathered back into train.csv order
    texts = [comp.train_texts[i] for i in np.flatnonzero(folds["fold"].to_numpy() == 0)]
    model, tok = tm.load_checkpoint(cfg, rd.step(0, 4), comp.labels)
    np.testing.assert_allclose(tm.predict_probs(model, tok, texts, cfg), np.load(rd.step(0, 4) / "valid_probs.npy"),
                               atol=1e-5)


def test_the_whole_run_s_eta_comes_from_the_finished_folds(workdir):
    from src.train import remaining

    rd = RunDir.of(load_config(None, ["exp=eta"]))
    for k, elapsed in ((0, 3000), (1, 3600)):
        rd.fold(k).mkdir(parents=True)
        (rd.fold(k) / "done.json").write_text(json.dumps({"fold": k, "elapsed_s": elapsed}))
    rd.fold(2).mkdir()
    (rd.fold(2) / "done.json").write_text("{truncated")  # damaged: left out of the mean, never an error here
    assert remaining(rd, [1, 3, 4]) == ("2 folds left (3, 4): about 01:50:00 at the 00:55:00 per fold the 2 finished "
                                        "folds took")
    assert remaining(rd, [1]) == "every fold of this command is trained"
    assert remaining(RunDir.of(load_config(None, ["exp=none"])), [0]) == "1 fold left"
