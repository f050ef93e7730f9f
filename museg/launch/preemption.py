"""Preemption-safe requeue: submitit's pre-timeout signal -> checkpoint at a step boundary -> requeue.

submitit asks SLURM for a signal ``signal_delay_s`` seconds before the time limit (and SLURM sends
it on preemption too): ``#SBATCH --signal=USR2@900`` (``submitit.JobEnvironment.USR_SIG``, USR2
unless ``SUBMITIT_PREEMPT_SIGNAL`` says otherwise). submitit's own handler would checkpoint the
callable, requeue the job and exit *immediately*, in the middle of an optimizer step.
:class:`PreemptionHandler` takes the signal instead and only calls ``request`` (the trainer's
:func:`museg.rl.checkpoint_request.request_checkpoint`, which sets a flag the loop all-reduces at
each step boundary); when the task has saved its checkpoint and returned ``{'preempted': True, ...}``,
:meth:`PreemptionHandler.requeue` hands over to the handler submitit had installed: it calls the
Hydra launcher's ``checkpoint()`` (a ``DelayedSubmission`` of the same job), requeues the job
(``scontrol requeue``; exit code 144 for ``submitit_local``) and exits. The requeued job lands in
the same run directory (names come from the overrides) and ``resume=auto`` continues from the
checkpoint. Timeouts count against ``max_num_timeout``; preemptions do not.

Example (what :func:`museg.launch.job.run_job` does for ``task=train``)::

    from museg.rl.checkpoint_request import request_checkpoint
    handler = PreemptionHandler(request_checkpoint).install()
    summary = train(cfg)
    if summary.get("preempted"):
        handler.requeue()          # rank 0: checkpoint() + requeue + exit; other ranks: returns

The handler itself is plain signal plumbing:

    >>> import os, signal
    >>> hits = []
    >>> h = PreemptionHandler(lambda: hits.append(1), signum=signal.SIGUSR1).install()
    >>> os.kill(os.getpid(), signal.SIGUSR1)
    >>> h.received, hits
    (True, [1])
    >>> h.uninstall()
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["PreemptionHandler", "preemption_signal"]

log = logging.getLogger(__name__)


def preemption_signal() -> signal.Signals:
    """The signal submitit asks SLURM for (``--signal``) and listens to: USR2 unless overridden."""
    from submitit import JobEnvironment

    return signal.Signals(JobEnvironment._usr_sig())


class PreemptionHandler:
    """Turns the preemption/timeout signal into a checkpoint request; requeues through submitit."""

    def __init__(self, request: Callable[[], Any], signum: int | None = None) -> None:
        self._request = request
        self.signum = signal.Signals(signum) if signum is not None else None
        self._previous: Any = None
        self.installed = False
        self.received = False
        self.received_at: float | None = None

    def install(self) -> PreemptionHandler:
        """Replace the current handler of the signal (submitit's inside a job); returns self."""
        if self.signum is None:
            self.signum = preemption_signal()
        self._previous = signal.getsignal(self.signum)
        signal.signal(self.signum, self._on_signal)
        self.installed = True
        return self

    def uninstall(self) -> None:
        """Restore the previous handler (submitit's default behaviour)."""
        if self.installed and self.signum is not None:
            previous = self._previous if self._previous is not None else signal.SIG_DFL
            signal.signal(self.signum, previous)
            self.installed = False

    def _on_signal(self, signum: int, frame: FrameType | None = None) -> None:
        self.received = True
        self.received_at = time.time()
        # logging from a signal handler is safe enough here (no locks held by the main thread
        # between bytecodes of pure-Python code); the request itself is an Event.set().
        log.warning("received %s: checkpoint at the next step boundary, then requeue",
                    signal.Signals(signum).name)
        self._request()

    @property
    def can_requeue(self) -> bool:
        """True when a submitit handler was installed before us (inside a submitit job)."""
        return callable(self._previous)

    def requeue(self) -> None:
        """Let submitit checkpoint the launcher call and requeue the job (exits on rank 0).

        On other ranks submitit's handler returns without doing anything (rank 0 requeues the
        whole job). Outside a submitit job this only logs that nothing can be requeued.
        """
        self.uninstall()
        if not self.can_requeue:
            log.warning("preempted outside a submitit job: nothing to requeue; rerun the same "
                        "command to resume from the checkpoint (resume=auto)")
            return
        assert self.signum is not None
        log.warning("checkpoint saved: requeueing through submitit")
        self._previous(int(self.signum), None)
