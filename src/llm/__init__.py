"""Label probabilities from language models, each ending in the usual oof.csv / test.csv.

    score.py   model_type llm: zero-/few-shot scoring with a causal LM (multi-label prompt or unary yes/no)
    causal.py  model_type llm_finetune: LoRA "text -> label list" per fold, label probabilities read out
    probe.py   model_type probe: logistic-regression / MLP probe on frozen hidden states (features.py caches them)

Pieces: lm.py (loading), prompts.py (templates, few-shot, answers), label_tokens.py (which token
probabilities a candidate answer needs), readout.py (running the model: shared-prefix caches, greedy answers),
aggregate.py (per-step distributions -> per-label probabilities), outputs.py (files), analysis.py (report).
"""
