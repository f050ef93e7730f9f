"""MUSEG rewards: pure TRL-style reward functions (list in, list out) that never raise.

* :func:`format_reward` - format + stage-1 timestamp check (0 / 0.2 / 0.6 / 1);
* :func:`global_matching_reward` - r_G, segment-level F1 by overlap length after merging;
* :func:`local_matching_reward` - r_L, mean ``(1 + GIoU) / 2`` over index-paired segments;
* :func:`segment_matching_reward` - r_M = r_G + r_L;
* :mod:`museg.rewards.registry` - config names, weighted totals (:func:`compute_rewards`).

Example:

>>> from museg.rewards import compute_rewards
>>> out = compute_rewards(["<think>0.0 to 5.0</think><answer>0-5</answer>"], [[[0, 5]]],
...                       {"format": 1.0, "global_matching": 1.0, "local_matching": 1.0})
>>> round(out["total"][0], 5)
3.0
"""

from museg.rewards.format import format_reward
from museg.rewards.matching import (
    global_matching_reward,
    local_matching_reward,
    segment_matching_reward,
)
from museg.rewards.registry import (
    REWARD_FUNCTIONS,
    RewardConfigError,
    compute_rewards,
    reward_functions_from_cfg,
)

__all__ = [
    "format_reward",
    "global_matching_reward",
    "local_matching_reward",
    "segment_matching_reward",
    "REWARD_FUNCTIONS",
    "RewardConfigError",
    "compute_rewards",
    "reward_functions_from_cfg",
]
