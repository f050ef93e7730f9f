"""Atomic, resumable training checkpoints loadable with ``torch.load(weights_only=True)``.

Layout of ``run_dir/checkpoints/step-N/``::

    model.safetensors   full model state dict (shared tensors de-duplicated; safetensors.save_model)
    optimizer.pt        optimizer.state_dict()
    scheduler.pt        lr scheduler state_dict()
    trainer_state.pt    {'step', 'data', 'wandb_id', 'history', 'rng': {...}, ...} -- plain types only
    trainer_state.json  the same without RNG states, for humans
    COMPLETE            written last: a JSON manifest (every file's size and sha256, the step and
                        the run fingerprint); a directory without it is ignored

A checkpoint is written to ``checkpoints/.tmp-step-N``, renamed to ``step-N`` (atomic on POSIX), and
only then marked ``COMPLETE``; older complete checkpoints beyond ``save_total_limit`` are removed.
Resume verifies the manifest (:func:`latest_intact_checkpoint`) and falls back to the newest intact
checkpoint, logging one line per checkpoint skipped. A full disk while writing raises
:class:`museg.integrity.DiskFullError` (one line: directory, space needed); the half-written
directory is removed and the previous checkpoint is untouched.

Example::

    path = save_checkpoint(run_dir, 10, model, opt, sched, {"data": {"consumed": 20}})
    state = load_checkpoint(latest_checkpoint(run_dir), model, opt, sched)
    set_rng_states(state["rng"])
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from museg.integrity import (
    disk_full_error,
    is_disk_full,
    read_manifest,
    tree_size,
    verify_checkpoint,
    write_manifest,
)

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "latest_intact_checkpoint",
    "list_checkpoints",
    "tmp_dir",
    "resolve_resume",
    "checkpoint_meta",
    "get_rng_states",
    "set_rng_states",
]

MARKER = "COMPLETE"
_STEP_RE = re.compile(r"^step-(\d+)$")
log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or does not match the model."""


