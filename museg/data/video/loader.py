"""THE video loading loop: decode ahead in the background, return a video or a typed failure.

Training (:class:`museg.rl.batch.StepBatcher`), evaluation (:mod:`museg.eval.runner`), preflight
(:mod:`museg.data.preflight`) and the demo warm-up (:func:`museg.demo.warmup.warmup_model`) all read
videos through a :class:`VideoLoader`: a :class:`~museg.data.video.cache.FrameCache` (memory LRU,
optional disk store) behind a :class:`~museg.data.video.prefetch.Prefetcher` (background threads;
with ``video.decode_timeout_s`` each decode runs in a killable worker process).

- ``submit(paths)`` queues decodes ahead of use (each pending path once).
- ``load(path)`` waits for one video and returns the :class:`DecodedVideo` or a
  :class:`VideoFailure` (the typed error, its status ``missing`` / ``broken`` / ``timeout`` and a
  one-line message); it never raises for a bad video. A decode worker that cannot start is the
  environment, not the video: :class:`DecodeWorkerError` (one line with the fix) is raised.
- ``iterate(paths, ahead)`` yields ``(path, video or failure)`` in order, ``ahead`` paths queued
  beyond the current one.
- ``failures`` (path -> :class:`VideoFailure`) and ``seen`` are the one failure account;
  ``failure_fraction()`` gives distinct failed videos over distinct videos seen. What a caller
  does with a failure is its own policy: training replaces the sample
  (:class:`~museg.data.video.policy.FailurePolicy`, agreed over ranks), evaluation scores it 0,
  preflight writes a verdict, the demo warm-up stops.

The frame-cache directory is chosen here only (:func:`frame_cache_dir`): ``<paths.cache_dir>/frames``
when ``video.cache.disk`` is true.

Example:
    >>> loader = VideoLoader.from_cfg(cfg.video, cache_dir=cfg.paths.cache_dir)  # doctest: +SKIP
    >>> loader.submit(next_paths)                                                # doctest: +SKIP
    >>> for path, v in loader.iterate(paths, ahead=2):                           # doctest: +SKIP
    ...     frames = None if isinstance(v, VideoFailure) else v.frames
    >>> loader.close()                                                           # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from museg.data.video.cache import FrameCache
from museg.data.video.decode import DecodedVideo
from museg.data.video.errors import (
    DecodeWorkerError,
    VideoError,
    VideoNotFoundError,
    VideoTimeoutError,
    VideoWorkerError,
)
from museg.data.video.plan import video_spec_from_cfg
from museg.data.video.prefetch import Prefetcher

__all__ = ["VideoFailure", "VideoLoader", "frame_cache_dir"]

#: What a dead or unstartable decode worker looks like to the caller (never a bad video).
_WORKER_ERRORS = (EOFError, BrokenPipeError, ConnectionError, VideoWorkerError)


@dataclass(frozen=True)
class VideoFailure:
    """A video that could not be decoded: ``path``, the typed ``error`` and readable views of it.

    >>> from museg.data.video.errors import VideoTimeoutError
    >>> f = VideoFailure("a.mp4", VideoTimeoutError("a.mp4", "too slow"))
    >>> f.status, f.message
    ('timeout', 'VideoTimeoutError: a.mp4: too slow')
    """

    path: str
    error: BaseException

    @property
    def status(self) -> str:
        """``missing`` (no such file), ``timeout`` (worker killed) or ``broken`` (anything else)."""
        if isinstance(self.error, VideoNotFoundError):
            return "missing"
        if isinstance(self.error, VideoTimeoutError):
            return "timeout"
        return "broken"

    @property
    def message(self) -> str:
        """``"<ErrorType>: <path>: <cause>"`` (what quarantine files and predictions record)."""
        return f"{type(self.error).__name__}: {self.error}"


def frame_cache_dir(disk: bool, cache_dir: str | os.PathLike | None) -> Path | None:
    """Where decoded frames are stored on disk: ``<cache_dir>/frames`` when ``disk``
    (``video.cache.disk``) is true and a cache directory is given, else ``None`` (memory only).

    >>> frame_cache_dir(True, "/c"), frame_cache_dir(False, "/c"), frame_cache_dir(True, None)
    (PosixPath('/c/frames'), None, None)
    """
    if not (cache_dir and disk):
        return None
    return Path(str(cache_dir)).expanduser() / "frames"


class VideoLoader:
    """Background decoding through one frame cache with typed failures (see module docstring).

    ``failure_types``: exceptions that mean "this video failed" (default :class:`VideoError`);
    ``fetch(path)`` replaces the cached decode (preflight's per-video check).
    """

    def __init__(self, spec: Mapping[str, Any], backend: str = "torchcodec",
                 timeout_s: float | None = None, memory_items: int = 8,
                 disk_dir: str | os.PathLike | None = None, workers: int = 2,
                 failure_types: tuple[type[BaseException], ...] = (VideoError,),
                 fetch: Callable[[str], Any] | None = None) -> None:
        self.spec = dict(spec)
        self.cache = FrameCache(memory_items=memory_items, disk_dir=disk_dir)
        self.prefetcher = Prefetcher(self.cache, self.spec, backend=backend, timeout_s=timeout_s,
                                     workers=workers, fetch=fetch)
        self.failure_types = tuple(failure_types)
        self.failures: dict[str, VideoFailure] = {}
        self.seen: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_cfg(cls, video_cfg: DictConfig, spec: Mapping[str, Any] | None = None,
                 cache_dir: str | os.PathLike | None = None, workers: int | None = None,
                 **kwargs: Any) -> VideoLoader:
        """From the composed ``video`` config (``cfg.video``): backend, ``decode_timeout_s``,
        ``cache`` (memory items, disk under :func:`frame_cache_dir`), ``prefetch`` (workers: 1 or
        2). ``spec`` defaults to the frame spec of ``video_cfg`` itself (evaluation passes
        ``eval.video``'s)."""
        if workers is None:
            workers = max(1, min(2, int(video_cfg.prefetch)))
        return cls(dict(spec if spec is not None else video_spec_from_cfg(video_cfg)),
                   backend=str(video_cfg.backend), timeout_s=video_cfg.decode_timeout_s,
                   memory_items=int(video_cfg.cache.memory_items),
                   disk_dir=frame_cache_dir(bool(video_cfg.cache.disk), cache_dir),
                   workers=workers, **kwargs)

    def submit(self, paths: Iterable[str | os.PathLike]) -> None:
        """Queue the decodes of ``paths`` in the background (each pending path once)."""
        self.prefetcher.submit(paths)

    def load(self, path: str | os.PathLike) -> DecodedVideo | VideoFailure:
        """The decoded video of ``path`` or its :class:`VideoFailure` (recorded in ``failures``);
        raises :class:`DecodeWorkerError` when the decode worker could not start or died."""
        path = os.fspath(path)
        with self._lock:
            self.seen.add(path)
        try:
            return self.prefetcher.get(path)
        except self.failure_types as e:
            failure = VideoFailure(path, e)
            with self._lock:
                self.failures[path] = failure
            return failure
        except _WORKER_ERRORS as e:
            raise DecodeWorkerError(
                f"{path}: the video decode worker process could not start or died before "
                f"answering ({type(e).__name__}: {e or 'pipe closed'}) (fix: check free memory "
                f"and /dev/shm, lower MUSEG_DECODE_WORKERS, or set video.decode_timeout_s=null to "
                f"decode in-process)") from None

    def get(self, path: str | os.PathLike) -> DecodedVideo:
        """Like :meth:`load` but raises the failure's typed error."""
        v = self.load(path)
        if isinstance(v, VideoFailure):
            raise v.error
        return v

    def iterate(self, paths: Sequence[str | os.PathLike],
                ahead: int = 2) -> Iterator[tuple[str, DecodedVideo | VideoFailure]]:
        """``(path, load(path))`` in order, keeping ``ahead`` later paths queued (0: no lookahead)."""
        paths = [os.fspath(p) for p in paths]
        queued = 0
        for i, path in enumerate(paths):
            want = min(len(paths), i + 1 + max(0, int(ahead)))
            if want > queued:
                self.submit(paths[max(queued, i):want])
                queued = want
            yield path, self.load(path)

    def failure_fraction(self) -> tuple[int, int]:
        """``(distinct failed videos, distinct videos seen)``."""
        with self._lock:
            return len(self.failures), len(self.seen)

    def stats(self) -> dict[str, Any]:
        """The frame cache's counters (hits, misses, failures, decode_seconds, ...)."""
        return self.cache.stats()

    def close(self) -> None:
        """Stop the background threads (pending decodes are cancelled)."""
        self.prefetcher.close()

    def __enter__(self) -> VideoLoader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
