"""Label-token planning and model readout: multi-token labels, prefix spaces, shared caches, unary yes/no."""

import numpy as np
import pytest
import torch
from synth import make_frame
from tiny_lm import bytelevel_tokenizer, single_threaded, tiny_decoder  # noqa: F401 (autouse fixture)

from src.config import LLMConfig
from src.llm import aggregate
from src.llm.label_tokens import Query, common_prefix, distinguishing_lengths, plan_queries
from src.llm.prompts import Prompter
from src.llm.readout import candidate_logprobs, greedy_answers

# the cache goes in under the name this transformers reads (past_key_values is deprecated in 5.x, ignored from 5.40)
pytestmark = pytest.mark.filterwarnings("error:.*past_key_values.*:FutureWarning")
CORPUS = make_frame(200)["Tweet"].tolist() + ["anger joy fear trust"] * 5
WORDS = ["joy", "anger", "pessimism", "pessimistic", "anticipation", "fear"]


@pytest.fixture(scope="module", params=[True, False], ids=["prefix_space", "no_prefix_space"])
def tok(request):
    return bytelevel_tokenizer(CORPUS, prefix_space=request.param)


def brute_force(model, tok, query: Query, add_special: bool) -> np.ndarray:
    """Each candidate's log-prob from one whole forward pass of `context + candidate`, distinguishing tokens only."""
    seqs = [tok(query.context + c, add_special_tokens=add_special)["input_ids"] for c in query.candidates]
    c = common_prefix(seqs)
    out = []
    for s, u in zip(seqs, distinguishing_lengths([s[c:] for s in seqs])):
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([s])).logits[0].float(), -1)
        out.append(sum(lp[c - 1 + t, s[c + t]].item() for t in range(u)))
    return np.array(out)


def test_distinguishing_lengths():
    assert distinguishing_lengths([[5], [6, 1], [6, 2, 3], [7, 8]]) == [1, 2, 2, 1]
    assert distinguishing_lengths([[5], [5, 9]]) == [1, 2]  # a whole prefix of another uses all its tokens


def test_plan_multi_token_labels_and_prefix_spaces(tok):
    ctx = "<|im_start|>assistant\nfear,"
    (plan,) = plan_queries(tok, [Query(ctx, [" " + w for w in WORDS])], add_special_tokens=False)
    ctx_ids = tok(ctx, add_special_tokens=False)["input_ids"]
    assert plan.shared == len(ctx_ids) and all(i[: len(ctx_ids)] == ctx_ids for i in plan.inputs)
    for w, reads in zip(WORDS, plan.reads):
        toks = [t for _, _, t in reads]
        assert reads[0][1] == plan.shared - 1  # first read: the logits right after the context
        assert (" " + w).startswith(tok.decode(toks))  # the read tokens spell the word's distinguishing prefix
        assert tok(ctx + " " + w, add_special_tokens=False)["input_ids"][plan.shared:][: len(toks)] == toks
    lengths = dict(zip(WORDS, (len(r) for r in plan.reads)))
    assert lengths["pessimism"] > 1 and lengths["pessimistic"] > 1  # they share their first token(s)
    # a context ending in a space that merges into the label: planned on the merged tokenization
    (merged,) = plan_queries(tok, [Query(ctx + " ", WORDS)], add_special_tokens=False)
    (spaced,) = plan_queries(tok, [Query(ctx, [" " + w for w in WORDS])], add_special_tokens=False)
    assert (merged.shared, merged.inputs, merged.reads) == (spaced.shared, spaced.inputs, spaced.reads)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_candidate_logprobs_match_whole_sequence_forward(tok, kind):
    model = tiny_decoder(tok, kind)
    rows = [
        [Query("<|im_start|>user\nText: joy day<|im_end|>\n<|im_start|>assistant\n", WORDS + ["none"]),
         Query("<|im_start|>user\nText: joy day<|im_end|>\n<|im_start|>assistant\njoy", [", " + w for w in WORDS])],
        [Query("<|im_start|>user\nText: the fear<|im_end|>\n<|im_start|>assistant\n", WORDS + ["none"])],
        [Query(f"<|im_start|>user\nDoes it express {w}?<|im_end|>\n<|im_start|>assistant\n",
               ["Yes", "yes", "No", "no"]) for w in WORDS[:3]],
    ]
    plans = [plan_queries(tok, r, add_special_tokens=False) for r in rows]
    # rows batched (pads between cached and new tokens), one by one, and the reference path without caches
    runs = [candidate_logprobs(model, plans, tok.pad_token_id, kv_cache=True, batch_rows=2),
            candidate_logprobs(model, plans, tok.pad_token_id, kv_cache=True, batch_rows=1),
            candidate_logprobs(model, plans, tok.pad_token_id, kv_cache=False, batch_rows=3)]
    # rows sharing no prefix at all (nothing cached across rows)
    loose = [[Query("Text: joy day\nAnswer:", [" " + w for w in WORDS])], [Query("the fear\nAnswer:", [" a", " b"])]]
    loose_plans = [plan_queries(tok, r, add_special_tokens=False) for r in loose]
    loose_runs = [candidate_logprobs(model, loose_plans, tok.pad_token_id, kv_cache=True, batch_rows=2)]
    for queries, results in ((rows, runs), (loose, loose_runs)):
        for r, row in enumerate(queries):
            for q, query in enumerate(row):
                expected = brute_force(model, tok, query, add_special=False)
                assert (expected < 0).all()
                for res in results:
                    np.testing.assert_allclose(res[r][q], expected, atol=2e-4)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_greedy_answers_match_generate(tok, kind):
    model = tiny_decoder(tok, kind, seed=1)
    prompts = ["<|im_start|>user\nText: joy day<|im_end|>\n<|im_start|>assistant\n",
               "<|im_start|>user\nText: the fear and anger of it all<|im_end|>\n<|im_start|>assistant\n",
               "<|im_start|>user\nText: a<|im_end|>\n<|im_start|>assistant\n"]
    got = greedy_answers(model, tok, prompts, False, max_new_tokens=7, batch_size=2)
    for prompt, answer in zip(prompts, got):
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=7, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
        ref = ref[: ref.index(tok.eos_token_id)] if tok.eos_token_id in ref else ref
        assert answer == tok.decode(ids[0].tolist() + ref)[len(tok.decode(ids[0].tolist())):]


