"""vLLM inference backend for evaluation (GPU extra: ``pip install museg[gpu]``).

Selected with ``eval.backend=vllm``. Builds one ``vllm.LLM`` for the model and generates greedy
completions for batches of (question, decoded video) pairs. Frames come from our own planner and
decoder (:mod:`museg.data.video`), like the reference evaluation which hands vLLM pre-sampled frames
plus their sampling fps, so the frame plan is identical to the HF backend's.

Example::

    from museg.eval.vllm_backend import VLLMBackend
    backend = VLLMBackend(cfg)                 # raises VLLMUnavailableError without vllm
    texts = backend.generate(["When ...?"], [decoded_video])

vllm is imported lazily, only here; importing this module without vllm installed is fine.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

__all__ = ["VLLMUnavailableError", "VLLMBackend", "require_vllm"]


class VLLMUnavailableError(ImportError):
    """vllm is not installed (or not importable) but ``eval.backend=vllm`` was requested."""


def require_vllm() -> Any:
    """Import and return the ``vllm`` module, or raise :class:`VLLMUnavailableError`."""
    try:
        import vllm
    except Exception as e:  # ImportError, or CUDA/driver errors raised at import
        raise VLLMUnavailableError(
            f"eval.backend=vllm needs vllm ({type(e).__name__}: {e}); install the GPU extra "
            "(pip install 'museg[gpu]') or use eval.backend=hf") from None
    return vllm


def _frames_thwc(video: Any) -> Any:
    """``DecodedVideo.frames`` [T, C, H, W] uint8 tensor -> numpy [T, H, W, C] for vLLM."""
    frames = video.frames
    return frames.permute(0, 2, 3, 1).contiguous().cpu().numpy()


class VLLMBackend:
    """Greedy (or sampled) generation with vLLM; same interface as ``runner.HFBackend``."""

    name = "vllm"

    def __init__(self, cfg: Any) -> None:
        from museg.eval.runner import cfg_get
        from museg.model.load import model_path_from_cfg

        vllm = require_vllm()
        from transformers import AutoProcessor

        self.model_path = str(model_path_from_cfg(cfg.model))
        self.processor = AutoProcessor.from_pretrained(self.model_path)
        dtype = cfg_get(cfg, "model.dtype", "bfloat16")
        llm_kwargs: dict[str, Any] = dict(
            model=self.model_path,
            dtype=dtype,
            seed=int(cfg_get(cfg, "seed", 0)),
            max_num_seqs=int(cfg_get(cfg, "eval.batch_size", 4)),
            # evaluation has the GPU to itself (rollout.gpu_memory_utilization is for training)
            gpu_memory_utilization=float(cfg_get(cfg, "eval.gpu_memory_utilization", 0.9)),
            tensor_parallel_size=int(cfg_get(cfg, "rollout.tensor_parallel_size", 1)),
            limit_mm_per_prompt={"video": 1},
        )
        if cfg_get(cfg, "eval.max_model_len") is not None:  # else vLLM derives it from the model
            llm_kwargs["max_model_len"] = int(cfg_get(cfg, "eval.max_model_len"))
        self.llm = vllm.LLM(**llm_kwargs)
        do_sample = bool(cfg_get(cfg, "eval.do_sample", False))
        self.sampling = vllm.SamplingParams(
            temperature=float(cfg_get(cfg, "train.temperature", 1.0)) if do_sample else 0.0,
            top_p=float(cfg_get(cfg, "train.top_p", 1.0)) if do_sample else 1.0,
            max_tokens=int(cfg_get(cfg, "eval.max_new_tokens", 512)),
        )
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    def generate(self, questions: Sequence[str], videos: Sequence[Any]) -> list[str]:
        from museg.model.inputs import build_prompt_text

        requests = []
        for q, v in zip(questions, videos, strict=True):
            requests.append({
                "prompt": build_prompt_text(self.processor, q),
                "multi_modal_data": {"video": _frames_thwc(v)},
                # frames are already planned and resized (multiples of 28): the processor must
                # neither resize nor resample them; fps sets second_per_grid_ts
                "mm_processor_kwargs": {"fps": float(v.plan.sample_fps), "do_resize": False,
                                        "do_sample_frames": False},
            })
        outs = self.llm.generate(requests, sampling_params=self.sampling, use_tqdm=False)
        return [o.outputs[0].text for o in outs]
