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
(museg.demo.run_demo) and ``compare`` (museg.compare.compare: tables and plots of finished runs).
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from museg.config import absolutize_paths, register_schema, validate
from museg.naming import register_resolvers, set_fallback_overrides

log = logging.getLogger("museg")

_SOURCE_CONF = Path(__file__).resolve().parent.parent / "conf"
# A source checkout uses the top-level conf/ directly; an installed wheel ships it as museg.conf.
CONFIG_PATH = str(_SOURCE_CONF) if (_SOURCE_CONF / "config.yaml").is_file() else "pkg://museg.conf"

TASKS: dict[str, str] = {
    "train": "museg.rl.trainer:train",
    "eval": "museg.eval.runner:evaluate",
    "score": "museg.eval.score:score",
    "preflight": "museg.data.preflight:run_preflight",
    "demo": "museg.demo:run_demo",
    "compare": "museg.compare:compare",
    "plan": "museg.plan:plan",
}
_INFO_FLAGS = {"--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i",
               "--shell-completion", "-sc"}
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--info", "-i", "--config-path", "-cp",
                     "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun"}


class ConfigError(SystemExit):
    """A configuration problem, reported as one line with exit code 2."""

    def __init__(self, message: str):
        print(f"museg: config error: {message}", file=sys.stderr)
        super().__init__(2)


class TaskError(SystemExit):
    """A task stopped on a problem its message explains: one line, exit code 1."""

    def __init__(self, message: str):
        print(f"museg: error: {message}", file=sys.stderr)
        super().__init__(1)


def normalize_overrides(argv: list[str]) -> list[str]:
    """Quote ``stage`` choices so Hydra reads them as group names, not integers, and
    ``compare.baseline``'s ``key=value`` so Hydra reads it as one string.

    >>> normalize_overrides(["stage=2", "model=7b", "-m", "stage=1,2"])
    ["stage='2'", 'model=7b', '-m', "stage='1','2'"]
    >>> normalize_overrides(["compare.baseline=demo.variant=full"])
    ["compare.baseline='demo.variant=full'"]
    """
    out = []
    for arg in argv:
        m = re.fullmatch(r"([+~]*stage)=(.+)", arg)
        if m and not m.group(2).startswith(("'", '"')):
            values = ",".join(f"'{v.strip()}'" for v in m.group(2).split(","))
            arg = f"{m.group(1)}={values}"
        m = re.fullmatch(r"(compare\.baseline)=([^'\"].*=.*)", arg)
        if m:
            arg = f"{m.group(1)}='{m.group(2)}'"
        out.append(arg)
    return out


def split_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate Hydra flags (with their values) from config overrides."""
    flags, overrides = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-"):
            flags.append(arg)
            if arg in _FLAGS_WITH_VALUE and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                if "=" not in argv[i + 1] or arg not in ("--cfg", "-c", "--info", "-i"):
                    flags.append(argv[i + 1])
                    i += 1
        else:
            overrides.append(arg)
        i += 1
    return flags, overrides


def _override_variants(overrides: list[str]) -> list[list[str]]:
    """One override list per sweep value (others at their first value), or the list itself."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    sweeps = [i for i, o in enumerate(parsed) if o.is_sweep_override()]
    if not sweeps:
        return [overrides]
    values = {i: [f"{parsed[i].get_key_element()}={v}"
                  for v in parsed[i].sweep_string_iterator()] for i in sweeps}
    base = [values[i][0] if i in values else o for i, o in enumerate(overrides)]
    variants = [base]
    for i in sweeps:
        for v in values[i][1:]:
            variants.append([v if j == i else b for j, b in enumerate(base)])
    return variants


def compose_config(overrides: list[str], return_hydra_config: bool = False) -> DictConfig:
    """Compose ``conf/config.yaml`` with overrides through Hydra's compose API (tests use this)."""
    from hydra import compose, initialize_config_dir, initialize_config_module

    register_schema()
    register_resolvers()
    overrides = normalize_overrides(overrides)
    set_fallback_overrides(overrides)
    if CONFIG_PATH.startswith("pkg://"):
        ctx = initialize_config_module(config_module="museg.conf", version_base="1.3")
    else:
        ctx = initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3")
    with ctx:
        cfg = compose(config_name="config", overrides=overrides,
                      return_hydra_config=return_hydra_config)
    absolutize_paths(cfg)
    return cfg


