"""The GRPO training loop: ``train(cfg) -> dict`` (MUSEG stage 1 / stage 2, CPU to multi-GPU).

Batch semantics (TRL / MUSEG): ``train.per_device_train_batch_size`` counts *completions* per rank
per micro-step; a micro-step holds ``P = per_device x world_size / G`` prompts whose completions are
spread over the ranks in order (:mod:`museg.rl.batch`); an optimizer step has
``gradient_accumulation_steps`` micro-steps; an epoch is
``floor(N / (P x gradient_accumulation_steps))`` optimizer steps and checkpoints count consumed
prompts. Per optimizer step every rank decodes the videos of the prompts it touches (prefetched),
samples its completions (HF ``generate`` with one seed per completion, or vLLM), scores them
(:func:`museg.rewards.registry.compute_rewards`), all-gathers the rewards for the group advantages,
then runs reference log-probs (β > 0 only), the GRPO loss over its own completions with gradient
accumulation (DDP averages over ranks), clipping, AdamW and a transformers LR schedule
(:mod:`museg.rl.step`, :mod:`museg.rl.engine`). Logged rewards are over all ranks.
Metrics go to :class:`museg.rl.logging.MetricsLogger`; checkpoints every ``train.save_steps``
(:mod:`museg.rl.checkpoint`); ``resume=auto|never|<path>``; ``init_from`` (a stage-1 run dir ->
its ``final/``, or a model dir) replaces ``model.path``. At the end: ``run_dir/final`` (model +
processor), ``summary.json`` and ``reward_curves.png``.

Precision: on CPU everything is float32. On CUDA without DeepSpeed the policy keeps float32 master
weights under bf16 autocast (``train.bf16``) -- pure-bf16 AdamW would round away updates of
lr 1.5e-6; the frozen reference uses ``model.dtype``. With DeepSpeed its bf16 config applies.

Preemption: :func:`request_checkpoint` (called by a signal handler of the cluster glue) makes the
loop save a checkpoint at the next step boundary and return ``{'preempted': True, ...}``.

Example::

    from museg.rl.trainer import train
    summary = train(cfg)            # cfg composed by ``python -m museg.run task=train ...``
    summary["step"], summary["final_dir"], summary["history"][-1]["reward/total"]
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from museg.data.prompts import template_from_cfg
from museg.rl import checkpoint as ckpt
from museg.rl import distributed as D
from museg.rl.batch import StepBatcher, steps_per_epoch
from museg.rl.engine import make_engine
from museg.rl.layout import LayoutError, layout_from_cfg
from museg.rl.logging import MetricsLogger
from museg.rl.step import (
    StepContext,
    completion_rows,
    gather_advantages,
    optimize_step,
    rollout_step,
    step_metrics,
)
from museg.rl.timer import StepTimer, overhead_fraction

__all__ = ["train", "request_checkpoint", "checkpoint_requested", "clear_checkpoint_request",
           "TrainError", "StepRecord", "load_train_samples", "resolve_model_path"]

log = logging.getLogger(__name__)
_CHECKPOINT_REQUEST = threading.Event()


def request_checkpoint() -> None:
    """Ask the running loop to checkpoint and return at the next step boundary (signal-safe)."""
    _CHECKPOINT_REQUEST.set()


def checkpoint_requested() -> bool:
    return _CHECKPOINT_REQUEST.is_set()


def clear_checkpoint_request() -> None:
    _CHECKPOINT_REQUEST.clear()


class TrainError(RuntimeError):
    """A training configuration or input problem (one line with the fix)."""


@dataclass
class StepRecord:
    """What ``train(cfg, on_step=...)`` sees after each step (gathered over ranks)."""

    step: int
    positions: torch.Tensor  # the step's prompt positions [P * A] (micro-step, then prompt)
    rewards: dict[str, torch.Tensor]  # every reward function + 'total', [P * A * G] global order
    advantages: torch.Tensor  # [P * A * G], completion k of position i at i * G + k
    metrics: dict[str, float]
    rank: int = 0


def load_train_samples(cfg: Any) -> list:
    """Training samples of ``cfg.data`` (synthetic data generated on demand), filtered/truncated."""
    from museg.data.annotations import load_train_jsonl

    data = cfg.data
    if str(data.get("train_file")) == "generated":  # data=synthetic: generate once, cached
        from museg.data.sources import materialize_synthetic

        materialize_synthetic(cfg)
    train_file, video_root = data.train_file, cfg.paths.video_root
    samples = load_train_jsonl(str(train_file), str(video_root),
                               on_bad_record=data.get("on_bad_record", "fail"))
    if data.get("task_filter"):
        samples = [s for s in samples if s.task == data.task_filter]
    if data.get("max_samples"):
        samples = samples[: int(data.max_samples)]
    if not samples:
        raise TrainError(f"{train_file}: no training samples left (fix: check data.task_filter "
                         "/ data.max_samples)")
    return samples


def resolve_model_path(cfg: Any) -> str:
    """``init_from`` (run dir -> its final/, or a model dir) if set, else ``model.path``."""
    from museg.model.load import model_path_from_cfg

    init = cfg.get("init_from")
    if init:
        p = Path(str(init)).expanduser()
        for cand in (p / "final", p):
            if (cand / "config.json").is_file():
                return str(cand)
        raise TrainError(f"init_from={init}: neither {p}/final/config.json nor {p}/config.json "
                         "exists (fix: finish stage 1 first or point init_from at a model dir)")
    return str(model_path_from_cfg(cfg.model))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _build_models(cfg: Any, info: D.DistInfo):
    from museg.model.load import load_model_and_processor

    cuda = info.device.startswith("cuda")
    path = resolve_model_path(cfg)
    m = cfg.model
    lora = m.get("lora")
    lora = dict(lora) if lora is not None and lora.get("enabled") else None
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
            from museg.model.load import resolve_dtype

            ref.to(resolve_dtype(m.get("dtype", "bfloat16")))
        ref.eval().requires_grad_(False)
    return policy, processor, ref, path


def _reference_factory(cfg: Any, ref: torch.nn.Module | None, policy: torch.nn.Module):
    if float(cfg.train.beta) == 0.0:
        return None
    if ref is not None:
        return lambda: contextlib.nullcontext(ref)

    @contextlib.contextmanager
    def adapters_off():  # LoRA: the reference is the base model with adapters disabled
        with policy.disable_adapter():
            yield policy
    return adapters_off


def _save_final(engine: Any, processor: Any, out: Path) -> None:
    model = engine.module
    if hasattr(engine, "accelerator"):  # DeepSpeed ZeRO-3: gather the full state dict
        state = engine.accelerator.get_state_dict(engine.model)
        if engine.accelerator.is_main_process:
            model.save_pretrained(out, state_dict=state)
            processor.save_pretrained(out)
        return
    if hasattr(model, "merge_and_unload"):  # LoRA: save merged full weights for stage 2 / eval
        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(out)
    processor.save_pretrained(out)


def train(cfg: Any, on_step: Callable[[StepRecord], None] | None = None,
          rollout_fn: Callable[..., Any] | None = None) -> dict:
    """Run (or resume) GRPO training described by ``cfg``; returns a summary dict.

    ``on_step`` is called on every rank after each step with a :class:`StepRecord`.
    ``rollout_fn`` replaces the rollout backend; it is called once per (prompt, run of this rank's
    generations) as ``rollout_fn(model, processor, inputs, num_generations=n, max_new_tokens=...,
    do_sample=True, temperature=..., top_p=..., seed=seeds[0], seeds=[n seeds],
    generation_indices=[n ints], prompt_text=..., video=..., sample=...)`` and returns an object
    with ``texts``, ``completion_ids`` and ``completion_mask`` (n rows, in the order of
    ``generation_indices``; tests and benchmarks script rollouts with it).
    """
    t_start = time.perf_counter()
    owns_pg = not D.is_distributed()
    info = D.init_distributed()
    t = cfg.train
    seed = int(cfg.get("seed", 0))
    _seed_everything(seed + info.rank)
    run_dir = Path(str(cfg.run_dir)).expanduser().absolute()
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    D.barrier()

    samples = load_train_samples(cfg)
    g = int(t.num_generations)
    try:
        layout = layout_from_cfg(t, info.world_size)
    except LayoutError as e:
        raise TrainError(str(e)) from None
    per_micro, prompts_per_step = layout.prompts_per_micro_step, layout.prompts_per_step
    log.info("batch: %d prompts (%d completions) per optimizer step = %d process(es) x %d "
             "completions x %d micro-step(s)", prompts_per_step, layout.completions_per_step,
             info.world_size, layout.per_device, layout.accumulation)
    if int(t.max_steps) > 0:
        total = int(t.max_steps)
    else:
        per_epoch = steps_per_epoch(len(samples), prompts_per_step)
        if per_epoch < 1:
            raise TrainError(
                f"{cfg.data.train_file}: {len(samples)} prompts < {prompts_per_step} prompts per "
                f"optimizer step ({per_micro} per micro-step x {layout.accumulation} "
                "accumulation steps) (fix: more data, smaller train.prompts_per_step, or set "
                "train.max_steps)")
        total = int(t.num_train_epochs) * per_epoch
    mu = int(t.get("num_iterations", 1) or 1)

    from museg.fingerprint import train_fingerprint
    from museg.rl.resume import choose_checkpoint

    fingerprint = train_fingerprint(cfg, resolve_model_path(cfg))  # run identity, in checkpoints
    resume_from = choose_checkpoint(cfg, run_dir, fingerprint)  # intact and of this run, or refused
    policy, processor, ref, model_path = _build_models(cfg, info)
    from transformers import get_scheduler

    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=float(t.learning_rate),
                                  weight_decay=float(t.weight_decay))
    updates = total * mu
    scheduler = get_scheduler(str(t.lr_scheduler_type), optimizer,
                              num_warmup_steps=math.ceil(float(t.warmup_ratio) * updates),
                              num_training_steps=updates)
    state: dict[str, Any] = {}
    deepspeed = bool(t.get("deepspeed"))
    if resume_from is not None and not deepspeed:
        state = ckpt.load_checkpoint(resume_from, policy, optimizer, scheduler)
    engine = make_engine(policy, optimizer, scheduler, t, info)
    if deepspeed:
        if ref is not None:
            ref = engine.prepare_reference(ref)
        if resume_from is not None:
            state = ckpt.load_checkpoint(resume_from)
            engine.load_state(resume_from / "deepspeed")
    if state:
        ckpt.set_rng_states(state["rng"])
        log.info("resumed from %s (step %d)", resume_from, state["step"])
    start_step = int(state.get("step", 0))
    consumed = int(state.get("data", {}).get("consumed", start_step * prompts_per_step))

    logger = MetricsLogger(run_dir, cfg, is_main=info.is_main, wandb_id=state.get("wandb_id"),
                           resume_step=start_step if state else None,
                           history=state.get("history"))
    batcher = StepBatcher(samples, cfg.video, data_seed=int(t.data_seed),
                          shuffle=bool(cfg.data.get("shuffle", True)),
                          per_device=layout.per_device, num_generations=g,
                          accumulation=layout.accumulation, rank=info.rank,
                          world_size=info.world_size, run_dir=run_dir,
                          cache_dir=cfg.paths.get("cache_dir"))
    if state:
        batcher.restore_failed(state.get("failed_video_errors") or state.get("failed_videos") or [])
        batcher.num_replaced = int(state.get("videos_replaced", 0))
    batcher.prefetch_from(consumed)  # first step's videos decode while the rest is set up
    timer = StepTimer()
    cuda = info.device.startswith("cuda")
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if (
        cuda and bool(t.get("bf16", True)) and not deepspeed) else contextlib.nullcontext
    vllm = None
    if rollout_fn is None and str(cfg.get("rollout", {}).get("backend", "hf")) == "vllm":
        from museg.rl.rollout_vllm import VLLMRollout

        vllm = VLLMRollout(cfg, model_path, processor, engine.module)
    ctx = StepContext(train=t, reward=cfg.reward, template=template_from_cfg(cfg.stage),
                      processor=processor, engine=engine,
                      reference=_reference_factory(cfg, ref, engine.module), timer=timer,
                      seed=seed, device=torch.device(info.device), autocast=autocast,
                      generate=rollout_fn or vllm, rank=info.rank, world_size=info.world_size,
                      layout=layout)

    def save(step: int) -> Path | None:
        data = {"consumed": consumed, "prompts_per_step": prompts_per_step,
                "per_device_train_batch_size": layout.per_device,
                "num_generations": g, "data_seed": int(t.data_seed),
                "world_size": info.world_size}
        st = {"data": data, "wandb_id": logger.wandb_id, "history": logger.history,
              "nonfinite_streak": engine.guard.streak, "model_path": model_path,
              "fingerprint": fingerprint,
              "failed_videos": sorted(batcher.failed_paths),
              "failed_video_errors": dict(sorted(batcher.failed_paths.items())),
              "videos_replaced": batcher.num_replaced}
        if deepspeed:
            tmp = ckpt.tmp_dir(run_dir, step)
            engine.save_state(tmp / "deepspeed")
        path = None
        if info.is_main:
            path = ckpt.save_checkpoint(run_dir, step, None if deepspeed else engine.module,
                                        None if deepspeed else optimizer,
                                        None if deepspeed else scheduler, st,
                                        save_total_limit=int(t.save_total_limit),
                                        tmp_ready=deepspeed)
        D.barrier()
        return path

    bar = tqdm(total=total, initial=start_step, desc="train", unit="step", dynamic_ncols=True,
               disable=None if info.is_main else True)
    preempted, step, last_metrics = False, start_step, {}
    saved_at = start_step if state else -1
    try:
        for step in range(start_step + 1, total + 1):
            flag = D.all_reduce_mean({"stop": float(checkpoint_requested())})["stop"] > 0
            if flag:
                step -= 1
                if saved_at != step:
                    save(step)
                    saved_at = step
                preempted = True
                clear_checkpoint_request()
                log.warning("checkpoint requested: saved step %d, stopping", step)
                break
            timer.start_step()
            with timer.phase("decode"):
                slots = batcher.get(consumed)
            runs = rollout_step(ctx, slots, step)
            glob = gather_advantages(ctx, runs)
            lr = float(scheduler.get_last_lr()[0])
            stats = optimize_step(ctx, runs, glob)
            if vllm is not None:
                with timer.phase("rollout"):
                    vllm.sync_weights(engine.module)
            pos = torch.tensor(batcher.step_positions(consumed), dtype=torch.long)
            first_position = consumed
            consumed += prompts_per_step
            metrics = step_metrics(glob, stats, lr)
            metrics["videos_replaced"] = float(batcher.num_replaced)
            times = timer.end_step()
            metrics.update(times)
            metrics["time/overhead_fraction"] = overhead_fraction(times)
            last_metrics = metrics
            if on_step is not None:
                on_step(StepRecord(step, pos, glob.rewards, glob.advantages, metrics, info.rank))
            if step % int(t.logging_steps) == 0 or step == total:
                logger.log(step, metrics)
            if int(t.completions_every) > 0 and step % int(t.completions_every) == 0:
                logger.log_completions(step, completion_rows(runs, glob, g, first_position))
            if step % int(t.save_steps) == 0 or step == total:
                save(step)
                saved_at = step
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward/total']:.3f}", loss=f"{metrics['loss']:.4f}")
    finally:
        bar.close()
        batcher.close()

    final_dir = None
    if not preempted:
        final_dir = run_dir / "final"
        if info.is_main or deepspeed:
            _save_final(engine, processor, final_dir)
        D.barrier()
    summary = {
        "run_dir": str(run_dir), "final_dir": str(final_dir) if final_dir else None,
        "step": step, "total_steps": total, "preempted": preempted,
        "resumed_from": str(resume_from) if resume_from else None, "model_path": model_path,
        "world_size": info.world_size, "wall_time_s": time.perf_counter() - t_start,
        "videos_replaced": batcher.num_replaced, "failed_videos": sorted(batcher.failed_paths),
        "skipped_updates": engine.guard.skipped_total, "last": last_metrics,
        "latest_checkpoint": str(ckpt.latest_checkpoint(run_dir) or ""),
    }
    if info.is_main:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    logger.close(summary, plot=not preempted)
    summary["history"] = list(logger.history)
    if vllm is not None:
        vllm.close()
    clear_checkpoint_request()  # handled (or moot: the run finished)
    if owns_pg:
        D.cleanup_distributed()
    return summary
