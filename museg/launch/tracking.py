"""wandb run settings for launched jobs: group = experiment/sweep, job_type = task, tags = choices.

:func:`wandb_init_kwargs` is what the trainer's logger passes to ``wandb.init``: the ``group`` is
``cfg.wandb.group`` (``experiment_name`` by default, shared by every job of a sweep), ``job_type``
is the task, the display ``name`` is the stable run name (``model=7b,reward.weights.format=0.5``),
``tags`` are ``cfg.wandb.tags`` plus the chosen config groups (``model=7b``, ``stage=1``, ...,
from Hydra's ``runtime.choices`` when available) and the launcher, ``config`` is the resolved
configuration plus ``swept`` (this job's command-line overrides as ``{key: value}``, so the UI's
grouped tables and parallel coordinates find the swept keys), ``id`` the stored run id with
``resume='allow'`` so a requeued job continues the same wandb run. ``WANDB_MODE`` in the
environment wins over ``cfg.wandb.mode``.

:func:`log_final_metrics` gives runs without a training logger (eval, demo) a wandb run of their
own: the same settings, the final metrics in its summary (``miou``, ``tal.mean_f1``, ...).

Example::

    import wandb
    run = wandb.init(**wandb_init_kwargs(cfg, run_id=state.get("wandb_id")))

    >>> from museg.config import compose_config
    >>> cfg = compose_config(["launcher=slurm", "model=7b", "experiment_name=sweep_rw",
    ...                       "run_name='a=1'", "run_dir=/runs/x", "wandb.mode=offline",
    ...                       "wandb.tags=[paper]"])
    >>> kw = wandb_init_kwargs(cfg, run_id="abc123", choices={}, env={})
    >>> kw["group"], kw["job_type"], kw["name"], kw["id"], kw["resume"], kw["mode"]
    ('sweep_rw', 'train', 'a=1', 'abc123', 'allow', 'offline')
    >>> kw["tags"]
    ['paper', 'model=7b', 'stage=1', 'data=museg_stage1', 'launcher=slurm']
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from museg.config.naming import EXCLUDED_PREFIXES, current_overrides

__all__ = ["wandb_init_kwargs", "group_choices", "swept_values", "log_final_metrics",
           "new_run_id", "CHOICES_ENV"]

CHOICES_ENV = "MUSEG_HYDRA_CHOICES"  # json of Hydra's runtime.choices, for spawned ranks
# config groups that describe a run (in this order); hydra/* and the rest are left out
TAG_GROUPS = ("experiment", "model", "stage", "reward", "data", "rollout", "benchmark", "launcher")
MAX_TAG_LENGTH = 64  # wandb's limit
log = logging.getLogger(__name__)


def new_run_id() -> str:
    """A fresh 8-character wandb-style run id ([a-z0-9]), stored in checkpoints for resume."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def group_choices(choices: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The chosen config groups: given, else Hydra's ``runtime.choices``, else $MUSEG_HYDRA_CHOICES."""
    if choices is None:
        try:
            choices = OmegaConf.to_container(HydraConfig.get().runtime.choices)  # type: ignore[assignment]
        except ValueError:  # no Hydra runtime (compose API, spawned ranks)
            raw = os.environ.get(CHOICES_ENV)
            choices = json.loads(raw) if raw else {}
    return {str(k): str(v) for k, v in (choices or {}).items()
            if v is not None and not str(k).startswith("hydra") and k in TAG_GROUPS}


def _tags(cfg: Any, choices: Mapping[str, str]) -> list[str]:
    tags = [str(t) for t in cfg.wandb.tags]
    derived = {"model": cfg.model.name, "stage": cfg.stage.id, "data": cfg.data.name,
               "launcher": cfg.launcher.name}
    picked = {k: choices[k] for k in TAG_GROUPS if k in choices}
    for k, v in derived.items():
        picked.setdefault(k, v)
    for k in TAG_GROUPS:
        v = picked.get(k)
        if v is not None and str(v) not in ("null", "None"):
            tag = f"{k}={v}"[:MAX_TAG_LENGTH]
            if tag not in tags:
                tags.append(tag)
    return tags


def swept_values(overrides: Sequence[str] | None = None) -> dict[str, Any]:
    """``{key: value}`` of the overrides that change what a run computes (default: this job's).

    >>> swept_values(["eval.max_new_tokens=16", "seed=1", "wandb.mode=offline", "stage='2'"])
    {'eval.max_new_tokens': 16, 'seed': 1, 'stage': '2'}
    """
    out: dict[str, Any] = {}
    for item in current_overrides() if overrides is None else overrides:
        if "=" not in item:
            continue
        key, raw = item.split("=", 1)
        key = key.lstrip("+~")
        if any(key == p or key.startswith((p + ".", p + "/")) for p in EXCLUDED_PREFIXES):
            continue
        try:
            out[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            out[key] = raw
    return out


def wandb_init_kwargs(cfg: Any, run_id: str | None = None,
                      choices: Mapping[str, Any] | None = None,
                      env: Mapping[str, str] | None = None,
                      overrides: Sequence[str] | None = None) -> dict[str, Any]:
    """Keyword arguments for ``wandb.init`` (see the module docstring); ``config`` is resolved."""
    env = os.environ if env is None else env
    mode = env.get("WANDB_MODE") or cfg.wandb.mode
    picked = group_choices(choices)
    config = OmegaConf.to_container(cfg, resolve=True)
    if picked:
        config = {**config, "hydra_choices": picked}  # type: ignore[dict-item]
    swept = swept_values(overrides)
    if swept:
        config = {**config, "swept": swept}  # type: ignore[dict-item]
    return {
        "project": cfg.wandb.project,
        "entity": cfg.wandb.entity,
        "group": cfg.wandb.group,  # ${experiment_name} unless set
        "job_type": cfg.wandb.job_type,  # ${task} unless set
        "name": cfg.run_name,
        "tags": _tags(cfg, picked),
        "config": config,
        "id": run_id,
        "resume": "allow",
        "dir": cfg.run_dir,
        "mode": mode,
    }


def _flat_numbers(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if isinstance(v, Mapping):
            out.update(_flat_numbers(v, f"{prefix}{k}."))
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = v
    return out


def log_final_metrics(cfg: Any, metrics: Mapping[str, Any],
                      run_dir: str | Path | None = None) -> str | None:
    """Write a finished run's metrics (nested dicts flattened with dots) to the summary of its
    wandb run (group = sweep, job_type = task, config = resolved config + ``swept``); the run id
    is kept in ``run_dir/wandb_run_id`` so a rerun updates the same run. Returns the id, or None
    when wandb is disabled. Never raises: a tracking failure must not fail a finished run."""
    mode = os.environ.get("WANDB_MODE") or cfg.wandb.mode
    if mode == "disabled":
        return None
    try:
        import wandb

        run_dir = Path(run_dir or cfg.run_dir)
        id_file = run_dir / "wandb_run_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else new_run_id()
        id_file.write_text(run_id + "\n")
        kwargs = wandb_init_kwargs(cfg, run_id=run_id)
        kwargs.update(dir=str(run_dir), mode=mode)
        run = wandb.init(**kwargs)
        run.summary.update(_flat_numbers(metrics))
        run.finish()
        return run_id
    except Exception as e:  # noqa: BLE001 - see docstring
        log.warning("wandb summary not written: %s: %s",
                                            type(e).__name__, e)
        return None
