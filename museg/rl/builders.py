"""The parts a GRPO run is assembled from: samples, step count, models, optimizer, final save.

Each function reads ``cfg`` (composed by ``python -m museg.run task=train ...``) and returns one
part; :class:`museg.rl.recipe.GRPORecipe` calls them in order. Configuration or input problems are
raised as :class:`TrainError` (one line with the fix).

Example::

    samples = load_train_samples(cfg)                      # filtered / truncated
    total = total_steps(cfg, len(samples), layout)         # optimizer steps of the run
    policy, processor, ref, path = build_models(cfg, DistInfo())
    optimizer, scheduler = build_optimizer(policy, cfg.train, total)
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import get_scheduler

from museg.data.annotations import load_train_jsonl
from museg.data.sources import materialize_synthetic
from museg.dist import DistInfo
from museg.integrity import write_manifest
from museg.model.load import load_model_and_processor, model_path_from_cfg, resolve_dtype
from museg.rl.batch import steps_per_epoch
from museg.rl.layout import BatchLayout

__all__ = ["TrainError", "load_train_samples", "resolve_model_path", "seed_everything",
           "total_steps", "build_models", "build_optimizer", "reference_factory", "save_final"]

log = logging.getLogger(__name__)


class TrainError(RuntimeError):
    """A training configuration or input problem (one line with the fix)."""


def load_train_samples(cfg: Any) -> list:
    """Training samples of ``cfg.data`` (synthetic data generated on demand), filtered/truncated."""
    data = cfg.data
    if str(data.train_file) == "generated":  # data=synthetic: generate once, cached
        materialize_synthetic(cfg)
    train_file, video_root = data.train_file, cfg.paths.video_root
    samples = load_train_jsonl(str(train_file), str(video_root),
                               on_bad_record=data.on_bad_record)
    if data.task_filter:
        samples = [s for s in samples if s.task == data.task_filter]
    if data.max_samples:
        samples = samples[: int(data.max_samples)]
    if not samples:
        raise TrainError(f"{train_file}: no training samples left (fix: check data.task_filter "
                         "/ data.max_samples)")
    return samples


def resolve_model_path(cfg: Any) -> str:
    """``init_from`` (run dir -> its final/, or a model dir) if set, else ``model.path``."""
    init = cfg.init_from
    if init:
        p = Path(str(init)).expanduser()
        for cand in (p / "final", p):
            if (cand / "config.json").is_file():
                return str(cand)
        raise TrainError(f"init_from={init}: neither {p}/final/config.json nor {p}/config.json "
                         "exists (fix: finish stage 1 first or point init_from at a model dir)")
    return str(model_path_from_cfg(cfg.model))


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def total_steps(cfg: Any, num_samples: int, layout: BatchLayout) -> int:
    """Optimizer steps of the run: ``train.max_steps`` if > 0, else epochs x steps per epoch."""
    t = cfg.train
    if int(t.max_steps) > 0:
        return int(t.max_steps)
    prompts_per_step = layout.prompts_per_step
    per_epoch = steps_per_epoch(num_samples, prompts_per_step)
    if per_epoch < 1:
        raise TrainError(
            f"{cfg.data.train_file}: {num_samples} prompts < {prompts_per_step} prompts per "
            f"optimizer step ({layout.prompts_per_micro_step} per micro-step x "
            f"{layout.accumulation} accumulation steps) (fix: more data, smaller "
            "train.prompts_per_step, or set train.max_steps)")
    return int(t.num_train_epochs) * per_epoch


def build_models(cfg: Any, info: DistInfo) -> tuple[torch.nn.Module, Any,
                                                     torch.nn.Module | None, str]:
    """``(policy, processor, frozen reference or None, model path)`` on ``info.device``.

    The policy is float32 (master weights); the reference is a copy in ``model.dtype`` on CUDA,
    made only when ``train.beta != 0`` and LoRA is off (with LoRA the base model is the reference).
    """
    cuda = info.device.startswith("cuda")
    path = resolve_model_path(cfg)
    m = cfg.model
    lora = dict(m.lora) if m.lora.enabled else None
    policy, processor = load_model_and_processor(
        path, dtype="float32", attention=m.attention,
        gradient_checkpointing=bool(m.gradient_checkpointing), lora=lora,
        freeze_vision=bool(m.freeze_vision), device=info.device)
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    log.info("trainable parameters: %d of %d (vision tower %s)", trainable,
             sum(p.numel() for p in policy.parameters()),
             "frozen" if m.freeze_vision else "trained")
    ref = None
    if float(cfg.train.beta) != 0.0 and lora is None:
        ref = copy.deepcopy(policy)
        if cuda:
            ref.to(resolve_dtype(m.dtype))
        ref.eval().requires_grad_(False)
    return policy, processor, ref, path


def build_optimizer(policy: torch.nn.Module, t: Any, total: int) -> tuple[Any, Any]:
    """AdamW over the trainable parameters and the transformers LR schedule of ``cfg.train``.

    The schedule counts updates: ``total`` optimizer steps x ``train.num_iterations``.
    """
    mu = int(t.num_iterations)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=float(t.learning_rate),
                                  weight_decay=float(t.weight_decay))
    updates = total * mu
    scheduler = get_scheduler(str(t.lr_scheduler_type), optimizer,
                              num_warmup_steps=math.ceil(float(t.warmup_ratio) * updates),
                              num_training_steps=updates)
    return optimizer, scheduler


def reference_factory(cfg: Any, ref: torch.nn.Module | None,
                      policy: torch.nn.Module) -> Callable[[], Any] | None:
    """A context-manager factory yielding the reference model (None when ``train.beta == 0``)."""
    if float(cfg.train.beta) == 0.0:
        return None
    if ref is not None:
        return lambda: contextlib.nullcontext(ref)

    @contextlib.contextmanager
    def adapters_off():  # LoRA: the reference is the base model with adapters disabled
        with policy.disable_adapter():
            yield policy
    return adapters_off


def save_final(engine: Any, processor: Any, out: Path) -> None:
    """Save the trained model (LoRA merged; DeepSpeed ZeRO-3 gathered) and the processor."""
    model = engine.module
    if hasattr(engine, "accelerator"):  # DeepSpeed ZeRO-3: gather the full state dict
        state = engine.accelerator.get_state_dict(engine.model)
        if engine.accelerator.is_main_process:
            model.save_pretrained(out, state_dict=state)
            processor.save_pretrained(out)
            write_manifest(out, {"kind": "final"})
        return
    if hasattr(model, "merge_and_unload"):  # LoRA: save merged full weights for stage 2 / eval
        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    # sha256 of every file: stage 2 and eval identify this model by content (museg.fingerprint)
    write_manifest(out, {"kind": "final"})
