"""Reward registry: config names -> reward functions, weighted totals, TRL-ready callables.

``conf/reward/*.yaml`` selects rewards by name with weights (``cfg.reward.weights``), plus
``timestamp_aware`` (stage 1: true) and ``strict`` (default false). Names:

* ``format``           - :func:`museg.rewards.format.format_reward` (0 / 0.2 / 0.6 / 1)
* ``global_matching``  - r_G, :func:`museg.rewards.matching.global_matching_reward`
* ``local_matching``   - r_L, :func:`museg.rewards.matching.local_matching_reward`
* ``segment_matching`` - r_M = r_G + r_L (the reference's single reward; do not combine it with the
  two above unless you mean to count them twice)

Usage::

    from museg.rewards.registry import compute_rewards
    scores = compute_rewards(completions, solution, {"format": 1.0, "global_matching": 1.0,
                                                    "local_matching": 1.0})
    scores["total"]            # weighted sum per completion
    scores["global_matching"]  # raw (unweighted) scores per completion

:func:`compute_rewards` parses each completion once and shares the parse between the rewards.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from museg.rewards.format import format_reward, format_score
from museg.rewards.matching import (
    align_solutions,
    global_matching_reward,
    global_matching_score,
    local_matching_reward,
    local_matching_score,
    predicted_segments,
    segment_matching_reward,
)
from museg.rewards.parsing import completion_texts

__all__ = [
    "REWARD_FUNCTIONS",
    "RewardConfigError",
    "compute_rewards",
    "reward_functions_from_cfg",
    "validate_weights",
]

RewardFn = Callable[..., list[float]]

REWARD_FUNCTIONS: dict[str, RewardFn] = {
    "format": format_reward,
    "global_matching": global_matching_reward,
    "local_matching": local_matching_reward,
    "segment_matching": segment_matching_reward,
}


class RewardConfigError(ValueError):
    """A reward configuration names an unknown reward or gives a bad weight."""


def validate_weights(weights: Mapping[str, Any]) -> dict[str, float]:
    """Check reward names and weights; return a plain ``{name: float}`` dict.

    >>> validate_weights({"format": 1, "local_matching": 0.5})
    {'format': 1.0, 'local_matching': 0.5}
    >>> validate_weights({"iou": 1.0})
    Traceback (most recent call last):
    ...
    museg.rewards.registry.RewardConfigError: reward.weights: unknown reward 'iou' (valid: format, global_matching, local_matching, segment_matching)
    """
    if not isinstance(weights, Mapping):
        raise RewardConfigError(
            f"reward.weights: expected a mapping name -> weight, got {type(weights).__name__} "
            f"(valid names: {', '.join(REWARD_FUNCTIONS)})"
        )
    out: dict[str, float] = {}
    for name, weight in weights.items():
        if name not in REWARD_FUNCTIONS:
            raise RewardConfigError(
                f"reward.weights: unknown reward {name!r} (valid: {', '.join(REWARD_FUNCTIONS)})"
            )
        try:
            value = float(weight)
        except (TypeError, ValueError):
            value = math.nan
        if isinstance(weight, bool) or not math.isfinite(value):
            raise RewardConfigError(
                f"reward.weights.{name}: weight must be a finite number, got {weight!r}"
            )
        out[str(name)] = value
    return out


def compute_rewards(
    completions: Sequence[Any],
    solution: Sequence[Any],
    weights: Mapping[str, float],
    timestamp_aware: bool = True,
    strict: bool = False,
) -> dict[str, list[float]]:
    """Raw scores of every weighted-in reward (weight 0 included) plus their weighted ``total``.

    Raises :class:`RewardConfigError` (a ``ValueError``) for an unknown name or a bad weight;
    never raises on completions or solutions.

    >>> out = compute_rewards(["<think>0.0 to 10.0</think><answer>0-10</answer>", "junk"],
    ...                       [[[0, 10]], [[0, 10]]], {"format": 1.0, "local_matching": 0.5})
    >>> out["format"], out["local_matching"], out["total"]
    ([1.0, 0.0], [1.0, 0.0], [1.5, 0.0])
    """
    w = validate_weights(weights)
    texts = completion_texts(completions)
    sols = align_solutions(solution, len(texts))
    names = list(w)
    need_match = any(n != "format" for n in names)
    need_global = "global_matching" in w or "segment_matching" in w
    need_local = "local_matching" in w or "segment_matching" in w
    out: dict[str, list[float]] = {n: [] for n in names}
    for text, sol in zip(texts, sols, strict=True):
        if "format" in w:
            out["format"].append(format_score(text, timestamp_aware=timestamp_aware, strict=strict))
        if not need_match:
            continue
        segments = predicted_segments(text, strict)
        g = global_matching_score(segments, sol, strict) if need_global else 0.0
        loc = local_matching_score(segments, sol, strict) if need_local else 0.0
        if "global_matching" in w:
            out["global_matching"].append(g)
        if "local_matching" in w:
            out["local_matching"].append(loc)
        if "segment_matching" in w:
            out["segment_matching"].append(g + loc)
    total = [0.0] * len(texts)
    for name in names:
        weight = w[name]
        if weight == 0.0:
            continue
        total = [t + weight * s for t, s in zip(total, out[name], strict=True)]
    out["total"] = total
    return out


def _cfg_get(cfg: Any, key: str, default: Any) -> Any:
    if cfg is None:
        return default
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def reward_functions_from_cfg(reward_cfg: Any) -> list[tuple[str, float, RewardFn]]:
    """``[(name, weight, fn)]`` from ``cfg.reward`` (weights, timestamp_aware, strict).

    Each ``fn(completions, solution=..., **columns) -> list[float]`` has ``timestamp_aware`` /
    ``strict`` bound and a ``__name__`` equal to the config name (TRL logs rewards by
    ``__name__``). Weight-0 rewards are included so they can still be logged.

    >>> fns = reward_functions_from_cfg({"weights": {"format": 1.0, "global_matching": 0.0},
    ...                                  "timestamp_aware": False, "strict": False})
    >>> [(name, weight, fn.__name__) for name, weight, fn in fns]
    [('format', 1.0, 'format'), ('global_matching', 0.0, 'global_matching')]
    >>> fns[0][2](["<think>.</think><answer>1-2</answer>"], solution=[[[1, 2]]])
    [1.0]
    """
    weights = _cfg_get(reward_cfg, "weights", None)
    if weights is None:
        raise RewardConfigError(
            f"reward.weights: missing; give e.g. {{format: 1.0, global_matching: 1.0, "
            f"local_matching: 1.0}} (valid: {', '.join(REWARD_FUNCTIONS)})"
        )
    w = validate_weights(weights)
    timestamp_aware = bool(_cfg_get(reward_cfg, "timestamp_aware", True))
    strict = bool(_cfg_get(reward_cfg, "strict", False))
    return [(name, weight, _bind(name, timestamp_aware, strict)) for name, weight in w.items()]


def _bind(name: str, timestamp_aware: bool, strict: bool) -> RewardFn:
    base = REWARD_FUNCTIONS[name]
    if name == "format":

        def fn(completions: Sequence[Any], solution: Any = None, **columns: Any) -> list[float]:
            return base(completions, timestamp_aware=timestamp_aware, strict=strict)

    else:

        def fn(completions: Sequence[Any], solution: Any = None, **columns: Any) -> list[float]:
            return base(completions, solution, strict=strict)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"{name} reward (timestamp_aware={timestamp_aware}, strict={strict}). " + (
        base.__doc__ or ""
    )
    return fn
