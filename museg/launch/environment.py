"""Where a museg process runs: submitit job detection, torch.distributed variables, job records.

Inside a submitit job (SLURM or ``submitit_local``) every task is one process; submitit knows its
global rank, local rank, node and the node list. :func:`export_torch_distributed` turns that into
the ``env://`` variables torch.distributed, accelerate and DeepSpeed read (``MASTER_ADDR``,
``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``) through
``submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)``: every
task keeps all GPUs of its node visible and picks ``cuda:LOCAL_RANK`` itself, which is what
DeepSpeed expects. :func:`write_job_record` leaves ``submitit_job.json`` in the run directory so a
run directory says which job (and which log files) produced it.

Example (inside a job; :func:`museg.launch.job.run_job` does this)::

    if in_submitit_job():
        dist = export_torch_distributed()     # DistEnv(rank=3, world_size=16, ...)
        quiet_non_main_ranks(dist.rank)

Outside a job :func:`in_submitit_job` is False and nothing here touches the environment:

    >>> import os
    >>> "SUBMITIT_EXECUTOR" in os.environ or in_submitit_job()
    False
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["DistEnv", "in_submitit_job", "export_torch_distributed", "write_job_record",
           "quiet_non_main_ranks", "DIST_VARS"]

DIST_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


@dataclass(frozen=True)
class DistEnv:
    """The torch.distributed layout of this process (what was exported)."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int
    job_id: str = ""
    node: int = 0
    num_nodes: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def in_submitit_job() -> bool:
    """True inside a task started by submitit (``submitit.core._submit`` sets these variables)."""
    return bool(os.environ.get("SUBMITIT_EXECUTOR")) and bool(os.environ.get("SUBMITIT_FOLDER"))


def export_torch_distributed() -> DistEnv:
    """Export the ``env://`` variables of this submitit task and return them.

    Values inherited from the submitting shell (sbatch exports its environment) are replaced. The
    port is derived from the job id (the same on every task of a job, different between jobs)
    unless ``MUSEG_MASTER_PORT`` pins it (e.g. in a profile's ``setup`` lines).
    """
    from submitit import JobEnvironment
    from submitit.helpers import TorchDistributedEnvironment

    for var in DIST_VARS:
        os.environ.pop(var, None)
    if os.environ.get("MUSEG_MASTER_PORT"):
        os.environ["MASTER_PORT"] = os.environ["MUSEG_MASTER_PORT"]
    env = TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    job = JobEnvironment()
    return DistEnv(rank=env.rank, world_size=env.world_size, local_rank=env.local_rank,
                   local_world_size=env.local_world_size, master_addr=str(env.master_addr),
                   master_port=int(env.master_port), job_id=str(job.job_id), node=job.node,
                   num_nodes=job.num_nodes)


def _job_paths() -> dict[str, str]:
    from submitit import JobEnvironment

    paths = JobEnvironment().paths
    return {"stdout": str(paths.stdout), "stderr": str(paths.stderr),
            "submitit_folder": str(paths.folder)}


def write_job_record(run_dir: str | os.PathLike, dist: DistEnv, extra: dict[str, Any] | None = None
                     ) -> Path:
    """Append this (re)start of the job to ``run_dir/submitit_job.json`` (rank 0 writes).

    The file holds ``{"starts": [{job_id, host, pid, time, world_size, ...}, ...]}``: one entry per
    start, so a requeued job shows each attempt.
    """
    path = Path(run_dir) / "submitit_job.json"
    if not dist.is_main:
        return path
    record: dict[str, Any] = {"job_id": dist.job_id, "host": socket.gethostname(),
                              "pid": os.getpid(), "time": time.time(), **asdict(dist)}
    try:
        record.update(_job_paths())
    except Exception:  # noqa: BLE001 - the log paths are a convenience only
        pass
    record.update(extra or {})
    data: dict[str, Any] = {"starts": []}
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            data = {"starts": []}
    data.setdefault("starts", []).append(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)
    return path


def quiet_non_main_ranks(rank: int) -> None:
    """Ranks other than 0 log warnings and errors only (all tasks share the run's log file)."""
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("museg").setLevel(logging.WARNING)
