"""The one owner of the torch.distributed process group, plus the collectives museg uses.

The launcher (torchrun, accelerate, ``launcher=local``, or submitit's
``TorchDistributedEnvironment().export()``) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``. With ``WORLD_SIZE`` unset or 1 everything here is a no-op on a
single process.

Whoever needs a process group (the trainer, :mod:`museg.launch.job`, :mod:`museg.launch.local`)
takes it through :func:`open_process_group` / :func:`process_group`: the group is created unless one
exists, and only the caller that created it tears it down (:func:`cleanup_distributed`).

Example::

    with process_group(backend="gloo") as info:   # init here, destroy at the end if we created it
        mine = shard(global_batch, info.rank, info.world_size)
        all_rewards = all_gather_cat(local_rewards)   # rank order == global batch order
        failures = all_gather_object(my_failures)     # one entry per rank

    pg = open_process_group()                      # the same, split over setup / cleanup
    ...
    pg.release()
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "OwnedProcessGroup",
    "open_process_group",
    "process_group",
    "init_distributed",
    "is_distributed",
    "shard",
    "all_gather_cat",
    "all_reduce_mean",
    "all_gather_object",
    "broadcast_object",
    "barrier",
    "cleanup_distributed",
]

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run: rank, world size, local rank and torch device string."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_distributed() -> bool:
    """True when the default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def init_distributed(backend: str | None = None, device: str | None = None) -> DistInfo:
    """Initialise the default process group from env vars (idempotent) and return rank info.

    ``backend``: None picks ``nccl`` when CUDA is available (and device is not 'cpu'), else ``gloo``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if device is None:
        device = f"cuda:{local}" if use_cuda else "cpu"
    if use_cuda and device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    if world > 1 and not is_distributed():
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise RuntimeError(
                    f"WORLD_SIZE={world} but {var} is not set (fix: launch with torchrun / "
                    f"launcher=local, or export {var})"
                )
        backend = backend or ("nccl" if use_cuda and device.startswith("cuda") else "gloo")
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
    if is_distributed():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=device)


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Contiguous equal shard ``rank`` of ``items`` (length must divide by ``world_size``).

    >>> shard([0, 1, 2, 3, 4, 5], 1, 2)
    [3, 4, 5]
    """
    if len(items) % world_size:
        raise ValueError(f"{len(items)} items do not split over world_size={world_size}")
    n = len(items) // world_size
    return list(items[rank * n:(rank + 1) * n])


def _comm_device(t: torch.Tensor) -> torch.device:
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` (same shape on every rank) from all ranks along dim 0, in rank order."""
    if not is_distributed():
        return t
    dev = _comm_device(t)
    src = t.detach().to(dev).contiguous()
    parts = [torch.empty_like(src) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, src)
    return torch.cat(parts).to(t.device)


def all_reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """Mean of each scalar over ranks (same keys on every rank; sorted for a stable order)."""
    if not is_distributed() or not values:
        return dict(values)
    keys = sorted(values)
    vec = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    vec = vec.to(_comm_device(vec))
    dist.all_reduce(vec, op=dist.ReduceOp.SUM)
    vec = vec.cpu() / dist.get_world_size()
    return dict(zip(keys, vec.tolist(), strict=True))


def all_gather_object(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (picklable objects; ``[obj]`` when not distributed)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send a picklable object from ``src`` to every rank (no-op when not distributed)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if is_distributed():
        dist.barrier()


def cleanup_distributed(synchronize: bool = True) -> None:
    """Tear the process group down while the interpreter is fully alive.

    Pass ``synchronize=False`` on an error path (peers may never reach a barrier). The barrier
    lets every rank finish its last collective; ``gc.collect()`` then frees the gloo
    group (it can sit in a reference cycle) so its worker threads stop now: a gloo thread that
    drops a tensor during interpreter finalization aborts the process (SIGABRT, seen on 1 run in 4
    of the two-rank batch test).
    """
    if is_distributed():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()
        gc.collect()


@dataclass(frozen=True)
class OwnedProcessGroup:
    """What :func:`open_process_group` returns: rank info and whether this caller created the group."""

    info: DistInfo
    owned: bool

    def release(self, synchronize: bool = True) -> None:
        """Tear the group down if this caller created it (see :func:`cleanup_distributed`)."""
        if self.owned:
            cleanup_distributed(synchronize=synchronize)


def open_process_group(backend: str | None = None, device: str | None = None) -> OwnedProcessGroup:
    """:func:`init_distributed`, remembering whether this call created the process group."""
    existed = is_distributed()
    info = init_distributed(backend=backend, device=device)
    return OwnedProcessGroup(info=info, owned=not existed and is_distributed())


@contextlib.contextmanager
def process_group(backend: str | None = None, device: str | None = None) -> Iterator[DistInfo]:
    """Hold the process group for a block: created unless one exists, torn down at the end if the
    block created it (with a final barrier when the block finished, without one on an error, when
    peers may never reach it)."""
    pg = open_process_group(backend=backend, device=device)
    finished = False
    try:
        yield pg.info
        finished = True
    finally:
        pg.release(synchronize=finished)
