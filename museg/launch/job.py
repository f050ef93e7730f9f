"""What every launched museg process runs: ``run_job(cfg, task_fn)`` around the task dispatcher.

``museg.run``'s Hydra task function calls ``run_job(cfg, dispatch)``; depending on where it runs:

- **inside a submitit job** (``launcher=slurm`` / ``launcher=submitit_local``, one process per
  task = per GPU): export torch.distributed variables from submitit's environment
  (:func:`~museg.launch.environment.export_torch_distributed`), keep non-main ranks quiet, record
  the job in ``run_dir/submitit_job.json``, and for ``task=train`` take over the pre-timeout
  signal (:class:`~museg.launch.preemption.PreemptionHandler`): the trainer checkpoints at the next
  step boundary and returns ``preempted``, then the job is requeued through submitit. An exception
  on one rank of a multi-rank job exits that process with code 1 (instead of Hydra's catch-all
  returning normally), so ``srun`` stops the step rather than leaving the other ranks hanging;
- **launcher=local with launcher.nproc_per_node > 1** (and no ``WORLD_SIZE`` yet): spawn the ranks
  (:func:`~museg.launch.local.launch_local`);
- ``launcher.dry_run=true``: print what would run (:mod:`museg.launch.preview`), run nothing;
- otherwise: ``task_fn(cfg)`` in this process (a plain run, or one rank started by torchrun).

Only ``task=train`` uses several processes; eval, score, preflight and demo run in one (rank 0 of
a multi-task job; the job's other tasks return at once).

``launcher=slurm`` without ``-m`` would run on the login node: that is refused with the fix.

Example::

    from museg.launch.job import run_job
    from museg.run import dispatch
    result = run_job(cfg, dispatch)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from museg.dist import process_group
from museg.launch.environment import (
    export_torch_distributed,
    in_submitit_job,
    quiet_non_main_ranks,
    write_job_record,
)
from museg.launch.local import launch_local
from museg.launch.preemption import PreemptionHandler
from museg.launch.preview import SUBMITTING_LAUNCHERS, preview_from_cfg
from museg.launch.tracking import CHOICES_ENV
from museg.rl.checkpoint_request import request_checkpoint

__all__ = ["LaunchError", "run_job", "run_submitit_task", "SUBMITTING_LAUNCHERS",
           "DISTRIBUTED_TASKS"]

log = logging.getLogger(__name__)

# tasks that use several processes; the others (eval, score, preflight, demo) run on rank 0 only
DISTRIBUTED_TASKS = ("train",)


class LaunchError(SystemExit):
    """A launch problem reported as one line (exit code 2), like the config errors."""

    def __init__(self, message: str):
        print(f"museg: launch error: {message}", file=sys.stderr)
        super().__init__(2)


def _requested_backend(cfg: Any) -> str:
    return str(cfg.launcher.dist_backend)


def run_job(cfg: Any, task_fn: Callable[[Any], Any]) -> Any:
    """Run ``task_fn(cfg)`` the way ``cfg.launcher`` and the environment say (see module doc)."""
    if in_submitit_job():
        return run_submitit_task(cfg, task_fn)
    name = str(cfg.launcher.name)
    if str(cfg.task) == "plan":  # a plan of the launcher's world, computed in this process
        return task_fn(cfg)
    if cfg.launcher.dry_run:
        print(preview_from_cfg(cfg))
        return None
    if name in SUBMITTING_LAUNCHERS:
        raise LaunchError(f"launcher={name} submits jobs through Hydra's multirun, but this is a "
                          f"single run (fix: add -m, e.g. python -m museg.run -m launcher={name} "
                          "...; or launcher=local to run here)")
    nproc = int(cfg.launcher.nproc_per_node)
    if nproc > 1 and str(cfg.task) not in DISTRIBUTED_TASKS:
        log.warning("task=%s runs in one process: launcher.nproc_per_node=%d is ignored",
                    cfg.task, nproc)
        nproc = 1
    if nproc > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        log_file = None
        try:
            hc = HydraConfig.get()
            log_file = os.path.join(hc.runtime.output_dir, f"{hc.job.name}.log")
            # spawned ranks have no Hydra runtime: pass the chosen groups on (wandb tags)
            os.environ[CHOICES_ENV] = json.dumps(OmegaConf.to_container(hc.runtime.choices))
        except ValueError:
            pass
        return launch_local(task_fn, cfg, nproc, backend=_requested_backend(cfg),
                            log_file=log_file)
    return task_fn(cfg)


def _request_checkpoint_fn(cfg: Any) -> Callable[[], Any] | None:
    """The trainer's checkpoint-request function for ``task=train``, else None."""
    return request_checkpoint if str(cfg.task) == "train" else None


def run_submitit_task(cfg: Any, task_fn: Callable[[Any], Any]) -> Any:
    """One submitit task: torch.distributed env, preemption handling, requeue when preempted."""
    dist = export_torch_distributed()
    quiet_non_main_ranks(dist.rank)
    if dist.world_size > 1 and str(cfg.task) not in DISTRIBUTED_TASKS:
        if not dist.is_main:
            return None  # one process does the work (fix for idle GPUs: launcher.gpus_per_node=1)
        log.warning("task=%s runs on rank 0 only; the job's other %d tasks exit (fix: "
                    "launcher.gpus_per_node=1)", cfg.task, dist.world_size - 1)
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
        dist = replace(dist, world_size=1, local_world_size=1)
    write_job_record(cfg.run_dir, dist, {"task": str(cfg.task)})
    log.info("submitit job %s: rank %d/%d (local %d, node %d/%d), master %s:%d", dist.job_id,
             dist.rank, dist.world_size, dist.local_rank, dist.node, dist.num_nodes,
             dist.master_addr, dist.master_port)
    request = _request_checkpoint_fn(cfg)
    handler = PreemptionHandler(request).install() if request is not None else None
    own_group = dist.world_size > 1 and _requested_backend(cfg) != "auto"
    try:
        with process_group(_requested_backend(cfg)) if own_group else contextlib.nullcontext():
            try:
                result = task_fn(cfg)
            except Exception:
                if dist.world_size > 1:
                    log.exception("rank %d failed; exiting with code 1 so the job step stops",
                                  dist.rank)
                    raise SystemExit(1) from None
                raise
    finally:
        if handler is not None:
            handler.uninstall()  # back to submitit's handler (it stays known to `requeue`)
    if handler is not None and isinstance(result, dict) and result.get("preempted"):
        handler.requeue()  # rank 0: checkpoint() + requeue + exit; other ranks return
    return result