def test_unary_probability_is_yes_over_yes_plus_no(tok):
    lp = np.log([0.2, 0.1, 0.3, 0.1])  # Yes, yes, No, no
    assert aggregate.unary_probs([lp], n_yes=2)[0] == pytest.approx(0.3 / 0.7)
    model = tiny_decoder(tok, "llama")
    prompter = Prompter.build(tok, LLMConfig(prompt="unary"), ["joy", "pessimism"])
    prompt = prompter.unary_prompt("the joy day", 1, [])
    assert prompt.endswith("<|im_start|>assistant\n") and "pessimism" in prompt
    query = prompter.unary_query(prompt)
    (row,) = candidate_logprobs(model, [plan_queries(tok, [query], False)], tok.pad_token_id)
    p = aggregate.unary_probs(row, n_yes=2)[0]
    # reference: next-token probabilities of whole sequences, each word's own tokens
    probs = np.exp(brute_force(model, tok, query, add_special=False))
    assert p == pytest.approx(probs[:2].sum() / probs.sum(), abs=1e-5)
    assert 0 < p < 1


def test_multi_methods_max_first_mean():
    steps = [np.log([0.7, 0.2, 0.05, 0.05]), np.log([0.1, 0.8, 0.1])]  # 3 labels + none at step 0
    m = aggregate.multi_methods([steps], np.array([[1, 0, 0]]), 3)
    np.testing.assert_allclose(m["first"][0], [0.7, 0.2, 0.05])
    np.testing.assert_allclose(m["max"][0], [0.7, 0.8, 0.1])
    np.testing.assert_allclose(m["mean"][0], [0.4, 0.5, 0.075])
    np.testing.assert_allclose(m["parsed"][0], [1, 0, 0])


def test_step_queries_follow_the_generated_answer(tok):
    prompter = Prompter.build(tok, LLMConfig(), ["joy", "fear", "anger"])
    qs = prompter.step_queries("P:", "joy, fear", max_steps=5)
    assert [q.context for q in qs] == ["P:", "P:joy"]  # answer start, then after the one separator
    assert qs[0].candidates == ["joy", "fear", "anger", "none"] and qs[1].candidates == [", joy", ", fear", ", anger"]
    assert len(prompter.step_queries("P:", "joy, fear, anger", max_steps=2)) == 2
    np.testing.assert_array_equal(prompter.parse("Joy, fear."), [1, 1, 0])
    plain = Prompter.build(tok, LLMConfig(chat_template=False, system=""), ["joy"])
    assert plain.render([("t1", "joy")], "t2") == "t1\nAnswer: joy\n\nt2\nAnswer:" and plain.answer_start == " "
