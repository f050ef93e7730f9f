"""Schema of ``train`` (GRPO optimisation, batch layout, rollouts) and ``rollout`` (backend).

Part of :mod:`museg.config.schema`; one docstring per field, the MUSEG recipe as defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TrainConfig", "RolloutConfig"]


@dataclass
class TrainConfig:
    learning_rate: float = 1.5e-6
    """AdamW learning rate."""
    beta: float = 0.04
    """KL coefficient (k3 estimator); 0 loads no reference model."""
    num_generations: int = 8
    """Completions per prompt (G)."""
    max_completion_length: int = 4096
    """Maximum new tokens per completion (vLLM `max_tokens`; MUSEG: 4096)."""
    max_prompt_length: int = 4096
    """Maximum prompt tokens including video tokens (never truncated: checked instead)."""
    max_total_length: int | None = 4096
    """Cap on prompt + completion tokens (MUSEG: vLLM `max_model_len` 4096, so a prompt of P
    tokens gets at most 4096 - P new tokens); both rollout backends enforce it. null: no cap."""
    prompts_per_step: int | None = 14
    """Prompts per optimizer step over all processes (MUSEG: 7 GPUs x 1 prompt x accumulation 2 =
    14, i.e. 112 completions); the per-device batch and accumulation are derived from the world
    size (museg.rl.layout). null: give per_device_train_batch_size and gradient_accumulation_steps."""
    micro_batch_completions: int = 8
    """Most completions one process forwards per micro-step when the layout is derived (MUSEG: one
    prompt's G=8)."""
    per_device_train_batch_size: int | None = None
    """Completions per device per micro-step (TRL semantics); null: derived from prompts_per_step.
    per_device x world size must be a multiple of num_generations (whole prompts per micro-step)."""
    gradient_accumulation_steps: int | None = None
    """Micro-steps per optimizer step; null: derived from prompts_per_step."""
    num_train_epochs: int = 1
    """Passes over the data."""
    max_steps: int = -1
    """Stop after this many optimizer steps (-1: epochs decide)."""
    bf16: bool = True
    """bf16 autocast/weights on GPU (ignored on CPU)."""
    save_steps: int = 100
    """Checkpoint every N optimizer steps."""
    save_total_limit: int = 10
    """Keep the last K checkpoints."""
    data_seed: int = 42
    """Seed of the data order."""
    temperature: float = 0.9
    """Sampling temperature of rollouts (MUSEG: 0.9, TRL 0.15.1's GRPOConfig default)."""
    logprob_temperature: float | None = 1.0
    """Temperature the policy/reference logits are divided by for the loss and KL (MUSEG / TRL
    0.15.1: 1.0, unscaled); null: the sampling temperature (TRL >= 0.16 style)."""
    top_p: float = 1.0
    """Nucleus sampling of rollouts."""
    loss_type: str = "sequence"
    """sequence (per-sequence mean, reference), token (DAPO) or dr_grpo."""
    scale_rewards: bool = True
    """Divide advantages by the group std (false = Dr. GRPO)."""
    num_iterations: int = 1
    """Optimizer passes per generation batch (mu); >1 enables PPO clipping."""
    epsilon_low: float = 0.2
    """Lower clip of the importance ratio."""
    epsilon_high: float = 0.2
    """Upper clip of the importance ratio."""
    lr_scheduler_type: str = "linear"
    """transformers scheduler name."""
    warmup_ratio: float = 0.0
    """Fraction of steps of linear warm-up."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    logging_steps: int = 1
    """Log metrics every N steps."""
    completions_every: int = 10
    """Write the completions table every N steps."""
    forward_batch_size: int | None = None
    """Completions per policy/reference forward chunk (null: the whole micro-step at once)."""
    max_nonfinite_steps: int = 5
    """Abort after this many non-finite steps in a row."""
    deepspeed: str | None = "zero3"
    """DeepSpeed config: a name in the package's conf/deepspeed/ (zero3 = MUSEG's ZeRO-3 bf16) or a
    json path; needs CUDA. null: plain PyTorch / DDP (the tiny model and the demo)."""
    vision_token_in_completion: str = "delete"
    """A sampled <|video_pad|>/<|image_pad|> in a completion: delete (MUSEG: the token is removed,
    the rest kept) or cut (museg option: train only up to it)."""


@dataclass
class RolloutConfig:
    backend: str = "hf"
    """hf (transformers generate) or vllm (colocated, GPU extra)."""
    gpu_memory_utilization: float = 0.5
    """vLLM memory fraction per GPU."""
    tensor_parallel_size: int = 1
    """vLLM tensor parallelism."""
    max_model_len: int = 8192
    """vLLM context length (prompt + completion)."""
