"""Text that must not reach the tokenizer: the model's special tokens inside annotation text.

A question containing ``<|video_pad|>`` (or ``<|im_end|>``, ``<|vision_start|>``...) is tokenized
as the special token itself: the processor then counts one more video placeholder than videos, or
the chat structure breaks, and training/evaluation crash far from the cause. The annotation loaders
(:mod:`museg.data.annotations`) call :func:`special_token_in` on every text field and reject the
record (``on_bad_record=skip``: skip and count it), naming file, line and token.

    >>> special_token_in("When does <|video_pad|> happen?")
    ('<|video_pad|>', 10)
    >>> special_token_in("a plain <b>question</b>") is None
    True
"""

from __future__ import annotations

import re

__all__ = ["SPECIAL_TOKEN_RE", "special_token_in"]

#: Qwen2.5-VL's special and chat-structure tokens all have the form ``<|name|>``
#: (museg.model.tokenizer.SPECIAL_TOKENS, plus the fim/repo/file tokens of the real vocabulary).
SPECIAL_TOKEN_RE = re.compile(r"<\|[A-Za-z0-9_]+\|>")


def special_token_in(text: str) -> tuple[str, int] | None:
    """``(token, character offset)`` of the first special token in ``text``, else None."""
    m = SPECIAL_TOKEN_RE.search(text)
    return (m.group(0), m.start()) if m else None
