"""Per-step prompt batches: data order, per-rank shards, video decoding with prefetch, replacement.

The data order is a stream of epoch-wise permutations: epoch ``e`` is
``torch.randperm(N, generator=Generator().manual_seed(data_seed + e))`` (or ``arange`` without
shuffling). Optimizer step ``s`` consumes the global positions ``[consumed, consumed + GB)`` of that
stream, ``GB = world_size * per_device_train_batch_size * gradient_accumulation_steps``; rank ``r``
takes the contiguous ``r``-th shard. The position (``consumed``) is all a checkpoint needs.

Each prompt's video is decoded once per step through a :class:`museg.data.video.FrameCache`
(shared by G rollouts and every forward pass); a :class:`museg.data.video.Prefetcher` decodes the
next ``video.prefetch`` steps in background threads while the current one trains. A video that
fails (``VideoError``) goes through :class:`museg.data.video.FailurePolicy`: quarantined in
``run_dir/quarantine.jsonl`` and, with ``video.on_failure=replace``, the sample is swapped for a
deterministic other sample (seeded by data_seed, index and attempt), so every rank still has a full
batch (ZeRO-3 needs every rank to run the vision tower); past ``video.max_failure_fraction`` of
broken items the run aborts (``FailureBudgetExceeded``).

Example::

    batcher = StepBatcher(samples, cfg.video, data_seed=42, shuffle=True, per_rank=2,
                          rank=0, world_size=1, run_dir=run_dir)
    items = batcher.get(consumed=0)        # list[PromptItem] with .sample and .video
    batcher.close()
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["DataOrder", "PromptItem", "StepBatcher", "stable_seed"]

log = logging.getLogger(__name__)


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed derived from ``parts`` (stable across processes and python runs).

    >>> stable_seed(1, 2) == stable_seed(1, 2) != stable_seed(2, 1)
    True
    """
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class DataOrder:
    """Global position -> dataset index over epoch-wise permutations.

    >>> order = DataOrder(4, data_seed=0, shuffle=False)
    >>> order.indices(2, 4)
    [2, 3, 0, 1]
    >>> sorted(DataOrder(5, 3).indices(0, 5))
    [0, 1, 2, 3, 4]
    """

    def __init__(self, n: int, data_seed: int, shuffle: bool = True) -> None:
        if n <= 0:
            raise ValueError("the training set is empty (fix: check data.train_file / filters)")
        self.n, self.data_seed, self.shuffle = n, int(data_seed), shuffle
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            if self.shuffle:
                g = torch.Generator().manual_seed(self.data_seed + epoch)
                self._perms[epoch] = torch.randperm(self.n, generator=g).tolist()
            else:
                self._perms[epoch] = list(range(self.n))
            for old in [e for e in self._perms if e < epoch - 1]:
                del self._perms[old]
        return self._perms[epoch]

    def indices(self, start: int, count: int) -> list[int]:
        return [self._perm(p // self.n)[p % self.n] for p in range(start, start + count)]


@dataclass
class PromptItem:
    """One prompt of a step: the sample actually used, its decoded video and bookkeeping."""

    position: int
    sample: Any
    video: Any
    replaced_from: list[str] = field(default_factory=list)


class StepBatcher:
    """Produces this rank's ``per_rank`` prompts for a step, decoding videos ahead of time."""

    def __init__(
        self,
        samples: Sequence[Any],
        video_cfg: Mapping[str, Any],
        data_seed: int,
        shuffle: bool,
        per_rank: int,
        rank: int = 0,
        world_size: int = 1,
        run_dir: str | Path | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        from museg.data.video import FailurePolicy, FrameCache, Prefetcher, video_spec_from_cfg

        self.samples = list(samples)
        self.order = DataOrder(len(self.samples), data_seed, shuffle)
        self.per_rank, self.rank, self.world_size = per_rank, rank, world_size
        self.global_batch = per_rank * world_size
        spec = dict(video_spec_from_cfg(video_cfg))
        self.prefetch = max(0, int(video_cfg.get("prefetch", 2) or 0))
        cache_cfg = video_cfg.get("cache") or {}
        disk = Path(str(cache_dir)).expanduser() / "frames" if (
            cache_dir and cache_cfg.get("disk")) else None
        self.cache = FrameCache(memory_items=int(cache_cfg.get("memory_items", 8)), disk_dir=disk)
        self.prefetcher = Prefetcher(self.cache, spec, backend=video_cfg.get("backend", "torchcodec"),
                                     timeout_s=video_cfg.get("decode_timeout_s"),
                                     workers=max(1, min(2, self.prefetch)))
        self.policy = FailurePolicy.from_cfg(video_cfg, len(self.samples), run_dir,
                                             seed=int(data_seed), rank=rank,
                                             key_fn=lambda i: self.samples[i].video_path)

    @property
    def failed_paths(self) -> dict[str, str]:
        return dict(self.policy.failed)

    @property
    def num_replaced(self) -> int:
        return self.policy.num_replaced

    def rank_positions(self, consumed: int) -> list[int]:
        start = consumed + self.rank * self.per_rank
        return list(range(start, start + self.per_rank))

    def prefetch_from(self, consumed: int) -> None:
        """Queue the decodes of ``prefetch`` steps starting at global position ``consumed``."""
        paths = []
        for k in range(self.prefetch):
            for pos in self.rank_positions(consumed + k * self.global_batch):
                idx = self.order.indices(pos, 1)[0]
                if not self.policy.is_failed(idx):
                    paths.append(self.samples[idx].video_path)
        self.prefetcher.submit(paths)

    def get(self, consumed: int) -> list[PromptItem]:
        """This rank's prompts for the step starting at global position ``consumed``."""
        items = []
        for pos in self.rank_positions(consumed):
            idx = self.order.indices(pos, 1)[0]
            used, video = self.policy.load(
                idx, lambda i: self.prefetcher.get(self.samples[i].video_path),
                describe=lambda i, pos=pos: {"source": getattr(self.samples[i], "source", None),
                                             "video_path": self.samples[i].video_path,
                                             "position": pos})
            replaced = [] if used == idx else [getattr(self.samples[idx], "source", str(idx))]
            items.append(PromptItem(position=pos, sample=self.samples[used], video=video,
                                    replaced_from=replaced))
        self.prefetch_from(consumed + self.global_batch)  # decode ahead while this step trains
        return items

    def close(self) -> None:
        self.prefetcher.close()
