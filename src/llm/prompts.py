"""Prompts: multi-label and unary templates, few-shot turns, chat template or plain text, gold answers, parsing.

Chat form (the tokenizer has a chat template and `llm.chat_template` is on): system message, few-shot
user/assistant turns, the user turn, then the assistant header; the answer follows directly.
Plain form: `system\\n\\n` + `user\\nAnswer: answer\\n\\n` per shot + `user\\nAnswer:`; the answer follows
after one space.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from jinja2 import TemplateError

from src.config import LLMConfig
from src.errors import UserError
from src.llm.label_tokens import Query


def _check_template(template: str, key: str, **values) -> None:
    try:
        template.format(**values)
    except (KeyError, IndexError, ValueError) as e:
        raise UserError(f"llm.{key} has a bad placeholder ({e}); use {{text}}, {{labels}}, {{none}}, {{label}} "
                        "and double braces for literal ones") from None


@dataclass
class Prompter:
    tok: Any
    cfg: LLMConfig
    names: list[str]  # the label words used in prompts and answers, in label-column order
    max_text_tokens: int = 0  # >0: texts are cut to this many tokens

    @classmethod
    def build(cls, tok, cfg: LLMConfig, labels: list[str], max_text_tokens: int = 0) -> Prompter:
        names = list(cfg.label_names) or list(labels)
        if len(names) != len(labels):
            raise UserError(f"llm.label_names has {len(names)} names for {len(labels)} labels")
        if len({n.lower() for n in names}) != len(names):
            raise UserError("llm.label_names must be distinct")
        if not cfg.yes_words or not cfg.no_words:
            raise UserError("llm.yes_words and llm.no_words must not be empty")
        if cfg.prompt not in ("multi", "unary"):
            raise UserError(f"llm.prompt must be multi or unary, got {cfg.prompt!r}")
        _check_template(cfg.multi_template, "multi_template", text="t", labels="l", none="n", label="x")
        _check_template(cfg.unary_template, "unary_template", text="t", labels="l", none="n", label="x")
        return cls(tok, cfg, names, max_text_tokens)

    @property
    def chat(self) -> bool:
        return bool(self.cfg.chat_template and getattr(self.tok, "chat_template", None))

    @property
    def answer_start(self) -> str:
        return "" if self.chat else " "

    @property
    def add_special_tokens(self) -> bool:
        """Plain prompts get the tokenizer's BOS etc.; a chat template writes its own."""
        return not self.chat

    def clip(self, text: str) -> str:
        if self.max_text_tokens <= 0:
            return text
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= self.max_text_tokens else self.tok.decode(ids[: self.max_text_tokens])

    # --- user turns and gold answers ---
    def multi_user(self, text: str) -> str:
        return self.cfg.multi_template.format(text=self.clip(text), labels=self.cfg.separator.join(self.names),
                                              none=self.cfg.none_answer, label="")

    def unary_user(self, text: str, j: int) -> str:
        return self.cfg.unary_template.format(text=self.clip(text), label=self.names[j],
                                              labels=self.cfg.separator.join(self.names), none=self.cfg.none_answer)

    def multi_answer(self, y) -> str:
        """Gold answer: the row's label words in column order, or the none answer."""
        picked = [n for n, v in zip(self.names, y) if v]
        return self.cfg.separator.join(picked) if picked else self.cfg.none_answer

    def unary_answer(self, yes: bool) -> str:
        return self.cfg.yes_words[0] if yes else self.cfg.no_words[0]

    # --- rendering ---
    def _apply(self, messages: list[dict], generation_prompt: bool) -> str:
        try:
            return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        except TemplateError:
            if messages[0]["role"] != "system":
                raise
            # templates without a system role: fold the system message into the first user turn
            merged = [{"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}]
            return self._apply(merged + messages[2:], generation_prompt)

    def _messages(self, shots: list[tuple[str, str]], user: str) -> list[dict]:
        msgs = [{"role": "system", "content": self.cfg.system}] if self.cfg.system else []
        for u, a in shots:
            msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
        return msgs + [{"role": "user", "content": user}]

    def render(self, shots: list[tuple[str, str]], user: str) -> str:
        """Prompt text up to where the answer starts."""
        if self.chat:
            return self._apply(self._messages(shots, user), True)
        head = self.cfg.system + "\n\n" if self.cfg.system else ""
        return head + "".join(f"{u}\nAnswer: {a}\n\n" for u, a in shots) + f"{user}\nAnswer:"

    def training_texts(self, user: str, answer: str) -> tuple[str, str]:
        """`(prompt, prompt + answer + end of turn)` for fine-tuning; the loss covers only what follows prompt."""
        prompt = self.render([], user)
        eos = self.tok.eos_token or ""
        if self.chat:
            full = self._apply(self._messages([], user) + [{"role": "assistant", "content": answer}], False)
            if full.startswith(prompt):
                return prompt, full.rstrip("\n")
            return prompt, prompt + answer + eos
        return prompt, prompt + self.answer_start + answer + eos

    def multi_prompt(self, text: str, shots: list[tuple[str, Any]]) -> str:
        """`shots`: (text, label row) pairs."""
        return self.render([(self.multi_user(t), self.multi_answer(y)) for t, y in shots], self.multi_user(text))

    def unary_prompt(self, text: str, j: int, shots: list[tuple[str, Any]]) -> str:
        turns = [(self.unary_user(t, j), self.unary_answer(bool(y[j]))) for t, y in shots]
        return self.render(turns, self.unary_user(text, j))

    # --- reading answers ---
    def unary_query(self, prompt: str) -> Query:
        words = [*self.cfg.yes_words, *self.cfg.no_words]
        return Query(prompt, [self.answer_start + w for w in words])

    def clean_answer(self, generated: str) -> str:
        """The answer line: generated text up to the first newline."""
        return generated.split("\n", 1)[0]

    def step_queries(self, prompt: str, answer: str, max_steps: int) -> list[Query]:
        """One query per label step of a generated answer: its start and after each separator.

        Step 0 offers `answer_start + name` (and the none answer); step s > 0 continues the model's own text up
        to its s-th separator with `separator + name`.
        """
        mark = self.cfg.separator.strip() or self.cfg.separator
        cuts = [m.start() for m in re.finditer(re.escape(mark), answer)]
        first = [self.answer_start + n for n in self.names]
        if self.cfg.none_answer:
            first.append(self.answer_start + self.cfg.none_answer)
        queries = [Query(prompt, first)]
        for c in cuts[: max(0, max_steps - 1)]:
            queries.append(Query(prompt + answer[:c], [self.cfg.separator + n for n in self.names]))
        return queries

    def parse(self, answer: str) -> np.ndarray:
        """0/1 per label: the label word appears in the answer (what text-parsing notebooks do)."""
        return np.array([bool(re.search(rf"(?<!\w){re.escape(n)}(?!\w)", answer, re.IGNORECASE))
                         for n in self.names], dtype=np.float64)
