"""Up-front value and path checks: every listed value is refused before a model loads.

:func:`value_problems` and :func:`path_problems` return :class:`museg.config.problems.ConfigProblem` lists
(``validate`` appends them), so a bad value is one line and exit code 2 from the pre-check, before
Hydra creates a run directory and before any model is loaded. They cover what a type cannot say:
positive counts and lengths, finite floats (``nan``/``inf``), probabilities in range, known names
(LR schedulers, ``resume``, ``preflight.target``), synthetic-data parameters, ``init_from``, the
SLURM client tools, and output paths that cannot hold a run directory (empty, a file,
unwritable, a name too long, an ``experiment_name`` that would leave the output root).

    >>> from museg.config import compose_config                         # doctest: +SKIP
    >>> [str(p) for p in value_problems(compose_config(["video.max_frames=0"]))]  # doctest: +SKIP
    ['video.max_frames: 0 < 1 (fix: set video.max_frames >= 1 or null)']
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from museg.config.problems import ConfigProblem
from museg.launch.environment import in_submitit_job

__all__ = ["value_problems", "path_problems", "SCHEDULERS", "RESUME_CHOICES"]

#: transformers schedulers that ``get_scheduler`` builds from warm-up and total steps alone.
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
              "constant_with_warmup", "inverse_sqrt")
RESUME_CHOICES = ("auto", "never", "force")
NAME_MAX = 255
PATH_MAX = 4096
_SYN_COUNTS = {"n_train_videos": 0, "n_heldout_videos": 0, "queries_per_video": 1,
               "n_colours": 1, "clock_rows": 0}
_SYN_POSITIVE = ("fps", "boundary_step")
_SYN_RANGES = ("duration_range", "event_range", "gap_range")


def _sel(cfg: Any, dotted: str, default: Any = None) -> Any:
    node = cfg
    for part in dotted.split("."):
        try:
            node = node.get(part) if hasattr(node, "get") else getattr(node, part)
        except Exception:  # noqa: BLE001 - missing or unresolvable: not set
            return default
        if node is None:
            return default
    return node


def _num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


class _Problems:
    """Collects :class:`ConfigProblem` lines for one config, at most one per key (the first)."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.out: list[ConfigProblem] = []

    def bad(self, key: str, problem: str, fix: str) -> None:
        if all(p.key != key for p in self.out):
            self.out.append(ConfigProblem(key, problem, fix))

    def at_least(self, key: str, low: int, fix: str) -> None:
        """An integer count >= ``low``; null passes (where the schema allows null)."""
        v = _sel(self.cfg, key)
        if v is not None and (not _num(v) or v < low):
            self.bad(key, f"{v} < {low}", fix)

    def finite(self, key: str, ok: Callable[[float], bool], want: str, fix: str) -> None:
        """A finite number accepted by ``ok``; null passes."""
        v = _sel(self.cfg, key)
        if v is not None and (not _num(v) or not math.isfinite(v) or not ok(float(v))):
            self.bad(key, f"{v} is not {want}", fix)


def value_problems(cfg: Any) -> list:
    """Values that would fail minutes later (or pass silently and corrupt a run)."""
    checks = _Problems(cfg)
    _video_values(checks)
    _train_values(checks)
    _other_values(checks)
    return checks.out + _synthetic_problems(cfg)


def _video_values(c: _Problems) -> None:
    for prefix in ("video", "eval.video"):
        c.at_least(f"{prefix}.max_frames", 1, f"set {prefix}.max_frames >= 1 or null")
        c.finite(f"{prefix}.fps", lambda x: x > 0, "a positive finite number",
                 f"set {prefix}.fps > 0 (MUSEG: 2)")
    c.at_least("video.min_frames", 1, "set video.min_frames >= 1 (default 4)")
    mx, mn = _sel(c.cfg, "video.max_frames"), _sel(c.cfg, "video.min_frames")
    if _num(mx) and _num(mn) and mn > mx:
        c.bad("video.min_frames", f"{mn} > video.max_frames {mx}",
              "lower video.min_frames or raise video.max_frames")
    c.finite("video.decode_timeout_s", lambda x: x > 0, "a positive number of seconds",
             "use e.g. 120, or null to decode in-process")
    c.finite("video.max_failure_fraction", lambda x: 0 <= x <= 1, "in [0, 1]", "use 0.05")
    c.at_least("video.prefetch", 0, "use 0 (off) or a small count")
    c.at_least("video.cache.memory_items", 0, "use 0 (off) or a small count")


