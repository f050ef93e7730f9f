"""GRPO training of Qwen2.5-VL on video grounding (MUSEG), in small modules.

- :mod:`museg.rl.layout` -- the optimizer batch (prompts per step) laid out on a world size;
- :mod:`museg.rl.advantages` -- group-relative advantages (``group_advantages``);
- :mod:`museg.rl.loss` -- per-token log-probs, k3 KL, clipped ratio, aggregations (``grpo_loss``);
- :mod:`museg.rl.batch` -- batch semantics (completions per rank), data order, video decoding
  with prefetch / replacement agreed over ranks;
- :mod:`museg.rl.forward` -- prompt + completion forward inputs (rollouts themselves come from
  :mod:`museg.generation`: seeded HF sampling, or vLLM on GPU);
- :mod:`museg.rl.engine` -- backward / optimizer step (plain PyTorch, DDP, or accelerate+DeepSpeed);
- :mod:`museg.rl.checkpoint` -- atomic checkpoints, resume; :mod:`museg.rl.logging` -- metrics sinks;
- :mod:`museg.rl.timer` -- step-time breakdown (torch.distributed lives in :mod:`museg.dist`);
- :mod:`museg.rl.builders` -- samples, step count, models, optimizer, final save;
- :mod:`museg.rl.recipe` -- the run: setup / train / save / finish / cleanup (``GRPORecipe``);
- :mod:`museg.rl.checkpoint_request` -- the preemption flag (``request_checkpoint``);
- :mod:`museg.rl.trainer` -- the public entry: ``train(cfg) -> dict``.

Example::

    from museg.rl import train, request_checkpoint
    summary = train(cfg)          # cfg composed by museg.run (task=train)
"""

import importlib

__all__ = ["group_advantages", "grpo_loss", "train", "request_checkpoint"]
_LAZY = {"group_advantages": "advantages", "grpo_loss": "loss", "train": "trainer",
         "request_checkpoint": "checkpoint_request"}


def __getattr__(name: str):  # lazy: museg.config imports museg.rl.layout without torch
    if name in _LAZY:
        return getattr(importlib.import_module(f"museg.rl.{_LAZY[name]}"), name)
    raise AttributeError(name)
