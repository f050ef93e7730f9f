"""One GRPO step: prompts -> rollouts -> rewards -> advantages -> (reference) -> loss -> update.

``rollout_step`` turns this rank's :class:`~museg.rl.batch.PromptItem` list into
:class:`PromptRollout` records (processor inputs, ``G`` completions sampled with a seed derived from
``(seed, step, data position)`` so they are identical after a resume and whatever the world size,
rewards, group advantages). ``optimize_step`` runs ``num_iterations`` optimizer updates on them:
per micro-batch of ``per_device_train_batch_size`` prompts (``x G`` sequences, forwarded in chunks
of ``forward_batch_size``) it computes reference log-probs once (β > 0), the policy log-probs with
gradient, the GRPO loss (see :mod:`museg.rl.loss`), and accumulates gradients over the
``gradient_accumulation_steps`` micro-batches; each micro-batch's loss is divided by their number.

Example (inside :func:`museg.rl.trainer.train`)::

    rolls = rollout_step(ctx, items, step)
    stats = optimize_step(ctx, rolls)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from museg.rl.advantages import group_advantages
from museg.rl.batch import PromptItem, stable_seed
from museg.rl.loss import completion_logps, grpo_loss
from museg.rl.rollout import cut_at_tokens, forward_inputs
from museg.rl.timer import StepTimer

__all__ = ["StepContext", "PromptRollout", "PromptTooLongError", "rollout_step", "optimize_step"]


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


@dataclass
class PromptRollout:
    item: PromptItem
    question: str
    inputs: Any
    completion_ids: torch.Tensor  # [G, C]
    completion_mask: torch.Tensor  # [G, C] float
    texts: list[str]
    rewards: dict[str, list[float]]
    advantages: torch.Tensor  # [G]
    group_std: float
    ref_logps: dict[int, torch.Tensor] = field(default_factory=dict)  # per iteration-0 chunk
    old_logps: dict[int, torch.Tensor] = field(default_factory=dict)


def _prompt_inputs(ctx: StepContext, item: PromptItem) -> tuple[str, str, Any]:
    from museg.data.prompts import build_question
    from museg.model.inputs import build_prompt_text, build_video_inputs

    question = build_question(ctx.template, item.sample.problem)
    text = build_prompt_text(ctx.processor, question)
    inputs = build_video_inputs(ctx.processor, [text], [item.video])
    n = int(inputs["input_ids"].shape[1])
    limit = int(ctx.train.get("max_prompt_length") or 0)
    if limit and n > limit:
        raise PromptTooLongError(
            f"{getattr(item.sample, 'source', '?')}: prompt is {n} tokens (video included) > "
            f"train.max_prompt_length={limit} (fix: lower video.total_pixels / video.max_frames "
            f"or raise train.max_prompt_length; prompts are never truncated)")
    return question, text, inputs


def rollout_step(ctx: StepContext, items: list[PromptItem], step: int) -> list[PromptRollout]:
    """Inputs, G completions, rewards and advantages for each prompt of this rank."""
    from museg.model.generate import generate_completions
    from museg.rewards.registry import compute_rewards

    t = ctx.train
    g = int(t.num_generations)
    gen = ctx.generate or generate_completions
    out = []
    for item in items:
        with ctx.timer.phase("inputs"):
            question, text, inputs = _prompt_inputs(ctx, item)
        extra = ({"prompt_text": text, "video": item.video, "sample": item.sample}
                 if ctx.generate is not None else {})
        with ctx.timer.phase("rollout"), ctx.autocast():
            roll = gen(ctx.engine.module, ctx.processor, inputs, num_generations=g,
                       max_new_tokens=int(t.max_completion_length), do_sample=True,
                       temperature=float(t.temperature), top_p=float(t.top_p),
                       seed=stable_seed(ctx.seed, "rollout", step, item.position), **extra)
        pad = ctx.processor.tokenizer.pad_token_id or 0
        vision_ids = [i for i in (getattr(ctx.processor, "video_token_id", None),
                                  getattr(ctx.processor, "image_token_id", None)) if i is not None]
        c_ids, c_mask, _ = cut_at_tokens(roll.completion_ids.cpu().long(),
                                         roll.completion_mask.cpu().float(), vision_ids, pad)
        with ctx.timer.phase("reward"):
            rewards = compute_rewards(
                roll.texts, [item.sample.solution] * g, weights=dict(ctx.reward.weights),
                timestamp_aware=bool(ctx.reward.timestamp_aware), strict=bool(ctx.reward.strict))
            total = torch.tensor(rewards["total"], dtype=torch.float32)
            adv, std = group_advantages(total, g, scale_rewards=bool(t.scale_rewards))
        out.append(PromptRollout(item=item, question=question, inputs=inputs,
                                 completion_ids=c_ids, completion_mask=c_mask,
                                 texts=list(roll.texts), rewards=rewards, advantages=adv,
                                 group_std=float(std[0])))
    return out


def _pad_cols(x: torch.Tensor, width: int, value: float) -> torch.Tensor:
    if x.shape[1] >= width:
        return x
    return torch.cat([x, torch.full((x.shape[0], width - x.shape[1]), value, dtype=x.dtype)], 1)


def _micro_batches(rolls: list[PromptRollout], per_micro: int) -> list[list[PromptRollout]]:
    return [rolls[i:i + per_micro] for i in range(0, len(rolls), per_micro)]


def optimize_step(ctx: StepContext, rolls: list[PromptRollout]) -> dict[str, float]:
    """``num_iterations`` optimizer updates on the rollouts; returns averaged statistics."""
    t = ctx.train
    eng = ctx.engine
    mu = int(t.get("num_iterations", 1) or 1)
    beta = float(t.beta)
    micro = _micro_batches(rolls, int(t.per_device_train_batch_size))
    n_micro = len(micro)
    pad = ctx.processor.tokenizer.pad_token_id or 0
    agg = {"loss": [], "kl": [], "clip_ratio": [], "grad_norm": [], "skipped": 0}
    eng.model.train()
    for it in range(mu):
        step_loss = 0.0
        for mi, mb in enumerate(micro):
            width = max(r.completion_ids.shape[1] for r in mb)
            ids = torch.cat([_pad_cols(r.completion_ids, width, pad) for r in mb])
            mask = torch.cat([_pad_cols(r.completion_mask, width, 0.0) for r in mb])
            adv = torch.cat([r.advantages for r in mb])
            prompts = [r.inputs for r in mb for _ in range(r.completion_ids.shape[0])]
            n = ids.shape[0]
            fb = int(t.get("forward_batch_size") or n)
            chunks = [(s, min(s + fb, n)) for s in range(0, n, fb)]
            n_tok_mb = float(mask.sum().clamp(min=1.0))
            key0 = mi * 1000
            for ci, (s, e) in enumerate(chunks):
                key = key0 + ci
                c_ids, c_mask, c_adv = ids[s:e], mask[s:e], adv[s:e]
                batch = forward_inputs(prompts[s:e], c_ids, c_mask, pad, device=ctx.device)
                c_ids_d = c_ids.to(ctx.device)
                ref_lp = None
                if beta != 0.0 and ctx.reference is not None:
                    if key not in mb[0].ref_logps:
                        with ctx.timer.phase("reference"), torch.no_grad(), ctx.reference() as ref:
                            with ctx.autocast():
                                mb[0].ref_logps[key] = completion_logps(
                                    ref, batch, c_ids_d, float(t.temperature)).detach()
                    ref_lp = mb[0].ref_logps[key]
                with ctx.timer.phase("policy"):
                    with ctx.autocast():
                        logps = completion_logps(eng.model, batch, c_ids_d, float(t.temperature))
                    old = None
                    if mu > 1:
                        if it == 0:
                            mb[0].old_logps[key] = logps.detach()
                        old = mb[0].old_logps[key]
                    loss, st = grpo_loss(
                        logps, c_adv.to(ctx.device), c_mask.to(ctx.device), old_logps=old,
                        ref_logps=ref_lp, beta=beta, epsilon_low=float(t.epsilon_low),
                        epsilon_high=float(t.epsilon_high), loss_type=str(t.loss_type),
                        max_completion_length=int(t.max_completion_length))
                    if t.loss_type == "token":
                        weight = float(c_mask.sum()) / n_tok_mb
                    else:
                        weight = (e - s) / n
                    scaled = loss * (weight / n_micro)
                    last = mi == n_micro - 1 and ci == len(chunks) - 1
                    eng.backward(scaled, last=last)
                step_loss += float(scaled.detach())
                agg["kl"].append(st["kl"])
                agg["clip_ratio"].append(st["clip_ratio"])
        with ctx.timer.phase("optimizer"):
            grad_norm, stepped = eng.step(step_loss)
        agg["loss"].append(step_loss)
        agg["grad_norm"].append(grad_norm)
        agg["skipped"] += int(not stepped)

    def mean(v: list[float]) -> float:
        return float(sum(v) / len(v)) if v else 0.0

    return {"loss": agg["loss"][0], "loss_last_iter": agg["loss"][-1], "kl": mean(agg["kl"]),
            "clip_ratio": mean(agg["clip_ratio"]), "grad_norm": agg["grad_norm"][-1],
            "skipped_updates": float(agg["skipped"])}
