"""One GRPO step: slots -> rollouts -> local rewards -> gathered advantages -> loss -> update.

``rollout_step`` turns this rank's :class:`~museg.rl.batch.Slot` list (its runs of generations of
each prompt it touches, see :mod:`museg.rl.batch`) into :class:`RunRollout` records: processor
inputs, completions, and rewards of the rank's completions only. Completion ``(position, g)`` is
sampled with seed ``stable_seed(seed, 'rollout', step, position, g)`` (HF backend: one batched,
per-row-seeded ``generate`` call per micro-step, :mod:`museg.generation.seeded`), so it is the same
whatever the world size or the split of its group, and after a resume. ``gather_advantages``
all-gathers the rewards in global completion order, computes the group advantages over complete
groups on every rank and hands each rank its slice. ``optimize_step`` runs ``num_iterations``
optimizer updates on them.

Loss across ranks (TRL / MUSEG reference): each rank's loss is computed over its own
``per_device_train_batch_size`` completions of a micro-step (forwarded in chunks of
``forward_batch_size``), divided by ``gradient_accumulation_steps``; DDP (or DeepSpeed) averages
the gradients over ranks. With ``sequence`` (mean over each sequence's tokens, then mean over
sequences) and ``dr_grpo`` every rank holds the same number of sequences, so the result is exactly
the mean over all completions of the micro-step, whatever the world size. With ``token`` (DAPO) a
rank's token sum is divided by the micro-step's token count over all ranks / world size (as TRL's
``dapo``), so the average is the token mean over the whole micro-step. Reference log-probs
(β > 0) are computed once per step.

Example (inside :func:`museg.rl.trainer.train`)::

    runs = rollout_step(ctx, slots, step)
    glob = gather_advantages(ctx, runs)
    stats = optimize_step(ctx, runs, glob)
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from museg import dist as D
from museg.data.prompts import build_question
from museg.generation.seeded import sample_completions
from museg.model.inputs import build_prompt_text, build_video_inputs
from museg.rewards.registry import compute_rewards
from museg.rl.advantages import group_advantages
from museg.rl.batch import Slot, stable_seed
from museg.rl.forward import cut_at_tokens, drop_tokens, forward_inputs
from museg.rl.layout import BatchLayout
from museg.rl.loss import completion_logps, grpo_loss
from museg.rl.timer import StepTimer

__all__ = ["StepContext", "RunRollout", "GlobalStep", "PromptTooLongError", "rollout_step",
           "gather_advantages", "optimize_step", "rollout_seed", "step_metrics", "completion_rows",
           "completion_budget"]


class PromptTooLongError(ValueError):
    """A prompt (text + video tokens) exceeds train.max_prompt_length; it is never truncated."""


@dataclass
class StepContext:
    """Everything a step needs; built once by the trainer."""

    train: Any  # cfg.train
    reward: Any  # cfg.reward
    template: str
    processor: Any
    engine: Any  # PlainEngine | DeepSpeedEngine: .model (forward w/ grad), .module (unwrapped)
    reference: Callable[[], contextlib.AbstractContextManager] | None  # yields the ref model
    timer: StepTimer
    seed: int
    device: torch.device
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    generate: Callable[..., Any] | None = None  # rollout backend override (vLLM, scripted)
    rank: int = 0
    world_size: int = 1
    layout: BatchLayout | None = None  # the step's batch layout (museg.rl.layout); set by train


@dataclass
class RunRollout:
    """This rank's completions ``slot.generations`` of one prompt."""

    slot: Slot
    question: str
    inputs: Any
    completion_ids: torch.Tensor  # [n, C]
    completion_mask: torch.Tensor  # [n, C] float
    texts: list[str]
    rewards: dict[str, list[float]]  # this rank's completions only
    advantages: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # [n]


@dataclass
class GlobalStep:
    """Gathered over ranks, in global completion order (micro-step, prompt, generation)."""

    rewards: dict[str, torch.Tensor]  # [A * P * G] per reward function + 'total'
    advantages: torch.Tensor  # [A * P * G]
    group_std: torch.Tensor  # [A * P]
    lengths: torch.Tensor  # [A * P * G] completion tokens
    tokens_per_micro: torch.Tensor  # [A]


def rollout_seed(seed: int, step: int, position: int, generation: int) -> int:
    """Sampling seed of completion ``generation`` of the prompt at data ``position``.

    >>> rollout_seed(0, 1, 5, 2) == rollout_seed(0, 1, 5, 2) != rollout_seed(0, 1, 5, 3)
    True
    """
    return stable_seed(seed, "rollout", step, position, generation)


