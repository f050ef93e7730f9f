"""Cache of decoded, resized frames: in-memory LRU plus an optional on-disk store.

A training step decodes each prompt's video once for all G generations and both forward passes;
consecutive evaluation questions on one video (Charades-STA: 3,720 queries on far fewer videos)
reuse it. Entries are keyed by the file (absolute path, size, mtime), the spec (which fixes the
frame plan), the backend and a format version, so an edited file or a changed spec never hits a
stale entry. Concurrent ``get`` calls for the same key (a prefetch thread and the trainer) share one
decode. Failures are remembered per key too (a broken file is not re-decoded every step) and
re-raised.

Returned :class:`DecodedVideo` objects are shared: do not modify ``frames`` in place.

Example:
    >>> cache = FrameCache(memory_items=8)                       # doctest: +SKIP
    >>> v = cache.get("clip.mp4", TRAIN_SPEC, backend="torchcodec", timeout_s=120)  # doctest: +SKIP
    >>> cache.get("clip.mp4", TRAIN_SPEC) is v, cache.stats()["hits"]  # doctest: +SKIP
    (True, 1)
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch

from museg.data.video.decode import DecodedVideo, decode_video
from museg.data.video.errors import VideoError, video_os_error
from museg.data.video.plan import FramePlan

FORMAT_VERSION = 1
MAX_REMEMBERED_FAILURES = 10000


def cache_key(path: str | os.PathLike, spec: Mapping[str, Any], backend: str) -> str:
    """Hex key of (absolute path, size, mtime, spec, backend, format); raises the typed video
    error (:class:`VideoNotFoundError` for a missing file) for any ``OSError`` of ``os.stat``."""
    path = os.path.abspath(os.fspath(path))
    try:
        st = os.stat(path)
    except OSError as e:  # missing, symlink loop, path through a file, name too long, ...
        raise video_os_error(path, e) from None
    spec_norm = {k: v for k, v in sorted(spec.items()) if v is not None}
    blob = json.dumps([FORMAT_VERSION, path, st.st_size, st.st_mtime_ns, spec_norm, backend],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class FrameCache:
    """LRU of ``memory_items`` decoded videos (0 disables memory caching), optionally backed by
    ``disk_dir`` (``<key>.pt`` files written atomically, loaded with ``weights_only=True``).

    ``decode_fn(path, spec, backend, timeout_s)`` defaults to :func:`decode_video`.
    """

    def __init__(self, memory_items: int = 8, disk_dir: str | os.PathLike | None = None,
                 decode_fn: Callable[..., DecodedVideo] | None = None) -> None:
        self.memory_items = max(0, int(memory_items))
        self.disk_dir = Path(disk_dir) if disk_dir else None
        if self.disk_dir is not None:
            self.disk_dir.mkdir(parents=True, exist_ok=True)
        self._decode = decode_fn or (lambda p, s, b, t: decode_video(p, s, backend=b, timeout_s=t))
        self._mem: OrderedDict[str, DecodedVideo] = OrderedDict()
        self._inflight: dict[str, Future] = {}
        self._failed: OrderedDict[str, VideoError] = OrderedDict()
        self._lock = threading.Lock()
        self._stats = {"hits": 0, "disk_hits": 0, "misses": 0, "failures": 0,
                       "decode_seconds": 0.0, "shared_waits": 0}

    def stats(self) -> dict[str, float]:
        """Counters: hits, disk_hits, misses (decodes), failures, decode_seconds, shared_waits."""
        with self._lock:
            return dict(self._stats)

    def __len__(self) -> int:
        return len(self._mem)

    def clear(self) -> None:
        with self._lock:
            self._mem.clear()
            self._failed.clear()

    # -- disk --------------------------------------------------------------------------------
    def _disk_path(self, key: str) -> Path | None:
        return None if self.disk_dir is None else self.disk_dir / f"{key}.pt"

    def _disk_load(self, key: str) -> DecodedVideo | None:
        p = self._disk_path(key)
        if p is None or not p.is_file():
            return None
        try:
            d = torch.load(p, map_location="cpu", weights_only=True)
            return DecodedVideo(frames=d["frames"], plan=FramePlan.from_dict(d["plan"]),
                                meta=dict(d["meta"]))
        except Exception:  # a torn or foreign file: drop it and decode again
            p.unlink(missing_ok=True)
            return None

    def _disk_store(self, key: str, v: DecodedVideo) -> None:
        p = self._disk_path(key)
        if p is None:
            return
        tmp = p.with_name(f".{p.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        torch.save({"frames": v.frames, "plan": v.plan.to_dict(), "meta": v.meta}, tmp)
        os.replace(tmp, p)

    # -- main entry ----------------------------------------------------------------------------
    def _remember(self, key: str, v: DecodedVideo) -> None:
        if self.memory_items == 0:
            return
        self._mem[key] = v
        self._mem.move_to_end(key)
        while len(self._mem) > self.memory_items:
            self._mem.popitem(last=False)

    def get(self, path: str | os.PathLike, spec: Mapping[str, Any], backend: str = "torchcodec",
            timeout_s: float | None = None) -> DecodedVideo:
        """Decoded frames of ``path`` for ``spec`` (from memory, disk, or a fresh decode)."""
        key = cache_key(path, spec, backend)
        with self._lock:
            if key in self._mem:
                self._mem.move_to_end(key)
                self._stats["hits"] += 1
                return self._mem[key]
            if key in self._failed:
                self._stats["hits"] += 1
                raise self._failed[key]
            fut = self._inflight.get(key)
            owner = fut is None
            if owner:
                fut = self._inflight[key] = Future()
            else:
                self._stats["shared_waits"] += 1
        if not owner:
            return fut.result()
        try:
            v = self._disk_load(key)
            if v is not None:
                with self._lock:
                    self._stats["disk_hits"] += 1
            else:
                t0 = time.perf_counter()
                try:
                    v = self._decode(os.fspath(path), dict(spec), backend, timeout_s)
                finally:
                    with self._lock:
                        self._stats["misses"] += 1
                        self._stats["decode_seconds"] += time.perf_counter() - t0
                self._disk_store(key, v)
        except VideoError as e:
            with self._lock:
                self._stats["failures"] += 1
                self._failed[key] = e
                while len(self._failed) > MAX_REMEMBERED_FAILURES:
                    self._failed.popitem(last=False)
                del self._inflight[key]
            fut.set_exception(e)
            raise
        except BaseException as e:
            with self._lock:
                del self._inflight[key]
            fut.set_exception(e)
            raise
        with self._lock:
            self._remember(key, v)
            del self._inflight[key]
        fut.set_result(v)
        return v
