"""model_type llm: zero-/few-shot label probabilities from a causal LM, no training.

    python -m src run --config configs/llm_zeroshot_multi.yaml data.data_dir=... [llm.max_train_rows=400]

Multi-label prompt (llm.prompt=multi): the labels are listed and the model answers greedily; at the answer's
start and after each separator the distribution over the label words is read (see aggregate.py for first /
max / mean / parsed; llm.method picks the one in oof.csv, all land in methods/). Unary prompt
(llm.prompt=unary): one yes/no question per label. Few-shot examples for fold k's rows come from the other
folds; test rows take theirs from all train rows. A zero-shot score does not depend on the fold, so each row
is scored once. Rows are scored in chunks saved under the run folder (chunks.py): a stopped run resumes.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from src.config import Config, to_dict
from src.data import digest
from src.errors import UserError
from src.folds import folds_for_run
from src.llm import aggregate, analysis, sampling
from src.llm.chunks import scored_in_chunks
from src.llm.label_tokens import plan_queries
from src.llm.lm import load_causal_lm
from src.llm.outputs import steps_path, write_jsonl, write_outputs
from src.llm.prompts import Prompter
from src.llm.readout import candidate_logprobs, greedy_answers


def main_method(cfg: Config) -> str:
    if cfg.llm.prompt == "unary":
        return "unary"
    if cfg.llm.method not in aggregate.MULTI_METHODS:
        raise UserError(f"llm.method must be one of {list(aggregate.MULTI_METHODS)}, got {cfg.llm.method!r}")
    return cfg.llm.method


def score_multi(model, tok, prompter: Prompter, texts: list[str], shot_rows: list[tuple[str, np.ndarray]],
                cfg: Config, desc: str | None) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Multi-label prompt for each text: greedy answer, then the label distribution at each label step (`desc`:
    the progress bars' name, None for none)."""
    L = len(prompter.names)
    if not texts:  # e.g. a fold with no row in a small llm.max_train_rows subset
        return aggregate.multi_methods([], np.zeros((0, L)), L), []
    prompts = [prompter.multi_prompt(t, shot_rows) for t in texts]
    raw = greedy_answers(model, tok, prompts, prompter.add_special_tokens, cfg.llm.max_new_tokens,
                         cfg.llm.batch_size, cfg.llm.kv_cache, desc=desc and f"{desc} answers")
    answers = [prompter.clean_answer(a) for a in raw]
    max_steps = cfg.llm.max_steps or L
    queries = [prompter.step_queries(p, a, max_steps) for p, a in zip(prompts, answers)]
    plans = plan_queries(tok, [q for qs in queries for q in qs], prompter.add_special_tokens)
    rows, k = [], 0
    for qs in queries:
        rows.append(plans[k: k + len(qs)])
        k += len(qs)
    lps = candidate_logprobs(model, rows, tok.pad_token_id, cfg.llm.kv_cache, cfg.llm.batch_size,
                             desc=desc and f"{desc} label steps")
    methods = aggregate.multi_methods(lps, np.stack([prompter.parse(a) for a in answers]), L)
    records = [{"answer": a, "steps": [np.round(d, 5).tolist() for d in aggregate.step_distributions(lp)],
                "mass": np.round(aggregate.mass(lp), 5).tolist()} for a, lp in zip(answers, lps)]
    return methods, records


def score_unary(model, tok, prompter: Prompter, texts: list[str], shot_rows: list[list[tuple[str, np.ndarray]]],
                cfg: Config, desc: str | None) -> tuple[dict[str, np.ndarray], list[dict]]:
    """One yes/no question per label; `shot_rows[j]` are label j's examples."""
    L = len(prompter.names)
    queries = [prompter.unary_query(prompter.unary_prompt(t, j, shot_rows[j])) for t in texts for j in range(L)]
    plans = plan_queries(tok, queries, prompter.add_special_tokens)
    rows = [plans[i * L: (i + 1) * L] for i in range(len(texts))]
    lps = candidate_logprobs(model, rows, tok.pad_token_id, cfg.llm.kv_cache, cfg.llm.batch_size,
                             desc=desc and f"{desc} yes/no")
    n_yes = len(cfg.llm.yes_words)
    probs = np.stack([aggregate.unary_probs(lp, n_yes) for lp in lps]) if lps else np.zeros((0, L))
    records = [{"mass": np.round(aggregate.mass(lp), 5).tolist()} for lp in lps]
    return {"unary": probs}, records


