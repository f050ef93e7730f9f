"""One run per directory: which directory a run uses, an exclusive lock on it, one-line refusals.

(It also probes wandb once when ``wandb.mode=online``: :mod:`museg.launch.wandb_probe`.)

:func:`prepare_run_dir` runs in every launched process before the task (``museg.run``), for
``task=train`` and ``task=eval``:

1. **Which directory.** The run directory named from the overrides is the *base*; numbered
   siblings ``<base>.run2``, ``<base>.run3``, ... hold later runs of the same name. ``resume=never``
   takes the first sibling without run state (checkpoints, metrics, predictions, results), so a
   fresh run never shares, prunes or mixes state with an old one; ``resume=auto|force|<path>``
   continues the newest sibling that has state. Each directory records who claimed it
   (``.museg-run.json``: job id or host:pid); a process of the same job (another rank, or the
   job requeued by SLURM) always gets the directory its job claimed, and a requeued
   ``resume=never`` job then continues its own run (``resume=auto`` inside it).
2. **One writer.** The main process holds an exclusive ``fcntl.flock`` on ``<run_dir>/.museg.lock``
   for its lifetime; the kernel drops it when the owner dies, so a stale lock never blocks a
   rerun. A second run in the same directory is refused with one line naming the holder's PID,
   host and start time. The same SLURM job (a requeue while the old incarnation still exits) waits
   up to :data:`REQUEUE_WAIT_S` for it.
3. **One-line refusals.** :func:`refusal_types` lists the errors that the entrypoint prints as one
   line with exit code 2 instead of a traceback (:class:`RunRefused`).

Example::

    prepare_run_dir(cfg)           # may change cfg.run_dir (and cfg.resume), takes the lock
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

from museg.data.video.policy import FailureBudgetExceeded
from museg.eval.predictions import PredictionFormatError
from museg.eval.score import ScoreError
from museg.fingerprint import RunIdentityError
from museg.integrity import DiskFullError
from museg.launch.environment import in_submitit_job
from museg.launch.wandb_probe import WandbUnreachableError, ensure_wandb_reachable
from museg.rl.checkpoint import CheckpointError

__all__ = ["RunRefused", "RunLockedError", "prepare_run_dir", "select_run_dir", "acquire_lock",
           "has_state", "job_identity", "refusal_types", "LOCK_NAME", "CLAIM_NAME"]

log = logging.getLogger(__name__)

LOCK_NAME = ".museg.lock"
CLAIM_NAME = ".museg-run.json"
#: Names whose presence means a directory holds a run's results or resumable state.
STATE_NAMES = ("checkpoints", "metrics.jsonl", "completions.jsonl", "final", "summary.json",
               "predictions.jsonl", "results.json", "eval_settings.json")
REQUEUE_WAIT_S = 120.0
_SIBLING_RE = re.compile(r"\.run(\d+)$")
_held: dict[str, int] = {}  # run_dir -> fd of the lock this process holds


class RunRefused(SystemExit):
    """A run that must not start or continue, reported as one line with exit code 2."""

    def __init__(self, message: str):
        print(f"museg: refused: {message}", file=sys.stderr)
        super().__init__(2)


class RunLockedError(RuntimeError):
    """Another live process writes to this run directory."""


def has_state(directory: str | os.PathLike) -> bool:
    """True when ``directory`` holds checkpoints, metrics, predictions or results of a run."""
    d = Path(directory)
    return any((d / name).exists() for name in STATE_NAMES)


def job_identity() -> tuple[str, int]:
    """``(token, global rank)`` of this process: the submitit/SLURM job id (stable across
    requeues), a torchrun run id, or ``host:pid`` for a plain process."""
    if in_submitit_job():
        with contextlib.suppress(Exception):
            from submitit import JobEnvironment

            env = JobEnvironment()
            return f"job:{env.job_id}", int(env.global_rank)
    if os.environ.get("SLURM_JOB_ID") and os.environ.get("SLURM_PROCID") is not None \
            and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"job:{os.environ['SLURM_JOB_ID']}", int(os.environ.get("RANK", "0"))
    if os.environ.get("TORCHELASTIC_RUN_ID") and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"torchrun:{os.environ['TORCHELASTIC_RUN_ID']}", int(os.environ.get("RANK", "0"))
    return f"pid:{socket.gethostname()}:{os.getpid()}", 0


def _sibling(base: Path, n: int) -> Path:
    return base if n == 1 else base.with_name(f"{base.name}.run{n}")


def _siblings(base: Path) -> list[Path]:
    """``base`` and its existing numbered siblings, in order."""
    found = [(1, base)]
    if base.parent.is_dir():
        for p in base.parent.iterdir():
            if p.name.startswith(base.name + ".run"):
                m = _SIBLING_RE.search(p.name)
                if m and p.name == f"{base.name}.run{m.group(1)}" and int(m.group(1)) > 1:
                    found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def _claim_of(d: Path) -> dict[str, Any]:
    try:
        data = json.loads((d / CLAIM_NAME).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _try_claim(d: Path, token: str) -> bool:
    """Atomically claim ``d`` for ``token`` (True), or True if ``token`` already holds it."""
    d.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"job": token, "host": socket.gethostname(), "pid": os.getpid(),
                       "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    try:
        fd = os.open(d / CLAIM_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        for _ in range(50):  # the other writer may not have written its body yet
            claim = _claim_of(d)
            if claim:
                return claim.get("job") == token
            time.sleep(0.02)
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(body)
    return True


def select_run_dir(base: str | os.PathLike, resume: Any, token: str) -> tuple[Path, bool]:
    """``(run directory, same_job)`` for a run named ``base`` (see module docstring)."""
    base = Path(base)
    existing = _siblings(base)
    for d in existing:
        if _claim_of(d).get("job") == token:
            return d, True
    if str(resume).lower() == "never":
        n = 1
        while True:
            d = _sibling(base, n)
            if not has_state(d) and _claim_of(d).get("job") in (None, token) \
                    and _try_claim(d, token):
                return d, False
            n += 1
    with_state = [d for d in existing if has_state(d)]
    d = with_state[-1] if with_state else base
    if not (d / CLAIM_NAME).exists():  # the first run here claims it; a continuation does not
        _try_claim(d, token)
    return d, False


def _holder(fd: int) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 4096).decode() or "{}")
        return data if isinstance(data, dict) else {}
    return {}


def acquire_lock(run_dir: str | os.PathLike, token: str, wait_s: float = 0.0) -> int:
    """Take the exclusive lock of ``run_dir`` for this process (held until it exits); returns the
    lock file's descriptor. Raises :class:`RunLockedError` naming the holder."""
    d = Path(run_dir)
    key = str(d.absolute())
    if key in _held:
        return _held[key]
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                os.close(fd)
                raise
            holder = _holder(fd)
            if holder.get("job") == token and time.monotonic() < deadline:
                time.sleep(1.0)  # our own job's previous incarnation (SLURM requeue) is exiting
                continue
            os.close(fd)
            raise RunLockedError(
                f"{d} is in use by PID {holder.get('pid', '?')} on host "
                f"{holder.get('host', '?')} (since {holder.get('since', '?')}) (fix: wait for "
                "that run to finish or stop it; to run beside it use resume=never (a fresh "
                "numbered directory) or another experiment_name)") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "job": token,
                              "since": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode(), 0)
    os.set_inheritable(fd, False)
    _held[key] = fd
    return fd


