"""vLLM generation for training and evaluation: one request builder, one "not installed" error.

Both callers hand vLLM the chat-templated prompt (one ``<|video_pad|>`` placeholder) and the frames
our planner already sampled and resized (:mod:`museg.data.video`), built by the ONE function
:func:`video_request`: frames ``[T, H, W, 3]`` uint8 plus ``mm_processor_kwargs`` that forbid any
resize or resampling (``do_resize=False``, ``do_sample_frames=False``) and give the sample fps (which
sets ``second_per_grid_ts``). These are the settings :func:`museg.model.inputs.build_video_inputs`
gives the HF processor, so HF, vLLM-training and vLLM-evaluation see the same pixels. (A pixel
budget ``min_pixels = max_pixels = H*W`` would also keep the size, but only if the processor honours
it for videos; ``do_resize=False`` does not depend on that.)

- :class:`VLLMRollout` -- colocated training rollouts (``rollout.backend=vllm``): one engine per rank
  on the training GPU (``distributed_executor_backend='external_launcher'``).
  :meth:`VLLMRollout.sync_weights` pushes the policy's weights into the engine after every optimizer
  step (LoRA adapters merged first; ZeRO-3 parameters gathered one at a time) and resets the prefix
  cache. With ``seeds`` (the trainer passes one per completion) every completion is its own request
  (``n=1``) with its own seed, so it does not depend on which other completions it is generated with.
- :class:`museg.generation.backends.VLLMBackend` -- evaluation (``eval.backend=vllm``), greedy.

GPU only; vLLM is imported lazily (:func:`require_vllm`), so importing this module without vLLM is
fine, and a missing install is the one-line :class:`VLLMNotInstalledError`. Unverified on this
project's CPU machines (see tests/rl/test_trainer.py::test_vllm_rollout_gpu).

Example::

    roll = VLLMRollout(cfg, model_path, processor, policy)
    out = roll(policy, processor, inputs, num_generations=2, max_new_tokens=1024,
               temperature=1.0, top_p=1.0, seeds=[7, 8], prompt_text=text, video=decoded)
    roll.sync_weights(policy)           # after optimizer.step()
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from museg.generation.hf import training_eos_ids, truncate_at_eos

__all__ = ["VLLMNotInstalledError", "require_vllm", "video_request", "VLLMRollout", "VLLMOutput",
           "completions_to_output", "hf_to_vllm_names", "sampling_kwargs", "engine_max_model_len"]


class VLLMNotInstalledError(ImportError):
    """A vLLM backend (``rollout.backend=vllm`` or ``eval.backend=vllm``) without vLLM installed."""


def require_vllm(setting: str, fallback: str) -> Any:
    """Import and return ``vllm``, or raise :class:`VLLMNotInstalledError` naming ``setting`` and
    the ``fallback`` that works without it (one line), e.g. ``require_vllm("eval.backend=vllm",
    "eval.backend=hf")``."""
    try:
        import vllm
    except Exception as e:  # ImportError, or CUDA/driver errors raised at import
        raise VLLMNotInstalledError(
            f"{setting} needs vllm ({type(e).__name__}: {e}); install the GPU extra on a CUDA "
            f"machine (pip install 'museg[gpu]') or use {fallback}") from None
    return vllm


def video_request(prompt_text: str, video: Any) -> dict[str, Any]:
    """The vLLM request for ``prompt_text`` and a decoded video (``.frames`` uint8 ``[T, C, H, W]``,
    ``.plan.sample_fps``), already planned and resized: the one form train and eval both send.

    >>> from types import SimpleNamespace
    >>> v = SimpleNamespace(frames=torch.zeros(4, 3, 28, 56, dtype=torch.uint8),
    ...                     plan=SimpleNamespace(sample_fps=2))
    >>> r = video_request("<|video_pad|>When?", v)
    >>> r["multi_modal_data"]["video"].shape, r["mm_processor_kwargs"]
    ((4, 28, 56, 3), {'fps': 2.0, 'do_resize': False, 'do_sample_frames': False})
    """
    frames = video.frames.permute(0, 2, 3, 1).contiguous().cpu().numpy()  # [T, H, W, 3]
    return {
        "prompt": prompt_text,
        "multi_modal_data": {"video": frames},
        # frames are already planned and resized (multiples of 28): the processor must neither
        # resize nor resample them; fps sets second_per_grid_ts
        "mm_processor_kwargs": {"fps": float(video.plan.sample_fps), "do_resize": False,
                                "do_sample_frames": False},
    }


def hf_to_vllm_names(named: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
    """Yield ``(name, tensor)`` with PEFT prefixes removed and LoRA tensors skipped.

    >>> [n for n, _ in hf_to_vllm_names([("base_model.model.lm_head.base_layer.weight", 0),
    ...                                  ("x.lora_A.default.weight", 0)])]
    ['lm_head.weight']
    """
    for name, tensor in named:
        if "lora_" in name:
            continue
        name = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
        yield name, tensor


def engine_max_model_len(cfg: Any) -> int:
    """vLLM's ``max_model_len``: ``train.max_total_length`` (MUSEG: 4096, prompt + completion)
    when set, else ``rollout.max_model_len``."""
    total = cfg.train.max_total_length
    return int(total if total is not None else cfg.rollout.max_model_len)


def sampling_kwargs(n: int, temperature: float, top_p: float, max_new_tokens: int,
                    seed: int | None, do_sample: bool = True) -> dict[str, Any]:
    """Keyword arguments of the ``vllm.SamplingParams`` of one rollout request.

    ``max_new_tokens`` is the trainer's per-prompt budget (:func:`museg.rl.step.completion_budget`:
    at most ``max_total_length - prompt tokens``), so vLLM and HF rollouts cut at the same length.

    >>> sampling_kwargs(1, 0.9, 1.0, 1096, 7)["max_tokens"], sampling_kwargs(1, 0.9, 1.0, 8, 2**40)["seed"]
    (1096, 0)
    """
    return {"n": int(n), "temperature": float(temperature) if do_sample else 0.0,
            "top_p": float(top_p), "top_k": -1, "max_tokens": int(max_new_tokens),
            "seed": None if seed is None else int(seed) % (2**31)}


@dataclass
class VLLMOutput:
    """Completions of one prompt: texts, ids ``[n, L]`` and mask (cut after the first EOS)."""

    texts: list[str]
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor


def completions_to_output(tokenizer: Any, completions: Sequence[Any]) -> VLLMOutput:
    """vLLM ``CompletionOutput``s (``.token_ids``) -> padded ids, mask cut at the training EOS
    (:func:`museg.generation.hf.training_eos_ids`), decoded texts."""
    tok = tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else training_eos_ids(tok)[-1]
    rows = [list(o.token_ids) or [pad] for o in completions]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)
    ids, mask, _ = truncate_at_eos(ids, training_eos_ids(tok), pad)
    for i, row in enumerate(rows):  # padding added here is not part of the completion
        mask[i, len(row):] = 0
    texts = tok.batch_decode([row[m.bool()] for row, m in zip(ids, mask, strict=True)],
                             skip_special_tokens=True)
    return VLLMOutput(texts=texts, completion_ids=ids, completion_mask=mask)


class VLLMRollout:
    """Callable with the signature of ``generate_completions`` (+ ``prompt_text``, ``video``)."""

    def __init__(self, cfg: Any, model_path: str, processor: Any, policy: torch.nn.Module) -> None:
        if not torch.cuda.is_available():
            raise RuntimeError("rollout.backend=vllm needs CUDA (fix: rollout=hf on CPU)")
        vllm = require_vllm("rollout.backend=vllm", "rollout=hf")
        r = cfg.rollout
        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        self.processor = processor
        self._vllm = vllm
        rank = int(os.environ.get("RANK", "0"))
        self.llm = vllm.LLM(
            model=str(model_path),
            tensor_parallel_size=int(r.tensor_parallel_size),
            gpu_memory_utilization=float(r.gpu_memory_utilization),
            max_model_len=engine_max_model_len(cfg),
            distributed_executor_backend="external_launcher",
            dtype=str(cfg.model.dtype),
            seed=rank,
            limit_mm_per_prompt={"video": 1, "image": 0},
            enable_prefix_caching=True,
        )
        self.sync_weights(policy)

    def __call__(self, model: Any, processor: Any, inputs: Any, num_generations: int,
                 max_new_tokens: int, do_sample: bool = True, temperature: float = 1.0,
                 top_p: float = 1.0, seed: int | None = None, prompt_text: str | None = None,
                 video: Any = None, seeds: list[int] | None = None, **_: Any) -> VLLMOutput:
        if prompt_text is None or video is None:
            raise ValueError("VLLMRollout needs prompt_text and video (the trainer passes both)")
        request = video_request(prompt_text, video)

        def params(n: int, s: int | None) -> Any:
            return self._vllm.SamplingParams(
                **sampling_kwargs(n, temperature, top_p, max_new_tokens, s, do_sample))

        if seeds is not None:
            if len(seeds) != int(num_generations):
                raise ValueError(f"{len(seeds)} seeds for {num_generations} generations")
            outs = self.llm.generate([request] * len(seeds), [params(1, s) for s in seeds],
                                     use_tqdm=False)
            completions = [o.outputs[0] for o in outs]
        else:
            completions = self.llm.generate([request], params(int(num_generations), seed),
                                            use_tqdm=False)[0].outputs
        return completions_to_output(processor.tokenizer, completions)

    @torch.no_grad()
    def sync_weights(self, policy: torch.nn.Module) -> None:
        """Copy the current policy weights into the vLLM engine (all ranks call this)."""
        merged = hasattr(policy, "merge_adapter")
        if merged:
            policy.merge_adapter()
        try:
            runner = self.llm.llm_engine.model_executor.driver_worker.model_runner
            target = runner.model
            zero3 = any(hasattr(p, "ds_id") for p in policy.parameters())
            for name, param in hf_to_vllm_names(policy.named_parameters()):
                if zero3:
                    import deepspeed

                    with deepspeed.zero.GatheredParameters([param]):
                        target.load_weights([(name, param.data)])
                else:
                    target.load_weights([(name, param.data)])
            for name, buf in hf_to_vllm_names(policy.named_buffers()):
                if "inv_freq" not in name:
                    target.load_weights([(name, buf)])
        finally:
            if merged:
                policy.unmerge_adapter()
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        """Free the engine and its GPU memory."""
        del self.llm
        torch.cuda.empty_cache()
