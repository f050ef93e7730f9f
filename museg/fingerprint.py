"""Run identity: a fingerprint of everything that determines a run's numbers, and its comparison.

A run directory is named from the command-line overrides that matter, but ``paths.*`` (and
``MUSEG_DATA_ROOT``) are left out of the name, so two different datasets can map to one directory.
Every checkpoint therefore records :func:`train_fingerprint` (in its ``COMPLETE`` manifest and its
``trainer_state.pt``) and resume compares it with the current one (:func:`check_resume_identity`):
a mismatch is refused with one line naming the differing keys and the ways out (``resume=never``:
a fresh numbered run directory; a new ``experiment_name``; ``resume=force``: continue anyway).

The fingerprint is a flat ``{dotted key: value}`` dict: the resolved config minus bookkeeping keys
(:data:`BOOKKEEPING`), plus ``data.file.{path,size,sha256}`` of the annotation file and
``model.identity`` (the model directory's config and weight files: names, sizes, mtimes).

Example::

    fp = train_fingerprint(cfg)
    diff = fingerprint_diff(old_fp, fp)     # ['data.file.sha256', 'paths.video_root']
    check_resume_identity(old_fp, fp, "force", where)   # warns instead of raising
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from museg.integrity import read_manifest, sha256_file

log = logging.getLogger(__name__)

__all__ = ["RunIdentityError", "BOOKKEEPING", "train_fingerprint", "file_identity",
           "model_identity", "fingerprint_diff", "check_resume_identity", "flatten"]

#: Keys (and their sub-keys) that do not change what a training run computes.
BOOKKEEPING = (
    "experiment_name", "run_name", "run_dir", "resume", "wandb", "hydra", "eval", "preflight",
    "demo", "predictions", "paths.output_root", "paths.cache_dir", "paths.data_root",
    "launcher.name", "launcher.dry_run", "launcher.dist_backend", "launcher.gpus_per_node",
    "train.save_steps", "train.save_total_limit", "train.logging_steps",
    "train.completions_every", "video.prefetch", "video.cache", "video.decode_timeout_s",
    "video.max_failure_fraction", "video.on_failure", "rollout.gpu_memory_utilization",
)
_MODEL_FILES = (".json", ".safetensors", ".bin", ".pt", ".model", ".txt")


class RunIdentityError(RuntimeError):
    """Resume would mix two different runs (one line: the differing keys and the fix)."""


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{'a': {'b': 1}, 'c': [1, 2]}`` -> ``{'a.b': 1, 'c': [1, 2]}``.

    >>> flatten({"a": {"b": 1, "c": {}}, "d": [1, 2]})
    {'a.b': 1, 'a.c': {}, 'd': [1, 2]}
    """
    if isinstance(tree, Mapping) and tree:
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def _excluded(key: str, excluded: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in excluded)


def _container(cfg: Any) -> dict:
    from omegaconf import OmegaConf

    if not OmegaConf.is_config(cfg):
        return dict(cfg)
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except Exception:  # noqa: BLE001 - e.g. ${hydra:...} outside a Hydra run
        out = {}
        for k in cfg:
            try:
                out[k] = OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(
                    cfg[k]) else cfg[k]
            except Exception:  # noqa: BLE001
                out[k] = None
        return out


def file_identity(path: str | os.PathLike | None) -> dict[str, Any]:
    """``{'path', 'size', 'sha256'}`` of a data file (``{'path': ...}`` only if unreadable)."""
    if path is None:
        return {"path": None}
    p = Path(str(path)).expanduser().absolute()
    try:
        return {"path": str(p), "size": p.stat().st_size, "sha256": sha256_file(p)}
    except OSError:
        return {"path": str(p)}


def model_identity(path: str | os.PathLike | None, name: str | None = None) -> str:
    """A short id of a model: a local directory with a museg manifest (``final/`` of a training
    run: sha256 of every file, written at save) is identified by its files' content, so saving the
    same weights again keeps it; another local directory hashes its config/weight files' names,
    sizes and mtimes (cheap: no weights are read); anything else (a hub id, ``tiny``) is its name."""
    if path is None:
        return str(name)
    p = Path(str(path)).expanduser()
    if not p.is_dir():
        return str(path)
    h = hashlib.sha256(str(p.absolute()).encode())
    files = (read_manifest(p) or {}).get("files")
    if files:
        for rel in sorted(f for f in files if Path(f).suffix in _MODEL_FILES):
            h.update(f"{rel}:{files[rel].get('sha256')}".encode())
        return f"{p.absolute()}#{h.hexdigest()[:16]}"
    for f in sorted(p.rglob("*")):
        if f.is_file() and f.suffix in _MODEL_FILES:
            st = f.stat()
            h.update(f"{f.relative_to(p)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return f"{p.absolute()}#{h.hexdigest()[:16]}"


def train_fingerprint(cfg: Any, model_path: str | None = None) -> dict[str, Any]:
    """Flat fingerprint of a training run (see module docstring). ``model_path``: the resolved
    initial weights (``init_from``'s ``final/`` or the model directory), if known."""
    tree = _container(cfg)
    data = tree.get("data") or {}
    # the generator's parameters shape the data only when the data is generated
    skip = BOOKKEEPING if data.get("train_file") == "generated" else (*BOOKKEEPING, "data.synthetic")
    fp = {k: v for k, v in flatten(tree).items() if not _excluded(k, skip)}
    for k, v in file_identity(data.get("train_file")).items():
        fp[f"data.file.{k}"] = v
    model = tree.get("model") or {}
    init = tree.get("init_from")
    if model_path is None and init:
        p = Path(str(init)).expanduser()
        model_path = str(next((c for c in (p / "final", p) if (c / "config.json").is_file()), p))
    fp["model.identity"] = model_identity(model_path or model.get("path"), model.get("name"))
    return {k: _jsonable(v) for k, v in sorted(fp.items())}


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and v != v:  # nan never equals itself
        return "nan"
    if isinstance(v, tuple):
        return list(v)
    return v


def fingerprint_diff(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    """Keys whose values differ (or exist on one side only); [] when ``old`` is None. An empty
    section on one side only sets nothing (runs from before ``data.synthetic`` was typed
    recorded it as ``{}`` on real data, where it is now left out), so it is no difference.

    >>> fingerprint_diff({"a": 1, "b": 2, "s": {}}, {"a": 1, "b": 3, "c": 0})
    ['b', 'c']
    """
    if not old:
        return []
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)
                  and not (k not in new and old[k] == {}) and not (k not in old and new[k] == {}))


def check_resume_identity(old: Mapping[str, Any] | None, new: Mapping[str, Any], resume: Any,
                          where: str | os.PathLike) -> list[str]:
    """Refuse (``RunIdentityError``) to resume ``where`` when its fingerprint differs, unless
    ``resume=force`` (then one warning). Returns the differing keys."""
    diff = fingerprint_diff(old, new)
    if not diff:
        return diff
    shown = ", ".join(diff[:6]) + (f" and {len(diff) - 6} more" if len(diff) > 6 else "")
    first = diff[0]
    detail = f"; {first}: {(old or {}).get(first)!r} -> {new.get(first)!r}"
    if len(detail) > 160:
        detail = detail[:157] + "..."
    if str(resume).lower() == "force":
        log.warning("resume=force: continuing %s although its run differs in %s", where, shown)
        return diff
    raise RunIdentityError(
        f"{where} was made by a different run (differs in {shown}{detail}) (fix: resume=never to "
        "start a fresh numbered run directory, a new experiment_name, or resume=force to continue "
        "it anyway)")
