"""Running a causal LM for label readout: candidate log-probabilities and greedy answers, rows in batches.

Prompts share long prefixes: the system message, instructions and few-shot turns are the same for every row,
a row's text is the same for all its candidates. With `kv_cache`, the prefix shared by all rows is run once;
per batch of rows that cache is copied, each row's own shared part is run (left-padded), and the short
per-candidate suffixes are run on the row caches, selected per suffix. Pads sit between cached and new
tokens, so every call passes the attention mask over the whole cache and position ids that skip the pads.
Only the logits that are read are projected to the vocabulary (`logits_to_keep`). Without `kv_cache`
(the reference path) every input runs whole, left-padded in a batch.
"""

from __future__ import annotations

import copy
import inspect

import numpy as np
import torch

from src.llm.label_tokens import Plan, common_prefix
from src.llm.lm import stop_token_ids
from src.progress import tqdm


class Runner:
    """Forward passes over left-padded sequences that continue a (batched) key/value cache."""

    def __init__(self, model, pad_id: int):
        self.model, self.pad_id = model, pad_id
        self.device = next(model.parameters()).device
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT wrapper: ask the model
        params = inspect.signature(inner.forward).parameters
        self.keep_arg = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in params), None)
        # transformers 5 renamed past_key_values to cache (the old name goes in 5.40, then lands in **kwargs unused)
        self.cache_arg = "cache" if "cache" in params else "past_key_values"

    def new_cache(self):
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self.model.config)
        except TypeError:  # transformers < 4.56
            return DynamicCache()

    def forward(self, seqs: list[list[int]], cache=None, past_mask: torch.Tensor | None = None,
                start: torch.Tensor | None = None, keep: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Run `seqs` (left-padded) after `cache`; returns (logits of the last `keep` columns, new mask part).

        `past_mask` [batch, cached] marks real cached tokens; `start` [batch] is each row's next position.
        """
        width = max(len(s) for s in seqs)
        ids = torch.tensor([[self.pad_id] * (width - len(s)) + s for s in seqs], device=self.device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=self.device)
        start = torch.zeros(len(seqs), dtype=torch.long, device=self.device) if start is None else start
        pos = (start[:, None] + mask.cumsum(1) - 1).clamp(min=0)
        full = mask if past_mask is None else torch.cat([past_mask, mask], 1)
        kwargs = {self.keep_arg: keep} if self.keep_arg else {}
        out = self.model(input_ids=ids, attention_mask=full, position_ids=pos, use_cache=cache is not None,
                         **{self.cache_arg: cache}, **kwargs)
        return out.logits[:, -keep:].float(), mask


def _rows_in(items: list, size: int):
    return [items[s: s + size] for s in range(0, len(items), size)]


def _batch_cache(run: Runner, gcache, b: int):
    """A cache for `b` rows, holding the shared global prefix (`gcache`) when there is one."""
    if gcache is None:
        return run.new_cache()
    cache = copy.deepcopy(gcache)
    cache.batch_repeat_interleave(b)
    return cache


def _row_stage(run: Runner, batch: list, gcache, g: int):
    """Cache of each row's shared tokens (after the global prefix): (cache, past mask, next positions)."""
    b = len(batch)
    start = torch.full((b,), g, dtype=torch.long, device=run.device)
    if max(r for *_, r in batch) == 0:
        return None, None, start
    cache = _batch_cache(run, gcache, b)
    past = torch.ones(b, g, dtype=torch.long, device=run.device)
    parts = [inputs[0][g:r] for inputs, _, r in batch]
    if max(len(p) for p in parts) > 0:
        _, m = run.forward(parts, cache, past, start)
        past, start = torch.cat([past, m], 1), start + m.sum(1)
    return cache, past, start


def _suffix_stage(run: Runner, batch: list, cache, past, start) -> list[list[np.ndarray]]:
    """Run every input's tokens after its row's cache; sum the read log-probs per candidate."""
    owner = [k for k, (inputs, _, _) in enumerate(batch) for _ in inputs]
    suffixes = [inp[r:] for inputs, _, r in batch for inp in inputs]
    first = np.cumsum([0] + [len(inputs) for inputs, _, _ in batch])  # batch index of each row's first input
    width = max(len(s) for s in suffixes)
    picks = []  # per row: (input in batch, column in the left-padded suffix batch, token) of every read
    for k, (_, reads, r) in enumerate(batch):
        picks.append([[[(first[k] + i, width - len(suffixes[first[k] + i]) + pos - r, t) for i, pos, t in cand]
                       for cand in plan] for plan in reads])
    flat = [x for row in picks for plan in row for cand in plan for x in cand]
    keep = width - min(c for _, c, _ in flat)
    idx = torch.tensor(owner, device=run.device)
    if cache is not None:
        cache.batch_select_indices(idx)
        past = past[idx]
    logits, _ = run.forward(suffixes, cache, past, start[idx], keep=keep)
    lp = torch.log_softmax(logits, dim=-1)
    vals = lp[[j for j, _, _ in flat], [c - (width - keep) for _, c, _ in flat], [t for *_, t in flat]]
    vals = vals.cpu().numpy().astype(np.float64)
    out, n = [], 0
    for row in picks:
        scores = []
        for plan in row:
            lengths = [len(cand) for cand in plan]  # each candidate's reads are consecutive in `vals`
            scores.append(np.add.reduceat(vals[n: n + sum(lengths)], np.r_[0, np.cumsum(lengths)[:-1]]))
            n += sum(lengths)
        out.append(scores)
    return out


@torch.inference_mode()
def candidate_logprobs(model, rows: list[list[Plan]], pad_id: int = 0, kv_cache: bool = True,
                       batch_rows: int = 8, desc: str | None = None) -> list[list[np.ndarray]]:
    """For each row and each of its plans: the (unnormalized) log-probability of every candidate."""
    run = Runner(model, pad_id)
    prepared = []  # per row: (inputs, reads with input indices into the row's inputs, row-shared length)
    for plans in rows:
        inputs, reads = [], []
        for p in plans:
            off = len(inputs)
            inputs += p.inputs
            reads.append([[(i + off, pos, t) for i, pos, t in cand] for cand in p.reads])
        limit = min(p.shared for p in plans) - 1  # every read position stays in the suffix stage
        prepared.append((inputs, reads, min(common_prefix(inputs), limit) if kv_cache else 0))
    g = 0
    if prepared:
        g = min(common_prefix([inputs[0][:r] for inputs, _, r in prepared]), min(r for *_, r in prepared))
    gcache = None
    if g > 0:
        gcache = run.new_cache()
        run.forward([prepared[0][0][0][:g]], gcache)
    out = []
    for batch in tqdm(_rows_in(prepared, batch_rows), desc=desc, disable=desc is None, unit="batch"):
        out += _suffix_stage(run, batch, *_row_stage(run, batch, gcache, g))
    return out


def continuation_text(tok, prompt_ids: list[int], new_ids: list[int]) -> str:
    """Text of generated tokens as they read after the prompt (keeps a leading space SentencePiece would drop)."""
    before = tok.decode(prompt_ids)
    full = tok.decode(list(prompt_ids) + list(new_ids))
    return full[len(before):] if full.startswith(before) else tok.decode(new_ids)


@torch.inference_mode()
def greedy_answers(model, tok, prompts: list[str], add_special_tokens: bool, max_new_tokens: int,
                   batch_size: int = 8, kv_cache: bool = True, desc: str | None = None) -> list[str]:
    """Greedy continuation of each prompt up to an end-of-answer token; the prefix shared by all prompts
    is run once (with `kv_cache`), rows are decoded in length-sorted batches."""
    run = Runner(model, tok.pad_token_id)
    stops = torch.tensor(stop_token_ids(model, tok), device=run.device)
    encoded = tok(prompts, add_special_tokens=add_special_tokens)["input_ids"]
    g = min(common_prefix(encoded), min(len(e) for e in encoded) - 1) if kv_cache and encoded else 0
    gcache = None
    if g > 0:
        gcache = run.new_cache()
        run.forward([encoded[0][:g]], gcache)
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    answers = [""] * len(prompts)
    for batch in tqdm(_rows_in(order, batch_size), desc=desc, disable=desc is None, unit="batch"):
        b = len(batch)
        cache = _batch_cache(run, gcache, b)
        past = torch.ones(b, g, dtype=torch.long, device=run.device)
        start = torch.full((b,), g, dtype=torch.long, device=run.device)
        logits, m = run.forward([encoded[i][g:] for i in batch], cache, past, start)
        past, start = torch.cat([past, m], 1), start + m.sum(1)
        new = torch.zeros(b, 0, dtype=torch.long, device=run.device)
        done = torch.zeros(b, dtype=torch.bool, device=run.device)
        for _ in range(max_new_tokens):
            nxt = logits[:, -1].argmax(-1)
            new = torch.cat([new, nxt[:, None]], 1)
            done |= torch.isin(nxt, stops)
            if done.all():
                break
            logits, m = run.forward([[t] for t in nxt.tolist()], cache, past, start)
            past, start = torch.cat([past, m], 1), start + 1
        stop_set = set(stops.tolist())
        for row, i in enumerate(batch):
            ids = new[row].tolist()
            cut = next((k for k, t in enumerate(ids) if t in stop_set), len(ids))
            answers[i] = continuation_text(tok, encoded[i], ids[:cut])
    return answers
