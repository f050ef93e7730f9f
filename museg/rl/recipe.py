"""The GRPO training recipe, torchtune-style: ``setup()`` / ``train()`` / ``finish()`` / ``cleanup()``.

:func:`museg.rl.trainer.train` is the public entry; it runs the four phases of
:class:`GRPORecipe` in order. Each phase is a few short methods:

* ``setup``: process group (:func:`museg.dist.open_process_group`), seeds, run dir, samples and the
  batch layout, run fingerprint and the checkpoint to resume from, models, optimizer + schedule,
  engine, restored state, metrics logger, video batcher (prefetch starts here), the vLLM rollout
  engine (``_setup_vllm``, one call) and the :class:`~museg.rl.step.StepContext`;
* ``train``: one optimizer step per iteration (decode, rollout, rewards + advantages, loss +
  update, log, :meth:`GRPORecipe.save_checkpoint` every ``train.save_steps``); at each step
  boundary the ranks agree on the process's :class:`~museg.rl.checkpoint_request.CheckpointRequest`
  and a requested checkpoint ends the loop (preemption);
* ``finish``: ``run_dir/final`` (unless preempted), ``summary.json``, logger close -> the summary;
* ``cleanup``: vLLM engine, the checkpoint request, the process group if the recipe created it.

Example::

    recipe = GRPORecipe(cfg, on_step=print)
    recipe.setup()
    recipe.train()
    summary = recipe.finish()
    recipe.cleanup()
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from museg import dist as D
from museg.data.prompts import template_from_cfg
from museg.fingerprint import train_fingerprint
from museg.generation.vllm import VLLMRollout  # imports vllm only when built
from museg.rl import checkpoint as ckpt
from museg.rl.batch import StepBatcher
from museg.rl.builders import (
    TrainError,
    build_models,
    build_optimizer,
    load_train_samples,
    reference_factory,
    resolve_model_path,
    save_final,
    seed_everything,
    total_steps,
)
from museg.rl.checkpoint_request import CHECKPOINT_REQUEST, CheckpointRequest
from museg.rl.engine import make_engine
from museg.rl.layout import LayoutError, layout_from_cfg
from museg.rl.logging import MetricsLogger
from museg.rl.resume import choose_checkpoint
from museg.rl.step import (
    StepContext,
    completion_rows,
    gather_advantages,
    optimize_step,
    rollout_step,
    step_metrics,
)
from museg.rl.timer import StepTimer, overhead_fraction

__all__ = ["GRPORecipe", "StepRecord"]

log = logging.getLogger(__name__)


@dataclass
class StepRecord:
    """What ``train(cfg, on_step=...)`` sees after each step (gathered over ranks)."""

    step: int
    positions: torch.Tensor  # the step's prompt positions [P * A] (micro-step, then prompt)
    rewards: dict[str, torch.Tensor]  # every reward function + 'total', [P * A * G] global order
    advantages: torch.Tensor  # [P * A * G], completion k of position i at i * G + k
    metrics: dict[str, float]
    rank: int = 0


class GRPORecipe:
    """One GRPO run of ``cfg`` (see the module doc for the phases and :mod:`museg.rl.trainer`)."""

    def __init__(self, cfg: Any, on_step: Callable[[StepRecord], None] | None = None,
                 rollout_fn: Callable[..., Any] | None = None,
                 request: CheckpointRequest = CHECKPOINT_REQUEST) -> None:
        self.cfg, self.t = cfg, cfg.train
        self.on_step, self.rollout_fn, self.request = on_step, rollout_fn, request
        self.t_start = time.perf_counter()
        self.preempted, self.last_metrics = False, {}
        self.vllm: Any = None

    # ------------------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Build everything the loop needs; the first step's videos start decoding."""
        self._setup_process()
        self._setup_data()
        self._setup_model()
        self._restore()
        self._setup_batcher()
        self.vllm = self._setup_vllm()
        self._setup_step_context()

    def _setup_process(self) -> None:
        self.pg = D.open_process_group()
        self.info = info = self.pg.info
        self.seed = int(self.cfg.seed)
        seed_everything(self.seed + info.rank)
        self.run_dir = Path(str(self.cfg.run_dir)).expanduser().absolute()
        if info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        D.barrier()

    def _setup_data(self) -> None:
        self.samples = load_train_samples(self.cfg)
        try:
            self.layout = layout = layout_from_cfg(self.t, self.info.world_size)
        except LayoutError as e:
            raise TrainError(str(e)) from None
        log.info("batch: %d prompts (%d completions) per optimizer step = %d process(es) x %d "
                 "completions x %d micro-step(s)", layout.prompts_per_step,
                 layout.completions_per_step, self.info.world_size, layout.per_device,
                 layout.accumulation)
        self.total = total_steps(self.cfg, len(self.samples), layout)

    def _setup_model(self) -> None:
        cfg = self.cfg
        self.fingerprint = train_fingerprint(cfg, resolve_model_path(cfg))  # run identity
        self.resume_from = choose_checkpoint(cfg, self.run_dir, self.fingerprint)  # or refused
        policy, self.processor, self.ref, self.model_path = build_models(cfg, self.info)
        self.optimizer, self.scheduler = build_optimizer(policy, self.t, self.total)
        self.deepspeed = bool(self.t.deepspeed)
        self.state: dict[str, Any] = {}
        if self.resume_from is not None and not self.deepspeed:
            self.state = ckpt.load_checkpoint(self.resume_from, policy, self.optimizer,
                                              self.scheduler)
        self.engine = make_engine(policy, self.optimizer, self.scheduler, self.t, self.info)

    def _restore(self) -> None:
        """DeepSpeed state, RNG states and the data position of the checkpoint resumed from."""
        if self.deepspeed:
            if self.ref is not None:
                self.ref = self.engine.prepare_reference(self.ref)
            if self.resume_from is not None:
                self.state = ckpt.load_checkpoint(self.resume_from)
                self.engine.load_state(self.resume_from / "deepspeed")
        state = self.state
        if state:
            ckpt.set_rng_states(state["rng"])
            log.info("resumed from %s (step %d)", self.resume_from, state["step"])
        self.start_step = self.step = int(state.get("step", 0))
        self.consumed = int(state.get("data", {}).get(
            "consumed", self.start_step * self.layout.prompts_per_step))
        self.saved_at = self.start_step if state else -1

    def _setup_batcher(self) -> None:
        cfg, t, info, state, layout = self.cfg, self.t, self.info, self.state, self.layout
        self.logger = MetricsLogger(self.run_dir, cfg, is_main=info.is_main,
                                    wandb_id=state.get("wandb_id"),
                                    resume_step=self.start_step if state else None,
                                    history=state.get("history"))
        self.batcher = StepBatcher(self.samples, cfg.video, data_seed=int(t.data_seed),
                                   shuffle=bool(cfg.data.shuffle),
                                   per_device=layout.per_device,
                                   num_generations=int(t.num_generations),
                                   accumulation=layout.accumulation, rank=info.rank,
                                   world_size=info.world_size, run_dir=self.run_dir,
                                   cache_dir=cfg.paths.cache_dir)
        if state:
            self.batcher.restore_failed(state.get("failed_video_errors")
                                        or state.get("failed_videos") or [])
            self.batcher.num_replaced = int(state.get("videos_replaced", 0))
        self.batcher.prefetch_from(self.consumed)  # decodes while the rest is set up

    def _setup_vllm(self) -> Any | None:
        """The vLLM rollout engine for ``rollout.backend=vllm`` (None for HF or a ``rollout_fn``)."""
        if self.rollout_fn is not None:
            return None
        if str(self.cfg.rollout.backend) != "vllm":
            return None
        return VLLMRollout(self.cfg, self.model_path, self.processor, self.engine.module)

    def _setup_step_context(self) -> None:
        t, info = self.t, self.info
        self.timer = StepTimer()
        cuda = info.device.startswith("cuda")
        autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if (
            cuda and bool(t.bf16) and not self.deepspeed) else contextlib.nullcontext
        self.ctx = StepContext(
            train=t, reward=self.cfg.reward, template=template_from_cfg(self.cfg.stage),
            processor=self.processor, engine=self.engine,
            reference=reference_factory(self.cfg, self.ref, self.engine.module), timer=self.timer,
            seed=self.seed, device=torch.device(info.device), autocast=autocast,
            generate=self.rollout_fn or self.vllm, rank=info.rank, world_size=info.world_size,
            layout=self.layout)

    # ------------------------------------------------------------------------------ train
    def train(self) -> None:
        """Optimizer steps ``start_step + 1 .. total``, or until a checkpoint is requested."""
        bar = tqdm(total=self.total, initial=self.start_step, desc="train", unit="step",
                   dynamic_ncols=True, disable=None if self.info.is_main else True)
        try:
            for step in range(self.start_step + 1, self.total + 1):
                self.step = step
                if D.all_reduce_mean({"stop": float(self.request.is_set())})["stop"] > 0:
                    self._stop_for_checkpoint(step - 1)
                    break
                metrics = self._train_step(step)
                bar.update(1)
                bar.set_postfix(reward=f"{metrics['reward/total']:.3f}",
                                loss=f"{metrics['loss']:.4f}")
        finally:
            bar.close()
            self.batcher.close()

    def _stop_for_checkpoint(self, step: int) -> None:
        """A rank asked for a checkpoint: save ``step`` (once) and end the loop as preempted."""
        self.step = step
        if self.saved_at != step:
            self.save_checkpoint(step)
            self.saved_at = step
        self.preempted = True
        self.request.clear()
        log.warning("checkpoint requested: saved step %d, stopping", step)

    def _train_step(self, step: int) -> dict[str, float]:
        ctx, timer, batcher = self.ctx, self.timer, self.batcher
        timer.start_step()
        with timer.phase("decode"):
            slots = batcher.get(self.consumed)
        runs = rollout_step(ctx, slots, step)
        glob = gather_advantages(ctx, runs)
        lr = float(self.scheduler.get_last_lr()[0])
        stats = optimize_step(ctx, runs, glob)
        if self.vllm is not None:
            with timer.phase("rollout"):
                self.vllm.sync_weights(self.engine.module)
        pos = torch.tensor(batcher.step_positions(self.consumed), dtype=torch.long)
        first_position = self.consumed
        self.consumed += self.layout.prompts_per_step
        metrics = step_metrics(glob, stats, lr)
        metrics["videos_replaced"] = float(batcher.num_replaced)
        times = timer.end_step()
        metrics.update(times)
        metrics["time/overhead_fraction"] = overhead_fraction(times)
        self.last_metrics = metrics
        if self.on_step is not None:
            self.on_step(StepRecord(step, pos, glob.rewards, glob.advantages, metrics,
                                    self.info.rank))
        t = self.t
        if step % int(t.logging_steps) == 0 or step == self.total:
            self.logger.log(step, metrics)
        if int(t.completions_every) > 0 and step % int(t.completions_every) == 0:
            self.logger.log_completions(step, completion_rows(runs, glob, int(t.num_generations),
                                                              first_position))
        if step % int(t.save_steps) == 0 or step == self.total:
            self.save_checkpoint(step)
            self.saved_at = step
        return metrics

    # ------------------------------------------------------------------------------ save
    def _checkpoint_state(self) -> dict[str, Any]:
        t, layout, batcher = self.t, self.layout, self.batcher
        data = {"consumed": self.consumed, "prompts_per_step": layout.prompts_per_step,
                "per_device_train_batch_size": layout.per_device,
                "num_generations": int(t.num_generations), "data_seed": int(t.data_seed),
                "world_size": self.info.world_size}
        return {"data": data, "wandb_id": self.logger.wandb_id, "history": self.logger.history,
                "nonfinite_streak": self.engine.guard.streak, "model_path": self.model_path,
                "fingerprint": self.fingerprint,
                "failed_videos": sorted(batcher.failed_paths),
                "failed_video_errors": dict(sorted(batcher.failed_paths.items())),
                "videos_replaced": batcher.num_replaced}

    def save_checkpoint(self, step: int) -> Path | None:
        """Save ``run_dir/step-<step>`` (collective; the path on rank 0, None elsewhere)."""
        st, ds = self._checkpoint_state(), self.deepspeed
        if ds:
            tmp = ckpt.tmp_dir(self.run_dir, step)
            self.engine.save_state(tmp / "deepspeed")
        path = None
        if self.info.is_main:
            path = ckpt.save_checkpoint(self.run_dir, step, None if ds else self.engine.module,
                                        None if ds else self.optimizer,
                                        None if ds else self.scheduler, st,
                                        save_total_limit=int(self.t.save_total_limit),
                                        tmp_ready=ds)
        D.barrier()
        return path

    # ------------------------------------------------------------------------------ finish
    def finish(self) -> dict:
        """Final model (unless preempted), ``summary.json``, closed logger; returns the summary."""
        info, run_dir = self.info, self.run_dir
        final_dir = None
        if not self.preempted:
            final_dir = run_dir / "final"
            if info.is_main or self.deepspeed:
                save_final(self.engine, self.processor, final_dir)
            D.barrier()
        summary = self._summary(final_dir)
        if info.is_main:
            (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        self.logger.close(summary, plot=not self.preempted)
        summary["history"] = list(self.logger.history)
        return summary

    def _summary(self, final_dir: Path | None) -> dict[str, Any]:
        resume_from, batcher = self.resume_from, self.batcher
        return {
            "run_dir": str(self.run_dir), "final_dir": str(final_dir) if final_dir else None,
            "step": self.step, "total_steps": self.total, "preempted": self.preempted,
            "resumed_from": str(resume_from) if resume_from else None,
            "model_path": self.model_path, "world_size": self.info.world_size,
            "wall_time_s": time.perf_counter() - self.t_start,
            "videos_replaced": batcher.num_replaced, "failed_videos": sorted(batcher.failed_paths),
            "skipped_updates": self.engine.guard.skipped_total, "last": self.last_metrics,
            "latest_checkpoint": str(ckpt.latest_checkpoint(self.run_dir) or ""),
        }

    # ------------------------------------------------------------------------------ cleanup
    def cleanup(self) -> None:
        """Close the vLLM engine, forget the checkpoint request, release the process group."""
        if self.vllm is not None:
            self.vllm.close()
        self.request.clear()  # handled (or moot: the run finished)
        self.pg.release()