def release_lock(run_dir: str | os.PathLike) -> None:
    """Drop the lock this process holds on ``run_dir`` (tests; a process exit does it too)."""
    fd = _held.pop(str(Path(run_dir).absolute()), None)
    if fd is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def prepare_run_dir(cfg: Any) -> None:
    """Choose ``cfg.run_dir`` and lock it (module docstring); no-op for other tasks and dry runs.
    A refusal raises :class:`RunRefused` (one line, exit code 2)."""
    if cfg.launcher.dry_run:
        return
    try:
        ensure_wandb_reachable(cfg)  # online without network: offline with one warning
    except WandbUnreachableError as e:
        raise RunRefused(str(e)) from None
    if str(cfg.task) not in ("train", "eval"):
        return
    token, rank = job_identity()
    resume = cfg.resume
    try:
        run_dir, same_job = select_run_dir(str(cfg.run_dir), resume, token)
    except OSError as e:
        raise RunRefused(f"cannot create the run directory under {cfg.run_dir}: "
                         f"{e.strerror or e}") from None
    if str(run_dir) != str(cfg.run_dir):
        log.info("run directory %s (%s)", run_dir, "this job's own" if same_job else
                 "resume=never: a fresh sibling" if str(resume) == "never" else "newest run")
        cfg.run_dir = str(run_dir)
    if same_job and str(resume).lower() == "never" and has_state(run_dir):
        cfg.resume = "auto"  # a requeued resume=never job continues its own fresh run
    if rank != 0:
        return
    try:
        acquire_lock(run_dir, token, wait_s=REQUEUE_WAIT_S if token.startswith("job:") else 0.0)
    except RunLockedError as e:
        raise RunRefused(str(e)) from None


def refusal_types() -> tuple[type[BaseException], ...]:
    """Errors a task may raise that mean "refused, with the fix" (printed as one line)."""
    types: list[type[BaseException]] = [FailureBudgetExceeded, PredictionFormatError, ScoreError,
                                        RunIdentityError, DiskFullError, CheckpointError,
                                        RunLockedError]
    with contextlib.suppress(ImportError):
        # imported here: museg.rl.builders pulls in transformers (~3 s), which the CLI pre-check
        # and a refused run never need
        from museg.rl.builders import TrainError

        types.append(TrainError)
    return tuple(types)
