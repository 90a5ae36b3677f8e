"""Text normalization before any model sees a text (`data.normalize`).

`tweet` (the SemEval-2018 systems' preprocessing, in the standard library alone): HTML entities unescaped (`&amp;`),
the two characters `\\n` that the competition files hold for a line break made a space, user mentions made `@user`,
links made `http`, and every emoji or other pictographic symbol spelled out as its Unicode name (`😡` -> ` pouting
face `), since a WordPiece vocabulary reads all of them as one `[UNK]` (14% of the emotion tweets hold one). Skin-tone
modifiers, variation selectors and zero-width joiners are dropped. `none` leaves texts as they are.
"""

from __future__ import annotations

import html
import re
import unicodedata

MODES = ("none", "tweet")
_MENTION = re.compile(r"@\w+")
_URL = re.compile(r"https?://\S+|www\.\S+")
_DROP = {0x200D, 0xFE0E, 0xFE0F, 0x20E3}  # zero-width joiner, variation selectors, combining keycap
_SKIN = range(0x1F3FB, 0x1F400)  # Fitzpatrick skin-tone modifiers
_SPACES = re.compile(r"[ \t]+")


def _symbol(ch: str) -> str:
    code = ord(ch)
    if code in _DROP or code in _SKIN:
        return ""
    if unicodedata.category(ch) == "So":
        name = unicodedata.name(ch, "")
        return f" {name.lower()} " if name else ch
    return ch


def normalize_tweet(text: str) -> str:
    """One tweet in the `tweet` normal form (see the module docstring)."""
    text = html.unescape(text).replace("\\n", " ")
    text = _URL.sub("http", text)
    text = _MENTION.sub("@user", text)
    text = "".join(_symbol(ch) for ch in text)
    return _SPACES.sub(" ", text).strip()


def normalize(texts: list[str], mode: str) -> list[str]:
    """`texts` in the normal form `mode` (one of MODES)."""
    if mode == "none":
        return list(texts)
    if mode == "tweet":
        return [normalize_tweet(t) for t in texts]
    raise ValueError(f"unknown text normalization {mode!r}; one of {MODES}")
