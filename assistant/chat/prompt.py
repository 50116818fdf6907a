"""Chat prompts with the user's words kept as data.

The model's own chat template (``tokenizer.chat_template`` from the GGUF) is rendered exactly as
llama-cpp-python renders it, but with every message's content replaced by a placeholder. The
rendered text is then cut at the placeholders: the template's own text is tokenized with special
tokens parsed (``<｜User｜>``, ``<|im_start|>``...), and each message's content is tokenized as
plain text by ``data_tokens``, which guarantees that no id in it is a special, control or
user-defined token. That last part needs more than ``special=False``: in the DeepSeek-R1
vocabulary ``<think>`` and ``</think>`` are user-defined tokens that llama.cpp matches even with
special parsing off. ``data_tokens`` finds such an id, splits the text inside the offending
string and tokenizes the halves separately, so the model reads the same characters as ordinary
text pieces (``<`` + ``think>``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

ChatMessage = dict[str, str]

ATTR_UNKNOWN, ATTR_CONTROL, ATTR_USER_DEFINED = 1 << 0, 1 << 3, 1 << 4
SPECIAL_ATTRS = ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED
"""llama.cpp token attributes that must never come out of user text."""

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""Fallback for a GGUF without a chat template."""

_MARK = re.compile("\ue000(\\d+)\ue001")


class Vocab(Protocol):
    """What prompt building needs from a tokenizer (llama.cpp's, or a fake in tests)."""

    def tokenize(self, text: bytes, add_bos: bool, special: bool) -> list[int]: ...

    def token_attr(self, token: int) -> int: ...

    def token_text(self, token: int) -> str: ...


@dataclass(frozen=True)
class Segment:
    """A piece of a rendered prompt."""

    text: str
    data: bool
    """True for message content (tokenized as plain text), False for the template's own text."""


class ChatTemplate:
    """A Jinja chat template, rendered like llama-cpp-python's ``Jinja2ChatFormatter``."""

    def __init__(self, template: str, bos_token: str = "", eos_token: str = "") -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.source = template
        self._formatter = Jinja2ChatFormatter(template, eos_token=eos_token, bos_token=bos_token)

    def render_text(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        """The prompt exactly as llama-cpp-python's chat completion would render it."""
        self._formatter.add_generation_prompt = add_generation_prompt
        return self._formatter(messages=list(messages)).prompt  # type: ignore[arg-type]

    def render(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> list[Segment]:
        """The prompt as segments: template text, and message contents as data."""
        marked = [{**m, "content": f"\ue000{i}\ue001"} for i, m in enumerate(messages)]
        text = self.render_text(marked, add_generation_prompt)
        segments: list[Segment] = []
        at = 0
        for match in _MARK.finditer(text):
            if match.start() > at:
                segments.append(Segment(text[at : match.start()], False))
            content = messages[int(match.group(1))]["content"]
            if content:
                segments.append(Segment(content, True))
            at = match.end()
        if at < len(text):
            segments.append(Segment(text[at:], False))
        return segments

    def generation_prompt(self) -> str:
        """What the template appends for the assistant's turn (e.g. ``<｜Assistant｜>``)."""
        msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
        with_prompt = self.render_text(msgs, True)
        without = self.render_text(msgs, False)
        return with_prompt[len(without) :] if with_prompt.startswith(without) else ""

    def opens_think(self) -> bool:
        """True if the generation prompt already opens a think block (newer R1 templates)."""
        return self.generation_prompt().rstrip().endswith("<think>")


def data_tokens(vocab: Vocab, text: str) -> list[int]:
    """``text`` as ordinary tokens: no id is special, control, user-defined or unknown."""
    if not text:
        return []
    ids = vocab.tokenize(text.encode("utf-8"), False, False)
    bad = next((i for i in ids if vocab.token_attr(i) & SPECIAL_ATTRS), None)
    if bad is None:
        return ids
    found = text.find(vocab.token_text(bad))
    cut = found + 1 if found != -1 else len(text) // 2
    if len(text) == 1 or cut >= len(text):
        return [i for i in ids if not vocab.token_attr(i) & SPECIAL_ATTRS]  # one char: drop it
    return data_tokens(vocab, text[:cut]) + data_tokens(vocab, text[cut:])


def prompt_tokens(vocab: Vocab, segments: Sequence[Segment], prefill: str = "") -> list[int]:
    """Token ids for a rendered prompt plus an assistant-side ``prefill`` (template text)."""
    ids: list[int] = []
    for seg in segments:
        ids += data_tokens(vocab, seg.text) if seg.data else vocab.tokenize(seg.text.encode(), False, True)
    if prefill:
        ids += vocab.tokenize(prefill.encode("utf-8"), False, True)
    return ids
