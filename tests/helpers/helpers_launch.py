"""Shared pieces of the launch tests: tiny training budgets, rank entry points, CLI runner.

Functions here are module-level so that ranks spawned by ``museg.launch.local.launch_local``
(spawn start method) can import them by name.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from museg import dist as D

REPO = Path(__file__).resolve().parents[2]

# The tiny model on the demo's synthetic videos, with the smallest budgets that still train:
# per_device_train_batch_size counts completions, so 2 = one prompt x G=2 per process.
TINY_TRAIN = [
    "experiment=demo", "task=train", "model=tiny",
    "train.num_generations=2", "train.max_completion_length=16", "train.max_prompt_length=1024",
    "train.per_device_train_batch_size=2", "train.gradient_accumulation_steps=1",
    "train.bf16=false", "train.beta=0.0", "train.completions_every=1",
    "video.max_frames=8", "video.total_pixels=25088",
]


def run_uses_run_job() -> bool:
    """museg.run hands its Hydra task to museg.launch.job.run_job (the cluster integration)."""
    return "run_job" in (REPO / "museg" / "run.py").read_text()


def cli(args: list[str], timeout: float = 600, cwd: Path | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m museg.run ARGS`` in a subprocess (offline, wandb disabled)."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
                "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                **(env or {})}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        full_env.pop(var, None)
    return subprocess.run([sys.executable, "-m", "museg.run", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=str(cwd or REPO), env=full_env)


def gather_ranks(cfg) -> dict:
    """Rank entry point: all-gather (rank, cfg.seed) over gloo, report the env."""
    info = D.init_distributed()
    mine = torch.tensor([float(info.rank), float(cfg.seed)])
    gathered = D.all_gather_cat(mine.unsqueeze(0))
    out = {"rank": info.rank, "world_size": info.world_size, "gathered": gathered.tolist(),
           "backend": dist.get_backend(), "omp": os.environ.get("OMP_NUM_THREADS"),
           "local_rank": int(os.environ["LOCAL_RANK"])}
    D.cleanup_distributed()
    return out


def group_of_the_launcher(cfg) -> dict:
    """Rank entry point under ``launcher.dist_backend=gloo``: the group exists before the task and
    the task does not own it (the rank's launcher opened it and tears it down)."""
    existed = D.is_distributed()
    pg = D.open_process_group()
    D.barrier()
    return {"existed": existed, "owned": pg.owned, "backend": dist.get_backend(),
            "world_size": pg.info.world_size}


def fail_on_rank_one(cfg) -> int:
    """Rank entry point: rank 1 raises."""
    if int(os.environ["RANK"]) == 1:
        raise ValueError("rank one is broken")
    return 0
