"""Evaluation inference backends: ``make_backend(cfg)`` -> HF or vLLM, same ``generate`` interface.

A backend turns a batch of (question, decoded video) pairs into completion texts. ``eval.backend``
picks it: ``hf`` (:class:`HFBackend`, transformers ``generate`` on the current device, CPU or one
GPU) or ``vllm`` (:class:`VLLMBackend`, GPU extra ``pip install museg[gpu]``). Both take the frames
our own planner and decoder produced (:mod:`museg.data.video`), so the frame plan is identical; the
vLLM request is the one :func:`museg.generation.vllm.video_request` builds, as in training.

Example::

    from museg.generation.backends import make_backend
    backend = make_backend(cfg)               # cfg composed by museg.run with task=eval
    texts = backend.generate(["When ...?"], [decoded_video])

vllm is imported lazily, only when a :class:`VLLMBackend` is built; without it that raises
:class:`museg.generation.vllm.VLLMNotInstalledError`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol

import torch
from omegaconf import OmegaConf

from museg.generation.hf import generate_completions
from museg.generation.vllm import require_vllm, video_request
from museg.model.inputs import build_prompt_text, build_video_inputs
from museg.model.load import load_model_and_processor, model_path_from_cfg

__all__ = ["Backend", "HFBackend", "VLLMBackend", "make_backend"]


class Backend(Protocol):
    """What the evaluation runner needs from an inference backend."""

    name: str
    model_path: str

    def generate(self, questions: Sequence[str], videos: Sequence[Any]) -> list[str]: ...


class HFBackend:
    """Transformers ``generate`` on the current device (CPU or one GPU)."""

    name = "hf"

    def __init__(self, cfg: Any) -> None:
        self.model_path = str(model_path_from_cfg(cfg.model))
        self.model, self.processor = load_model_and_processor(
            self.model_path, dtype=cfg.model.dtype, attention=cfg.model.attention,
            device="cuda" if torch.cuda.is_available() else None)
        self.model.eval()
        self.do_sample = bool(cfg.eval.do_sample)
        self.max_new_tokens = int(cfg.eval.max_new_tokens)

    def generate(self, questions: Sequence[str], videos: Sequence[Any]) -> list[str]:
        """One completion per question (greedy unless ``eval.do_sample``)."""
        texts = [build_prompt_text(self.processor, q) for q in questions]
        inputs = build_video_inputs(self.processor, texts, list(videos))
        with torch.inference_mode():
            out = generate_completions(self.model, self.processor, inputs, num_generations=1,
                                       do_sample=self.do_sample,
                                       max_new_tokens=self.max_new_tokens)
        texts_out = list(out.texts if hasattr(out, "texts") else out)
        if len(texts_out) != len(questions):
            raise RuntimeError(f"backend returned {len(texts_out)} completions for "
                               f"{len(questions)} prompts")
        return texts_out


def _vllm_settings(cfg: Any) -> dict[str, Any]:
    """Engine and sampling settings of the evaluation vLLM backend (``eval.*``; tensor parallelism
    from ``rollout.tensor_parallel_size``, sampling from ``train.temperature`` / ``train.top_p``)."""
    def sel(key: str, default: Any) -> Any:
        value = OmegaConf.select(cfg, key, default=default)
        return default if value is None else value

    return {"dtype": sel("model.dtype", "bfloat16"), "seed": int(sel("seed", 0)),
            "max_num_seqs": int(sel("eval.batch_size", 4)),
            # evaluation has the GPU to itself (rollout.gpu_memory_utilization is for training)
            "gpu_memory_utilization": float(sel("eval.gpu_memory_utilization", 0.9)),
            "tensor_parallel_size": int(sel("rollout.tensor_parallel_size", 1)),
            "max_model_len": OmegaConf.select(cfg, "eval.max_model_len", default=None),
            "do_sample": bool(sel("eval.do_sample", False)),
            "temperature": float(sel("train.temperature", 1.0)),
            "top_p": float(sel("train.top_p", 1.0)),
            "max_tokens": int(sel("eval.max_new_tokens", 512))}


class VLLMBackend:
    """Greedy (or sampled) generation with vLLM; same interface as :class:`HFBackend`."""

    name = "vllm"

    def __init__(self, cfg: Any) -> None:
        from transformers import AutoProcessor

        vllm = require_vllm("eval.backend=vllm", "eval.backend=hf")
        s = _vllm_settings(cfg)
        self.model_path = str(model_path_from_cfg(cfg.model))
        self.processor = AutoProcessor.from_pretrained(self.model_path)
        llm_kwargs: dict[str, Any] = dict(
            model=self.model_path, dtype=s["dtype"], seed=s["seed"],
            max_num_seqs=s["max_num_seqs"], gpu_memory_utilization=s["gpu_memory_utilization"],
            tensor_parallel_size=s["tensor_parallel_size"], limit_mm_per_prompt={"video": 1})
        if s["max_model_len"] is not None:  # else vLLM derives it from the model
            llm_kwargs["max_model_len"] = int(s["max_model_len"])
        self.llm = vllm.LLM(**llm_kwargs)
        self.sampling = vllm.SamplingParams(
            temperature=s["temperature"] if s["do_sample"] else 0.0,
            top_p=s["top_p"] if s["do_sample"] else 1.0, max_tokens=s["max_tokens"])
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    def requests(self, questions: Sequence[str], videos: Sequence[Any]) -> list[dict[str, Any]]:
        """The vLLM requests of a batch (one :func:`~museg.generation.vllm.video_request` each)."""
        return [video_request(build_prompt_text(self.processor, q), v)
                for q, v in zip(questions, videos, strict=True)]

    def generate(self, questions: Sequence[str], videos: Sequence[Any]) -> list[str]:
        """One completion per question."""
        outs = self.llm.generate(self.requests(questions, videos), sampling_params=self.sampling,
                                 use_tqdm=False)
        return [o.outputs[0].text for o in outs]


def make_backend(cfg: Any) -> Backend:
    """The inference backend named by ``cfg.eval.backend`` (``hf`` or ``vllm``)."""
    name = cfg.eval.backend
    if name == "hf":
        return HFBackend(cfg)
    if name == "vllm":
        return VLLMBackend(cfg)
    raise ValueError(f"eval.backend={name!r} is not one of hf, vllm")
