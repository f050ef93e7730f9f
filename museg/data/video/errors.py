"""The typed errors of video input, and the readable cause of an ``OSError`` on a video path.

Every video that cannot become frames raises a :class:`VideoError` (``.path``, ``.cause``):
:class:`VideoUnreadableError` (missing, empty, corrupt, no video stream, ...; a missing path is the
subclass :class:`VideoNotFoundError`) or :class:`VideoTimeoutError` (the killable worker ran past
``video.decode_timeout_s``). A bad *video* is quarantined or scored 0; an *environment* problem is
not: :class:`VideoWorkerError` (a decode worker process could not start) and
:class:`DecodeWorkerError` (the one-line error a caller raises for it) stop the run.

This module imports nothing of museg, so the decoder, the worker pool, the cache and the loader all
depend on it and never on each other's errors.

Example:
    >>> import errno
    >>> e = video_os_error("/v/a.mp4", OSError(errno.ELOOP, "Too many levels of symbolic links"))
    >>> type(e).__name__, e.cause
    ('VideoUnreadableError', 'cannot open it: symbolic link loop (ELOOP)')
    >>> type(video_os_error("/no/such.mp4", FileNotFoundError(errno.ENOENT, "x"))).__name__
    'VideoNotFoundError'
"""

from __future__ import annotations

import errno
import os

__all__ = ["DecodeWorkerError", "VideoError", "VideoNotFoundError", "VideoTimeoutError",
           "VideoUnreadableError", "VideoWorkerError", "os_error_cause", "video_os_error"]


class VideoError(RuntimeError):
    """A video could not be turned into frames. ``.path``: the file; ``.cause``: why (text)."""

    def __init__(self, path: str | os.PathLike, cause: str) -> None:
        self.path = os.fspath(path)
        self.cause = str(cause)
        super().__init__(f"{self.path}: {self.cause}")

    def __reduce__(self):  # picklable across the worker pipe
        return (type(self), (self.path, self.cause))


class VideoUnreadableError(VideoError):
    """Missing, empty, corrupt, audio-only, too short or otherwise undecodable video."""


class VideoNotFoundError(VideoUnreadableError):
    """The path does not exist."""


class VideoTimeoutError(VideoError):
    """Decoding exceeded the configured timeout; the worker process was killed."""


class VideoWorkerError(RuntimeError):
    """The decode worker process could not start (the environment, not a bad video: never
    quarantined)."""


class DecodeWorkerError(RuntimeError):
    """The video decode worker process could not start or died without an answer (environment)."""


NOT_FOUND = ("file not found (fix: check paths.video_root and the annotation's video field, or "
             "run task=preflight)")
_OS_CAUSES = {
    errno.ELOOP: "symbolic link loop",
    errno.ENOTDIR: "a component of the path is a file, not a directory",
    errno.ENAMETOOLONG: "file name too long for the filesystem",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "I/O error reading the file",
}


def os_error_cause(e: OSError) -> str:
    """A short readable cause for an ``OSError`` met while opening or probing a video.

    >>> os_error_cause(OSError(errno.ELOOP, "Too many levels of symbolic links"))
    'symbolic link loop (ELOOP)'
    """
    name = errno.errorcode.get(e.errno or 0, type(e).__name__)
    return f"{_OS_CAUSES.get(e.errno or 0, e.strerror or str(e))} ({name})"


def video_os_error(path: str, e: OSError) -> VideoError:
    """The typed video error for an ``OSError`` on ``path`` (ENOENT: :class:`VideoNotFoundError`)."""
    if e.errno == errno.ENOENT:
        dangling = os.path.islink(path)
        return VideoNotFoundError(path, "dangling symbolic link (its target does not exist)"
                                  if dangling else NOT_FOUND)
    return VideoUnreadableError(path, f"cannot open it: {os_error_cause(e)}")
