"""Format reward of MUSEG (with the stage-1 timestamp check), as a TRL reward function.

Implements the paper's format reward together with its timestamp reward r_T (stage 1, "the
reasoning must refer to specific timestamps"), folded into one score exactly as the reference code
does:

* ``0.0`` - tags wrong: not exactly one of each ``<think> </think> <answer> </answer>``, or the text
  does not match ``^\\s*<think>(.*?)</think>\\s*<answer>(.*?)</answer>\\s*$``;
* ``0.2`` - some answer token is not ``s-e`` with both parts parsable by ``float``;
* ``0.6`` - ``timestamp_aware`` and some answer number ``x`` does not occur 1..10 times in the
  ``<think>`` text, where ``str(x)`` is used as a regular expression (``.`` is a wildcard);
* ``1.0`` - otherwise (an empty answer scores 1.0: reference quirk, kept).

``strict=True`` (off by default) gives cleaner behaviour: an empty answer, a token with more than two
``-`` parts and ``nan``/``inf`` score 0.2, and timestamps are matched literally (as written in the
answer or as ``str(float)``, not inside a longer number).

Usage (TRL style, list in, list out; extra dataset columns are ignored)::

    from museg.rewards import format_reward
    format_reward(["<think>at 1.5s</think><answer>1.5-3.0</answer>"], solution=[[[1, 3]]])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from museg.rewards.parsing import (
    completion_text,
    parse_answer_numbers,
    split_think_answer,
    timestamp_in_think,
)

__all__ = ["format_score", "format_reward"]


def format_score(text: Any, timestamp_aware: bool = True, strict: bool = False) -> float:
    """Score one completion text; never raises.

    >>> format_score("<think>from 1.5 to 3.0</think><answer>1.5-3</answer>")
    1.0
    >>> format_score("<think>from 1.5 to 3</think><answer>1.5-3</answer>")  # str(3.0) missing
    0.6
    >>> format_score("<think>from 1.5 to 3</think><answer>1.5-3</answer>", timestamp_aware=False)
    1.0
    >>> format_score("<think>x</think><answer>1.5</answer>")
    0.2
    >>> format_score("<think>x</think><answer></answer>"), format_score("<answer>1-2</answer>")
    (1.0, 0.0)
    >>> format_score("<think>x</think><answer></answer>", strict=True)
    0.2
    """
    try:
        parts = split_think_answer(text)
        if parts is None:
            return 0.0
        think, answer = parts
        tokens = parse_answer_numbers(answer, strict=strict)
        if tokens is None or (strict and not tokens):
            return 0.2
        if timestamp_aware:
            for s_text, start, e_text, end in tokens:
                if not timestamp_in_think(think, s_text, start, strict):
                    return 0.6
                if not timestamp_in_think(think, e_text, end, strict):
                    return 0.6
        return 1.0
    except Exception:
        return 0.0


def format_reward(
    completions: Sequence[Any],
    timestamp_aware: bool = True,
    strict: bool = False,
    **columns: Any,
) -> list[float]:
    """Format reward per completion (strings or TRL conversational messages).

    >>> format_reward([
    ...     "<think>0.0 then 2.5</think><answer>0-2.5</answer>",
    ...     [{"role": "assistant", "content": "<think>a</think><answer>x-y</answer>"}],
    ...     "no tags",
    ... ], solution=[[[0, 2]]] * 3)
    [1.0, 0.2, 0.0]
    """
    try:
        return [
            format_score(completion_text(c), timestamp_aware=timestamp_aware, strict=strict)
            for c in completions
        ]
    except Exception:
        return [0.0] * _safe_len(completions)


def _safe_len(items: Any) -> int:
    try:
        return len(items)
    except Exception:
        return 0
