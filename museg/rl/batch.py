"""Per-step prompt batches (TRL batch semantics): data order, completion layout, video decoding.

``train.per_device_train_batch_size`` (``pd``) counts *completions* per rank per micro-step. A
micro-step holds ``pd x world_size`` completions = ``P = pd x world_size / G`` prompts; an optimizer
step has ``gradient_accumulation_steps`` (``A``) micro-steps, i.e. ``P x A`` prompts. Global
completion ``k`` of a micro-step belongs to prompt ``k // G`` (generation ``k % G``) and rank ``r``
handles completions ``[r*pd, (r+1)*pd)``, so a group may span ranks (MUSEG: ``pd`` 1 on 8 GPUs with
G 8: one prompt per micro-step, one completion per GPU). :func:`rank_runs` gives a rank's share as
``(prompt offset, first generation, end generation)`` runs.

The data order is a stream of epoch-wise permutations: epoch ``e`` is
``torch.randperm(N, generator=Generator().manual_seed(data_seed + e))`` (or ``arange`` without
shuffling), identical on every rank. Step ``s`` consumes the prompt positions
``[consumed, consumed + P*A)``; micro-step ``m`` the ``P`` positions from ``consumed + m*P``. The
position (``consumed``, counted in prompts) is all a checkpoint needs.

A rank decodes only the videos of the prompts it touches, through a
:class:`museg.data.video.VideoLoader` (frame cache + background decoding of the next
``video.prefetch`` steps). A video that fails (a typed ``VideoFailure``) goes through :class:`museg.data.video.FailurePolicy` (quarantine + deterministic replacement, or stop
with ``on_failure=fail``). Because several ranks may hold parts of one group, the ranks exchange
their failures after each decoding round (one ``all_gather_object`` per step) so that every rank
knows the same failed videos and picks the same replacement for a position; a decode worker that
cannot start is a :class:`DecodeWorkerError` (one line), not a bad video.

Example::

    batcher = StepBatcher(samples, cfg.video, data_seed=42, shuffle=True, per_device=8,
                          num_generations=8, accumulation=2, rank=0, world_size=1, run_dir=run_dir)
    slots = batcher.get(consumed=0)    # list[Slot]: micro-step, position, generations, item
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

from museg import dist as D
from museg.data.video import (
    DecodeWorkerError,
    FailureBudgetExceeded,
    FailurePolicy,
    VideoFailure,
    VideoLoader,
)

__all__ = ["DataOrder", "PromptItem", "Slot", "StepBatcher", "stable_seed",
           "prompts_per_micro_step", "rank_runs", "steps_per_epoch"]

log = logging.getLogger(__name__)


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed derived from ``parts`` (stable across processes and python runs).

    >>> stable_seed(1, 2) == stable_seed(1, 2) != stable_seed(2, 1)
    True
    """
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def prompts_per_micro_step(per_device: int, world_size: int, num_generations: int) -> int:
    """``P = per_device x world_size / G``; raises ``ValueError`` when it does not divide.

    >>> prompts_per_micro_step(1, 8, 8), prompts_per_micro_step(32, 1, 8)
    (1, 4)
    """
    total = int(per_device) * int(world_size)
    if total < 1 or total % int(num_generations):
        raise ValueError(
            f"train.per_device_train_batch_size: {per_device} completions x {world_size} "
            f"process(es) = {total} is not a multiple of num_generations {num_generations} (fix: "
            f"make per_device_train_batch_size x processes a multiple of num_generations)")
    return total // int(num_generations)


def rank_runs(per_device: int, world_size: int, num_generations: int,
              rank: int) -> list[tuple[int, int, int]]:
    """Rank ``rank``'s completions of a micro-step as ``(prompt offset, first gen, end gen)`` runs.

    >>> rank_runs(1, 8, 8, 3)              # MUSEG: one completion of the one prompt per GPU
    [(0, 3, 4)]
    >>> rank_runs(12, 2, 8, 0), rank_runs(12, 2, 8, 1)
    ([(0, 0, 8), (1, 0, 4)], [(1, 4, 8), (2, 0, 8)])
    """
    prompts_per_micro_step(per_device, world_size, num_generations)
    g = int(num_generations)
    runs: list[tuple[int, int, int]] = []
    for k in range(rank * per_device, (rank + 1) * per_device):
        p, gen = divmod(k, g)
        if runs and runs[-1][0] == p:
            runs[-1] = (p, runs[-1][1], gen + 1)
        else:
            runs.append((p, gen, gen + 1))
    return runs


def steps_per_epoch(num_prompts: int, prompts_per_step: int) -> int:
    """Optimizer steps in one pass: ``floor(N / (P x gradient_accumulation_steps))``.

    >>> steps_per_epoch(5600, 2), steps_per_epoch(10, 4)
    (2800, 2)
    """
    return int(num_prompts) // int(prompts_per_step)


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


@dataclass
class Slot:
    """This rank's share of one prompt: micro-step, generations ``[gen_start, gen_end)``, item."""

    micro: int
    position: int
    gen_start: int
    gen_end: int
    item: PromptItem | None = None

    @property
    def generations(self) -> list[int]:
        return list(range(self.gen_start, self.gen_end))


