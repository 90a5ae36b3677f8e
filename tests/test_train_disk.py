"""Checkpoints and disk: half-precision weight files that still resume exactly, the footprint check before a fold
trains, and one line per evaluation (issue 14). Tiny random BERT, a few steps."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest
from safetensors import safe_open
from test_train import Interrupt, history, overrides, setup, steps, stop_at
from test_transformer import make_tiny

from src import checkpoints
from src.config import load_config
from src.errors import UserError
from src.models import transformer as tm
from src.rundir import RunDir
from src.train import train_folds

pytestmark = pytest.mark.usefixtures("one_thread")
EXTRA = ("train.epochs=2", "train.eval_every=5", "train.batch_size=8", "train.keep_top_k=0")


def test_half_precision_weight_files_take_half_the_disk_and_resume_exactly(workdir, comp_dir, tiny_root):
    model = make_tiny("bert", tiny_root)
    full = load_config(None, overrides(comp_dir, model, "f32", *EXTRA))
    comp, folds, rd_full = setup(full)
    train_folds(full, comp, folds, rd_full)
    straight = load_config(None, overrides(comp_dir, model, "f16", *EXTRA, "train.checkpoint_dtype=float16"))
    rd_a = RunDir.of(straight)
    train_folds(straight, comp, folds, rd_a)
    last = steps(rd_a)[-1]
    with safe_open(str(rd_a.step(0, last) / "model.safetensors"), "pt") as f:
        dtypes = {str(f.get_tensor(n).dtype) for n in f.keys()}
    assert "torch.float16" in dtypes and "torch.float32" not in dtypes
    size = lambda rd: (rd.step(0, last) / "model.safetensors").stat().st_size  # noqa: E731
    assert size(rd_a) < 0.6 * size(rd_full)
    # training itself is unchanged (float32); the held-out probabilities come from the float32 weights
    np.testing.assert_allclose(np.load(rd_a.step(0, last) / "valid_probs.npy"),
                               np.load(rd_full.step(0, last) / "valid_probs.npy"), atol=1e-6)
    texts = [comp.train_texts[i] for i in np.flatnonzero(folds["fold"].to_numpy() == 0)]
    reloaded, tok = tm.load_checkpoint(straight, rd_a.step(0, last), comp.labels)  # upcast to float32 on load
    assert next(reloaded.parameters()).dtype.is_floating_point
    np.testing.assert_allclose(tm.predict_probs(reloaded, tok, texts, straight),
                               np.load(rd_a.step(0, last) / "valid_probs.npy"), atol=2e-3)

    cut = load_config(None, overrides(comp_dir, model, "f16-cut", *EXTRA, "train.checkpoint_dtype=float16"))
    rd_b = RunDir.of(cut)
    with pytest.raises(Interrupt):
        train_folds(cut, comp, folds, rd_b, callbacks=(stop_at(10),))
    train_folds(cut, comp, folds, rd_b)  # resumes from the exact float32 weights kept in resume.pt
    assert [h["step"] for h in history(rd_b) if h.get("event") in ("start", "resume")] == [0, 10]
    np.testing.assert_allclose(np.load(rd_b.step(0, last) / "valid_probs.npy"),
                               np.load(rd_a.step(0, last) / "valid_probs.npy"), atol=1e-5)
    with pytest.raises(UserError, match="train.checkpoint_dtype must be one of float32, float16, bfloat16"):
        train_folds(load_config(None, overrides(comp_dir, model, "x", "train.checkpoint_dtype=int8")), comp, folds,
                    RunDir.of(full))


def test_a_run_that_would_fill_the_disk_stops_before_training(workdir, comp_dir, tiny_root, monkeypatch, capsys):
    cfg = load_config(None, overrides(comp_dir, make_tiny("bert", tiny_root), "disk", *EXTRA, "folds.run=[0,1,2]"))
    comp, folds, rd = setup(cfg)
    probe_model, _ = tm.build_model(cfg, comp.labels)
    weights, resume = checkpoints.footprint(probe_model, cfg, tm.is_peft(probe_model))
    params = sum(p.numel() for p in probe_model.parameters())
    assert weights >= 4 * params and resume == 8 * params  # float32 weights; AdamW's two moments
    # 160 rows / batch 8 = 20 steps per epoch, 2 epochs, eval every 5: 8 checkpoints kept per fold (keep_top_k=0)
    need = 3 * 8 * weights + weights + resume
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda p: usage(10**12, 0, need - 1))
    with pytest.raises(UserError, match=r"this run's checkpoints need about .* \(3 folds x 8 kept x .* of weights, "
                                        r"plus .*\), but .* free: train.keep_top_k=1 \(now all\); "
                                        r"train.checkpoint_dtype=float16 .*; or point output.checkpoints_dir"):
        train_folds(cfg, comp, folds, rd)
    assert not list(rd.root.glob("fold*/step*"))  # nothing trained or written
    one_fold = 8 * weights + weights + resume
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda p: usage(10**12, 0, int(one_fold / 0.9)))
    capsys.readouterr()
    train_folds(load_config(None, overrides(comp_dir, cfg.model.name_or_path, "disk", *EXTRA)), comp, folds, rd)
    out = capsys.readouterr().out
    assert "note: this run's checkpoints need about" in out  # tight: a note, and the run goes on
    assert "[disk] tokens per text (train + test): median " in out and "truncates 0.0% of texts" in out
    evals = [h for h in history(rd) if h.get("event") == "eval"]
    assert all(f"[disk] fold 0 step {e['step']}/40 (epoch " in out for e in evals) and len(evals) == 8
    assert f"macro-F1 {evals[-1]['f1_at_0.5']:.4f} at 0.5 / {evals[-1]['f1_tuned']:.4f} tuned" in out
