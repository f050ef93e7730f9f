"""``task=plan``: what a training run will do, before any GPU is touched.

``python -m museg.run task=plan stage=1 model=7b launcher.nproc_per_node=8`` composes the config,
reads the training file (annotations only: no video, no model), lays the recipe's optimizer batch
out on the launcher's world size (``launcher.nproc_per_node x launcher.nodes``,
:mod:`museg.rl.layout`) and prints a table of the run, then, as the **last line of stdout, one JSON
object** (``world_size``, ``prompts_per_step``, ``completions_per_step``, ``per_device_completions``,
``gradient_accumulation_steps``, ``optimizer_steps``, ``learning_rate``, ``beta``,
``num_generations``, ``sampling_temperature``, ``logprob_temperature``, ``max_total_tokens``,
``vision_trainable``, ``deepspeed_stage``, ``seed``, ``data_seed``, ``train_rows`` and more). The
same object is written to ``<run_dir>/plan.json``. With ``plan.gpu_check=<gpu_check.json>`` (from
``tests/gpu/check.py``) it adds a GPU-hour projection.

Example::

    from museg.plan import plan_figures
    figures = plan_figures(cfg, train_rows=5600)   # cfg composed with task=plan
    figures["optimizer_steps"]                      # 400 for stage 1 of the paper
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from museg.config import deepspeed_config_path
from museg.data.annotations import load_train_jsonl
from museg.gpu_projection import project_gpu_hours
from museg.rl.layout import BatchLayout, layout_from_cfg, world_size_from_cfg

__all__ = ["plan", "plan_figures", "count_train_rows", "deepspeed_stage", "plan_line"]


def deepspeed_stage(value: str | None) -> int:
    """ZeRO stage of ``train.deepspeed`` (0 without DeepSpeed or without a readable config).

    >>> deepspeed_stage("zero3"), deepspeed_stage(None)
    (3, 0)
    """
    path = deepspeed_config_path(value)
    if path is None or not path.is_file():
        return 0
    return int(json.loads(path.read_text()).get("zero_optimization", {}).get("stage", 0))


def count_train_rows(cfg: Any) -> tuple[int, int]:
    """``(rows trained on, rows kept although malformed)`` of ``cfg.data.train_file``."""
    samples = load_train_jsonl(str(cfg.data.train_file), str(cfg.paths.video_root),
                               on_bad_record=str(cfg.data.on_bad_record))
    if cfg.data.task_filter:
        samples = [s for s in samples if s.task == cfg.data.task_filter]
    if cfg.data.max_samples:
        samples = samples[: int(cfg.data.max_samples)]
    odd = sum(1 for s in samples if any(a >= b for a, b in s.solution))
    return len(samples), odd


def _steps(cfg: Any, layout: BatchLayout, rows: int) -> int:
    t = cfg.train
    if int(t.max_steps) > 0:
        return int(t.max_steps)
    return int(t.num_train_epochs) * (rows // layout.prompts_per_step)


def plan_figures(cfg: Any, train_rows: int, malformed_rows: int = 0,
                 world_size: int | None = None) -> dict[str, Any]:
    """The plan of ``cfg`` on ``world_size`` processes (default: the launcher's) for N rows."""
    t, world = cfg.train, world_size or world_size_from_cfg(cfg)
    layout = layout_from_cfg(t, world)
    steps = _steps(cfg, layout, train_rows)
    return {
        "task": "plan", "stage": int(cfg.stage.id), "model": str(cfg.model.name),
        "model_path": str(cfg.model.path), "train_file": str(cfg.data.train_file),
        "world_size": world, "nodes": int(cfg.launcher.nodes),
        "nproc_per_node": int(cfg.launcher.nproc_per_node),
        "prompts_per_step": layout.prompts_per_step,
        "completions_per_step": layout.completions_per_step,
        "per_device_completions": layout.per_device_completions,
        "per_device_micro_batch": layout.per_device,
        "gradient_accumulation_steps": layout.accumulation,
        "optimizer_steps": steps, "num_train_epochs": int(t.num_train_epochs),
        "train_rows": train_rows, "malformed_rows_kept": malformed_rows,
        "on_bad_record": str(cfg.data.on_bad_record),
        "rows_unused_per_epoch": train_rows % layout.prompts_per_step,
        "learning_rate": float(t.learning_rate), "lr_scheduler": str(t.lr_scheduler_type),
        "warmup_steps": math.ceil(float(t.warmup_ratio) * steps * int(t.num_iterations)),
        "beta": float(t.beta), "num_generations": int(t.num_generations),
        "sampling_temperature": float(t.temperature),
        "logprob_temperature": float(t.temperature if t.logprob_temperature is None
                                     else t.logprob_temperature),
        "top_p": float(t.top_p), "max_completion_length": int(t.max_completion_length),
        "max_prompt_length": int(t.max_prompt_length),
        "max_total_tokens": None if t.max_total_length is None else int(t.max_total_length),
        "loss_type": str(t.loss_type), "vision_trainable": not bool(cfg.model.freeze_vision),
        "lora": bool(cfg.model.lora.enabled), "dtype": str(cfg.model.dtype),
        "gradient_checkpointing": bool(cfg.model.gradient_checkpointing),
        "deepspeed": None if t.deepspeed is None else str(t.deepspeed),
        "deepspeed_stage": deepspeed_stage(t.deepspeed), "rollout_backend": str(cfg.rollout.backend),
        "seed": int(cfg.seed), "data_seed": int(t.data_seed),
        "video_fps": float(cfg.video.fps), "video_max_frames": cfg.video.max_frames,
        "video_total_pixels": int(cfg.video.total_pixels),
        "video_min_pixels": int(cfg.video.min_pixels),
        "save_steps": int(t.save_steps), "reward_weights": dict(cfg.reward.weights),
        "timestamp_aware_format": bool(cfg.reward.timestamp_aware),
    }


_ROWS = [  # (label, how to show it from the figures)
    ("world size", lambda f: f"{f['world_size']} = {f['nodes']} node(s) x {f['nproc_per_node']}"),
    ("optimizer batch", lambda f: f"{f['prompts_per_step']} prompts x G={f['num_generations']} = "
                                  f"{f['completions_per_step']} completions"),
    ("per process", lambda f: f"{f['per_device_completions']} completions per step = "
                              f"{f['per_device_micro_batch']} per micro-step x "
                              f"{f['gradient_accumulation_steps']} micro-steps"),
    ("data", lambda f: f"{f['train_rows']} rows ({f['malformed_rows_kept']} malformed, "
                       f"on_bad_record={f['on_bad_record']}), {f['rows_unused_per_epoch']} "
                       "unused per epoch"),
    ("optimizer steps", lambda f: f"{f['optimizer_steps']} ({f['num_train_epochs']} epoch(s))"),
    ("learning rate", lambda f: f"{f['learning_rate']:g}, {f['lr_scheduler']}, "
                                f"{f['warmup_steps']} warm-up steps"),
    ("KL", lambda f: f"beta {f['beta']:g} (k3)"),
    ("sampling", lambda f: f"T {f['sampling_temperature']:g}, top-p {f['top_p']:g}; log-probs at "
                           f"T {f['logprob_temperature']:g}; {f['rollout_backend']} rollouts"),
    ("lengths", lambda f: f"prompt + completion <= {f['max_total_tokens']}, completion <= "
                          f"{f['max_completion_length']}, prompt <= {f['max_prompt_length']}"),
    ("parameters", lambda f: ("all (vision tower trained)" if f["vision_trainable"]
                              else "vision tower frozen") + (", LoRA" if f["lora"] else "")
                             + f", {f['dtype']}"),
    ("sharding", lambda f: f"DeepSpeed ZeRO-{f['deepspeed_stage']} ({f['deepspeed']})"
                           if f["deepspeed"] else "none (plain PyTorch / DDP)"),
    ("seeds", lambda f: f"seed {f['seed']}, data_seed {f['data_seed']}"),
    ("frames", lambda f: f"{f['video_fps']:g} fps, <= {f['video_max_frames']} frames, "
                         f"{f['video_total_pixels']} total pixels"),
]


def plan_table(figures: dict[str, Any]) -> str:
    """The human-readable table of a plan (markdown-like, one row per quantity)."""
    width = max(len(label) for label, _ in _ROWS)
    head = f"museg plan: stage {figures['stage']}, model {figures['model']} ({figures['model_path']})"
    lines = [head, "-" * len(head)]
    lines += [f"{label:<{width}}  {show(figures)}" for label, show in _ROWS]
    proj = figures.get("gpu_projection")
    if proj:
        lines.append(f"{'GPU-hours':<{width}}  {proj['gpu_hours']:.1f} ({proj['wall_hours']:.1f} h "
                     f"wall on {figures['world_size']} GPUs, {proj['seconds_per_step']:.1f} s per "
                     "step; projected from plan.gpu_check, see museg.gpu_projection)")
    return "\n".join(lines)


def plan_line(cfg: Any, world_size: int) -> str:
    """One line of the batch plan for a dry run (no data read)."""
    f = plan_figures(cfg, train_rows=0, world_size=world_size)
    return (f"{f['prompts_per_step']} prompts = {f['completions_per_step']} completions per "
            f"optimizer step = {world_size} process(es) x {f['per_device_micro_batch']} completions "
            f"x {f['gradient_accumulation_steps']} micro-step(s); lr {f['learning_rate']:g}, "
            f"T {f['sampling_temperature']:g} (log-probs {f['logprob_temperature']:g}), "
            f"ZeRO-{f['deepspeed_stage']}, vision {'trained' if f['vision_trainable'] else 'frozen'}")


def _projection(cfg: Any, figures: dict[str, Any]) -> dict[str, Any] | None:
    path = cfg.plan.gpu_check
    if not path:
        return None
    check = json.loads(Path(str(path)).expanduser().read_text())
    return project_gpu_hours(check, figures["optimizer_steps"], figures["completions_per_step"],
                             figures["world_size"])


def plan(cfg: Any) -> dict[str, Any]:
    """Print the plan table, then the plan as one JSON line (stdout); write ``plan.json``."""
    rows, odd = count_train_rows(cfg)
    figures = plan_figures(cfg, rows, odd)
    projection = _projection(cfg, figures)
    if projection is not None:
        figures["gpu_projection"] = projection
    print(plan_table(figures), flush=True)
    run_dir = Path(str(cfg.run_dir))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "plan.json").write_text(json.dumps(figures, indent=1, default=str))
    print(json.dumps(figures, default=str), flush=True)
    return figures