def _first_line(exc: BaseException) -> str:
    """First line of an exception and of its causes, plus Hydra's list of available options."""
    parts: list[str] = []
    options: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        lines = [ln.strip() for ln in str(seen).strip().splitlines() if ln.strip()]
        if lines and lines[0] not in parts:
            parts.append(lines[0])
        for i, ln in enumerate(lines):
            if ln.startswith("Available options"):
                options = [o for o in lines[i + 1:] if "=" not in o and ":" not in o]
        seen = seen.__cause__
    text = ": ".join(parts) or type(exc).__name__
    if options:
        text += f" (fix: use one of {', '.join(options)})"
    return text


def check_overrides(overrides: list[str], check_files: bool = True,
                    check_values: bool = True) -> str | None:
    """Compose every sweep variant and validate it; the first problem as one line, else None."""
    try:
        variants = _override_variants(overrides)
    except Exception as exc:  # noqa: BLE001 - any parse error becomes one line
        return f"cannot parse overrides: {_first_line(exc)}"
    for variant in variants:
        try:
            cfg = compose_config(variant)
            problems = validate(cfg, check_files=check_files) if check_values else []
        except Exception as exc:  # noqa: BLE001 - Hydra/OmegaConf errors become one line
            line = _first_line(exc)
            if "could not be converted" in line or "not a valid" in line:
                line += " (fix: give a value of the documented type; see --cfg job)"
            elif "Could not override" in line:
                line += " (fix: check the key name against --cfg job)"
            return line
        if problems:
            return str(problems[0])
    return None


def dispatch(cfg: DictConfig) -> Any:
    """Run ``cfg.task`` (the config must already be composed)."""
    from museg.data.sources import materialize_synthetic

    materialize_synthetic(cfg)
    problems = validate(cfg)
    if problems:
        raise ConfigError("; ".join(str(p) for p in problems))
    target = TASKS.get(cfg.task)
    if target is None:
        raise ConfigError(f"task: unknown task {cfg.task!r} (fix: one of {', '.join(TASKS)})")
    module_name, fn_name = target.split(":")
    fn: Callable[[DictConfig], Any] = getattr(importlib.import_module(module_name), fn_name)
    from museg.model.checkpoint_info import CheckpointMismatch, apply_checkpoint_settings
    from museg.naming import current_overrides

    try:  # model.path to a real checkpoint under model=tiny: its settings, or one line
        apply_checkpoint_settings(cfg, current_overrides())
    except CheckpointMismatch as exc:
        raise ConfigError(str(exc)) from None
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    log.info("museg %s -> %s", cfg.task, cfg.run_dir)
    from museg.runguard import RunRefused, refusal_types

    try:
        return fn(cfg)
    except refusal_types() as exc:  # refused with the fix (museg.runguard): one line, exit 2
        raise RunRefused(f"{cfg.task}: {exc}") from None
    except _one_line_errors() as exc:  # a data/benchmark problem with its fix: no traceback
        raise TaskError(f"{cfg.task}: {exc}") from None


def _one_line_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message already says what is wrong and how to fix it."""
    from museg.data.annotations import AnnotationError
    from museg.data.preflight import PreflightError
    from museg.eval.runner import EvalError

    return (AnnotationError, EvalError, PreflightError)


@hydra.main(config_path=CONFIG_PATH, config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> Any:
    absolutize_paths(cfg)
    OmegaConf.resolve(cfg)
    from museg.launch.job import run_job
    from museg.runguard import prepare_run_dir

    prepare_run_dir(cfg)  # resume=never -> a fresh sibling directory; one writer per run dir

    return run_job(cfg, dispatch)


def _print_each_sweep_run(flags: list[str], overrides: list[str]) -> None:
    """``-m ... --cfg job`` (or ``--info``): Hydra's output for every run of the sweep, in turn."""
    from museg.cli_help import sweep_runs

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
        from museg.cli_help import render_help

        print(render_help(TASKS, CONFIG_PATH))
        return
    info_only = any(f in _INFO_FLAGS for f in flags)
    help_only = any(f in ("--help", "-h", "--hydra-help") for f in flags)
    from museg.launch.preview import launch_plan, preview

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
