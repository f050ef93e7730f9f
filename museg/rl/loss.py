"""GRPO loss: per-token log-probs, k3 KL, PPO-clipped importance ratio, loss aggregation.

All functions are pure tensor functions; ``completion_logps`` is the only one that runs a model.

Per completion token ``t`` with advantage ``A`` (one per sequence)::

    ratio   = exp(logp - old_logp)                 # old_logp = logp.detach() when num_iterations == 1
    k3      = exp(ref - logp) - (ref - logp) - 1   # Schulman's k3 estimator of KL(policy || ref)
    loss_t  = -(min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A) - beta * k3)

Aggregation (``loss_type``) over the completion mask ``m``:

* ``sequence`` -- mean over each sequence's tokens, then mean over sequences (MUSEG / GRPO paper);
* ``token``    -- sum over all tokens / number of tokens (DAPO);
* ``dr_grpo``  -- sum over all tokens / (num sequences * max_completion_length) (Dr. GRPO).

Example::

    >>> import torch
    >>> logps = torch.zeros(2, 3, requires_grad=True)
    >>> mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    >>> loss, stats = grpo_loss(logps, torch.tensor([1.0, -1.0]), mask, beta=0.0)
    >>> round(loss.item(), 4), stats["clip_ratio"]
    (0.0, 0.0)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = [
    "LOSS_TYPES",
    "selective_log_softmax",
    "completion_logps",
    "k3_kl",
    "aggregate",
    "grpo_loss",
]

LOSS_TYPES = ("sequence", "token", "dr_grpo")


def selective_log_softmax(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits)[..., ids]`` computed row by row in float32 (bounded memory).

    >>> import torch
    >>> lg = torch.tensor([[[0.0, 0.0], [2.0, 0.0]]])
    >>> [round(v, 4) for v in selective_log_softmax(lg, torch.tensor([[0, 0]]))[0].tolist()]
    [-0.6931, -0.1269]
    """
    rows = []
    for row_logits, row_ids in zip(logits, ids, strict=True):
        row_logits = row_logits.float()
        picked = row_logits.gather(-1, row_ids.unsqueeze(-1)).squeeze(-1)
        rows.append(picked - torch.logsumexp(row_logits, dim=-1))
    return torch.stack(rows)


def completion_logps(
    model: torch.nn.Module,
    inputs: Mapping[str, Any],
    completion_ids: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-token log-probs ``[B, C]`` of ``completion_ids`` under ``model``.

    ``inputs`` holds the full sequences (prompt + completion: ``input_ids``, ``attention_mask`` and
    the vision tensors); only the last ``C + 1`` positions' logits are materialised. Logits are
    divided by ``temperature`` (``train.logprob_temperature``: 1.0 in MUSEG, which samples at 0.9
    but scores unscaled logits; the sampling temperature in TRL >= 0.16 style).
    """
    c = completion_ids.shape[1]
    out = model(**inputs, logits_to_keep=c + 1, use_cache=False)
    logits = out.logits[:, :-1, :]
    if temperature != 1.0:
        logits = logits / temperature
    return selective_log_softmax(logits, completion_ids)


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """k3 estimator ``exp(ref - logp) - (ref - logp) - 1`` (>= 0, 0 where equal).

    >>> import torch
    >>> k3_kl(torch.tensor([0.0, -1.0]), torch.tensor([0.0, 0.0])).tolist()[0]
    0.0
    """
    d = ref_logps - logps
    return torch.exp(d) - d - 1.0


def aggregate(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str = "sequence",
    max_completion_length: int | None = None,
) -> torch.Tensor:
    """Reduce a ``[B, C]`` per-token quantity over ``mask`` according to ``loss_type``.

    >>> import torch
    >>> x = torch.tensor([[1.0, 3.0, 0.0], [2.0, 2.0, 2.0]])
    >>> m = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    >>> aggregate(x, m, "sequence").item(), aggregate(x, m, "token").item()
    (2.0, 2.0)
    >>> aggregate(x, m, "dr_grpo", max_completion_length=4).item()
    1.25
    """
    mask = mask.to(per_token.dtype)
    masked = per_token * mask
    if loss_type == "sequence":
        per_seq = masked.sum(-1) / mask.sum(-1).clamp(min=1.0)
        return per_seq.mean()
    if loss_type == "token":
        return masked.sum() / mask.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        if not max_completion_length:
            raise ValueError("loss_type 'dr_grpo' needs max_completion_length (train.max_completion_length)")
        return masked.sum() / (per_token.shape[0] * max_completion_length)
    raise ValueError(f"train.loss_type: unknown {loss_type!r} (fix: one of {', '.join(LOSS_TYPES)})")


def grpo_loss(
    logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    old_logps: torch.Tensor | None = None,
    ref_logps: torch.Tensor | None = None,
    beta: float = 0.0,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    loss_type: str = "sequence",
    max_completion_length: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO loss for one micro-batch and detached statistics.

    ``logps``/``old_logps``/``ref_logps``/``mask``: ``[B, C]``; ``advantages``: ``[B]``.
    ``old_logps=None`` means on-policy (``num_iterations == 1``): ratio = 1, the gradient is the
    plain policy gradient. Statistics: ``kl`` (k3's masked mean per sequence, then mean over
    sequences; 0 when ``beta == 0`` or no reference), ``clip_ratio`` (fraction of tokens where the clipped branch is active), ``ratio``.
    """
    if old_logps is None:
        old_logps = logps.detach()
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high)
    adv = advantages.to(logps.dtype).unsqueeze(1)
    surrogate = torch.minimum(ratio * adv, clipped * adv)
    per_token = -surrogate
    kl = None
    if beta != 0.0 and ref_logps is not None:
        kl = k3_kl(logps, ref_logps)
        per_token = per_token + beta * kl
    loss = aggregate(per_token, mask, loss_type, max_completion_length)

    with torch.no_grad():
        m = mask.to(logps.dtype)
        n_tok = m.sum().clamp(min=1.0)
        is_clipped = ((ratio < 1.0 - epsilon_low) & (adv < 0)) | ((ratio > 1.0 + epsilon_high) & (adv > 0))
        stats = {
            # per-sequence masked mean, then mean over sequences (MUSEG / TRL 0.15.1's logged KL)
            "kl": float(((kl * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean())
            if kl is not None else 0.0,
            "clip_ratio": float((is_clipped.to(m.dtype) * m).sum() / n_tok),
            "ratio": float((ratio * m).sum() / n_tok),
        }
    return loss, stats
