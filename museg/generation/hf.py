"""HF ``generate`` rollouts: G sampled completions per prompt, cut at the first EOS.

``generate_completions`` runs ``model.generate`` on processor inputs (left-padded prompts with
video) with ``num_return_sequences = G`` and a fully explicit sampling configuration (temperature,
top-p, top-k, repetition penalty), so a checkpoint's ``generation_config.json`` (Qwen2.5-VL ships
``top_k=1, repetition_penalty=1.05``) cannot silently change the rollout. Completions end at the
first EOS (``<|im_end|>`` or ``<|endoftext|>``): the mask covers tokens up to and including it and
later tokens become padding. Rows are ordered ``[p0 g0..g(G-1), p1 g0.., ...]``.

The EOS helpers live here too: :func:`eos_token_ids` (every EOS, evaluation) and
:func:`training_eos_ids` (only ``tokenizer.eos_token_id``, as MUSEG's trainer), and
:func:`truncate_at_eos`, which every backend (HF, seeded, vLLM) uses to cut completions.

Example::

    inputs = build_video_inputs(processor, [prompt_text], [video])
    roll = generate_completions(model, processor, inputs, num_generations=8, max_new_tokens=256)
    roll.texts[0], roll.completion_ids.shape, roll.completion_mask.sum(1)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from transformers import GenerationConfig

from museg.model.inputs import expand_inputs

__all__ = ["EOS_TOKENS", "Rollout", "eos_token_ids", "training_eos_ids", "truncate_at_eos",
           "generation_config", "generate_completions", "generate"]

EOS_TOKENS = ("<|im_end|>", "<|endoftext|>")


@dataclass
class Rollout:
    """Completions for ``B`` prompts x ``G`` generations (row ``b*G + g``)."""

    texts: list[str]
    completion_ids: torch.LongTensor  # [B*G, L], pad id after the first EOS
    completion_mask: torch.LongTensor  # [B*G, L], 1 up to and including the first EOS
    prompt_ids: torch.LongTensor  # [B*G, P], left-padded, repeated per generation
    prompt_mask: torch.LongTensor  # [B*G, P]
    is_eos: torch.BoolTensor  # [B*G], True when the completion ended with an EOS token
    num_generations: int


def eos_token_ids(tokenizer) -> list[int]:
    """Ids of ``<|im_end|>``/``<|endoftext|>`` present in ``tokenizer`` (plus its eos token)."""
    ids = []
    for tok in (*EOS_TOKENS, tokenizer.eos_token):
        if tok is None:
            continue
        i = tokenizer.convert_tokens_to_ids(tok)
        if i is not None and i != tokenizer.unk_token_id and i not in ids:
            ids.append(int(i))
    if not ids:
        raise ValueError(
            "tokenizer has none of <|im_end|>, <|endoftext|> (fix: use a Qwen tokenizer)"
        )
    return ids


def training_eos_ids(tokenizer) -> list[int]:
    """The token that ends a training completion: only ``tokenizer.eos_token_id`` (``<|im_end|>``
    for Qwen2.5-VL), as MUSEG's trainer (TRL 0.15.1) masks completions; ``<|endoftext|>`` is an
    ordinary token there."""
    return [int(tokenizer.eos_token_id)]


def truncate_at_eos(
    ids: torch.Tensor, eos_ids: Iterable[int], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut each row after its first EOS: returns ``(ids, mask, is_eos)``.

    The mask is 1 up to and including the first EOS (the whole row if there is none); tokens after
    it are replaced by ``pad_id``.

    >>> ids, mask, is_eos = truncate_at_eos(torch.tensor([[5, 7, 2, 6], [5, 6, 7, 8], [3, 3, 3, 3]]),
    ...                                     eos_ids=[2, 3], pad_id=0)
    >>> ids.tolist(), mask.tolist(), is_eos.tolist()
    ([[5, 7, 2, 0], [5, 6, 7, 8], [3, 0, 0, 0]], [[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]], [True, False, True])
    """
    eos = torch.as_tensor(list(eos_ids), device=ids.device)
    is_eos_tok = torch.isin(ids, eos)
    is_eos = is_eos_tok.any(dim=1)
    if ids.shape[1] == 0:
        return ids.clone(), torch.zeros_like(ids, dtype=torch.long), is_eos
    pos = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
    # index of the first EOS; rows without one keep everything
    first = torch.where(is_eos_tok, pos, ids.shape[1]).min(dim=1).values
    first = torch.where(is_eos, first, ids.shape[1])
    mask = (pos <= first.unsqueeze(1)).long()
    return ids.masked_fill(mask == 0, pad_id), mask, is_eos


