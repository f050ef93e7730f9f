"""Decode the next batch's videos in the background while the current step runs.

``Prefetcher(cache, spec, backend, timeout_s, workers)`` wraps a :class:`FrameCache` with a small
thread pool. ``submit(paths)`` queues decodes and returns futures; ``get(path)`` returns the decoded
video, waiting only if it is not ready yet. ``stats()`` separates the time spent decoding in the
background (``decode_s``) from the time the caller actually waited (``wait_s``): the step-time
breakdown shows decoding is off the critical path when ``wait_s`` stays near 0. With
``timeout_s`` each decode runs in a killable worker process, so the threads only wait on pipes.
``fetch(path)`` replaces the cache lookup when given (preflight checks each video its own way).
Most callers use :class:`museg.data.video.loader.VideoLoader`, which is built on this class.

Example:
    >>> pf = Prefetcher(FrameCache(8), TRAIN_SPEC, timeout_s=120)      # doctest: +SKIP
    >>> pf.submit(next_batch_paths)                                    # doctest: +SKIP
    >>> videos = [pf.get(p) for p in batch_paths]                      # doctest: +SKIP
    >>> pf.stats()                                                     # doctest: +SKIP
    {'submitted': 4, 'decoded': 4, 'failed': 0, 'decode_s': 3.1, 'wait_s': 0.02}
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from museg.data.video.cache import FrameCache
from museg.data.video.decode import DecodedVideo


class Prefetcher:
    """Background decoding through ``cache`` with ``workers`` threads (see module docstring)."""

    def __init__(self, cache: FrameCache, spec: Mapping[str, Any], backend: str = "torchcodec",
                 timeout_s: float | None = None, workers: int = 2,
                 fetch: Callable[[str], Any] | None = None) -> None:
        self.cache, self.spec, self.backend, self.timeout_s = cache, dict(spec), backend, timeout_s
        self._fetch = fetch or (lambda p: self.cache.get(p, self.spec, backend=self.backend,
                                                         timeout_s=self.timeout_s))
        self._pool = ThreadPoolExecutor(max_workers=max(1, int(workers)),
                                        thread_name_prefix="museg-prefetch")
        self._futures: dict[str, Future] = {}
        self._lock = threading.Lock()
        self._stats = {"submitted": 0, "decoded": 0, "failed": 0, "decode_s": 0.0, "wait_s": 0.0}

    def _task(self, path: str) -> DecodedVideo:
        t0 = time.perf_counter()
        try:
            v = self._fetch(path)
        except BaseException:
            with self._lock:
                self._stats["failed"] += 1
                self._stats["decode_s"] += time.perf_counter() - t0
            raise
        with self._lock:
            self._stats["decoded"] += 1
            self._stats["decode_s"] += time.perf_counter() - t0
        return v

    def submit(self, paths: Iterable[str | os.PathLike]) -> list[Future]:
        """Queue decodes (each path once while pending); returns one future per given path."""
        out = []
        with self._lock:
            for p in paths:
                p = os.fspath(p)
                fut = self._futures.get(p)
                if fut is None:
                    fut = self._futures[p] = self._pool.submit(self._task, p)
                    self._stats["submitted"] += 1
                out.append(fut)
        return out

    def get(self, path: str | os.PathLike) -> DecodedVideo:
        """The decoded video (submitting it now if it was not); re-raises its VideoError."""
        path = os.fspath(path)
        fut = self.submit([path])[0]
        t0 = time.perf_counter()
        try:
            return fut.result()
        finally:
            with self._lock:
                self._stats["wait_s"] += time.perf_counter() - t0
                if self._futures.get(path) is fut:
                    del self._futures[path]

    def stats(self) -> dict[str, float]:
        """``submitted``, ``decoded``, ``failed``, ``decode_s`` (background), ``wait_s`` (caller)."""
        with self._lock:
            return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self._stats.items()}

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