def _train_values(c: _Problems) -> None:
    t = "train"
    c.at_least(f"{t}.max_completion_length", 1, "use 4096 (MUSEG)")
    c.at_least(f"{t}.max_prompt_length", 1, "use 4096 (MUSEG)")
    c.finite(f"{t}.beta", lambda x: x >= 0, "a finite number >= 0", "use 0 (no KL) or 0.04")
    c.finite(f"{t}.temperature", lambda x: x > 0, "a positive finite number", "use 0.9 (MUSEG)")
    c.finite(f"{t}.logprob_temperature", lambda x: x > 0, "a positive finite number",
             "use 1.0 (MUSEG) or null")
    c.finite(f"{t}.top_p", lambda x: 0 < x <= 1, "in (0, 1]", "use 1.0")
    c.finite(f"{t}.warmup_ratio", lambda x: 0 <= x <= 1, "in [0, 1]", "use 0.0")
    c.finite(f"{t}.max_grad_norm", lambda x: x > 0, "a positive finite number", "use 1.0")
    c.finite(f"{t}.weight_decay", lambda x: x >= 0, "a finite number >= 0", "use 0.0")
    c.finite(f"{t}.learning_rate", lambda x: x > 0, "a positive finite number", "use 1.5e-6")
    for key in ("epsilon_low", "epsilon_high"):
        c.finite(f"{t}.{key}", lambda x: x >= 0, "a finite number >= 0", "use 0.2")
    if _sel(c.cfg, "model.lora.enabled") and not _sel(c.cfg, "model.lora.target_modules"):
        c.bad("model.lora.target_modules", "is empty with model.lora.enabled=true",
              "name the language-model linear layers that get adapters, e.g. "
              "model.lora.target_modules=[q_proj,k_proj,v_proj,o_proj]")
    sched = _sel(c.cfg, f"{t}.lr_scheduler_type")
    if sched is not None and sched not in SCHEDULERS:
        c.bad(f"{t}.lr_scheduler_type", f"{sched!r} is not a known scheduler",
              f"use one of {', '.join(SCHEDULERS)}")
    for name in list(_sel(c.cfg, "reward.weights") or {}):
        c.finite(f"reward.weights.{name}", lambda x: True, "a finite number",
                 f"set reward.weights.{name} to a finite number (0 turns it off)")


def _other_values(c: _Problems) -> None:
    c.at_least("eval.max_new_tokens", 1, "use 512 (MUSEG)")
    c.at_least("eval.batch_size", 1, "use 4")
    c.at_least("eval.limit", 1, "set eval.limit >= 1, or null for every item")
    c.at_least("data.max_samples", 1, "set data.max_samples >= 1, or null for every sample")
    c.at_least("preflight.limit", 1, "set preflight.limit >= 1, or null for every video")
    c.at_least("preflight.workers", 1, "use 1 or more")
    c.finite("preflight.duration_tolerance_s", lambda x: x >= 0, "a finite number >= 0", "use 1.0")
    for key in ("rollout.gpu_memory_utilization", "eval.gpu_memory_utilization"):
        c.finite(key, lambda x: 0 < x <= 1, "in (0, 1]", "use 0.5 to 0.9")
    c.at_least("launcher.nproc_per_node", 1, "use 1 or the GPUs per node")
    c.at_least("launcher.nodes", 1, "use 1 or more")
    c.at_least("launcher.gpus_per_node", 0, "use 0 or more")
    stage_lists = {"demo.stages": _sel(c.cfg, "demo.stages")} | {
        f"demo.variants.{name}.stages": _sel(c.cfg, f"demo.variants.{name}.stages")
        for name in (_sel(c.cfg, "demo.variants") or {})}
    for key, stages in stage_lists.items():
        if stages is not None and (not len(stages) or any(s not in (1, 2) for s in stages)):
            c.bad(key, f"{list(stages)} is not a non-empty list of RL stages 1 and 2",
                  "use [1, 2] (both), [1] or [2]")
    target = _sel(c.cfg, "preflight.target")
    if target is not None and target not in ("train", "eval"):
        c.bad("preflight.target", f"{target!r} is not train or eval",
              "set preflight.target=train|eval")
    resume = _sel(c.cfg, "resume")
    if resume is not None and str(resume).lower() not in RESUME_CHOICES:
        if not str(resume).strip() or not Path(str(resume)).expanduser().is_dir():
            c.bad("resume", f"{resume!r} is not auto, never, force or a checkpoint path",
                  "resume=auto (continue), never (fresh run), force (continue a differing run) or "
                  "resume=<run_dir or checkpoints/step-N>")


