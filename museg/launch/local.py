"""``launcher=local``: N processes on this machine through torch.distributed's elastic launcher.

``python -m museg.run launcher=local launcher.nproc_per_node=N ...`` runs the task in N spawned
processes (the API behind ``torchrun --standalone``): each gets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` (a free port) and initialises torch.distributed
with gloo on CPU or nccl on GPU (``launcher.dist_backend=auto|gloo|nccl``). A failure on any rank
stops all of them and is reported with its traceback. Rank 0's return value is returned.

Equivalent by hand (what ``launcher.dry_run=true`` prints)::

    torchrun --standalone --nproc-per-node 2 -m museg.run <the same overrides>

Example::

    from museg.launch.local import launch_local
    summary = launch_local(train, cfg, nproc=2)      # cfg composed and resolved

The per-process command lines:

    >>> local_commands(["task=train", "model=tiny"], nproc=2)[1]
    'RANK=1 LOCAL_RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 python -m museg.run task=train model=tiny'
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import shlex
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch.distributed.elastic.multiprocessing.errors import record

from museg.dist import process_group

__all__ = ["LocalLaunchError", "launch_local", "local_commands", "resolve_backend"]

log = logging.getLogger(__name__)
_LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s][rank %(rank)s] - %(message)s"


class LocalLaunchError(RuntimeError):
    """A rank of a ``launcher=local`` run failed (message: rank, error, where its log is)."""


def resolve_backend(backend: str | None, use_cuda: bool) -> str:
    """``auto`` -> nccl with CUDA, gloo without.

    >>> resolve_backend("auto", False), resolve_backend("auto", True), resolve_backend("gloo", True)
    ('gloo', 'nccl', 'gloo')
    """
    if backend in (None, "", "auto"):
        return "nccl" if use_cuda else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"launcher.dist_backend={backend!r} is not auto, gloo or nccl "
                         "(fix: launcher.dist_backend=auto)")
    return backend


def local_commands(overrides: Sequence[str], nproc: int, port: int = 29500,
                   python: str = "python") -> list[str]:
    """The command each local rank runs (one line per rank, env vars first)."""
    args = " ".join(shlex.quote(o) for o in overrides)
    return [f"RANK={r} LOCAL_RANK={r} WORLD_SIZE={nproc} MASTER_ADDR=127.0.0.1 "
            f"MASTER_PORT={port} {python} -m museg.run {args}".rstrip() for r in range(nproc)]


class _RankFilter(logging.Filter):
    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = self.rank
        return True


def _configure_worker_logging(rank: int, log_file: str | None) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file and rank == 0:
        handlers.append(logging.FileHandler(log_file, mode="a"))
    for h in handlers:
        h.setFormatter(logging.Formatter(_LOG_FORMAT))
        h.addFilter(_RankFilter(rank))
        root.addHandler(h)
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)


@record  # a failing rank's traceback is reported by the launcher
def _worker(fn: Callable[[Any], Any], cfg: Any, backend: str | None, log_file: str | None) -> Any:
    """Entry point of each spawned rank."""
    rank = int(os.environ.get("RANK", "0"))
    _configure_worker_logging(rank, log_file)
    explicit = backend not in (None, "", "auto")  # auto: the task opens the group itself
    with process_group(backend) if explicit else contextlib.nullcontext():
        return fn(cfg)


def launch_local(fn: Callable[[Any], Any], cfg: Any, nproc: int, backend: str | None = "auto",
                 log_file: str | os.PathLike | None = None) -> Any:
    """Run ``fn(cfg)`` in ``nproc`` local processes; returns rank 0's result.

    ``cfg`` is resolved before it is sent (spawned ranks have no Hydra runtime). ``fn`` must be
    importable by name (a module-level function) because the ranks are spawned, not forked.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise ValueError(f"launcher.nproc_per_node={nproc} < 1 (fix: use 1 or more)")
    if isinstance(cfg, DictConfig):
        cfg = copy.deepcopy(cfg)
        OmegaConf.resolve(cfg)
    if backend not in (None, "", "auto"):
        resolve_backend(backend, False)  # validate early, in the parent
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc,
                          run_id=f"museg-{uuid.uuid4().hex[:12]}", rdzv_backend="c10d",
                          rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=0.2,
                          start_method="spawn")
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS",)}
    if "OMP_NUM_THREADS" not in os.environ:  # torchrun's rule: do not oversubscribe the cores
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    log.info("launcher=local: %d processes (backend %s)", nproc, backend or "auto")
    try:
        results = elastic_launch(config, _worker)(
            fn, cfg, backend, str(Path(log_file)) if log_file else None)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        msg = failure.message
        if isinstance(msg, dict):  # the error file written by @record
            msg = msg.get("message", "")
        msg = str(msg or "").strip()
        first = msg.splitlines()[-1] if msg else f"exit code {failure.exitcode}"
        raise LocalLaunchError(f"launcher=local: rank {rank} failed: {first} (its traceback "
                               "is printed above)") from e
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return results[0]
