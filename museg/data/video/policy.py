"""What to do when a sample's video fails: replace the sample, quarantine the file, or abort.

Under ZeRO-3 every rank must run the vision tower every step, so a training sample whose video
fails (:class:`~museg.data.video.errors.VideoError`) is *replaced* by another sample (chosen
deterministically from ``seed``, the index and the attempt, never a known-bad one) instead of being
dropped. Each failure is appended to a quarantine jsonl in the run directory (one JSON object a
line: index, key, error type, message, time, plus what ``describe(index)`` returns).

The failure budget counts *videos*, not samples: when the distinct failed videos exceed
``max_failure_fraction`` of the distinct videos seen so far, :class:`FailureBudgetExceeded` aborts
the run with a clear message. Early in a run the denominator is at least
``min(MIN_VIDEOS_JUDGED, distinct videos of the dataset)``, so one early failure does not abort a
run whose budget allows it. ``on_failure="fail"`` re-raises the first failure instead.

Example:
    >>> pol = FailurePolicy(num_items=4, max_failure_fraction=0.5)
    >>> def load(i):
    ...     if i == 1:
    ...         raise VideoUnreadableError("b.mp4", "empty file (0 bytes)")
    ...     return f"frames of {i}"
    >>> used, frames = pol.load(1, load)
    >>> used != 1, frames.startswith("frames of"), pol.num_failed
    (True, True, 1)
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig

from museg.data.video.errors import VideoError, VideoUnreadableError  # noqa: F401 (doctest)

log = logging.getLogger(__name__)
T = TypeVar("T")
#: The budget's denominator is at least this many videos (or all of them when there are fewer).
MIN_VIDEOS_JUDGED = 20


class FailureBudgetExceeded(RuntimeError):
    """Too many videos failed: the data (or ``paths.video_root``) is broken, stop the run."""


class FailurePolicy:
    """Replace-or-fail policy over a dataset of ``num_items`` samples (see module docstring).

    ``key_fn(index)`` names the failing unit (default: the index; use the video path so samples
    sharing a broken video count once and are all avoided as replacements).
    """

    def __init__(self, num_items: int, on_failure: str = "replace",
                 max_failure_fraction: float = 0.05,
                 quarantine_path: str | Path | None = None, seed: int = 0,
                 key_fn: Callable[[int], str] | None = None,
                 max_attempts: int = 100) -> None:
        if on_failure not in ("replace", "fail"):
            raise ValueError(f"video.on_failure: must be 'replace' or 'fail', got {on_failure!r}")
        if not 0 <= max_failure_fraction <= 1:
            raise ValueError(f"video.max_failure_fraction: must be in [0, 1], got "
                             f"{max_failure_fraction}")
        if num_items < 1:
            raise ValueError(f"FailurePolicy needs at least one item, got num_items={num_items}")
        self.num_items = int(num_items)
        self.on_failure = on_failure
        self.max_failure_fraction = float(max_failure_fraction)
        self.quarantine_path = Path(quarantine_path) if quarantine_path else None
        self.seed = int(seed)
        self.key_fn = key_fn or str
        self.max_attempts = int(max_attempts)
        self.failed: dict[str, str] = {}  # key -> "Type: message"
        self.seen: set[str] = set()  # distinct keys (videos) a load was attempted for
        self.num_videos = len({self.key_fn(i) for i in range(self.num_items)})
        self.num_replaced = 0
        self._lock = threading.Lock()

    @classmethod
    def from_cfg(cls, video_cfg: DictConfig, num_items: int, run_dir: str | Path | None,
                 seed: int = 0, rank: int = 0,
                 key_fn: Callable[[int], str] | None = None) -> FailurePolicy:
        """From the composed ``video`` config (``cfg.video``: ``on_failure``,
        ``max_failure_fraction``); quarantine goes to ``run_dir/quarantine.jsonl``
        (``quarantine.rank<R>.jsonl`` on other ranks)."""
        name = "quarantine.jsonl" if rank == 0 else f"quarantine.rank{rank}.jsonl"
        return cls(num_items, on_failure=str(video_cfg.on_failure),
                   max_failure_fraction=float(video_cfg.max_failure_fraction),
                   quarantine_path=Path(run_dir) / name if run_dir else None, seed=seed,
                   key_fn=key_fn)

    @property
    def num_failed(self) -> int:
        return len(self.failed)

    def mark_seen(self, index: int) -> None:
        """Count ``index``'s video as seen (attempted), for the failure budget."""
        with self._lock:
            self.seen.add(self.key_fn(index))

    def failure_fraction(self) -> tuple[int, int]:
        """``(distinct failed videos, denominator)`` of the failure budget (see module doc)."""
        seen = len(self.seen | set(self.failed))
        return len(self.failed), max(seen, min(MIN_VIDEOS_JUDGED, self.num_videos), 1)

    def is_failed(self, index: int) -> bool:
        return self.key_fn(index) in self.failed

    def record(self, index: int, err: BaseException, extra: Mapping[str, Any] | None = None) -> None:
        """Quarantine ``index`` (log + jsonl line); in ``replace`` mode abort once the failure
        budget is exceeded."""
        key = self.key_fn(index)
        with self._lock:
            new = key not in self.failed
            self.failed[key] = f"{type(err).__name__}: {err}"
            self.seen.add(key)
            if new and self.quarantine_path is not None:
                rec = {"index": index, "key": key, "error": type(err).__name__,
                       "path": getattr(err, "path", None), "cause": getattr(err, "cause", str(err)),
                       "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **dict(extra or {})}
                self.quarantine_path.parent.mkdir(parents=True, exist_ok=True)
                with self.quarantine_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(rec, default=str) + "\n")
        n, seen = self.failure_fraction()
        if new:
            log.warning("video failure %d (%s): %s", n, key, err)
        if self.on_failure == "replace" and n / seen > self.max_failure_fraction:
            where = f"; see {self.quarantine_path}" if self.quarantine_path else ""
            raise FailureBudgetExceeded(
                f"{n} distinct videos failed of {seen} distinct videos seen (of "
                f"{self.num_videos} in the data), more than "
                f"video.max_failure_fraction={self.max_failure_fraction}{where} (fix: repair or "
                f"remove the videos, check paths.video_root, run task=preflight, or raise "
                f"video.max_failure_fraction)")

    def replacement(self, index: int, attempt: int) -> int:
        """A deterministic substitute for ``index`` that is not known to fail."""
        rng = random.Random(f"{self.seed}:{index}:{attempt}")
        for _ in range(64):
            j = rng.randrange(self.num_items)
            if j != index and not self.is_failed(j):
                return j
        for j in range(self.num_items):
            k = (index + 1 + j) % self.num_items
            if not self.is_failed(k):
                return k
        raise FailureBudgetExceeded("every item failed to decode (fix: check paths.video_root)")

    def load(self, index: int, load_fn: Callable[[int], T],
             describe: Callable[[int], Mapping[str, Any]] | None = None) -> tuple[int, T]:
        """``(used_index, load_fn(used_index))``: ``index`` itself or, after failures, a
        replacement. Raises the failure with ``on_failure="fail"`` and
        :class:`FailureBudgetExceeded` past the budget."""
        current = index
        for attempt in range(1, self.max_attempts + 1):
            if not self.is_failed(current):
                self.mark_seen(current)
                try:
                    result = load_fn(current)
                except VideoError as e:
                    self.record(current, e, describe(current) if describe else None)
                    if self.on_failure == "fail":
                        raise
                else:
                    if current != index:
                        with self._lock:
                            self.num_replaced += 1
                    return current, result
            current = self.replacement(index, attempt)
        raise FailureBudgetExceeded(f"no loadable replacement for item {index} after "
                                    f"{self.max_attempts} attempts")
