"""Stable run names and OmegaConf resolvers used by ``conf/``.

A run directory is ``<output_root>/<experiment_name>/<task>/<run name>`` where the run name is
derived from the command-line overrides (never from a timestamp), so a rerun or a requeued SLURM job
lands in its own directory and finds its checkpoints::

    >>> run_name_from_overrides(["stage='2'", "model=7b", "task=train", "wandb.mode=offline"])
    'model=7b,stage=2'
    >>> run_name_from_overrides([])
    'default'
    >>> run_name_from_overrides(stage1_overrides(["stage=2", "init_from=/x", "model=7b"]))
    'model=7b'

``stage=1`` is the default and is left out of names, so ``stage=1 model=7b`` and ``model=7b`` share
a directory, which is where ``stage=2 model=7b`` looks for its initial weights.

Resolvers (registered by :func:`register_resolvers`):
``${museg.run_name:}``, ``${museg.abspath:PATH}``, ``${museg.template:NAME}`` and
``${museg.stage1_run_dir:OUTPUT_ROOT,EXPERIMENT}``, ``${museg.first_existing:PATH,PATH,...}``,
``${museg.video_root:DATA_ROOT}``.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from museg.data.layout import default_video_root, first_existing
from museg.data.prompts import TEMPLATES

# Keys that do not change what a run computes (or are the directory levels themselves).
EXCLUDED_PREFIXES = ("task", "experiment", "experiment_name", "launcher", "resume", "wandb",
                     "paths", "hydra", "run_name", "run_dir", "demo.show")
MAX_NAME_LENGTH = 120

# Overrides of the current process when Hydra's runtime config is not available (pre-check).
_fallback_overrides: list[str] = []


def _key_of(override: str) -> str:
    key = override.split("=", 1)[0]
    return key.lstrip("+~")


def _excluded(key: str) -> bool:
    return any(key == p or key.startswith(p + ".") or key.startswith(p + "/")
               for p in EXCLUDED_PREFIXES)


def _clean_value(value: str) -> str:
    value = value.strip().strip("'\"")
    return re.sub(r"[^A-Za-z0-9._,=+\-]", "_", value)


def run_name_from_overrides(overrides: list[str]) -> str:
    """Sorted ``key=value`` list of the overrides that matter, joined by commas; hashed if long."""
    parts = []
    for item in overrides:
        if "=" not in item:
            continue
        key = _key_of(item)
        value = _clean_value(item.split("=", 1)[1])
        if _excluded(key) or (key == "stage" and value == "1"):  # stage 1 is the default
            continue
        parts.append(f"{key}={value}")
    if not parts:
        return "default"
    name = ",".join(sorted(parts))
    if len(name) > MAX_NAME_LENGTH:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"{name[:MAX_NAME_LENGTH - 11]}-{digest}"
    return name


def stage1_overrides(overrides: list[str]) -> list[str]:
    """The overrides a stage-2 run's stage-1 counterpart was started with."""
    out = [o for o in overrides if _key_of(o) not in ("stage", "init_from")]
    return sorted(out + ["stage=1"])


def set_fallback_overrides(overrides: list[str]) -> None:
    """Overrides to name runs by when Hydra's runtime config is not set (compose API)."""
    _fallback_overrides[:] = list(overrides)


def current_overrides() -> list[str]:
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return list(_fallback_overrides)


def abspath(path: str) -> str:
    """Absolute, user-expanded path (relative to the directory museg was started from); an empty
    value stays empty (validation refuses it instead of writing into the current directory)."""
    if not str(path).strip():
        return ""
    return str(Path(os.path.expanduser(str(path))).absolute())


def template(name: str) -> str:
    if name not in TEMPLATES:
        raise KeyError(f"unknown template {name!r}; known: {', '.join(sorted(TEMPLATES))}")
    return TEMPLATES[name]


def stage1_run_dir(output_root: str, experiment_name: str) -> str:
    """Run directory of the stage-1 training run matching the current stage-2 overrides."""
    name = run_name_from_overrides(stage1_overrides(current_overrides()))
    return str(Path(output_root) / experiment_name / "train" / name)


def register_resolvers() -> None:
    """Register the ``museg.*`` resolvers (idempotent)."""
    resolvers = {
        "museg.run_name": lambda: run_name_from_overrides(current_overrides()),
        "museg.abspath": abspath,
        "museg.template": template,
        "museg.stage1_run_dir": stage1_run_dir,
        "museg.first_existing": first_existing,  # museg.data.layout: either data layout
        "museg.video_root": default_video_root,
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