def completion_budget(prompt_tokens: int, max_completion_length: int,
                      max_total_length: int | None) -> int:
    """New tokens a prompt of ``prompt_tokens`` may get: MUSEG's vLLM caps prompt + completion at
    ``max_model_len`` (4096) and the completion at ``max_tokens`` (4096).

    >>> completion_budget(3000, 4096, 4096), completion_budget(3000, 512, 4096), completion_budget(10, 8, None)
    (1096, 512, 8)
    """
    if max_total_length is None:
        return int(max_completion_length)
    return min(int(max_completion_length), int(max_total_length) - int(prompt_tokens))


def _prompt_inputs(ctx: StepContext, slot: Slot) -> tuple[str, str, Any, int]:
    item = slot.item
    question = build_question(ctx.template, item.sample.problem)
    text = build_prompt_text(ctx.processor, question)
    inputs = build_video_inputs(ctx.processor, [text], [item.video])
    n = int(inputs["input_ids"].shape[1])
    limit = int(ctx.train.max_prompt_length or 0)
    if limit and n > limit:
        raise PromptTooLongError(
            f"{getattr(item.sample, 'source', '?')}: prompt is {n} tokens (video included) > "
            f"train.max_prompt_length={limit} (fix: lower video.total_pixels / video.max_frames "
            f"or raise train.max_prompt_length; prompts are never truncated)")
    cap = completion_budget(n, ctx.train.max_completion_length, ctx.train.max_total_length)
    if cap < 1:
        raise PromptTooLongError(
            f"{getattr(item.sample, 'source', '?')}: prompt is {n} tokens (video included), no room "
            f"left under train.max_total_length={ctx.train.max_total_length} (fix: lower "
            f"video.total_pixels / video.max_frames or raise train.max_total_length)")
    return question, text, inputs, cap


def _generate(ctx: StepContext, slots: list[Slot], prepared: list[tuple[str, str, Any, int]],
              step: int) -> list[Any]:
    """Completions of each slot (rows = its generations); one HF call per micro-step. Each slot's
    ``max_new_tokens`` is its prompt's :func:`completion_budget`."""
    t = ctx.train
    kw = {"temperature": float(t.temperature), "top_p": float(t.top_p)}
    seeds = [[rollout_seed(ctx.seed, step, s.position, g) for g in s.generations] for s in slots]
    if ctx.generate is not None:  # vLLM or a scripted backend: one call per slot
        out = []
        for s, (_, text, inputs, cap), sd in zip(slots, prepared, seeds, strict=True):
            with ctx.timer.phase("rollout"), ctx.autocast():
                out.append(ctx.generate(
                    ctx.engine.module, ctx.processor, inputs, num_generations=len(sd),
                    max_new_tokens=cap,
                    do_sample=True, seed=sd[0], seeds=sd, generation_indices=s.generations,
                    prompt_text=text, video=s.item.video, sample=s.item.sample, **kw))
        return out
    out = [None] * len(slots)
    for m in sorted({s.micro for s in slots}):
        idx = [i for i, s in enumerate(slots) if s.micro == m]
        rows = [prepared[i][2] for i in idx for _ in seeds[i]]
        caps = [prepared[i][3] for i in idx for _ in seeds[i]]
        with ctx.timer.phase("rollout"), ctx.autocast():
            roll = sample_completions(ctx.engine.module, ctx.processor, rows,
                                      [x for i in idx for x in seeds[i]], max_new_tokens=caps, **kw)
        start = 0
        for i in idx:
            n = len(seeds[i])
            out[i] = _Rows(roll.texts[start:start + n], roll.completion_ids[start:start + n],
                           roll.completion_mask[start:start + n])
            start += n
    return out


@dataclass
class _Rows:
    texts: list[str]
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor


