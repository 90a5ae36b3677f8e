"""Text normalization (src/text.py, `data.normalize`): what the `tweet` form does, and that every model reads it."""

from __future__ import annotations

import pandas as pd
import pytest
from test_train import overrides, setup
from test_transformer import make_tiny

from src.config import load_config
from src.data import load_competition
from src.errors import UserError
from src.text import normalize, normalize_tweet
from src.train import train_folds


@pytest.mark.parametrize("raw, expected", [
    ("so angry 😡🐱", "so angry pouting face cat face"),
    ("love it ❤️❤️", "love it heavy black heart heavy black heart"),  # variation selectors dropped
    ("ok 👌🏻 fine", "ok ok hand sign fine"),  # skin tone dropped
    ("doom &amp; gloom &lt;3", "doom & gloom <3"),
    ("line one\\nline two\\n\\n#tag", "line one line two #tag"),  # the files' literal backslash-n
    ("@TamraBarney @RHOC_Kelly hi", "@user @user hi"),
    ("see https://t.co/xYz1 now", "see http now"),
    ("plain text, no change :-)", "plain text, no change :-)"),
])
def test_tweet_form(raw, expected):
    assert normalize_tweet(raw) == expected


def test_none_keeps_texts_and_unknown_modes_are_refused():
    texts = ["a 😡 &amp; b\\n"]
    assert normalize(texts, "none") == texts
    with pytest.raises(ValueError, match="unknown text normalization"):
        normalize(texts, "emoji")
    assert load_config(None, ["exp=x"]).data.normalize == "none"
    with pytest.raises(UserError, match=r"config 'data.normalize' = 'emoji': use one of none, tweet"):
        load_config(None, ["exp=x", "data.normalize=emoji"])


def emoji_competition(comp_dir):
    """The synthetic competition with an emoji, an HTML entity and a mention in every text."""
    for name in ("train.csv", "test.csv"):
        df = pd.read_csv(comp_dir / name, dtype=str, keep_default_na=False)
        df["Tweet"] = "@someone " + df["Tweet"] + " 😂 &amp;"
        df.to_csv(comp_dir / name, index=False)
    return comp_dir


def test_competition_texts_are_normalized_and_the_frames_keep_the_raw_text(comp_dir):
    emoji_competition(comp_dir)
    raw = load_competition(load_config(None, ["exp=x", f"data.data_dir={comp_dir}"]).data)
    tw = load_competition(load_config(None, ["exp=x", f"data.data_dir={comp_dir}", "data.normalize=tweet"]).data)
    assert raw.train_texts[0].endswith(" 😂 &amp;") and raw.test_texts[0].startswith("@someone ")
    for texts in (tw.train_texts, tw.test_texts):
        assert all(t.startswith("@user ") and t.endswith(" face with tears of joy &") for t in texts)
    assert tw.train["Tweet"].tolist() == raw.train_texts  # ids, labels and the raw text stay as read


def test_a_fold_trained_on_raw_texts_is_not_reused_for_normalized_ones(workdir, comp_dir, tiny_root):
    emoji_competition(comp_dir)
    model = make_tiny("bert", tiny_root)
    cfg = load_config(None, overrides(comp_dir, model, "tw", "train.max_steps=2", "train.eval_every=2"))
    comp, folds, rd = setup(cfg)
    train_folds(cfg, comp, folds, rd)
    tw = load_config(None, overrides(comp_dir, model, "tw", "train.max_steps=2", "train.eval_every=2",
                                     "data.normalize=tweet"))
    with pytest.raises(UserError, match=r"no longer matches: data changed \(train texts\)"):
        train_folds(tw, *setup(tw))
