"""Assembly of prompt + completion inputs for the teacher-forced policy / reference forward.

Rollouts themselves come from :mod:`museg.generation` (seeded HF sampling or vLLM); this module
only builds what the loss needs. ``forward_inputs`` builds the batch for a list of (prompt,
completion) pairs: prompts left-padded, completions right-padded, video tensors repeated per sequence (the same
prompt mapping may appear several times), ``mm_token_type_ids`` extended with zeros so the M-RoPE
positions of the completion match those used during generation.

Example::

    roll = generate_completions(model, processor, inputs, num_generations=8, max_new_tokens=256)
    batch = forward_inputs([inputs] * 8, roll.completion_ids, roll.completion_mask, pad=0)
    logps = completion_logps(model, batch, roll.completion_ids)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

__all__ = ["forward_inputs", "cut_at_tokens", "drop_tokens", "VIDEO_KEYS"]

VIDEO_KEYS = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")


def _is_any(ids: torch.Tensor, token_ids: Sequence[int]) -> torch.Tensor:
    """Boolean mask of the positions of ``ids`` holding any of ``token_ids``."""
    return torch.isin(ids, torch.as_tensor([int(t) for t in token_ids], dtype=ids.dtype))


def cut_at_tokens(ids: torch.Tensor, mask: torch.Tensor, bad_ids: Sequence[int],
                  pad: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Cut completions at the first token of ``bad_ids`` (mask 0 and ``pad`` from there on).

    A sampled ``<|video_pad|>`` / ``<|image_pad|>`` would be taken for a vision placeholder by the
    teacher-forced forward (a feature/token count mismatch), so such a completion is only trained
    up to that token. Returns ``(ids, mask, number of rows cut)``.

    >>> i, m, n = cut_at_tokens(torch.tensor([[4, 9, 5], [4, 5, 6]]), torch.ones(2, 3), [9], 0)
    >>> i.tolist(), m.tolist(), n
    ([[4, 0, 0], [4, 5, 6]], [[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]], 1)
    """
    after = _is_any(ids, bad_ids).long().cumsum(1) > 0
    rows = int((after & (mask > 0)).any(1).sum())
    return ids.masked_fill(after, pad), mask.masked_fill(after, 0), rows


def drop_tokens(ids: torch.Tensor, mask: torch.Tensor, bad_ids: Sequence[int],
                pad: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Delete every token of ``bad_ids`` from the completions, keeping the rest (shifted left).

    MUSEG's trainer removes a sampled ``<|video_pad|>`` from a completion before the teacher-forced
    forward (where it would be taken for a vision placeholder) and trains on the remaining tokens.
    Returns ``(ids, mask, number of rows changed)``; the width is kept.

    >>> i, m, n = drop_tokens(torch.tensor([[4, 9, 5], [4, 5, 6]]), torch.ones(2, 3), [9], 0)
    >>> i.tolist(), m.tolist(), n
    ([[4, 5, 0], [4, 5, 6]], [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]], 1)
    """
    bad = _is_any(ids, bad_ids) & (mask > 0)
    if not bool(bad.any()):
        return ids, mask, 0
    keep = (mask > 0) & ~bad
    out_ids, out_mask = torch.full_like(ids, pad), torch.zeros_like(mask)
    for r in range(ids.shape[0]):
        row = ids[r][keep[r]]
        out_ids[r, :row.shape[0]] = row
        out_mask[r, :row.shape[0]] = 1
    return out_ids, out_mask, int(bad.any(1).sum())


def forward_inputs(
    prompts: Sequence[Mapping[str, torch.Tensor]],
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    pad: int,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """Batch ``len(prompts)`` sequences ``prompt_i + completion_i`` for a teacher-forced forward.

    ``prompts[i]`` are processor inputs of batch size 1 (``input_ids``, ``attention_mask``,
    optional ``mm_token_type_ids`` and video tensors); the same mapping may appear several times.
    """
    n = len(prompts)
    if completion_ids.shape[0] != n:
        raise ValueError(f"{n} prompts but {completion_ids.shape[0]} completions")
    width = max(int(p["input_ids"].shape[1]) for p in prompts)
    ids, att, mm = [], [], []
    for p in prompts:
        pid = p["input_ids"][0].cpu()
        pm = p.get("attention_mask", torch.ones_like(p["input_ids"]))[0].cpu()
        pmm = p.get("mm_token_type_ids")
        pmm = pmm[0].cpu() if pmm is not None else torch.zeros_like(pid)
        left = width - pid.shape[0]
        ids.append(torch.cat([torch.full((left,), pad, dtype=pid.dtype), pid]))
        att.append(torch.cat([torch.zeros(left, dtype=pm.dtype), pm]))
        mm.append(torch.cat([torch.zeros(left, dtype=pmm.dtype), pmm]))
    out: dict[str, torch.Tensor] = {
        "input_ids": torch.cat([torch.stack(ids), completion_ids.to(torch.long)], dim=1),
        "attention_mask": torch.cat([torch.stack(att), completion_mask.to(att[0].dtype)], dim=1),
    }
    if any("mm_token_type_ids" in p for p in prompts):
        out["mm_token_type_ids"] = torch.cat(
            [torch.stack(mm), torch.zeros_like(completion_ids, dtype=mm[0].dtype)], dim=1)
    for key in VIDEO_KEYS:
        vals = [p[key] for p in prompts if p.get(key) is not None]
        if vals:
            if len(vals) != n:
                raise ValueError(f"{key} present for only {len(vals)} of {n} prompts")
            vals = [v if torch.is_tensor(v) else torch.as_tensor(v) for v in vals]
            out[key] = torch.cat([v.reshape(-1) if v.dim() == 1 else v for v in vals], dim=0)
    if device is not None:
        out = {k: v.to(device) for k, v in out.items()}
    return out
