"""Which checkpoint a training run continues from: verified, and of the same run.

:func:`choose_checkpoint` maps ``cfg.resume`` to a checkpoint directory on the main rank and
broadcasts the answer (so one process reads the files):

- ``auto``: the newest checkpoint whose manifest verifies (newer broken ones are skipped with one
  warning line each); its fingerprint must equal this run's, else :class:`RunIdentityError`;
- ``force``: the same, but a differing fingerprint only warns;
- ``never``: none (the command line gives such a run a fresh numbered directory first, see
  :mod:`museg.rundir`);
- a path: that checkpoint (verified), or that run directory's newest intact one; a differing
  fingerprint only warns, since the path was chosen explicitly.

Example::

    fp = train_fingerprint(cfg, model_path)
    resume_from = choose_checkpoint(cfg, run_dir, fp)   # Path or None
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from museg import dist as D
from museg.fingerprint import RunIdentityError, check_resume_identity, fingerprint_diff
from museg.rl import checkpoint as ckpt

__all__ = ["choose_checkpoint"]

log = logging.getLogger(__name__)


def _choose(resume: Any, run_dir: Path, fingerprint: dict[str, Any]) -> Path | None:
    path = ckpt.resolve_resume(resume, run_dir)
    if path is None:
        return None
    old = ckpt.checkpoint_meta(path).get("fingerprint")
    if old is None:
        log.warning("%s has no run fingerprint (written by an older museg); resuming without "
                    "the identity check", path)
        return path
    mode = str(resume).lower()
    if mode in ("auto", "force"):
        check_resume_identity(old, fingerprint, mode, path)
    else:
        diff = fingerprint_diff(old, fingerprint)
        if diff:
            log.warning("resume=%s: that checkpoint's run differs in %s", resume,
                        ", ".join(diff[:6]))
    return path


def choose_checkpoint(cfg: Any, run_dir: str | Path, fingerprint: dict[str, Any]) -> Path | None:
    """The checkpoint to resume from (see module docstring); every rank gets the same answer.

    Raises :class:`~museg.rl.checkpoint.CheckpointError` (no intact checkpoint) or
    :class:`~museg.fingerprint.RunIdentityError` (another run's checkpoint) on every rank.
    """
    answer: tuple[str, str | None] | None = None
    if not D.is_distributed() or torch.distributed.get_rank() == 0:
        try:
            found = _choose(cfg.resume, Path(run_dir), fingerprint)
            answer = ("ok", str(found) if found is not None else None)
        except (ckpt.CheckpointError, RunIdentityError) as e:
            answer = (type(e).__name__, str(e))
    answer = D.broadcast_object(answer)
    kind, value = answer
    if kind == "RunIdentityError":
        raise RunIdentityError(value)
    if kind != "ok":
        raise ckpt.CheckpointError(value)
    return Path(value) if value else None
