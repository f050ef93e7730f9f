"""Supervised warm-up: teach a model the ``<think>…</think><answer>s-e …</answer>`` answer form.

A randomly initialised model never emits the MUSEG answer format, so GRPO would see reward 0 for
every completion. MUSEG starts from an instruction-tuned Qwen2.5-VL; the embedded demo starts from
the offline tiny model and runs this short supervised phase first (teacher forcing, loss on the
answer tokens only), then hands over to stage-1 RL.

    examples = [WarmupExample(video=decoded, question=q, target=target_completion(sample))]
    losses = supervised_warmup(model, processor, examples, steps=200, learning_rate=3e-3)
"""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from museg.model.inputs import build_prompt_text, build_video_inputs


@dataclass
class WarmupExample:
    """One teacher-forced example: a decoded video, the full question, the target completion."""

    video: Any
    question: str
    target: str


def format_seconds(x: float) -> str:
    """Seconds with two decimals, as MUSEG answers them.

    >>> format_seconds(3), format_seconds(12.345)
    ('3.00', '12.35')
    """
    return f"{float(x):.2f}"


def target_completion(solution: Sequence[Sequence[float]], event: str = "the event") -> str:
    """A well-formed completion for ``solution`` that cites its timestamps in ``<think>``.

    >>> target_completion([[1, 2.5], [4, 6]], "the red square")
    '<think>the red square: 1.00 to 2.50, 4.00 to 6.00.</think><answer>1.00-2.50 4.00-6.00</answer>'
    """
    spans = [(format_seconds(s), format_seconds(e)) for s, e in solution]
    think = ", ".join(f"{s} to {e}" for s, e in spans)
    answer = " ".join(f"{s}-{e}" for s, e in spans)
    return f"<think>{event}: {think}.</think><answer>{answer}</answer>"


def _labels(processor, prompts: list[str], full_inputs, videos: list[Any]) -> torch.Tensor:
    """Mask everything but the completion tokens (prompt lengths measured, not guessed)."""
    prompt_inputs = build_video_inputs(processor, prompts, videos)
    prompt_len = prompt_inputs["attention_mask"].sum(1)
    full_mask = full_inputs["attention_mask"]
    full_len = full_mask.sum(1)
    labels = torch.full_like(full_inputs["input_ids"], -100)
    width = labels.shape[1]
    for i in range(labels.shape[0]):
        n_target = int(full_len[i] - prompt_len[i])
        # left padding (generation setting) or right padding: the row ends where the mask ends
        last = int(full_mask[i].nonzero().max()) + 1 if full_len[i] > 0 else width
        labels[i, last - n_target:last] = full_inputs["input_ids"][i, last - n_target:last]
    return labels


def supervised_warmup(
    model: torch.nn.Module,
    processor,
    examples: Sequence[WarmupExample],
    steps: int,
    learning_rate: float = 1e-3,
    batch_size: int = 4,
    seed: int = 0,
    weight_decay: float = 0.0,
    progress: bool | None = None,
) -> list[float]:
    """Train ``model`` for ``steps`` AdamW steps on ``examples``; returns the loss per step.

    ``progress``: a tqdm bar of the steps with the loss (None: only on a terminal)."""
    if not examples:
        raise ValueError("supervised_warmup: no examples")
    rng = random.Random(seed)
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / max(1, steps // 10)) * max(0.05, 1 - s / steps))
    eos = processor.tokenizer.eos_token or "<|im_end|>"
    model.train()
    losses = []
    order: list[int] = []
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(range(steps), desc="warm-up", unit="step", disable=not show, dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 30.0)  # a log file: a line per 30 s
    for _ in bar:
        batch = []
        for _ in range(min(batch_size, len(examples))):
            if not order:
                order = list(range(len(examples)))
                rng.shuffle(order)
            batch.append(examples[order.pop()])
        prompts = [build_prompt_text(processor, ex.question) for ex in batch]
        texts = [p + ex.target + eos for p, ex in zip(prompts, batch, strict=True)]
        videos = [ex.video for ex in batch]
        inputs = build_video_inputs(processor, texts, videos)
        labels = _labels(processor, prompts, inputs, videos)
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        out = model(**inputs, labels=labels.to(device))
        optim.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        sched.step()
        losses.append(float(out.loss.detach()))
        bar.set_postfix_str(f"loss {losses[-1]:.3f}", refresh=False)
    model.eval()
    return losses
