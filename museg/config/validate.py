"""Cross-field and filesystem checks of a composed config: ``validate(cfg) -> list[ConfigProblem]``.

Rules a type cannot express (choices, the batch layout of training tasks, frame budgets, files
that must exist, and the value/path checks of :mod:`museg.config.checks`) return
:class:`~museg.config.problems.ConfigProblem` items (key, what is wrong, how to fix it) instead of
raising, so the entrypoint prints one line per problem and exits with code 2::

    >>> from omegaconf import OmegaConf
    >>> from museg.config.schema import MusegConfig
    >>> cfg = OmegaConf.structured(MusegConfig)
    >>> cfg.train.per_device_train_batch_size = 8   # one group of G=8 completions on 1 process
    >>> cfg.train.forward_batch_size = 3
    >>> [p.key for p in validate(cfg, check_files=False) if p.key.startswith("train.")]
    ['train.forward_batch_size']
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from museg.config.checks import path_problems, value_problems
from museg.config.paths import deepspeed_config_path, package_conf_dir
from museg.config.problems import ConfigProblem
from museg.config.schema import PATCH
from museg.config.tasks import TASKS
from museg.rl.layout import LayoutError, layout_from_cfg, world_size_from_cfg

__all__ = ["validate", "TRAINING_TASKS"]

TRAINING_TASKS = ("train", "plan", "demo")  # tasks whose config must lay out a training batch

_CHOICES = {
    "task": tuple(TASKS),
    "model.dtype": ("bfloat16", "float16", "float32"),
    "model.attention": ("auto", "sdpa", "eager", "flash_attention_2"),
    "train.loss_type": ("sequence", "token", "dr_grpo"),
    "data.on_bad_record": ("keep", "fail", "skip"),
    "train.vision_token_in_completion": ("delete", "cut"),
    "video.backend": ("torchcodec", "decord"),
    "video.resize": ("fast", "exact"),
    "eval.video.resize": ("fast", "exact"),
    "video.on_failure": ("replace", "fail"),
    "rollout.backend": ("hf", "vllm"),
    "eval.backend": ("hf", "vllm"),
    "wandb.mode": ("online", "offline", "disabled"),
    "launcher.dist_backend": ("auto", "gloo", "nccl"),
}


def _get(cfg: DictConfig, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def _frame_budget_problems(cfg: DictConfig) -> list[ConfigProblem]:
    out = []
    for prefix in ("video", "eval.video"):
        v = _get(cfg, prefix)
        if v.min_pixels < PATCH * PATCH:
            out.append(ConfigProblem(f"{prefix}.min_pixels", f"{v.min_pixels} < one 28x28 patch",
                                     f"set {prefix}.min_pixels >= {PATCH * PATCH}"))
        if v.max_pixels is not None and v.max_pixels < v.min_pixels:
            out.append(ConfigProblem(f"{prefix}.max_pixels",
                                     f"{v.max_pixels} < min_pixels {v.min_pixels}",
                                     f"raise {prefix}.max_pixels or lower min_pixels"))
        if v.total_pixels < v.min_pixels:
            out.append(ConfigProblem(f"{prefix}.total_pixels",
                                     f"{v.total_pixels} cannot fit one frame of min_pixels "
                                     f"{v.min_pixels}", f"raise {prefix}.total_pixels"))
        if v.fps <= 0:
            out.append(ConfigProblem(f"{prefix}.fps", f"{v.fps} is not positive",
                                     f"set {prefix}.fps > 0 (MUSEG: 2)"))
    return out


def _train_problems(cfg: DictConfig) -> list[ConfigProblem]:
    t = cfg.train
    out = []
    if t.num_generations < 2:
        out.append(ConfigProblem("train.num_generations", f"{t.num_generations} < 2: a group "
                                 "needs two completions for an advantage", "set it >= 2 (MUSEG: 8)"))
    for key in ("num_train_epochs", "save_steps", "save_total_limit", "num_iterations",
                "logging_steps", "micro_batch_completions"):
        if t[key] < 1:
            out.append(ConfigProblem(f"train.{key}", f"{t[key]} < 1", f"set train.{key} >= 1"))
    if cfg.task in TRAINING_TASKS and t.num_generations >= 2:
        try:
            layout = layout_from_cfg(t, world_size_from_cfg(cfg))
            fb = t.forward_batch_size
        except LayoutError as e:
            out.append(ConfigProblem(e.key, e.problem, e.fix))
            fb = None  # no micro-batch to divide; the other train checks still run
        if fb is not None and (fb < 1 or layout.per_device % fb):
            out.append(ConfigProblem("train.forward_batch_size",
                                     f"{fb} does not divide the per-device micro-batch of "
                                     f"{layout.per_device} completions", "use a divisor of it or null"))
    ds = deepspeed_config_path(t.deepspeed)
    if cfg.task in TRAINING_TASKS and ds is not None and not ds.is_file():
        names = sorted(p.stem for p in (package_conf_dir() / "deepspeed").glob("*.json"))
        out.append(ConfigProblem("train.deepspeed", f"{t.deepspeed!r}: no file {ds}",
                                 f"use one of {', '.join(names)}, a json path, or null"))
    if t.max_total_length is not None and t.max_total_length < 2:
        out.append(ConfigProblem("train.max_total_length", f"{t.max_total_length} leaves no room",
                                 "use 4096 (MUSEG) or null"))
    if not 0 <= t.epsilon_low < 1 or t.epsilon_high < 0:
        out.append(ConfigProblem("train.epsilon_low", "clip range must be 0 <= eps_low < 1 and "
                                 "eps_high >= 0", "use 0.2 / 0.2 (PPO) or 0.2 / 0.28 (DAPO)"))
    if t.beta < 0:
        out.append(ConfigProblem("train.beta", f"{t.beta} < 0", "use 0 (no KL) or 0.04"))
    if t.learning_rate <= 0 or not math.isfinite(t.learning_rate):
        out.append(ConfigProblem("train.learning_rate", f"{t.learning_rate} is not a positive "
                                 "finite number", "use 1.5e-6 (MUSEG)"))
    return out


def _file_problems(cfg: DictConfig) -> list[ConfigProblem]:
    out = []

    def need(key: str, path: str | None, kind: str = "file") -> None:
        if path is None:
            out.append(ConfigProblem(key, "not set", f"set {key}=<{kind}>"))
            return
        p = Path(path).expanduser()
        ok = p.is_file() if kind == "file" else p.is_dir()
        if not ok:
            out.append(ConfigProblem(key, f"{kind} {p} does not exist",
                                     f"create it, set {key}=<{kind}>, or set "
                                     "paths.data_root / paths.video_root"))

    generated = "generated"  # synthetic data, made at start (museg.data.sources)
    if cfg.task in ("train", "preflight") and cfg.data.train_file != generated and \
            (cfg.task == "train" or cfg.preflight.target == "train"):
        need("data.train_file", cfg.data.train_file)
        need("paths.video_root", cfg.paths.video_root, "directory")
    if cfg.task == "plan" and cfg.data.train_file != generated:  # reads annotations, no video
        need("data.train_file", cfg.data.train_file)
    if cfg.task == "eval" and cfg.eval.kind != "suite" and cfg.eval.annotation != generated:
        need("eval.annotation", cfg.eval.annotation)
        need("paths.video_root", cfg.paths.video_root, "directory")
    if cfg.task == "score":
        need("eval.predictions", cfg.eval.predictions)
    if cfg.task == "compare":  # reads finished runs only: no data, video or model files
        runs = cfg.compare.runs
        if runs is None:
            out.append(ConfigProblem("compare.runs", "not set",
                                     "set compare.runs=<multirun directory or [run dirs]>"))
        for run in [] if runs is None else [runs] if isinstance(runs, str) else list(runs):
            if not Path(str(run)).expanduser().is_dir():
                out.append(ConfigProblem("compare.runs", f"directory {run} does not exist",
                                         "point it at a multirun directory or run directories"))
    for key in ("stage.template_file", "eval.template_file"):
        if _get(cfg, key) is not None:
            need(key, _get(cfg, key))
    if cfg.task == "train" and cfg.stage.id == 2 and cfg.init_from is not None:
        p = Path(cfg.init_from).expanduser()
        if not p.exists():
            out.append(ConfigProblem("init_from", f"{p} does not exist (stage 2 starts from stage "
                                     "1's final model)", "run stage=1 first or set "
                                     "init_from=<stage-1 run dir or model dir>"))
    model_path = cfg.model.path
    local_like = model_path.startswith(("/", ".", "~"))
    if cfg.task in ("train", "eval") and local_like and not Path(model_path).expanduser().exists():
        out.append(ConfigProblem("model.path", f"directory {model_path} does not exist",
                                 "point model.path at a Qwen2.5-VL checkpoint directory"))
    return out


def validate(cfg: DictConfig, check_files: bool = True) -> list[ConfigProblem]:
    """Cross-field and filesystem checks; returns the problems found (empty when valid)."""
    out: list[ConfigProblem] = _value_problems(cfg, check_files)
    for key, allowed in _CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            out.append(ConfigProblem(key, f"{value!r} is not one of {', '.join(allowed)}",
                                     f"set {key}=<one of them>"))
    if cfg.stage.id not in (1, 2):
        out.append(ConfigProblem("stage.id", f"{cfg.stage.id} is not 1 or 2", "use stage=1|2"))
    if cfg.data.task_filter not in (None, "tvg", "tal"):
        out.append(ConfigProblem("data.task_filter", f"{cfg.data.task_filter!r} is not tvg|tal",
                                 "use data.task_filter=tvg, tal or null"))
    out += _frame_budget_problems(cfg)
    out += _train_problems(cfg)
    if check_files:
        out += _file_problems(cfg)
    return out


def _value_problems(cfg: DictConfig, check_files: bool) -> list[ConfigProblem]:
    """Values and paths refused up front (museg.config.checks): counts, finite floats, names, paths."""
    return value_problems(cfg) + path_problems(cfg, check_files)
