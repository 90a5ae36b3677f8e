"""The promise behind every OOF-tuned threshold: for every method, a checkpoint reloaded the way prediction reloads it
(`src.predict.predict_checkpoint`) gives exactly the probabilities its evaluation saved in valid_probs.npy, in float32
and with 16-bit base weights under bf16 autocast (QLoRA's training keeps its non-4-bit weights in float32; a reload
that left them in bf16 ran other numerics than the evaluations the thresholds were tuned on)."""

from __future__ import annotations

import numpy as np
import pytest
from test_train import overrides, setup
from test_transformer import make_tiny

from src.config import load_config
from src.predict import predict_checkpoint
from src.train import train_folds

pytestmark = pytest.mark.usefixtures("one_thread", "fresh_accelerator")
METHODS = ["full", "last_n", "lora", "qlora"]
NUMERICS = {"float32": ["train.precision=no"], "bf16-base": ["model.dtype=bfloat16", "train.precision=bf16"]}


@pytest.mark.parametrize("numerics", list(NUMERICS))
@pytest.mark.parametrize("method", METHODS)
def test_a_reloaded_checkpoint_gives_the_probabilities_its_evaluation_saved(workdir, comp_dir, tiny_root, method,
                                                                             numerics):
    if method == "qlora":
        pytest.importorskip("bitsandbytes")
    cfg = load_config(None, overrides(comp_dir, make_tiny("llama", tiny_root), f"{method}-{numerics}",
                                      f"model.method={method}", "model.last_n_layers=1", "train.max_steps=6",
                                      "train.eval_every=3", "train.lr=1e-2", *NUMERICS[numerics]))
    comp, folds, rd = setup(cfg)
    train_folds(cfg, comp, folds, rd)
    texts = [comp.train_texts[i] for i in np.flatnonzero(folds["fold"].to_numpy() == 0)]
    for step in (3, 6):
        saved = np.load(rd.step(0, step) / "valid_probs.npy")
        reloaded = predict_checkpoint(cfg, rd.step(0, step), comp.labels, texts)
        assert np.abs(saved - 0.5).max() > 1e-3  # a trained head, not a constant
        np.testing.assert_array_equal(reloaded, saved, err_msg=f"{method} {numerics} step {step}")
