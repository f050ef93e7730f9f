"""Run decoding in persistent worker processes that are killed and restarted on a hard timeout.

Decoders can hang forever (a header that lies, a stalled network mount, a FIFO) inside C code
that no Python timeout can interrupt. ``run_in_worker(fn, *args, timeout_s=..., path=...)`` sends
the call to an idle worker process of a small pool; if no answer arrives within ``timeout_s`` the
worker is killed (SIGKILL) and replaced on next use, and :class:`VideoTimeoutError` names the file.
A worker that crashes (segfault in a decoder) raises :class:`VideoUnreadableError`. Exceptions raised
by ``fn`` in the worker are re-raised in the caller.

Workers start with ``forkserver`` (Linux; the server preloads the decoders so a restart costs
milliseconds) or ``spawn``, never plain ``fork`` (safe with CUDA and threads in the caller). The
time a fresh worker needs to start is not counted in ``timeout_s``. ``fn`` must be a module-level
function; arguments and results travel pickled (use numpy arrays for big payloads).

Example:
    >>> from museg.data.video.decode import probe_video
    >>> run_in_worker(probe_video, "/no/such.mp4", timeout_s=30, path="/no/such.mp4")
    Traceback (most recent call last):
    ...
    museg.data.video.errors.VideoNotFoundError: /no/such.mp4: file not found (fix: check paths.video_root and the annotation's video field, or run task=preflight)
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from museg.data.video.errors import (
    VideoError,
    VideoTimeoutError,
    VideoUnreadableError,
    VideoWorkerError,
)

START_TIMEOUT_S = 300.0  # a fresh worker importing torch on a loaded machine
DEFAULT_WORKERS = int(os.environ.get("MUSEG_DECODE_WORKERS", "2"))
# imported by the fork server (so forked workers start warm) and by each worker before it reports
# ready, so that import time is never charged to a call's timeout
WARM_MODULES = ("museg.data.video.decode", "torchcodec.decoders", "av")


def _context() -> mp.context.BaseContext:
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(list(WARM_MODULES))
        return ctx
    return mp.get_context("spawn")


def _worker_main(conn) -> None:
    """Worker loop: receive ``(seq, fn, args)``, answer ``(seq, "ok", result)`` or
    ``(seq, "err", exception)``."""
    import importlib

    if sys.platform.startswith("linux"):  # die with the parent (or fork server), even mid-hang
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    try:  # one intra-op thread: FFmpeg's threads decode; OpenMP spinning only steals their cores
        import torch

        torch.set_num_threads(int(os.environ.get("MUSEG_DECODE_TORCH_THREADS", "1")))
    except ImportError:
        pass
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if msg is None:
            return
        seq, fn, args = msg
        try:
            reply = (seq, "ok", fn(*args))
        except BaseException as e:  # noqa: B036 - everything goes back to the caller
            reply = (seq, "err", e)
        try:
            conn.send(reply)
        except Exception as e:  # unpicklable result or exception
            conn.send((seq, "err", RuntimeError(f"{type(e).__name__} sending the result: {e}; "
                                                f"original: {reply[2]!r}")))


class _Worker:
    def __init__(self, ctx: mp.context.BaseContext) -> None:
        self.ctx = ctx
        self.proc: Any = None
        self.conn: Any = None
        self.seq = 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()

    def start(self) -> None:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker_main, args=(child,), daemon=True,
                                name="museg-video-worker")
        proc.start()
        child.close()
        self.proc, self.conn = proc, parent
        fix = ("(fix: check free memory and /dev/shm, or set video.decode_timeout_s=null to decode "
               "in-process)")
        try:
            ready = parent.poll(START_TIMEOUT_S)
            if ready:
                parent.recv()
        except (EOFError, OSError) as e:
            proc.join(timeout=1)
            code = proc.exitcode
            self.kill()
            raise VideoWorkerError(f"the video decode worker exited before it was ready (exit code "
                                   f"{code}, {type(e).__name__}) {fix}") from None
        if not ready:
            self.kill()
            raise VideoWorkerError(f"the video decode worker did not start within "
                                   f"{START_TIMEOUT_S:.0f}s {fix}")

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.is_alive():
                self.proc.kill()
            self.proc.join(timeout=10)
        if self.conn is not None:
            self.conn.close()
        self.proc = self.conn = None

    def stop(self) -> None:
        if self.alive():
            try:
                self.conn.send(None)
                self.proc.join(timeout=2)
            except (OSError, BrokenPipeError):
                pass
        self.kill()

    def call(self, fn: Callable, args: tuple, timeout_s: float, path: str) -> Any:
        self.seq += 1
        try:
            if not self.alive():
                self.kill()
                self.start()
            try:
                self.conn.send((self.seq, fn, args))
            except (BrokenPipeError, ConnectionResetError):  # died since the last call
                self.kill()
                self.start()
                self.conn.send((self.seq, fn, args))
            if not self.conn.poll(timeout_s):
                self.kill()
                raise VideoTimeoutError(path, f"decoding took longer than video.decode_timeout_s="
                                              f"{timeout_s:g}s; the worker was killed (fix: check "
                                              f"the file, or raise video.decode_timeout_s)")
            try:
                seq, status, payload = self.conn.recv()
            except (EOFError, OSError):
                code = self.proc.exitcode if self.proc is not None else None
                self.kill()
                raise VideoUnreadableError(path, f"the decoder process died (exit code {code})"
                                           ) from None
        except VideoError:
            raise
        except BaseException:  # interrupted mid-call: the worker's state is unknown, drop it
            self.kill()
            raise
        if seq != self.seq:  # cannot happen while every interrupted call kills the worker
            self.kill()
            raise RuntimeError(f"video worker answered request {seq}, expected {self.seq}")
        if status == "ok":
            return payload
        raise payload


class WorkerPool:
    """Up to ``size`` worker processes, started lazily; thread-safe (a call waits for an idle one)."""

    def __init__(self, size: int = DEFAULT_WORKERS) -> None:
        self.size = max(1, int(size))
        self.pid = os.getpid()
        self._ctx = _context()
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self.timeouts = 0

    def _acquire(self) -> _Worker:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if len(self._all) < self.size:
                w = _Worker(self._ctx)
                self._all.append(w)
                return w
        return self._idle.get()

    def call(self, fn: Callable, *args: Any, timeout_s: float, path: str = "?") -> Any:
        """``fn(*args)`` in a worker, killed after ``timeout_s`` seconds (see module docstring)."""
        if mp.current_process().daemon:
            raise RuntimeError("video.decode_timeout_s needs worker processes, which a daemonic "
                               "process (e.g. a torch DataLoader worker) cannot start (fix: decode "
                               "in the main process or a thread, or set video.decode_timeout_s=null)")
        w = self._acquire()
        try:
            return w.call(fn, args, float(timeout_s), str(path))
        except VideoTimeoutError:
            self.timeouts += 1
            raise
        finally:
            self._idle.put(w)

    def close(self) -> None:
        if os.getpid() != self.pid:  # a forked child must not touch the parent's workers
            return
        for w in self._all:
            w.stop()
        self._all.clear()


_POOL: WorkerPool | None = None
_POOL_LOCK = threading.Lock()


def default_pool() -> WorkerPool:
    """The process-wide pool (``MUSEG_DECODE_WORKERS`` workers, default 2); recreated after fork."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.pid != os.getpid():
            _POOL = WorkerPool(DEFAULT_WORKERS)
        return _POOL


def run_in_worker(fn: Callable, *args: Any, timeout_s: float, path: str = "?") -> Any:
    """Run ``fn(*args)`` in the default pool with a hard timeout; see the module docstring."""
    if timeout_s is None or timeout_s <= 0:
        raise ValueError(f"video.decode_timeout_s must be > 0, got {timeout_s!r}")
    return default_pool().call(fn, *args, timeout_s=timeout_s, path=path)


def _shutdown() -> None:
    if _POOL is not None:
        _POOL.close()


atexit.register(_shutdown)

__all__ = ["WorkerPool", "default_pool", "run_in_worker", "VideoError", "VideoWorkerError"]