def rollout_step(ctx: StepContext, slots: list[Slot], step: int) -> list[RunRollout]:
    """Inputs, this rank's completions and their rewards for each of its slots."""
    prepared = []
    for s in slots:
        with ctx.timer.phase("inputs"):
            prepared.append(_prompt_inputs(ctx, s))
    rolls = _generate(ctx, slots, prepared, step)
    pad = ctx.processor.tokenizer.pad_token_id or 0
    vision_ids = [i for i in (getattr(ctx.processor, "video_token_id", None),
                              getattr(ctx.processor, "image_token_id", None)) if i is not None]
    remove = drop_tokens if ctx.train.vision_token_in_completion == "delete" else cut_at_tokens
    out = []
    for s, (question, _, inputs, _), roll in zip(slots, prepared, rolls, strict=True):
        n = len(s.generations)
        if len(roll.texts) != n:
            raise RuntimeError(f"rollout backend returned {len(roll.texts)} completions, "
                               f"expected {n}")
        ids, mask, _ = remove(roll.completion_ids.cpu().long(), roll.completion_mask.cpu().float(),
                              vision_ids, pad)
        width = max(1, int(mask.sum(1).max()) if mask.numel() else 1)
        ids, mask = ids[:, :width], mask[:, :width]
        with ctx.timer.phase("reward"):
            rewards = compute_rewards(
                list(roll.texts), [s.item.sample.solution] * n, weights=dict(ctx.reward.weights),
                timestamp_aware=bool(ctx.reward.timestamp_aware), strict=bool(ctx.reward.strict))
        out.append(RunRollout(slot=s, question=question, inputs=inputs, completion_ids=ids,
                              completion_mask=mask, texts=list(roll.texts), rewards=rewards))
    return out


def gather_advantages(ctx: StepContext, runs: list[RunRollout]) -> GlobalStep:
    """All-gather rewards (global completion order), group advantages, this rank's slice back."""
    t = ctx.train
    g, pd = int(t.num_generations), ctx.layout.per_device
    w, r = ctx.world_size, ctx.rank
    a = len({x.slot.micro for x in runs})
    keys = sorted(runs[0].rewards)
    with ctx.timer.phase("reward"):
        cols = [torch.tensor([v for x in runs for v in x.rewards[k]], dtype=torch.float32)
                for k in keys]
        cols.append(torch.cat([x.completion_mask.sum(1) for x in runs]).float())
        local = torch.stack(cols, 1)  # [A * pd, K + 1], local order = micro-step, then slice
        if local.shape[0] != a * pd:
            raise RuntimeError(f"rank {r} has {local.shape[0]} completions, expected {a * pd}")
        glob = D.all_gather_cat(local).view(w, a, pd, -1).transpose(0, 1).reshape(a * w * pd, -1)
        rewards = {k: glob[:, j].contiguous() for j, k in enumerate(keys)}
        adv, std = group_advantages(rewards["total"], g, scale_rewards=bool(t.scale_rewards))
        mine = adv.view(a, w * pd)[:, r * pd:(r + 1) * pd].reshape(-1)
        start = 0
        for x in runs:
            n = x.completion_ids.shape[0]
            x.advantages = mine[start:start + n].clone()
            start += n
    lengths = glob[:, -1].contiguous()
    return GlobalStep(rewards=rewards, advantages=adv, group_std=std, lengths=lengths,
                      tokens_per_micro=lengths.view(a, w * pd).sum(1))


def _pad_cols(x: torch.Tensor, width: int, value: float) -> torch.Tensor:
    if x.shape[1] >= width:
        return x
    return torch.cat([x, torch.full((x.shape[0], width - x.shape[1]), value, dtype=x.dtype)], 1)


def _micro_batches(runs: list[RunRollout], pad: int) -> list[dict[str, Any]]:
    out = []
    for m in sorted({x.slot.micro for x in runs}):
        mb = [x for x in runs if x.slot.micro == m]
        width = max(x.completion_ids.shape[1] for x in mb)
        out.append({
            "micro": m,
            "ids": torch.cat([_pad_cols(x.completion_ids, width, pad) for x in mb]),
            "mask": torch.cat([_pad_cols(x.completion_mask, width, 0.0) for x in mb]),
            "adv": torch.cat([x.advantages for x in mb]),
            "prompts": [x.inputs for x in mb for _ in range(x.completion_ids.shape[0])],
        })
    return out


