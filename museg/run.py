"""The one entrypoint: ``python -m museg.run [overrides]`` (also installed as ``museg``).

It composes the Hydra config in ``conf/`` (shipped inside the package as ``museg.conf``), checks it
(a wrong group, type, budget or missing file gives one line and exit code 2, no traceback), and
dispatches ``cfg.task`` to a plain function that tests call directly::

    python -m museg.run                                  # the embedded offline demo
    python -m museg.run stage=2 model=7b --cfg job --resolve
    python -m museg.run task=eval benchmark=charades_sta model.path=/ckpt/MUSEG-7B
    python -m museg.run -m launcher=slurm stage=1 model=7b reward.weights.format=0.5,1.0

Tasks: ``train`` (museg.rl.trainer.train), ``eval`` (museg.eval.runner.evaluate),
``score`` (museg.eval.score.score), ``preflight`` (museg.data.preflight.preflight), ``demo``
(museg.demo.pipeline.run_demo) and ``compare`` (museg.compare.compare: tables and plots of finished runs).
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from museg.cli_help import render_help, sweep_runs
from museg.config import (
    CONFIG_PATH,
    TASKS,
    ConfigError,
    TaskError,
    absolutize_paths,
    check_overrides,
    normalize_overrides,
    register_schema,
    split_args,
    validate,
)
from museg.config.compose import INFO_FLAGS
from museg.config.naming import current_overrides, register_resolvers
from museg.data.annotations import AnnotationError
from museg.data.preflight import PreflightError
from museg.data.sources import materialize_synthetic
from museg.eval.items import EvalError
from museg.launch.job import run_job
from museg.launch.preview import launch_plan, preview
from museg.runguard import RunRefused, prepare_run_dir, refusal_types

log = logging.getLogger("museg")
__all__ = ["main", "dispatch", "TASKS"]


def dispatch(cfg: DictConfig) -> Any:
    """Run ``cfg.task`` (the config must already be composed)."""
    materialize_synthetic(cfg)
    problems = validate(cfg)
    if problems:
        raise ConfigError("; ".join(str(p) for p in problems))
    target = TASKS.get(cfg.task)
    if target is None:
        raise ConfigError(f"task: unknown task {cfg.task!r} (fix: one of {', '.join(TASKS)})")
    module_name, fn_name = target.split(":")
    fn: Callable[[DictConfig], Any] = getattr(importlib.import_module(module_name), fn_name)
    # imported here: checkpoint_info pulls in transformers (~3 s), which --help, the pre-check
    # and a dry run never need
    from museg.model.checkpoint_info import CheckpointMismatch, apply_checkpoint_settings

    try:  # model.path to a real checkpoint under model=tiny: its settings, or one line
        apply_checkpoint_settings(cfg, current_overrides())
    except CheckpointMismatch as exc:
        raise ConfigError(str(exc)) from None
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    log.info("museg %s -> %s", cfg.task, cfg.run_dir)

    try:
        return fn(cfg)
    except refusal_types() as exc:  # refused with the fix (museg.runguard): one line, exit 2
        raise RunRefused(f"{cfg.task}: {exc}") from None
    except _one_line_errors() as exc:  # a data/benchmark problem with its fix: no traceback
        raise TaskError(f"{cfg.task}: {exc}") from None


def _one_line_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message already says what is wrong and how to fix it."""
    return (AnnotationError, EvalError, PreflightError)


@hydra.main(config_path=CONFIG_PATH, config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> Any:
    absolutize_paths(cfg)
    OmegaConf.resolve(cfg)
    prepare_run_dir(cfg)  # resume=never -> a fresh sibling directory; one writer per run dir

    return run_job(cfg, dispatch)


def _print_each_sweep_run(flags: list[str], overrides: list[str]) -> None:
    """``-m ... --cfg job`` (or ``--info``): Hydra's output for every run of the sweep, in turn."""
    register_schema()
    register_resolvers()
    single = [f for f in flags if f not in ("-m", "--multirun")]
    runs = sweep_runs(overrides)
    for i, (label, run) in enumerate(runs, 1):
        print(f"# sweep run {i}/{len(runs)}: {label or '(no sweep values)'}", flush=True)
        sys.argv = [sys.argv[0], *run, *single]
        _hydra_main()


def main(argv: list[str] | None = None) -> None:
    """Console entrypoint: normalize arguments, pre-check the config, hand over to Hydra."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:  # the embedded offline demo
        argv = ["experiment=demo"]
    argv = normalize_overrides(argv)
    flags, overrides = split_args(argv)
    if any(f in ("--help", "-h") for f in flags):  # museg's page; --hydra-help is Hydra's
        print(render_help(TASKS, CONFIG_PATH))
        return
    info_only = any(f in INFO_FLAGS for f in flags)
    help_only = any(f in ("--help", "-h", "--hydra-help") for f in flags)
    plan = launch_plan(overrides) if not (info_only or help_only) else None
    dry_run = plan is not None and plan.dry_run
    if not help_only:
        # --cfg/--info only print: composition errors still stop, value checks do not;
        # a dry run prints what would be submitted: no file checks (data may live on the cluster)
        problem = check_overrides(overrides, check_files=not info_only and not dry_run,
                                  check_values=not info_only)
        if problem:
            raise ConfigError(problem)
    multirun = any(f in ("-m", "--multirun") for f in flags)
    if multirun and info_only:  # Hydra refuses -m with --cfg/--info: print each run's instead
        _print_each_sweep_run(flags, overrides)
        return
    if dry_run:
        print(preview(overrides, multirun=multirun or plan.submits))
        return
    if plan is not None and plan.submits and not multirun:
        argv = ["-m", *argv]  # launcher=slurm / submitit_local submit through Hydra's multirun
    register_schema()
    register_resolvers()
    sys.argv = [sys.argv[0], *argv]
    _hydra_main()


if __name__ == "__main__":
    main()
