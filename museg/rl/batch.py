"""Per-step prompt batches: data order, per-rank shards, video decoding with prefetch, replacement.

The data order is a stream of epoch-wise permutations: epoch ``e`` is
``torch.randperm(N, generator=Generator().manual_seed(data_seed + e))`` (or ``arange`` without
shuffling). Optimizer step ``s`` consumes the global positions ``[consumed, consumed + GB)`` of that
stream, ``GB = world_size * per_device_train_batch_size * gradient_accumulation_steps``; rank ``r``
takes the contiguous ``r``-th shard. The position (``consumed``) is all a checkpoint needs.

Each prompt's video is decoded once per step through a :class:`museg.data.video.FrameCache` on a
single background thread that also decodes the next ``video.prefetch`` steps ahead. A video that
fails (``VideoError``) is written to ``run_dir/quarantine.jsonl`` and, with
``video.on_failure=replace``, the sample is swapped for a deterministic pseudo-random other sample
(seeded by data_seed, position and attempt), so every rank still has a full batch (ZeRO-3 needs
every rank to run the vision tower). More than ``max(1, max_failure_fraction * N)`` distinct broken
videos aborts the run.

Example::

    batcher = StepBatcher(samples, video_cfg, data_seed=42, shuffle=True, per_rank=2,
                          rank=0, world_size=1, run_dir=run_dir)
    items = batcher.get(consumed=0)        # list[PromptItem] with .sample and .video
    batcher.close()
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["DataOrder", "PromptItem", "StepBatcher", "VideoFailureLimitError", "stable_seed"]

log = logging.getLogger(__name__)


class VideoFailureLimitError(RuntimeError):
    """Too many distinct videos failed to decode."""


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
        decode_fn: Any = None,
    ) -> None:
        from museg.data.video import FrameCache, video_spec_from_cfg

        self.samples = list(samples)
        self.order = DataOrder(len(self.samples), data_seed, shuffle)
        self.data_seed = int(data_seed)
        self.per_rank, self.rank, self.world_size = per_rank, rank, world_size
        self.global_batch = per_rank * world_size
        self.spec = dict(video_spec_from_cfg(video_cfg))
        self.backend = video_cfg.get("backend", "torchcodec")
        self.timeout = video_cfg.get("decode_timeout_s")
        self.on_failure = video_cfg.get("on_failure", "replace")
        self.max_fraction = float(video_cfg.get("max_failure_fraction", 0.05))
        self.prefetch = max(0, int(video_cfg.get("prefetch", 2) or 0))
        cache_cfg = video_cfg.get("cache") or {}
        disk = Path(cache_dir) / "frames" if (cache_dir and cache_cfg.get("disk")) else None
        self.cache = FrameCache(memory_items=int(cache_cfg.get("memory_items", 8)), disk_dir=disk)
        self._decode = decode_fn or self._cache_get
        self.run_dir = Path(run_dir) if run_dir else None
        self.failed_paths: dict[str, str] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="museg-decode")
        self._futures: dict[str, Future] = {}
        self.num_replaced = 0

    # -- decoding ----------------------------------------------------------------------------
    def _cache_get(self, path: str) -> Any:
        return self.cache.get(path, self.spec, backend=self.backend, timeout_s=self.timeout)

    def _submit(self, path: str) -> Future:
        with self._lock:
            fut = self._futures.get(path)
            if fut is None:
                fut = self._pool.submit(self._decode, path)
                self._futures[path] = fut
            return fut

    def _result(self, path: str) -> Any:
        fut = self._submit(path)
        try:
            return fut.result()
        finally:
            with self._lock:
                self._futures.pop(path, None)

    def rank_positions(self, consumed: int) -> list[int]:
        start = consumed + self.rank * self.per_rank
        return list(range(start, start + self.per_rank))

    def prefetch_from(self, consumed: int) -> None:
        """Queue the decodes of the steps starting at ``consumed`` (this one + ``prefetch``)."""
        for k in range(self.prefetch + 1):
            for pos in self.rank_positions(consumed + k * self.global_batch):
                s = self.samples[self.order.indices(pos, 1)[0]]
                if s.video_path not in self.failed_paths:
                    self._submit(s.video_path)

    # -- failures ----------------------------------------------------------------------------
    def _quarantine(self, sample: Any, err: BaseException, position: int) -> None:
        from museg.data.video import VideoError

        self.failed_paths[sample.video_path] = f"{type(err).__name__}: {err}"
        log.warning("video %s (%s) failed: %s -> %s", sample.video_path,
                    getattr(sample, "source", "?"), err,
                    "replacing the sample" if self.on_failure == "replace" else "stopping")
        if self.run_dir is not None:
            name = "quarantine.jsonl" if self.rank == 0 else f"quarantine.rank{self.rank}.jsonl"
            rec = {"video_path": sample.video_path, "source": getattr(sample, "source", None),
                   "position": position, "error": type(err).__name__, "message": str(err),
                   "cause": repr(getattr(err, "cause", None)) if isinstance(err, VideoError) else None}
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with (self.run_dir / name).open("a") as f:
                f.write(json.dumps(rec) + "\n")
        limit = max(1, int(self.max_fraction * len(self.samples)))
        if len(self.failed_paths) > limit:
            raise VideoFailureLimitError(
                f"{len(self.failed_paths)} distinct videos failed to decode (> {limit} = "
                f"video.max_failure_fraction {self.max_fraction} of {len(self.samples)}); see "
                f"quarantine.jsonl (fix: repair the videos, run task=preflight, or raise "
                f"video.max_failure_fraction)")

    def _replacement(self, position: int, attempt: int) -> Any:
        g = torch.Generator().manual_seed(stable_seed(self.data_seed, "replace", position, attempt))
        for _ in range(4 * len(self.samples)):
            cand = self.samples[int(torch.randint(len(self.samples), (1,), generator=g))]
            if cand.video_path not in self.failed_paths:
                return cand
        raise VideoFailureLimitError("every video of the training set failed to decode")

    # -- the step ----------------------------------------------------------------------------
    def get(self, consumed: int) -> list[PromptItem]:
        """This rank's prompts for the step starting at global position ``consumed``."""
        from museg.data.video import VideoError

        self.prefetch_from(consumed)
        items = []
        for pos in self.rank_positions(consumed):
            sample = self.samples[self.order.indices(pos, 1)[0]]
            replaced: list[str] = []
            attempt = 0
            while True:
                if sample.video_path in self.failed_paths:
                    err: BaseException | None = None
                else:
                    try:
                        video = self._result(sample.video_path)
                        break
                    except VideoError as e:
                        err = e
                        if self.on_failure != "replace":
                            self._quarantine(sample, e, pos)
                            raise
                        self._quarantine(sample, e, pos)
                replaced.append(getattr(sample, "source", sample.video_path))
                attempt += 1
                sample = self._replacement(pos, attempt)
                del err
            if replaced:
                self.num_replaced += 1
            items.append(PromptItem(position=pos, sample=sample, video=video,
                                    replaced_from=replaced))
        # decode the following steps while this one trains
        self.prefetch_from(consumed + self.global_batch)
        return items

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