def _synthetic_problems(cfg: Any) -> list:
    task = _sel(cfg, "task")
    uses = (task in ("train", "preflight", "plan") and _sel(cfg, "data.train_file") == "generated",
            task in ("eval", "preflight") and _sel(cfg, "eval.annotation") == "generated")
    if not any(uses):
        return []
    from omegaconf import OmegaConf

    params = _sel(cfg, "data.synthetic") or {}
    if OmegaConf.is_config(params):
        params = OmegaConf.to_container(params, resolve=True)
    out = []
    for key, low in _SYN_COUNTS.items():
        if key in params and (not isinstance(params[key], int) or isinstance(params[key], bool)
                              or params[key] < low):
            out.append(ConfigProblem(f"data.synthetic.{key}", f"{params[key]!r} is not an "
                                     f"integer >= {low}", f"set data.synthetic.{key} >= {low}"))
    need = [("n_train_videos", uses[0]), ("n_heldout_videos", uses[1])]
    for key, used in need:
        v = params.get(key)
        if used and isinstance(v, int) and v == 0:
            out.append(ConfigProblem(f"data.synthetic.{key}", "0 videos for this task",
                                     f"set data.synthetic.{key} >= 1"))
    for key in _SYN_POSITIVE:
        v = params.get(key)
        if key in params and (not _num(v) or not math.isfinite(v) or v <= 0):
            out.append(ConfigProblem(f"data.synthetic.{key}", f"{v!r} is not a positive number",
                                     f"set data.synthetic.{key} > 0"))
    for key in (*_SYN_RANGES, "size"):
        v = params.get(key)
        if key not in params:
            continue
        ok = isinstance(v, list | tuple) and len(v) == 2 and all(
            _num(x) and math.isfinite(x) and x >= 0 for x in v)
        if ok and key == "size":
            ok = all(isinstance(x, int) and x >= 16 for x in v)
        elif ok:
            ok = v[0] <= v[1] and (key == "gap_range" or v[1] > 0)
        if not ok:
            out.append(ConfigProblem(f"data.synthetic.{key}", f"{v!r} is not a [low, high] pair "
                                     "of non-negative numbers", f"e.g. data.synthetic.{key}="
                                     f"{'[56,56]' if key == 'size' else '[1.0,2.0]'}"))
    return out


def _nearest_existing(p: Path) -> Path:
    for q in (p, *p.parents):
        try:
            os.stat(q)
            return q
        except OSError:
            continue
    return Path("/")


def path_problems(cfg: Any, check_files: bool = True) -> list:
    """Run names and output paths (see module docstring); filesystem probes with ``check_files``."""
    out: list[ConfigProblem] = []
    for key in ("paths.output_root", "paths.data_root", "paths.video_root", "paths.cache_dir"):
        v = _sel(cfg, key)
        if v is not None and not str(v).strip():
            out.append(ConfigProblem(key, "is empty (it would be the current directory)",
                                     f"set {key}=<directory> or leave it out"))
    for key in ("experiment_name", "run_name"):
        v = _sel(cfg, key)
        if v is None:
            continue
        v = str(v)
        if not v.strip() or v in (".", "..") or "/" in v or "\\" in v or "\0" in v:
            out.append(ConfigProblem(key, f"{v!r} is not a single directory name (it would "
                                     "leave the output root)", f"use a plain name without / or "
                                     f"..; e.g. {key}=my_run"))
        elif len(v.encode()) > NAME_MAX:
            out.append(ConfigProblem(key, f"{len(v.encode())} bytes, longer than the filesystem's "
                                     f"{NAME_MAX}-byte name limit", f"use a shorter {key}"))
    if out or not check_files:
        return out
    run_dir = _sel(cfg, "run_dir")
    if isinstance(run_dir, str) and run_dir:
        parts = Path(run_dir).parts
        long = next((c for c in parts if len(c.encode()) > NAME_MAX), None)
        if long is not None or len(run_dir.encode()) > PATH_MAX:
            out.append(ConfigProblem("run_dir", f"{(long or run_dir)[:40]}... is too long for the "
                                     "filesystem", "use a shorter experiment_name / fewer or "
                                     "shorter overrides, or set run_name=<short name>"))
    root = _sel(cfg, "paths.output_root")
    if isinstance(root, str) and root.strip():
        p = Path(root).expanduser()
        base = _nearest_existing(p)
        if not base.is_dir():
            out.append(ConfigProblem("paths.output_root", f"{base} is a file, not a directory",
                                     "set paths.output_root=<a directory>"))
        elif not os.access(base, os.W_OK | os.X_OK):
            out.append(ConfigProblem("paths.output_root", f"{base} is not writable",
                                     "set paths.output_root=<a writable directory>"))
    init = _sel(cfg, "init_from")
    p = Path(str(init)).expanduser()
    if init is not None and _sel(cfg, "task") == "train" and (
            p.exists() or _sel(cfg, "stage.id") != 2):  # stage 2 + missing: _file_problems says it
        if not any((c / "config.json").is_file() for c in (p / "final", p)):
            out.append(ConfigProblem("init_from", f"{p} holds no model (no config.json in it or "
                                     "its final/)", "init_from=<a finished run dir or a model "
                                     "dir>, or null"))
    if _sel(cfg, "launcher.name") == "slurm" and not _sel(cfg, "launcher.dry_run") \
            and _sel(cfg, "task") != "plan" and not in_submitit_job():  # a plan submits nothing
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if missing:
            out.append(ConfigProblem("launcher", f"launcher=slurm but {' and '.join(missing)} "
                                     "not found on PATH (not a SLURM login node?)",
                                     "run on the cluster's login node, launcher.dry_run=true to "
                                     "print the job, or launcher=local"))
    return out