def optimize_step(ctx: StepContext, runs: list[RunRollout], glob: GlobalStep) -> dict[str, float]:
    """``num_iterations`` optimizer updates on this rank's rollouts; statistics over all ranks."""
    t = ctx.train
    eng = ctx.engine
    mu = int(t.num_iterations)
    beta = float(t.beta)
    loss_type = str(t.loss_type)
    pad = ctx.processor.tokenizer.pad_token_id or 0
    lp_temp = float(t.temperature if t.logprob_temperature is None else t.logprob_temperature)
    micro = _micro_batches(runs, pad)
    n_micro = len(micro)
    ref_cache: dict[tuple[int, int], torch.Tensor] = {}
    old_cache: dict[tuple[int, int], torch.Tensor] = {}
    sums = {"kl": 0.0, "clip": 0.0, "tokens": 0.0, "seqs": 0.0}
    losses, norms, skipped = [], [], 0
    eng.model.train()
    for it in range(mu):
        step_loss = 0.0
        for mi, mb in enumerate(micro):
            n = mb["ids"].shape[0]
            fb = int(t.forward_batch_size or n)
            chunks = [(s, min(s + fb, n)) for s in range(0, n, fb)]
            # token (DAPO): divide by the micro-step's tokens over all ranks / world size
            tok_norm = float(glob.tokens_per_micro[mb["micro"]]) / ctx.world_size
            for ci, (s, e) in enumerate(chunks):
                key = (mi, ci)
                c_ids, c_mask, c_adv = mb["ids"][s:e], mb["mask"][s:e], mb["adv"][s:e]
                batch = forward_inputs(mb["prompts"][s:e], c_ids, c_mask, pad, device=ctx.device)
                c_ids_d = c_ids.to(ctx.device)
                ref_lp = None
                if beta != 0.0 and ctx.reference is not None:
                    if key not in ref_cache:
                        with ctx.timer.phase("reference"), torch.no_grad(), ctx.reference() as ref:
                            with ctx.autocast():
                                ref_cache[key] = completion_logps(
                                    ref, batch, c_ids_d, lp_temp).detach()
                    ref_lp = ref_cache[key]
                with ctx.timer.phase("policy"):
                    with ctx.autocast():
                        logps = completion_logps(eng.model, batch, c_ids_d, lp_temp)
                    old = None
                    if mu > 1:
                        if it == 0:
                            old_cache[key] = logps.detach()
                        old = old_cache[key]
                    loss, st = grpo_loss(
                        logps, c_adv.to(ctx.device), c_mask.to(ctx.device), old_logps=old,
                        ref_logps=ref_lp, beta=beta, epsilon_low=float(t.epsilon_low),
                        epsilon_high=float(t.epsilon_high), loss_type=loss_type,
                        max_completion_length=int(t.max_completion_length))
                    c_tok = float(c_mask.sum())
                    if loss_type == "token":
                        weight = c_tok / max(tok_norm, 1e-12)
                    else:
                        weight = (e - s) / n
                    scaled = loss * (weight / n_micro)
                    last = mi == n_micro - 1 and ci == len(chunks) - 1
                    eng.backward(scaled, last=last)
                step_loss += float(scaled.detach())
                sums["kl"] += st["kl"] * (e - s)  # per-sequence mean, then mean (MUSEG's log)
                sums["seqs"] += e - s
                sums["clip"] += st["clip_ratio"] * c_tok
                sums["tokens"] += c_tok
        with ctx.timer.phase("optimizer"):
            grad_norm, stepped = eng.step(step_loss)
        losses.append(step_loss)
        norms.append(grad_norm)
        skipped += int(not stepped)
    red = D.all_reduce_mean({"loss": losses[0], "loss_last_iter": losses[-1], **sums})
    tokens = max(red["tokens"], 1e-12)
    return {"loss": red["loss"], "loss_last_iter": red["loss_last_iter"],
            "kl": red["kl"] / max(red["seqs"], 1e-12), "clip_ratio": red["clip"] / tokens,
            "grad_norm": norms[-1], "skipped_updates": float(skipped)}


def step_metrics(glob: GlobalStep, stats: dict, lr: float) -> dict[str, float]:
    """Logged metrics of a step: rewards over all ranks, optimisation statistics, lr."""
    metrics = {f"reward/{k}": float(v.mean()) for k, v in glob.rewards.items()}
    metrics["reward/group_std"] = float(glob.group_std.mean())
    metrics["completion_length"] = float(glob.lengths.mean())
    metrics["completion_length_max"] = float(glob.lengths.max())
    metrics["lr"] = lr
    for k in ("loss", "kl", "clip_ratio", "grad_norm", "skipped_updates"):
        metrics[k] = float(stats[k])
    return metrics


def completion_rows(runs: list, glob: GlobalStep, num_generations: int,
                     first_position: int) -> list[dict]:
    """Rows of every rank's completions (gathered; rank 0 writes them), ordered by position."""
    rows = []
    for r in runs:
        for j, g in enumerate(r.slot.generations):
            k = (r.slot.position - first_position) * num_generations + g
            row = {"position": r.slot.position, "generation": g,
                   "source": getattr(r.slot.item.sample, "source", ""), "prompt": r.question,
                   "completion": r.texts[j], "solution": json.dumps(r.slot.item.sample.solution)}
            row.update({f"reward/{key}": float(v[k]) for key, v in glob.rewards.items()})
            row["advantage"] = float(glob.advantages[k])
            rows.append(row)
    rows = [row for part in D.all_gather_object(rows) for row in part]
    return sorted(rows, key=lambda x: (x["position"], x["generation"]))
