"""Which next-token probabilities give a candidate answer's probability, found from the tokenizer alone.

A query is a context string and candidate continuations (" joy", ", sadness", "Yes", ...). Each candidate is
tokenized together with its context, `encode(context + candidate)`, so prefix spaces and merges across the
boundary come out as the model would see them. The shared leading tokens are the context as tokenized; the
rest of each sequence is the candidate's own tokens. A candidate's log-probability is the sum of its tokens'
log-probabilities up to the first token no other candidate shares (its distinguishing prefix): for labels
with distinct first tokens that is the first token alone, as in the EMNLP'25 study; labels that share their
first tokens ("pessim|ism" / "pessim|istic") are told apart by the following ones. A candidate that is a whole
prefix of another ("love" / "lovely") uses all its tokens, so it also carries the longer one's mass.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Query:
    context: str
    candidates: list[str]


@dataclass
class Plan:
    """A query as token sequences to run: candidate j's log-prob is the sum over `reads[j]` of
    `log p(token | inputs[i][:pos + 1])`, read from the logits at `pos` of input `i`."""

    inputs: list[list[int]]
    reads: list[list[tuple[int, int, int]]]  # per candidate: (input index, position, token id)
    shared: int  # leading tokens common to every candidate sequence (the context); reads start at shared - 1


def common_prefix(seqs: list[list[int]]) -> int:
    """Length of the longest common prefix of token sequences."""
    if not seqs:
        return 0
    n = min(len(s) for s in seqs)
    first = seqs[0]
    for i in range(n):
        t = first[i]
        if any(s[i] != t for s in seqs):
            return i
    return n


def distinguishing_lengths(rests: list[list[int]]) -> list[int]:
    """For each token list, the shortest prefix no other list starts with (its whole length if none)."""
    out = []
    for j, r in enumerate(rests):
        others = [o for k, o in enumerate(rests) if k != j]
        u = 1
        while u < len(r) and any(o[:u] == r[:u] for o in others):
            u += 1
        out.append(max(1, min(u, len(r))))
    return out


def plan_from_ids(seqs: list[list[int]]) -> Plan:
    """Plan for candidate sequences already tokenized as `context + candidate`."""
    if len(seqs) < 2:
        raise ValueError("a query needs at least two candidates")
    c = common_prefix(seqs)
    if c == 0:
        raise ValueError("candidates share no context token to condition on (empty context and no BOS?)")
    rests = [s[c:] for s in seqs]
    if any(not r for r in rests):
        raise ValueError("two candidates tokenize identically in this context")
    index: dict[tuple[int, ...], int] = {}
    inputs: list[list[int]] = []
    reads = []
    for s, r, u in zip(seqs, rests, distinguishing_lengths(rests)):
        key = tuple(s[: c + u - 1])
        if key not in index:
            index[key] = len(inputs)
            inputs.append(list(key))
        i = index[key]
        reads.append([(i, c - 1 + t, r[t]) for t in range(u)])
    return Plan(inputs, reads, c)


def plan_queries(tok, queries: list[Query], add_special_tokens: bool) -> list[Plan]:
    """Tokenize every `context + candidate` (one batched call) and plan each query."""
    texts = [q.context + c for q in queries for c in q.candidates]
    ids = tok(texts, add_special_tokens=add_special_tokens)["input_ids"] if texts else []
    plans, k = [], 0
    for q in queries:
        n = len(q.candidates)
        plans.append(plan_from_ids(ids[k: k + n]))
        k += n
    return plans
