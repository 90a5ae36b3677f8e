"""model_type llm_finetune: answer-only loss masking, and a few LoRA steps per fold on a tiny random decoder."""

import json

import pandas as pd
import pytest
from synth import make_frame
from tiny_lm import bytelevel_tokenizer, save_decoder, single_threaded  # noqa: F401 (autouse fixture)

from src.config import LLMConfig, load_config
from src.llm.causal import collate, encode_example
from src.llm.prompts import Prompter
from src.pipeline import run

CORPUS = make_frame(200)["Tweet"].tolist() + ["anger joy fear trust none"] * 3


@pytest.mark.parametrize("chat", [True, False])
def test_loss_covers_only_the_answer(chat):
    tok = bytelevel_tokenizer(CORPUS, prefix_space=True)
    prompter = Prompter.build(tok, LLMConfig(chat_template=chat), ["anger", "joy", "fear"])
    answer = prompter.multi_answer([1, 0, 1])
    assert answer == "anger, fear" and prompter.multi_answer([0, 0, 0]) == "none"
    ids, labels = encode_example(tok, prompter, "the angery day", answer)
    prompt, _ = prompter.training_texts(prompter.multi_user("the angery day"), answer)
    n_prompt = len(tok(prompt, add_special_tokens=not chat)["input_ids"])
    assert len(ids) == len(labels) and labels[:n_prompt] == [-100] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:] and all(t != -100 for t in labels[n_prompt:])
    learned = tok.decode(ids[n_prompt:])
    assert learned == prompter.answer_start + answer + "<|im_end|>"  # the answer and the end of turn, nothing else
    batch = collate([(ids, labels), (ids[:5], [-100] * 5)], tok.pad_token_id)
    assert (batch["labels"][1] == -100).all() and batch["attention_mask"][1].sum() == 5


def test_finetune_folds_and_resume(workdir, comp_dir, tmp_path, capsys):
    decoder = save_decoder(tmp_path / "lm", CORPUS)
    overrides = [f"data.data_dir={comp_dir}", "exp=ft", "model_type=llm_finetune", "folds.n_folds=5",
                 "folds.run=[0,1]", f"model.name_or_path={decoder}", "llm.max_train_rows=12", "llm.max_test_rows=4",
                 "llm.max_new_tokens=4", "train.max_steps=3", "train.batch_size=4", "train.lr=1e-3", "lora.r=4"]
    result = run(load_config(None, overrides))
    assert not result["complete"] and result["folds"] == [0, 1] and result["oof_rows"] <= 12
    root = workdir / "checkpoints/ft"
    for k in (0, 1):
        done = json.loads((root / f"fold{k}/done.json").read_text())
        assert done["steps"] == 3 and done["train_rows"] == 160
        assert (root / f"fold{k}/adapter/adapter_config.json").is_file()
    assert len(pd.read_csv(root / "test.csv")) == 4 and (root / "methods/max_oof.csv").is_file()
    capsys.readouterr()
    run(load_config(None, overrides))  # the finished folds are reused, not retrained
    assert capsys.readouterr().out.count("reusing it") == 2