def generation_config(
    tokenizer,
    num_generations: int,
    max_new_tokens: int,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    repetition_penalty: float = 1.0,
    eos_ids: Sequence[int] | None = None,
) -> GenerationConfig:
    """Explicit ``GenerationConfig`` (``top_k=0`` disables top-k, like vLLM's ``-1``).

    ``eos_ids``: the tokens that end generation (default: every EOS of :func:`eos_token_ids`;
    training passes only ``tokenizer.eos_token_id``, as MUSEG's trainer)."""
    pad = tokenizer.pad_token_id
    eos = [int(i) for i in eos_ids] if eos_ids is not None else eos_token_ids(tokenizer)
    return GenerationConfig(
        max_new_tokens=int(max_new_tokens),
        do_sample=bool(do_sample),
        temperature=float(temperature) if do_sample else 1.0,
        top_p=float(top_p) if do_sample else 1.0,
        top_k=int(top_k) if do_sample else 50,
        repetition_penalty=float(repetition_penalty),
        num_return_sequences=int(num_generations),
        num_beams=1,
        eos_token_id=eos,
        pad_token_id=eos[-1] if pad is None else int(pad),
        use_cache=True,
    )


def _fork_rng(seed: int | None, device: torch.device):
    if seed is None:
        return nullcontext()
    devices: Sequence[int] = [device.index or 0] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


def generate_completions(
    model,
    processor,
    inputs,
    num_generations: int,
    max_new_tokens: int,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    top_k: int = 0,
    repetition_penalty: float = 1.0,
) -> Rollout:
    """Sample ``num_generations`` completions per prompt row of ``inputs`` (see module doc).

    ``seed`` (optional) makes the sampling reproducible without touching the global RNG state.
    The model is put in eval mode for the call (KV cache on even with gradient checkpointing) and
    restored afterwards.
    """
    tokenizer = processor.tokenizer
    mask = inputs.get("attention_mask")
    if mask is not None and mask.shape[0] > 1 and bool((mask[:, -1] == 0).any()):
        raise ValueError(
            "inputs are right-padded; batched generation needs left padding "
            "(fix: processor.tokenizer.padding_side = 'left', as load_model_and_processor sets)"
        )
    g = int(num_generations)
    if not do_sample and g > 1:  # HF refuses greedy + num_return_sequences: repeat the prompts
        inputs, expand = expand_inputs(inputs, g, processor), 1
    else:
        expand = g
    cfg = generation_config(
        tokenizer, expand, max_new_tokens, do_sample, temperature, top_p, top_k, repetition_penalty
    )
    device = next(model.parameters()).device
    batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    prompt_ids = batch["input_ids"]
    prompt_mask = batch.get("attention_mask", torch.ones_like(prompt_ids))
    was_training = model.training
    model.eval()
    try:
        with _fork_rng(seed, device):
            if seed is not None:
                torch.manual_seed(seed)
            sequences = model.generate(**batch, generation_config=cfg)
    finally:
        model.train(was_training)
    completions = sequences[:, prompt_ids.shape[1] :]
    ids, cmask, is_eos = truncate_at_eos(completions, cfg.eos_token_id, cfg.pad_token_id)
    texts = tokenizer.batch_decode(
        [row[m.bool()] for row, m in zip(ids, cmask, strict=True)], skip_special_tokens=True
    )
    return Rollout(
        texts=texts,
        completion_ids=ids,
        completion_mask=cmask,
        prompt_ids=prompt_ids.repeat_interleave(expand, dim=0),
        prompt_mask=prompt_mask.repeat_interleave(expand, dim=0),
        is_eos=is_eos,
        num_generations=g,
    )


def generate(
    model,
    processor,
    inputs,
    num_return_sequences: int,
    max_new_tokens: int,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> list[str]:
    """Contract alias: completion texts only (see ``generate_completions`` for ids and masks)."""
    return generate_completions(
        model,
        processor,
        inputs,
        num_return_sequences,
        max_new_tokens,
        do_sample,
        temperature,
        top_p,
    ).texts