def score_group(model, tok, prompter, cfg: Config, comp, rows: np.ndarray, texts: list[str], pool: np.ndarray,
                seed: list[int], desc: str, store: Path | None = None):
    """Score `texts` with few-shot examples drawn from train rows `pool`, a chunk at a time (saved in `store`)."""
    rng = np.random.default_rng(seed)
    Y, train_texts = comp.Y, comp.train_texts
    if cfg.llm.prompt == "multi":
        picked = sampling.shots(rng, pool, cfg.llm.n_shots)
        shots = [(train_texts[i], Y[i]) for i in picked]
        score = lambda part: score_multi(model, tok, prompter, part, shots, cfg, None)  # noqa: E731
        shown = [[t, y.tolist()] for t, y in shots]
    else:
        per_label = [sampling.unary_shots(rng, pool, Y[:, j], cfg.llm.n_shots) for j in range(len(comp.labels))]
        shots = [[(train_texts[i], Y[i]) for i in picked] for picked in per_label]
        score = lambda part: score_unary(model, tok, prompter, part, shots, cfg, None)  # noqa: E731
        shown = [[[t, y.tolist()] for t, y in label] for label in shots]
    settings = to_dict(cfg)
    key = {"model": settings["model"], "labels": list(comp.labels), "shots": digest(shown),
           "llm": {k: v for k, v in settings["llm"].items() if k not in ("max_train_rows", "max_test_rows")}}
    return scored_in_chunks(score, texts, key, store, desc)


def predict_folds(cfg: Config, rd, texts: list[str]) -> dict[int, np.ndarray]:
    """The scorer applied to `texts` as to test.csv (few-shot examples from every train row, which the run's data
    folder must hold); a score does not depend on the fold, so every fold gets the same."""
    from src.runguard import run_labels
    from src.text import normalize

    model, tok = load_causal_lm(cfg.model)
    prompter = Prompter.build(tok, cfg.llm, run_labels(rd), cfg.model.max_length)
    texts = normalize(texts, cfg.data.normalize)
    if cfg.llm.n_shots:
        from src.data import load_competition

        comp = load_competition(cfg.data)
        methods, _ = score_group(model, tok, prompter, cfg, comp, np.arange(len(texts)), texts,
                                 np.arange(len(comp.train)), [cfg.train.seed, 0], desc="input")
    else:  # zero-shot: no train rows needed; the run's chunks, so its test rows get their probabilities exactly
        multi = cfg.llm.prompt == "multi"
        fn, shots = (score_multi, []) if multi else (score_unary, [[] for _ in prompter.names])
        methods, _ = scored_in_chunks(lambda part: fn(model, tok, prompter, part, shots, cfg, None), texts, {}, None,
                                      "input")
    probs = methods[main_method(cfg)]
    return {k: probs for k in folds_for_run(cfg)}


def run(cfg: Config, comp, folds, rd) -> None:
    """Score the chosen train rows (OOF) and test rows; write oof.csv, test.csv, methods/, steps, report."""
    t0 = time.time()
    main = main_method(cfg)
    model, tok = load_causal_lm(cfg.model)
    prompter = Prompter.build(tok, cfg.llm, comp.labels, cfg.model.max_length)
    fold = folds["fold"].to_numpy()
    run_folds = folds_for_run(cfg)
    seed = cfg.train.seed
    train_rows = sampling.subset(np.flatnonzero(np.isin(fold, run_folds)), cfg.llm.max_train_rows, seed)
    n_test = len(comp.test)
    test_rows = None if cfg.llm.max_test_rows < 0 else sampling.subset(np.arange(n_test), cfg.llm.max_test_rows, seed)
    print(f"[{cfg.exp}] {cfg.llm.prompt} prompt, {cfg.llm.n_shots}-shot, {'chat' if prompter.chat else 'plain'} "
          f"form: {len(train_rows)} train rows, {0 if test_rows is None else len(test_rows)} test rows")
    texts = comp.train_texts
    all_rows = np.arange(len(comp.train))
    # zero-shot: one group; few-shot: one group per fold, examples from the other folds
    groups = [(k, train_rows[fold[train_rows] == k]) for k in run_folds] if cfg.llm.n_shots else [(-1, train_rows)]
    oof: dict[str, np.ndarray] = {}
    records: list[dict] = [{} for _ in train_rows]
    pos = {r: i for i, r in enumerate(train_rows)}
    store = rd.root / "scoring"  # chunks scored so far: a rerun after a stop reads them
    for k, rows in groups:
        if not len(rows):
            continue
        pool = all_rows[fold != k]
        methods, recs = score_group(model, tok, prompter, cfg, comp, rows, [texts[i] for i in rows], pool,
                                    [seed, k + 1], desc="oof" if k < 0 else f"fold {k}", store=store)
        idx = [pos[r] for r in rows]
        for name, probs in methods.items():
            oof.setdefault(name, np.zeros((len(train_rows), len(comp.labels))))[idx] = probs
        for i, r, rec in zip(idx, rows, recs):
            records[i] = {"id": comp.train_ids[r], "fold": int(fold[r]), **rec}
    test = None
    if test_rows is not None:
        test, test_recs = score_group(model, tok, prompter, cfg, comp, test_rows,
                                      [comp.test_texts[i] for i in test_rows], all_rows, [seed, 0], desc="test",
                                      store=store)
        write_jsonl(steps_path(rd, "test"), [{"id": comp.test_ids[r], **rec} for r, rec in zip(test_rows, test_recs)])
    write_jsonl(steps_path(rd, "oof"), records)
    write_outputs(rd, comp, folds, main, train_rows, oof, test_rows, test)
    shutil.rmtree(store, ignore_errors=True)  # the outputs hold every score now
    print(f"[{cfg.exp}] scored in {time.time() - t0:.1f} s")
    analysis.write_report(cfg, comp, folds, rd)
