"""Group-relative advantages for GRPO.

Rewards come as one flat vector ordered prompt by prompt: the ``G`` completions of prompt 0, then
the ``G`` completions of prompt 1, and so on. Each completion's advantage is its reward minus the
mean reward of its group, divided by the group's standard deviation plus ``eps`` (``1e-4``, as in
MUSEG). The standard deviation is the *unbiased* one (Bessel's correction, ``torch.std``'s default),
which is what the reference trainer computed; with ``scale_rewards=False`` (Dr. GRPO) there is no
division at all.

Example::

    >>> import torch
    >>> adv, std = group_advantages(torch.tensor([1.0, 3.0, 0.0, 0.0]), num_generations=2)
    >>> [round(x, 4) for x in adv.tolist()]
    [-0.7071, 0.7071, 0.0, 0.0]
    >>> [round(x, 4) for x in std.tolist()]
    [1.4142, 0.0]
"""

from __future__ import annotations

import torch

__all__ = ["group_advantages", "ADVANTAGE_EPS"]

ADVANTAGE_EPS = 1e-4


def group_advantages(
    rewards: torch.Tensor,
    num_generations: int,
    scale_rewards: bool = True,
    eps: float = ADVANTAGE_EPS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(advantages [N*G], per-group std [N])`` for flat rewards ``[N*G]``.

    The std is unbiased (``torch.std`` default). A group of a single completion (G = 1) has an
    undefined unbiased std; it is taken as 0 so the advantage is 0 (nothing to compare against).

    >>> import torch
    >>> a, _ = group_advantages(torch.tensor([0.0, 1.0, 2.0]), 3, scale_rewards=False)
    >>> a.tolist()
    [-1.0, 0.0, 1.0]
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be a flat vector, got shape {tuple(rewards.shape)}")
    if num_generations < 1 or rewards.numel() % num_generations:
        raise ValueError(
            f"{rewards.numel()} rewards do not split into groups of num_generations="
            f"{num_generations} (fix: pass all G completions of each prompt)"
        )
    grouped = rewards.float().view(-1, num_generations)
    mean = grouped.mean(dim=1, keepdim=True)
    if num_generations > 1:
        std = grouped.std(dim=1, keepdim=True)  # unbiased, like the reference
    else:
        std = torch.zeros_like(mean)
    adv = grouped - mean
    if scale_rewards:
        adv = adv / (std + eps)
    return adv.reshape(-1), std.reshape(-1)
