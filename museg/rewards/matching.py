"""Segment matching rewards of MUSEG: global matching r_G, local matching r_L, r_M = r_G + r_L.

* **Global matching r_G** (paper: overlap of the predicted and true segment sets; the reference code,
  followed here, computes a *segment-level F1 by overlap length*): predictions are sorted by start
  and touching/overlapping ones merged (``end_i >= start_j``); ``overlap = sum over (gt, merged)
  pairs of max(0, min(ends) - max(starts))``; ``P = overlap / (sum merged lengths + 1e-6)``,
  ``R = overlap / (sum gt lengths + 1e-6)``, ``r_G = 2PR / (P + R + 1e-6)``. A bare ground truth
  ``[s, e]`` is wrapped as ``[[s, e]]``.
* **Local matching r_L** (paper: mean of ``(1 + GIoU) / 2`` over index-paired segments): the i-th
  prediction (as written, no sorting or merging) is paired with the i-th ground truth, the shorter
  list padded with ``[1e9, 1e9 + 1]``; per pair ``(1 + inter/union - (enclosure - union)/enclosure)/2``;
  ``r_L`` is the mean.

Both score 0 when ``<answer>``/``</answer>`` do not occur exactly once, a token does not parse, a
value is negative or NaN, or ``s >= e``; any arithmetic failure (e.g. division by zero) gives 0.

Values: with valid, disjoint ground truth both rewards lie in [0, 1]. Like the reference, the
default mode keeps its values for overlapping ground truth (overlap is counted per pair, so r_G can
exceed 1) and for degenerate or reversed ground truth (r_L can be negative, e.g. -0.75 for truth
``[38, 13]``, which occurs in the real stage-2 data). The one deliberate deviation: a non-finite
result (NaN from ``inf - inf`` with a prediction end of ``inf``, or NaN ground truth) scores 0.
``strict=True`` additionally rejects tokens with more than two ``-`` parts and ``inf``, scores 0
when a ground-truth segment is not finite with ``s < e``, and clamps results to [0, 1].

Usage (TRL style)::

    from museg.rewards import segment_matching_reward
    segment_matching_reward(["<answer>0-5 10-20</answer>"], solution=[[[0, 5], [10, 20]]])
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from museg.rewards.parsing import (
    completion_texts,
    extract_answer_raw,
    parse_answer_numbers,
    valid_segments,
)

__all__ = [
    "PAD_SEGMENT",
    "align_solutions",
    "merge_segments",
    "predicted_segments",
    "global_matching_score",
    "local_matching_score",
    "global_matching_reward",
    "local_matching_reward",
    "segment_matching_reward",
]

#: Far-away segment used to pad the shorter list in local matching.
PAD_SEGMENT = (1e9, 1e9 + 1)
_EPS = 1e-6


def predicted_segments(text: Any, strict: bool = False) -> list[list[float]] | None:
    """Valid predicted segments of a completion text, or ``None`` (reward 0).

    >>> predicted_segments("<answer>2-3 0-1</answer>")
    [[2.0, 3.0], [0.0, 1.0]]
    >>> predicted_segments("<answer>2-3</answer><answer>") is None
    True
    """
    answer = extract_answer_raw(text)
    if answer is None:
        return None
    return valid_segments(parse_answer_numbers(answer, strict=strict))


def merge_segments(segments: Sequence[Sequence[float]]) -> list[list[float]]:
    """Sort by start and merge every pair where the earlier end >= the later start.

    >>> merge_segments([[5, 6], [0, 2], [2, 3], [1, 1.5]])
    [[0, 3], [5, 6]]
    """
    merged: list[list[float]] = []
    for start, end in sorted(([s[0], s[1]] for s in segments), key=lambda s: s[0]):
        if merged and merged[-1][1] >= start:
            last = merged[-1]
            last[0] = min(last[0], start)
            last[1] = max(last[1], end)
        else:
            merged.append([start, end])
    return merged


def _finish(value: float, strict: bool) -> float:
    value = float(value)
    if not math.isfinite(value):
        return 0.0
    return min(max(value, 0.0), 1.0) if strict else value


def _gt_ok(gts: list[Any]) -> bool:
    try:
        return all(math.isfinite(g[0]) and math.isfinite(g[1]) and g[0] < g[1] for g in gts)
    except Exception:
        return False


def global_matching_score(
    segments: list[list[float]] | None, solution: Any, strict: bool = False
) -> float:
    """r_G for parsed predictions (``None`` -> 0) against one item's ground truth.

    >>> round(global_matching_score([[0.0, 5.0], [5.0, 10.0]], [[0, 10]]), 5)  # merged to [0, 10]
    1.0
    >>> round(global_matching_score([[0.0, 5.0]], [[0, 10]]), 6)  # P=1, R=0.5
    0.666666
    >>> global_matching_score([[0.0, 5.0]], [0, 10]) == global_matching_score([[0.0, 5.0]], [[0, 10]])
    True
    """
    try:
        if segments is None:
            return 0.0
        gts = list(solution)
        if isinstance(gts[0], numbers.Real):
            gts = [gts]
        if strict and not _gt_ok(gts):
            return 0.0
        merged = merge_segments(segments)
        all_gt = sum([g[1] - g[0] for g in gts])
        all_sel = sum([m[1] - m[0] for m in merged])
        overlap = 0
        for g in gts:
            g0, g1 = g[0], g[1]
            for m in merged:
                overlap += max(0, min(m[1], g1) - max(m[0], g0))
        precision = overlap / (all_sel + _EPS)
        recall = overlap / (all_gt + _EPS)
        return _finish(2 * precision * recall / (precision + recall + _EPS), strict)
    except Exception:
        return 0.0


def local_matching_score(
    segments: list[list[float]] | None, solution: Any, strict: bool = False
) -> float:
    """r_L for parsed predictions (``None`` -> 0) against one item's ground truth.

    >>> local_matching_score([[0.0, 10.0]], [[0, 10]])
    1.0
    >>> local_matching_score([[0.0, 5.0]], [[5, 10]])  # touching: IoU 0, GIoU 0 -> 0.5
    0.5
    >>> round(local_matching_score([[0.0, 10.0]], [[0, 10], [20, 30]]), 6)  # 2nd padded: ~0
    0.5
    """
    try:
        if segments is None:
            return 0.0
        gts = list(solution)
        if strict and not _gt_ok(gts):
            return 0.0
        preds = list(segments)
        if len(gts) < len(preds):
            gts.extend([list(PAD_SEGMENT)] * (len(preds) - len(gts)))
        elif len(preds) < len(gts):
            preds.extend([list(PAD_SEGMENT)] * (len(gts) - len(preds)))
        scores = []
        for g, p in zip(gts, preds, strict=True):
            g0, g1, p0, p1 = g[0], g[1], p[0], p[1]
            inter = max(0, min(g1, p1) - max(g0, p0))
            union = g1 - g0 + p1 - p0 - inter
            enclosure = max(g1, p1) - min(g0, p0)
            scores.append((1 + inter / union - (enclosure - union) / enclosure) / 2)
        return _finish(sum(scores) / len(scores), strict)
    except Exception:
        return 0.0


def align_solutions(solution: Any, n: int) -> list[Any]:
    """``n`` ground truths: ``solution`` cut or padded with ``None`` (which scores 0).

    >>> align_solutions([[[0, 1]]], 2)
    [[[0, 1]], None]
    """
    try:
        items = list(solution) if solution is not None else []
    except Exception:
        items = []
    return items[:n] + [None] * (n - len(items[:n]))


def global_matching_reward(
    completions: Sequence[Any], solution: Sequence[Any], strict: bool = False, **columns: Any
) -> list[float]:
    """r_G per completion; ``solution[i]`` is item i's ground truth ``[[s, e], ...]``.

    >>> global_matching_reward(["<answer>0-5 5-10</answer>", "<answer>10-5</answer>"],
    ...                        solution=[[[0, 10]], [[0, 10]]])
    [0.9999994000002601, 0.0]
    """
    texts = completion_texts(completions)
    sols = align_solutions(solution, len(texts))
    return [
        global_matching_score(predicted_segments(t, strict), s, strict)
        for t, s in zip(texts, sols, strict=True)
    ]


def local_matching_reward(
    completions: Sequence[Any], solution: Sequence[Any], strict: bool = False, **columns: Any
) -> list[float]:
    """r_L per completion.

    >>> local_matching_reward([[{"role": "assistant", "content": "<answer>0-10</answer>"}]],
    ...                       solution=[[[0, 10]]])
    [1.0]
    """
    texts = completion_texts(completions)
    sols = align_solutions(solution, len(texts))
    return [
        local_matching_score(predicted_segments(t, strict), s, strict)
        for t, s in zip(texts, sols, strict=True)
    ]


def segment_matching_reward(
    completions: Sequence[Any], solution: Sequence[Any], strict: bool = False, **columns: Any
) -> list[float]:
    """r_M = r_G + r_L per completion (in [0, 2]); parses each completion once.

    >>> segment_matching_reward(["<answer>0-10</answer>"], solution=[[[0, 10]]])
    [1.99999940000026]
    """
    texts = completion_texts(completions)
    sols = align_solutions(solution, len(texts))
    out = []
    for t, s in zip(texts, sols, strict=True):
        segments = predicted_segments(t, strict)
        out.append(
            global_matching_score(segments, s, strict) + local_matching_score(segments, s, strict)
        )
    return out
