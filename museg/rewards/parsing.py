"""Parsing of model completions: ``<think>``/``<answer>`` tags, timestamps and segments.

Pure string functions shared by the rewards (:mod:`museg.rewards.format`,
:mod:`museg.rewards.matching`) and the grounding metrics (:mod:`museg.eval.metrics`). Nothing here
raises on model output: a failure is reported as ``None`` (or an empty value).

The rules follow the MUSEG reference implementation exactly (see issue 3):

* tags are counted literally; the format rule needs exactly one of each of the four tags;
* the reward answer (:func:`extract_answer_raw`) is the first ``<answer>(.*?)</answer>`` (only if
  ``<answer>`` and ``</answer>`` each occur once); the evaluation answer (:func:`extract_answer`,
  also what ``predictions.jsonl`` records) is greedy (``<answer>(.*)</answer>``) and stripped;
* an answer is split on whitespace, each token on ``-``; parts 0 and 1 are parsed with ``float``
  (so ``nan``, ``inf``, ``1e1``, ``1_0`` are numbers) and further parts are ignored.

Example:

>>> from museg.rewards.parsing import split_think_answer, parse_answer_numbers
>>> think, answer = split_think_answer("<think>at 1.5s</think> <answer>1.5-3</answer>")
>>> parse_answer_numbers(answer)
[('1.5', 1.5, '3', 3.0)]
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "THINK_OPEN",
    "THINK_CLOSE",
    "ANSWER_OPEN",
    "ANSWER_CLOSE",
    "FORMAT_PATTERN",
    "NUMBER_PATTERN",
    "completion_text",
    "completion_texts",
    "count_tags",
    "split_think_answer",
    "extract_answer",
    "extract_answer_raw",
    "parse_answer_numbers",
    "valid_segments",
    "count_timestamp_matches",
    "timestamp_in_think",
]

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

#: The format rule of the reference, kept for documentation and differential tests; the fast path
#: in :func:`split_think_answer` is equivalent once every tag occurs exactly once.
FORMAT_PATTERN = re.compile(r"^\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*$", re.DOTALL)
_GREEDY_ANSWER = re.compile(r"<answer>(.*)</answer>", re.DOTALL)
#: Number pattern of the grounding evaluation (note ``\.*``: ``1..5`` is one match, then unparsable).
NUMBER_PATTERN = re.compile(r"\d+\.*\d*")

# One parsed answer token: (start as written, start, end as written, end).
Token = tuple[str, float, str, float]


def completion_text(completion: Any) -> str | None:
    """Return the text of one completion (plain string or TRL conversational form), else ``None``.

    The conversational form is a list of messages; like the reference, the first message's
    ``content`` is used. A content given as a list of parts keeps its ``text`` parts.

    >>> completion_text("<answer>1-2</answer>")
    '<answer>1-2</answer>'
    >>> completion_text([{"role": "assistant", "content": "hi"}])
    'hi'
    >>> completion_text([{"role": "assistant", "content": [{"type": "text", "text": "hi"}]}])
    'hi'
    >>> completion_text(None) is None
    True
    """
    try:
        if isinstance(completion, str):
            return completion
        if isinstance(completion, Mapping):
            message = completion
        elif isinstance(completion, Sequence) and len(completion) > 0:
            message = completion[0]
        else:
            return None
        content = message["content"] if isinstance(message, Mapping) else message
        if isinstance(content, str):
            return content
        if isinstance(content, Sequence):
            parts = [p.get("text") for p in content if isinstance(p, Mapping)]
            if parts and all(isinstance(p, str) for p in parts):
                return "".join(parts)
        return None
    except Exception:
        return None


def completion_texts(completions: Any) -> list[str | None]:
    """:func:`completion_text` of every completion (``[]`` if ``completions`` is not iterable).

    >>> completion_texts(["a", [{"role": "assistant", "content": "b"}], 3])
    ['a', 'b', None]
    """
    try:
        return [completion_text(c) for c in completions]
    except Exception:
        return []


def count_tags(text: str) -> tuple[int, int, int, int]:
    """Count ``<think>``, ``</think>``, ``<answer>``, ``</answer>`` (non-overlapping, literal).

    >>> count_tags("<think><think></think><answer>")
    (2, 1, 1, 0)
    """
    return (
        text.count(THINK_OPEN),
        text.count(THINK_CLOSE),
        text.count(ANSWER_OPEN),
        text.count(ANSWER_CLOSE),
    )


def _blank(s: str) -> bool:
    # ``re``'s ``\s`` and ``str.isspace`` agree on every code point (checked in the tests).
    return not s or s.isspace()


def split_think_answer(text: str) -> tuple[str, str] | None:
    """Apply the format rule; return ``(think, answer)`` or ``None`` when the format is wrong.

    The text must contain each tag exactly once and match
    ``^\\s*<think>(.*?)</think>\\s*<answer>(.*?)</answer>\\s*$`` (dot matches newlines).

    >>> split_think_answer("  <think>a\\nb</think>\\n<answer> 1-2 </answer>\\n")
    ('a\\nb', ' 1-2 ')
    >>> split_think_answer("<think>a</think>x<answer>1-2</answer>") is None
    True
    >>> split_think_answer("<think>a</think><answer>1-2</answer><answer>") is None
    True
    """
    if not isinstance(text, str) or count_tags(text) != (1, 1, 1, 1):
        return None
    t0 = text.find(THINK_OPEN)
    t1 = text.find(THINK_CLOSE)
    a0 = text.find(ANSWER_OPEN)
    a1 = text.find(ANSWER_CLOSE)
    if not (t0 + len(THINK_OPEN) <= t1 and t1 + len(THINK_CLOSE) <= a0):
        return None
    if not a0 + len(ANSWER_OPEN) <= a1:
        return None
    if not (_blank(text[:t0]) and _blank(text[t1 + 8 : a0]) and _blank(text[a1 + 9 :])):
        return None
    return text[t0 + 7 : t1], text[a0 + 8 : a1]


def extract_answer_raw(text: str) -> str | None:
    """Answer used by the matching rewards: the first ``<answer>(.*?)</answer>``, not stripped.

    ``None`` unless ``<answer>`` and ``</answer>`` each occur exactly once (in that order).

    >>> extract_answer_raw("no think needed <answer> 1-2</answer> trailing text")
    ' 1-2'
    >>> extract_answer_raw("</answer><answer>") is None
    True
    """
    if not isinstance(text, str):
        return None
    if text.count(ANSWER_OPEN) != 1 or text.count(ANSWER_CLOSE) != 1:
        return None
    a0 = text.find(ANSWER_OPEN) + len(ANSWER_OPEN)
    a1 = text.find(ANSWER_CLOSE)
    return text[a0:a1] if a0 <= a1 else None


def extract_answer(text: str | None) -> str:
    """Answer used by the evaluation (metrics, ``predictions.jsonl``): greedy
    ``<answer>(.*)</answer>``, stripped.

    Empty string unless each answer tag occurs exactly once (``None`` or a non-string too).

    >>> extract_answer("<think>..</think><answer> 0.5-2.0 </answer>")
    '0.5-2.0'
    >>> extract_answer("<answer>1-2</answer><answer>3-4</answer>")
    ''
    >>> extract_answer("no tags"), extract_answer(None)
    ('', '')
    """
    try:
        if text.count(ANSWER_OPEN) != 1 or text.count(ANSWER_CLOSE) != 1:
            return ""
        match = _GREEDY_ANSWER.search(text)
        return match.group(1).strip() if match else ""
    except Exception:
        return ""


def parse_answer_numbers(answer: str, strict: bool = False) -> list[Token] | None:
    """Parse whitespace tokens ``s-e`` into ``(s_text, s, e_text, e)``; ``None`` on any failure.

    Default (reference) rules: split each token on ``-``, parse parts 0 and 1 with ``float``,
    ignore further parts. ``strict=True`` also rejects tokens with more than two parts and
    non-finite numbers (``nan``, ``inf``).

    >>> parse_answer_numbers("0-1.50  2-3-9")
    [('0', 0.0, '1.50', 1.5), ('2', 2.0, '3', 3.0)]
    >>> parse_answer_numbers("2-3-9", strict=True) is None
    True
    >>> parse_answer_numbers("12.5") is None
    True
    >>> parse_answer_numbers("")
    []
    """
    try:
        tokens = []
        for item in answer.split():
            parts = item.split("-")
            start, end = float(parts[0]), float(parts[1])
            if strict and (len(parts) != 2 or not (math.isfinite(start) and math.isfinite(end))):
                return None
            tokens.append((parts[0], start, parts[1], end))
        return tokens
    except Exception:
        return None


def valid_segments(tokens: list[Token] | None) -> list[list[float]] | None:
    """Keep ``[s, e]`` pairs if every one has ``s >= 0``, ``e >= 0`` and ``s < e``, else ``None``.

    NaN fails the comparisons, so it is rejected.

    >>> valid_segments(parse_answer_numbers("3-4 0-1"))
    [[3.0, 4.0], [0.0, 1.0]]
    >>> valid_segments(parse_answer_numbers("4-3")) is None
    True
    """
    if tokens is None:
        return None
    segments = []
    for _, start, _, end in tokens:
        if not (start >= 0 and end >= 0 and start < end):
            return None
        segments.append([start, end])
    return segments


@functools.lru_cache(maxsize=4096)
def _wildcard_pattern(number: str) -> re.Pattern[str] | None:
    try:
        return re.compile(number, re.DOTALL)
    except re.error:  # pragma: no cover - str(float) is always a valid pattern
        return None


@functools.lru_cache(maxsize=65536)
def _wildcard_pieces(number: str) -> tuple[tuple[str, int], ...] | None:
    """``str(float)`` as (literal piece, offset) pairs around its ``.`` wildcards.

    ``None`` when the text has other regex syntax (only ``+`` in ``1e+16`` and above): use ``re``.
    """
    if not number or "+" in number or number[0] == ".":
        return None
    pieces, offset = [], 0
    for piece in number.split("."):
        pieces.append((piece, offset))
        offset += len(piece) + 1
    return tuple(pieces)


def _count_capped(pattern: re.Pattern, text: str, limit: int) -> int:
    """Number of ``pattern`` matches in ``text``, counting stops at ``limit``."""
    count = 0
    for _ in pattern.finditer(text):
        count += 1
        if count >= limit:
            break
    return count


def _count_wildcard(think: str, number: str, limit: int) -> int:
    """Non-overlapping leftmost matches of ``number`` used as a regex whose only syntax is ``.``
    (any character, DOTALL). Same count as ``len(re.findall(number, think, re.DOTALL))``."""
    pieces = _wildcard_pieces(number)
    if pieces is None:
        pattern = _wildcard_pattern(number)
        if pattern is None:  # pragma: no cover
            return 0
        return _count_capped(pattern, think, limit)
    first, rest, size = pieces[0][0], pieces[1:], len(number)
    last_start = len(think) - size
    count, i = 0, 0
    while True:
        pos = think.find(first, i)
        if pos < 0 or pos > last_start:
            return count
        if all(think.startswith(piece, pos + off) for piece, off in rest):
            count += 1
            if count >= limit:
                return count
            i = pos + size
        else:
            i = pos + 1


@functools.lru_cache(maxsize=4096)
def _literal_pattern(forms: tuple[str, ...]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(f) for f in sorted(set(forms), key=len, reverse=True))
    return re.compile(rf"(?<![\d.])(?:{alternatives})(?!\d|\.\d)")


def count_timestamp_matches(
    think: str, written: str, value: float, strict: bool = False, limit: int = 11
) -> int:
    """Count (up to ``limit``) the non-overlapping occurrences of a timestamp in ``think``.

    Default (reference) rule: ``str(value)`` is used *as a regular expression*, so its ``.`` matches
    any character (``12.50`` -> ``12.5`` matches ``12x5``). ``strict=True``: the number as written
    or as ``str(value)``, literally, and not inside a longer number.

    >>> count_timestamp_matches("at 12x5 and 12.5", "12.50", 12.5)
    2
    >>> count_timestamp_matches("at 12x5 and 12.5 and 112.5", "12.50", 12.5, strict=True)
    1
    >>> count_timestamp_matches("from 3 s", "3", 3.0)
    0
    >>> count_timestamp_matches("from 3 s", "3", 3.0, strict=True)
    1
    """
    if not strict:
        return _count_wildcard(think, str(value), limit)
    return _count_capped(_literal_pattern((written, str(value))), think, limit)


def timestamp_in_think(think: str, written: str, value: float, strict: bool = False) -> bool:
    """True when the timestamp occurs between 1 and 10 times in ``think`` (see above).

    >>> timestamp_in_think("1.0 " * 10, "1", 1.0), timestamp_in_think("1.0 " * 11, "1", 1.0)
    (True, False)
    """
    return 1 <= count_timestamp_matches(think, written, value, strict) <= 10
