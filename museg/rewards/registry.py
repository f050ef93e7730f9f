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

:func:`compute_rewards` parses each completion once and shares the parse between the rewards: it
loops over the registered rewards x weights, scoring one :class:`ParsedCompletion` at a time.

Adding a reward is one registration in this module: a per-completion score function decorated with
:func:`register_reward`, naming the TRL-style list function (``fn(completions, solution, ...)``,
e.g. in :mod:`museg.rewards.matching`) and which of the ``timestamp_aware`` / ``strict`` options it
takes. ``conf/reward/*.yaml`` can then weight it by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

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
    "REWARDS",
    "REWARD_FUNCTIONS",
    "ParsedCompletion",
    "RewardConfigError",
    "RewardSpec",
    "compute_rewards",
    "register_reward",
    "reward_functions_from_cfg",
    "validate_weights",
]

RewardFn = Callable[..., list[float]]
ScoreFn = Callable[["ParsedCompletion"], float]
_OPTIONS = ("timestamp_aware", "strict")
_UNPARSED: Any = object()


class ParsedCompletion:
    """One completion with its ground truth: parsed at most once, each reward scored at most once."""

    __slots__ = ("text", "solution", "timestamp_aware", "strict", "_segments", "_scores")

    def __init__(self, text: str | None, solution: Any, timestamp_aware: bool = True,
                 strict: bool = False) -> None:
        self.text, self.solution = text, solution
        self.timestamp_aware, self.strict = timestamp_aware, strict
        self._segments = _UNPARSED
        self._scores: dict[str, float] = {}

    @property
    def segments(self) -> list[list[float]] | None:
        """The valid predicted segments of the answer (None: unparsable), parsed on first use."""
        if self._segments is _UNPARSED:
            self._segments = predicted_segments(self.text, self.strict)
        return self._segments

    def score(self, name: str) -> float:
        """The raw score of the registered reward ``name`` (computed once)."""
        value = self._scores.get(name)
        if value is None:
            value = self._scores[name] = REWARDS[name].score(self)
        return value


@dataclass(frozen=True)
class RewardSpec:
    """A registered reward: its per-completion score, its TRL-style list function, its options."""

    name: str
    score: ScoreFn
    fn: RewardFn
    options: tuple[str, ...]  # keywords of ``fn`` among ("timestamp_aware", "strict")
    needs_solution: bool  # ``fn(completions, solution, ...)`` rather than ``fn(completions, ...)``


#: name -> :class:`RewardSpec`, in registration order (the order error messages list them in).
REWARDS: dict[str, RewardSpec] = {}
#: name -> TRL-style list function (``fn(completions, [solution], **options) -> list[float]``).
REWARD_FUNCTIONS: dict[str, RewardFn] = {}


def register_reward(name: str, fn: RewardFn, options: Sequence[str] = ("strict",),
                    needs_solution: bool = True) -> Callable[[ScoreFn], ScoreFn]:
    """Decorator registering a per-completion score function as reward ``name``.

    ``fn`` is the equivalent list function (what TRL and :func:`reward_functions_from_cfg` call);
    ``options`` are the keywords it takes among ``timestamp_aware`` and ``strict``.
    """
    unknown = set(options) - set(_OPTIONS)
    if unknown:
        raise ValueError(f"register_reward({name!r}): unknown options {sorted(unknown)} "
                         f"(valid: {', '.join(_OPTIONS)})")

    def add(score: ScoreFn) -> ScoreFn:
        REWARDS[name] = RewardSpec(name, score, fn, tuple(options), needs_solution)
        REWARD_FUNCTIONS[name] = fn
        return score

    return add


@register_reward("format", format_reward, options=_OPTIONS, needs_solution=False)
def _format(c: ParsedCompletion) -> float:
    return format_score(c.text, timestamp_aware=c.timestamp_aware, strict=c.strict)


@register_reward("global_matching", global_matching_reward)
def _global_matching(c: ParsedCompletion) -> float:
    return global_matching_score(c.segments, c.solution, c.strict)


@register_reward("local_matching", local_matching_reward)
def _local_matching(c: ParsedCompletion) -> float:
    return local_matching_score(c.segments, c.solution, c.strict)


@register_reward("segment_matching", segment_matching_reward)
def _segment_matching(c: ParsedCompletion) -> float:
    return c.score("global_matching") + c.score("local_matching")


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
    out: dict[str, list[float]] = {n: [] for n in names}
    for text, sol in zip(texts, sols, strict=True):
        parsed = ParsedCompletion(text, sol, timestamp_aware=timestamp_aware, strict=strict)
        for name in names:
            out[name].append(parsed.score(name))
    total = [0.0] * len(texts)
    for name in names:
        weight = w[name]
        if weight == 0.0:
            continue
        total = [t + weight * s for t, s in zip(total, out[name], strict=True)]
    out["total"] = total
    return out


def reward_functions_from_cfg(reward_cfg: DictConfig) -> list[tuple[str, float, RewardFn]]:
    """``[(name, weight, fn)]`` from the composed ``cfg.reward`` (weights, timestamp_aware, strict).

    Each ``fn(completions, solution=..., **columns) -> list[float]`` has ``timestamp_aware`` /
    ``strict`` bound and a ``__name__`` equal to the config name (TRL logs rewards by
    ``__name__``). Weight-0 rewards are included so they can still be logged.

    >>> from museg.config import compose_config
    >>> cfg = compose_config(["reward=phase2"])
    >>> cfg.reward.weights.global_matching = 0.0
    >>> fns = reward_functions_from_cfg(cfg.reward)
    >>> [(name, weight, fn.__name__) for name, weight, fn in fns][:2]
    [('format', 1.0, 'format'), ('global_matching', 0.0, 'global_matching')]
    >>> fns[0][2](["<think>.</think><answer>1-2</answer>"], solution=[[[1, 2]]])
    [1.0]
    """
    if "weights" not in reward_cfg:  # e.g. the root config passed instead of cfg.reward
        raise RewardConfigError(
            f"reward.weights: missing; give e.g. {{format: 1.0, global_matching: 1.0, "
            f"local_matching: 1.0}} (valid: {', '.join(REWARD_FUNCTIONS)})"
        )
    w = validate_weights(reward_cfg.weights)
    return [(name, weight, _bind(name, bool(reward_cfg.timestamp_aware), bool(reward_cfg.strict)))
            for name, weight in w.items()]


def _bind(name: str, timestamp_aware: bool, strict: bool) -> RewardFn:
    spec = REWARDS[name]
    base = spec.fn
    values = {"timestamp_aware": timestamp_aware, "strict": strict}
    options = {key: values[key] for key in spec.options}
    if spec.needs_solution:

        def fn(completions: Sequence[Any], solution: Any = None, **columns: Any) -> list[float]:
            return base(completions, solution, **options)

    else:

        def fn(completions: Sequence[Any], solution: Any = None, **columns: Any) -> list[float]:
            return base(completions, **options)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"{name} reward (timestamp_aware={timestamp_aware}, strict={strict}). " + (
        base.__doc__ or ""
    )
    return fn
