"""The preemption state of this process: "checkpoint at the next step boundary, then return".

One :class:`CheckpointRequest` per process (:data:`CHECKPOINT_REQUEST`) is the only place the flag
lives. The cluster glue sets it from a signal handler (:class:`museg.launch.preemption.
PreemptionHandler` calls :func:`request_checkpoint`); the training recipe
(:mod:`museg.rl.recipe`) agrees on it over all ranks at each step boundary, saves, returns ``{'preempted': True, ...}`` and clears it.
Setting it is signal-safe (a :class:`threading.Event`). Torch-free: importing this costs nothing.

Example::

    from museg.rl.checkpoint_request import request_checkpoint, checkpoint_requested
    request_checkpoint()              # e.g. from a SIGUSR2 handler
    checkpoint_requested()            # True until the loop has handled it

    >>> r = CheckpointRequest()
    >>> r.set(); r.is_set()
    True
    >>> r.clear(); r.is_set()
    False
"""

from __future__ import annotations

import threading

__all__ = ["CheckpointRequest", "CHECKPOINT_REQUEST", "request_checkpoint",
           "checkpoint_requested", "clear_checkpoint_request"]


class CheckpointRequest:
    """A flag asking the training loop to checkpoint and return at the next step boundary."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        """Ask for a checkpoint (safe to call from a signal handler)."""
        self._event.set()

    def is_set(self) -> bool:
        """True while a request is pending on this process."""
        return self._event.is_set()

    def clear(self) -> None:
        """Forget the request (handled, or moot because the run finished)."""
        self._event.clear()


#: The process-wide request the signal handler and the training loop share.
CHECKPOINT_REQUEST = CheckpointRequest()


def request_checkpoint() -> None:
    """Ask the running loop to checkpoint and return at the next step boundary (signal-safe)."""
    CHECKPOINT_REQUEST.set()


def checkpoint_requested() -> bool:
    """True while a checkpoint request is pending on this process."""
    return CHECKPOINT_REQUEST.is_set()


def clear_checkpoint_request() -> None:
    """Forget a pending checkpoint request."""
    CHECKPOINT_REQUEST.clear()
