"""Model families by `model_type`. Each exposes `run(cfg, comp, folds, rd)` that writes oof.csv and test.csv."""

from __future__ import annotations

import importlib

from src.errors import UserError

FAMILIES = {
    "llm": "src.llm.score",  # zero-/few-shot label probabilities from a causal LM
    "llm_finetune": "src.llm.causal",  # LoRA "text -> label list", label probabilities read out
    "probe": "src.llm.probe",  # linear probe on frozen hidden states
    "tfidf": "src.models.tfidf",
    "transformer": "src.predict",  # train_folds -> select -> predict (model code: src/models/transformer.py)
}


def family(model_type: str):
    """The module of a model family, imported on demand (torch only loads when needed)."""
    if model_type not in FAMILIES:
        raise UserError(f"model_type must be one of {sorted(FAMILIES)}, got {model_type!r}")
    return importlib.import_module(FAMILIES[model_type])
