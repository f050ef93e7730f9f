"""GRPO training of Qwen2.5-VL on video grounding (MUSEG), in small modules.

- :mod:`museg.rl.advantages` -- group-relative advantages (``group_advantages``);
- :mod:`museg.rl.loss` -- per-token log-probs, k3 KL, clipped ratio, aggregations (``grpo_loss``);
- :mod:`museg.rl.batch` -- batch semantics (completions per rank), data order, video decoding
  with prefetch / replacement agreed over ranks; :mod:`museg.rl.sampling` -- per-completion seeds;
- :mod:`museg.rl.rollout` -- prompt + completion forward inputs (HF rollouts come from
  :func:`museg.model.generate.generate_completions`); :mod:`museg.rl.rollout_vllm` -- vLLM (GPU);
- :mod:`museg.rl.engine` -- backward / optimizer step (plain PyTorch, DDP, or accelerate+DeepSpeed);
- :mod:`museg.rl.checkpoint` -- atomic checkpoints, resume; :mod:`museg.rl.logging` -- metrics sinks;
- :mod:`museg.rl.timer` -- step-time breakdown; :mod:`museg.rl.distributed` -- torch.distributed;
- :mod:`museg.rl.trainer` -- the loop: ``train(cfg) -> dict``.

Example::

    from museg.rl import train, request_checkpoint
    summary = train(cfg)          # cfg composed by museg.run (task=train)
"""

from museg.rl.advantages import group_advantages
from museg.rl.loss import grpo_loss

__all__ = ["group_advantages", "grpo_loss", "train", "request_checkpoint"]


def __getattr__(name: str):  # lazy: importing museg.rl must not pull in transformers
    if name in ("train", "request_checkpoint"):
        from museg.rl import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