def get_rng_states(data_generator: torch.Generator | None = None) -> dict[str, Any]:
    """RNG states of python, numpy, torch (+ CUDA) and an optional generator, as plain types."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    out: dict[str, Any] = {
        "python": {"version": int(version), "state": list(internal), "gauss": gauss},
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    if data_generator is not None:
        out["data_generator"] = data_generator.get_state()
    return out


def set_rng_states(states: dict[str, Any], data_generator: torch.Generator | None = None) -> None:
    """Restore what :func:`get_rng_states` returned."""
    py = states["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npst = states["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached_gaussian"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    if data_generator is not None and "data_generator" in states:
        data_generator.set_state(states["data_generator"])


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of ``run_dir`` sorted by step (oldest first)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir() and (p / MARKER).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def tmp_dir(run_dir: str | Path, step: int) -> Path:
    """Where checkpoint ``step`` is assembled before the atomic rename."""
    return Path(run_dir) / "checkpoints" / f".tmp-step-{step}"


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    state: dict[str, Any],
    save_total_limit: int | None = None,
    data_generator: torch.Generator | None = None,
    tmp_ready: bool = False,
) -> Path:
    """Write checkpoint ``step`` atomically and prune old ones; returns its directory.

    ``state`` must hold plain python types / tensors (it is stored in ``trainer_state.pt``); the
    RNG states are added under ``'rng'`` and the step under ``'step'``. ``model=None`` skips the
    weights (DeepSpeed writes its sharded state into :func:`tmp_dir` itself first; then pass
    ``tmp_ready=True`` so that directory is kept).
    """
    root = Path(run_dir) / "checkpoints"
    previous = latest_checkpoint(run_dir)
    needed = tree_size(previous) if previous is not None else None
    try:
        root.mkdir(parents=True, exist_ok=True)
        return _write_checkpoint(run_dir, step, model, optimizer, scheduler, state,
                                 save_total_limit, data_generator, tmp_ready)
    except (OSError, RuntimeError) as e:
        if not is_disk_full(e):
            raise
        shutil.rmtree(tmp_dir(run_dir, step), ignore_errors=True)
        raise disk_full_error(root, needed, what=f"checkpoint step-{step}") from None


def _write_checkpoint(run_dir: str | Path, step: int, model: torch.nn.Module | None,
                      optimizer: Any, scheduler: Any, state: dict[str, Any],
                      save_total_limit: int | None, data_generator: torch.Generator | None,
                      tmp_ready: bool) -> Path:
    root = Path(run_dir) / "checkpoints"
    tmp = tmp_dir(run_dir, step)
    final = root / f"step-{step}"
    if tmp.exists() and not tmp_ready:
        shutil.rmtree(tmp)
    tmp.mkdir(exist_ok=True)
    if model is not None:
        save_model(_unwrap(model), str(tmp / "model.safetensors"))
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    if scheduler is not None:
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    full = dict(state)
    full["step"] = int(step)
    full["rng"] = get_rng_states(data_generator)
    torch.save(full, tmp / "trainer_state.pt")
    readable = {k: v for k, v in full.items() if k not in ("rng", "history")}
    (tmp / "trainer_state.json").write_text(json.dumps(readable, indent=1, default=str))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    write_manifest(final, {"step": int(step), "fingerprint": state.get("fingerprint")})
    if save_total_limit and save_total_limit > 0:
        for old in list_checkpoints(run_dir)[:-save_total_limit]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(
    path: str | Path,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
) -> dict[str, Any]:
    """Load weights / optimizer / scheduler in place (those given) and return the trainer state.

    Every file is read with ``weights_only=True``. Raises :class:`CheckpointError` if ``path`` is
    not a complete checkpoint.
    """
    path = Path(path)
    if not (path / MARKER).is_file():
        raise CheckpointError(
            f"{path}: not a complete checkpoint (no {MARKER} marker; fix: point resume= at a "
            f"run_dir/checkpoints/step-N directory that has it, or use resume=auto)"
        )
    for obj, name in ((model, "model.safetensors"), (optimizer, "optimizer.pt"),
                      (scheduler, "scheduler.pt"), (True, "trainer_state.pt")):
        if obj is not None and not (path / name).is_file():
            raise CheckpointError(f"{path}: {name} is missing, so the run cannot continue from "
                                  "it (fix: resume=auto falls back to the newest intact "
                                  "checkpoint; or resume=never to start over)")
    try:
        if model is not None:
            missing, unexpected = load_model(_unwrap(model), str(path / "model.safetensors"),
                                             strict=False)
            if missing or unexpected:
                raise CheckpointError(
                    f"{path}/model.safetensors does not match the model: missing "
                    f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]} (fix: resume "
                    "with the same model config)")
        if optimizer is not None:
            optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
        if scheduler is not None:
            scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
        return torch.load(path / "trainer_state.pt", weights_only=True)
    except CheckpointError:
        raise
    except Exception as e:  # a truncated/corrupt file: the library's text, on one line
        text = " ".join(str(e).split())[:200]
        raise CheckpointError(f"{path}: cannot be loaded ({type(e).__name__}: {text}) (fix: "
                              "resume=auto falls back to the newest intact checkpoint; or "
                              "resume=never to start over)") from None


def latest_intact_checkpoint(run_dir: str | Path, deep: bool = True) -> Path | None:
    """The newest checkpoint of ``run_dir`` whose manifest verifies (one warning line for each
    newer one skipped); None when there is none at all. Raises :class:`CheckpointError` when
    checkpoints exist but none is intact."""
    ckpts = list_checkpoints(run_dir)
    skipped = []
    for p in reversed(ckpts):
        problem = verify_checkpoint(p, deep=deep)
        if problem is None:
            return p
        skipped.append(f"{p.name}: {problem}")
        log.warning("skipping checkpoint %s: %s", p, problem)
    if skipped:
        raise CheckpointError(
            f"{Path(run_dir) / 'checkpoints'}: no intact checkpoint ({'; '.join(skipped[:3])}) "
            "(fix: resume=never to start a fresh run, or restore the files)")
    return None


def checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The manifest of checkpoint ``path`` (``{}`` for a legacy marker)."""
    return read_manifest(path) or {}


def resolve_resume(resume: str | None, run_dir: str | Path) -> Path | None:
    """Map ``cfg.resume`` ('auto' | 'force' | 'never' | path) to a checkpoint directory or None.

    'auto' and 'force' take the newest *intact* checkpoint of ``run_dir`` (see
    :func:`latest_intact_checkpoint`). A path may be a checkpoint directory (verified) or a run
    directory (its newest intact checkpoint is used).
    """
    if resume is None or str(resume).lower() in ("never", "none", "false", ""):
        return None
    if str(resume).lower() in ("auto", "force"):
        return latest_intact_checkpoint(run_dir)
    p = Path(str(resume))
    if (p / MARKER).is_file():
        problem = verify_checkpoint(p)
        if problem:
            raise CheckpointError(f"resume={resume}: {problem} (fix: resume=<an intact "
                                  "checkpoint>, resume=auto, or resume=never)")
        return p
    latest = latest_intact_checkpoint(p)
    if latest is None:
        raise CheckpointError(
            f"resume={resume}: no complete checkpoint there (fix: give a checkpoints/step-N "
            f"directory with a {MARKER} marker, or resume=auto / resume=never)"
        )
    return latest
