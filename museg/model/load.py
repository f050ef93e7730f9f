"""Load Qwen2.5-VL (real or tiny) + its processor: dtype, attention backend, checkpointing, LoRA.

Everything goes through ``Qwen2_5_VLForConditionalGeneration.from_pretrained`` and
``AutoProcessor.from_pretrained``, so the tiny offline model (:mod:`museg.model.tiny`) takes the
same path as a 3B/7B checkpoint. ``HF_HUB_OFFLINE=1`` is respected: a hub id that is not in the local
cache fails with one line naming it.

Example::

    from museg.config import compose_config
    from museg.model import load_from_cfg, load_model_and_processor, model_path_from_cfg
    cfg = compose_config(["model=tiny"])
    path = model_path_from_cfg(cfg.model)                    # builds the tiny model once
    model, processor = load_model_and_processor(path, dtype="float32", attention="sdpa")
    model, processor = load_model_and_processor(path, lora=cfg.model.lora)  # if lora.enabled
    model, processor = load_from_cfg(cfg.model)             # every option from cfg.model
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

from museg.model.tiny import build_tiny_model, tiny_dir_name

DTYPES = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
}
ATTENTIONS = ("auto", "sdpa", "eager", "flash_attention_2")


class ModelPathError(FileNotFoundError):
    """A model path is neither a local checkpoint directory nor resolvable (offline) from the hub."""


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Map a dtype name to a ``torch.dtype``.

    >>> resolve_dtype("bf16")
    torch.bfloat16
    >>> resolve_dtype(torch.float32)
    torch.float32
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in DTYPES:
        raise ValueError(
            f"model.dtype={dtype!r}: unknown dtype (fix: one of {sorted(set(DTYPES))})"
        )
    return DTYPES[key]


def resolve_attention(attention: str = "auto") -> str:
    """``auto`` -> ``flash_attention_2`` with CUDA and flash_attn installed, else ``sdpa``."""
    if attention not in ATTENTIONS:
        raise ValueError(f"model.attention={attention!r}: unknown (fix: one of {list(ATTENTIONS)})")
    if attention != "auto":
        return attention
    has_fa = importlib.util.find_spec("flash_attn") is not None
    return "flash_attention_2" if torch.cuda.is_available() and has_fa else "sdpa"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def check_model_path(path: str | os.PathLike) -> str:
    """Return ``path`` if it is a checkpoint dir or a hub id usable now; raise ModelPathError else."""
    text = str(path)
    local = Path(text).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelPathError(
                f"model.path={text}: directory has no config.json (fix: point to a checkpoint)"
            )
        return str(local)
    looks_local = text.startswith(("/", ".", "~")) or text.count("/") != 1
    if looks_local:
        raise ModelPathError(
            f"model.path={text}: no such directory and not a hub id 'org/name' (fix: set model.path)"
        )
    if _offline():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(text, "config.json")
        if not isinstance(cached, str):
            raise ModelPathError(
                f"model.path={text}: not in the local HF cache and HF_HUB_OFFLINE=1 "
                "(fix: download it first or point model.path to a local directory)"
            )
    return text


def model_path_from_cfg(model_cfg: DictConfig, cache_dir: str | os.PathLike | None = None) -> str:
    """Checkpoint path for the composed ``cfg.model``: ``tiny`` (name or path) builds/reuses the
    tiny model of ``model.seed``.

    The tiny model lives under ``cache_dir`` (e.g. ``cfg.paths.cache_dir``) when given, else under
    ``$MUSEG_CACHE`` / ``~/.cache/museg``.
    """
    name, path = model_cfg.name, model_cfg.path
    if path == "tiny" or (name == "tiny" and not path):  # model.path=<dir> wins over the name
        seed = int(model_cfg.seed)
        out = Path(cache_dir).expanduser() / tiny_dir_name(seed) if cache_dir else None
        return str(build_tiny_model(out, seed=seed))
    if not path:
        raise ModelPathError(f"model.path is empty for model.name={name!r} (fix: set model.path)")
    return str(path)


def _lora_config(lora: Mapping[str, Any]):
    from peft import LoraConfig

    targets = list(lora["target_modules"])
    if not targets:
        raise ValueError("model.lora.target_modules is empty (fix: name the language-model linear "
                         "layers that get adapters, e.g. [q_proj, k_proj, v_proj, o_proj])")
    # Restrict to the language model: the vision tower reuses gate/up/down_proj names.
    pattern = r".*language_model\..*\.(" + "|".join(targets) + r")$"
    return LoraConfig(
        r=int(lora["r"]),
        lora_alpha=int(lora["alpha"]),
        lora_dropout=float(lora["dropout"]),
        target_modules=pattern,
        bias="none",
        task_type="CAUSAL_LM",
    )


def vision_tower(model: torch.nn.Module) -> torch.nn.Module:
    """The vision encoder of a (possibly PEFT-wrapped) Qwen2.5-VL model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for owner in (getattr(base, "model", None), base):
        if owner is not None and isinstance(getattr(owner, "visual", None), torch.nn.Module):
            return owner.visual
    raise AttributeError(f"{type(base).__name__}: no vision tower at .model.visual or .visual")


def load_model_and_processor(
    path: str | os.PathLike,
    dtype: str | torch.dtype = "bfloat16",
    attention: str = "auto",
    gradient_checkpointing: bool = False,
    lora: Mapping[str, Any] | None = None,
    freeze_vision: bool = False,
    device: str | torch.device | None = None,
):
    """Load ``(model, processor)`` from a checkpoint dir or hub id.

    The tokenizer pads on the left (batched generation). ``lora`` is ``cfg.model.lora`` (every key
    of :class:`museg.config.schema.LoraConfig`); with ``lora.enabled`` true the model is a PEFT
    model whose adapters sit on the language model only; ``freeze_vision`` sets
    ``requires_grad=False`` on the vision tower (the merger included).
    """
    src = check_model_path(path)
    attn = resolve_attention(attention)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        src, dtype=resolve_dtype(dtype), attn_implementation=attn
    )
    processor = AutoProcessor.from_pretrained(src)
    processor.tokenizer.padding_side = "left"
    if device is not None:
        model.to(device)
    if gradient_checkpointing:
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if lora is not None and lora["enabled"]:
        from peft import get_peft_model

        model = get_peft_model(model, _lora_config(lora))
    if freeze_vision:
        vision_tower(model).requires_grad_(False)
    return model, processor


def load_from_cfg(model_cfg: DictConfig, device: str | torch.device | None = None):
    """``load_model_and_processor`` with every option read from ``cfg.model``."""
    return load_model_and_processor(
        model_path_from_cfg(model_cfg),
        dtype=model_cfg.dtype,
        attention=model_cfg.attention,
        gradient_checkpointing=bool(model_cfg.gradient_checkpointing),
        lora=model_cfg.lora,
        freeze_vision=bool(model_cfg.freeze_vision),
        device=device,
    )
