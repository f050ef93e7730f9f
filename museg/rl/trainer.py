"""The GRPO training loop: ``train(cfg) -> dict`` (MUSEG stage 1 / stage 2, CPU to multi-GPU).

Batch semantics (TRL / MUSEG): ``train.per_device_train_batch_size`` counts *completions* per rank
per micro-step; a micro-step holds ``P = per_device x world_size / G`` prompts whose completions are
spread over the ranks in order (:mod:`museg.rl.batch`); an optimizer step has
``gradient_accumulation_steps`` micro-steps; an epoch is
``floor(N / (P x gradient_accumulation_steps))`` optimizer steps and checkpoints count consumed
prompts. Per optimizer step every rank decodes the videos of the prompts it touches (prefetched),
samples its completions (HF ``generate`` with one seed per completion, or vLLM), scores them
(:func:`museg.rewards.registry.compute_rewards`), all-gathers the rewards for the group advantages,
then runs reference log-probs (β > 0 only), the GRPO loss over its own completions with gradient
accumulation (DDP averages over ranks), clipping, AdamW and a transformers LR schedule
(:mod:`museg.rl.step`, :mod:`museg.rl.engine`). Logged rewards are over all ranks.
Metrics go to :class:`museg.rl.logging.MetricsLogger`; checkpoints every ``train.save_steps``
(:mod:`museg.rl.checkpoint`); ``resume=auto|never|<path>``; ``init_from`` (a stage-1 run dir ->
its ``final/``, or a model dir) replaces ``model.path``. At the end: ``run_dir/final`` (model +
processor), ``summary.json`` and ``reward_curves.png``.

Precision: on CPU everything is float32. On CUDA without DeepSpeed the policy keeps float32 master
weights under bf16 autocast (``train.bf16``) -- pure-bf16 AdamW would round away updates of
lr 1.5e-6; the frozen reference uses ``model.dtype``. With DeepSpeed its bf16 config applies.

Preemption: :func:`museg.rl.checkpoint_request.request_checkpoint` (called by a signal handler of
the cluster glue) makes the loop save a checkpoint at the next step boundary and return
``{'preempted': True, ...}``.

The work is done by :class:`museg.rl.recipe.GRPORecipe` (setup / train / finish / cleanup); the
parts it is assembled from are in :mod:`museg.rl.builders`.

Example::

    from museg.rl.trainer import train
    summary = train(cfg)            # cfg composed by ``python -m museg.run task=train ...``
    summary["step"], summary["final_dir"], summary["history"][-1]["reward/total"]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from museg.rl.recipe import GRPORecipe, StepRecord

__all__ = ["train"]


def train(cfg: Any, on_step: Callable[[StepRecord], None] | None = None,
          rollout_fn: Callable[..., Any] | None = None) -> dict:
    """Run (or resume) GRPO training described by ``cfg``; returns a summary dict.

    ``on_step`` is called on every rank after each step with a :class:`StepRecord`.
    ``rollout_fn`` replaces the rollout backend; it is called once per (prompt, run of this rank's
    generations) as ``rollout_fn(model, processor, inputs, num_generations=n, max_new_tokens=...,
    do_sample=True, temperature=..., top_p=..., seed=seeds[0], seeds=[n seeds],
    generation_indices=[n ints], prompt_text=..., video=..., sample=...)`` and returns an object
    with ``texts``, ``completion_ids`` and ``completion_mask`` (n rows, in the order of
    ``generation_indices``; tests and benchmarks script rollouts with it).
    """
    recipe = GRPORecipe(cfg, on_step=on_step, rollout_fn=rollout_fn)
    recipe.setup()
    recipe.train()
    summary = recipe.finish()
    recipe.cleanup()
    return summary