class StepBatcher:
    """This rank's slots (prompts + generation runs) of each step, videos decoded ahead of time."""

    def __init__(
        self,
        samples: Sequence[Any],
        video_cfg: Mapping[str, Any],
        data_seed: int,
        shuffle: bool,
        per_device: int,
        num_generations: int,
        accumulation: int = 1,
        rank: int = 0,
        world_size: int = 1,
        run_dir: str | Path | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.samples = list(samples)
        self.order = DataOrder(len(self.samples), data_seed, shuffle)
        self.rank, self.world_size = rank, world_size
        self.prompts_per_micro = prompts_per_micro_step(per_device, world_size, num_generations)
        self.accumulation = int(accumulation)
        self.prompts_per_step = self.prompts_per_micro * self.accumulation
        self.runs = rank_runs(per_device, world_size, num_generations, rank)
        self.prefetch = max(0, int(video_cfg.prefetch or 0))
        self.loader = VideoLoader.from_cfg(video_cfg, cache_dir=cache_dir)
        self.policy = FailurePolicy.from_cfg(video_cfg, len(self.samples), run_dir,
                                             seed=int(data_seed), rank=rank,
                                             key_fn=lambda i: self.samples[i].video_path)
        self.num_replaced = 0  # positions of the whole run replaced (same count on every rank)

    @property
    def failed_paths(self) -> dict[str, str]:
        return dict(self.policy.failed)

    def restore_failed(self, failed: Mapping[str, str] | Sequence[str]) -> None:
        """Known-bad videos from a checkpoint (so replacements after a resume are the same)."""
        items = failed.items() if isinstance(failed, Mapping) else ((k, "failed") for k in failed)
        for key, msg in items:
            self.policy.failed[str(key)] = str(msg)

    def step_positions(self, consumed: int) -> list[int]:
        """All prompt positions of the step starting at ``consumed`` (every rank agrees)."""
        return list(range(consumed, consumed + self.prompts_per_step))

    def rank_slots(self, consumed: int) -> list[Slot]:
        """This rank's slots, ordered by micro-step then position (= local completion order)."""
        out = []
        for m in range(self.accumulation):
            base = consumed + m * self.prompts_per_micro
            out += [Slot(m, base + p, a, b) for p, a, b in self.runs]
        return out

    def prefetch_from(self, consumed: int) -> None:
        """Queue the decodes of ``prefetch`` steps starting at prompt position ``consumed``."""
        paths = []
        for k in range(self.prefetch):
            for slot in self.rank_slots(consumed + k * self.prompts_per_step):
                idx = self.order.indices(slot.position, 1)[0]
                if not self.policy.is_failed(idx):
                    paths.append(self.samples[idx].video_path)
        self.loader.submit(paths)

    def _decode(self, idx: int) -> Any:
        """The decoded video of sample ``idx`` or its ``VideoFailure``."""
        self.policy.mark_seen(idx)  # the failure budget counts distinct videos seen
        return self.loader.load(self.samples[idx].video_path)

    def _describe(self, idx: int, pos: int) -> dict[str, Any]:
        return {"source": getattr(self.samples[idx], "source", None),
                "video_path": self.samples[idx].video_path, "position": pos}

    def get(self, consumed: int) -> list[Slot]:
        """This rank's slots of the step starting at ``consumed``, with decoded videos.

        Collective when distributed (every rank must call it for every step).
        """
        slots = self.rank_slots(consumed)
        original = {s.position: self.order.indices(s.position, 1)[0] for s in slots}
        current = dict(original)
        attempts = dict.fromkeys(current, 0)
        videos: dict[int, Any] = {}
        replaced_positions: set[int] = set()  # over all ranks, known after the last round
        for _round in range(self.policy.max_attempts + 1):
            mine, stop = [], None  # stop: an error every rank raises (none waits forever)
            try:
                # 1. positions whose candidate is known bad take their next replacement
                for pos in current:
                    while self.policy.is_failed(current[pos]):
                        attempts[pos] += 1
                        if attempts[pos] > self.policy.max_attempts:
                            raise FailureBudgetExceeded(
                                f"no loadable replacement for item {original[pos]} after "
                                f"{self.policy.max_attempts} attempts")
                        current[pos] = self.policy.replacement(original[pos], attempts[pos])
                        videos.pop(pos, None)
                # 2. decode what is missing
                for pos, idx in current.items():
                    if pos not in videos:
                        v = self._decode(idx)
                        if isinstance(v, VideoFailure):
                            mine.append((pos, idx, v.error))
                        else:
                            videos[pos] = v
            except (DecodeWorkerError, FailureBudgetExceeded) as e:
                stop = (type(e).__name__, str(e))
            # 3. every rank learns every failure of the round
            swapped = sorted(p for p in current if current[p] != original[p])
            parts = D.all_gather_object((mine, swapped, stop))
            for r, (_, _, err) in enumerate(parts):
                if err is not None:
                    cls = DecodeWorkerError if err[0] == "DecodeWorkerError" else \
                        FailureBudgetExceeded
                    raise cls(err[1] if r == self.rank else f"rank {r}: {err[1]}")
            failures = [f for part, _, _ in parts for f in part]
            if not failures:
                replaced_positions = {p for _, sw, _ in parts for p in sw}
                break
            failures.sort(key=lambda f: (f[0], f[1]))
            for pos, idx, err in failures:
                if not self.policy.is_failed(idx):
                    self.policy.record(idx, err, self._describe(idx, pos))
            if self.policy.on_failure == "fail":
                raise failures[0][2]
        else:
            raise FailureBudgetExceeded(f"videos of step at position {consumed} kept failing after "
                                        f"{self.policy.max_attempts} rounds of replacement")
        self.num_replaced += len(replaced_positions)
        for s in slots:
            idx, orig = current[s.position], original[s.position]
            replaced = [] if idx == orig else [getattr(self.samples[orig], "source", str(orig))]
            s.item = PromptItem(position=s.position, sample=self.samples[idx],
                                video=videos[s.position], replaced_from=replaced)
        self.prefetch_from(consumed + self.prompts_per_step)  # decode ahead while this step trains
        return slots

    def close(self) -> None:
        self.loader.close()
