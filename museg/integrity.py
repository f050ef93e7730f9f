"""Checkpoint integrity: a manifest in the ``COMPLETE`` marker, its verification, disk-full errors.

A checkpoint directory is only trusted when its ``COMPLETE`` marker lists every file that was
written (relative name, size in bytes, sha256) and each file still matches. :func:`write_manifest`
writes that marker (JSON, plus free-form metadata such as the run fingerprint) and
:func:`verify_checkpoint` returns ``None`` for an intact checkpoint or one line saying what is
wrong (``model.safetensors missing``, ``optimizer.pt has 12 bytes, the manifest says 4096``,
``trainer_state.pt sha256 differs``). Markers written before manifests existed (``step N``) are
checked for the files every checkpoint has.

Disk full: :func:`disk_full_error` recognises ENOSPC / EDQUOT (including PyTorch's zip writer's
``enforce fail ... unexpected pos`` when the disk is full) and :class:`DiskFullError` names the
directory and the free space needed.

Example::

    write_manifest(ckpt_dir, {"step": 10, "fingerprint": fp})
    problem = verify_checkpoint(ckpt_dir)          # None when intact
    manifest = read_manifest(ckpt_dir)              # {"step": 10, "files": {...}, ...}
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

__all__ = ["MARKER", "DiskFullError", "write_manifest", "read_manifest", "verify_checkpoint",
           "tree_size", "disk_full_error", "human_bytes", "sha256_file"]

MARKER = "COMPLETE"
#: Files every checkpoint written without DeepSpeed has (used for markers without a manifest).
LEGACY_REQUIRED = ("trainer_state.pt",)
_DISK_FULL_TEXT = ("unexpected pos", "no space left", "file write failed", "disk quota")


class DiskFullError(OSError):
    """The filesystem ran out of space (or quota) while writing; one line with the fix."""

    def __str__(self) -> str:
        return str(self.strerror)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MARKER)


def tree_size(directory: str | os.PathLike) -> int:
    """Total bytes of the files under ``directory`` (0 if it does not exist)."""
    d = Path(directory)
    return sum(p.stat().st_size for p in _files(d)) if d.is_dir() else 0


def write_manifest(directory: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
    """Write ``directory/COMPLETE``: ``meta`` plus ``files`` {relative name: {size, sha256}};
    written to a temporary name and renamed, so a marker is never half-written."""
    d = Path(directory)
    files = {p.relative_to(d).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
             for p in _files(d)}
    body = {**(meta or {}), "format": 1, "files": files}
    tmp = d / f".{MARKER}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(body, indent=1, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, d / MARKER)
    return d / MARKER


def read_manifest(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The parsed marker of ``directory``; ``{}`` for a legacy text marker; None without one."""
    marker = Path(directory) / MARKER
    try:
        text = marker.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {}  # "step N" markers written before manifests existed
    return data if isinstance(data, dict) else {}


def verify_checkpoint(directory: str | os.PathLike, deep: bool = True) -> str | None:
    """``None`` if ``directory`` is an intact checkpoint, else one line saying what is wrong.

    Checks that every file of the manifest exists with its size and (``deep``) its sha256.
    """
    d = Path(directory)
    manifest = read_manifest(d)
    if manifest is None:
        return f"no {MARKER} marker (interrupted while writing)"
    files = manifest.get("files")
    if not isinstance(files, dict):  # legacy marker: the files every checkpoint has
        missing = [n for n in LEGACY_REQUIRED if not (d / n).is_file()]
        return f"{missing[0]} missing" if missing else None
    for name, info in sorted(files.items()):
        p = d / name
        try:
            size = p.stat().st_size
        except OSError:
            return f"{name} missing (the manifest lists it)"
        if size != info.get("size"):
            return f"{name} has {size} bytes, the manifest says {info.get('size')} (truncated?)"
        if deep and info.get("sha256") and sha256_file(p) != info["sha256"]:
            return f"{name} sha256 differs from the manifest (corrupted)"
    return None


def human_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``.

    >>> human_bytes(1536), human_bytes(3 * 1024 ** 3)
    ('1.5 KiB', '3.0 GiB')
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _free_bytes(directory: Path) -> int | None:
    for p in (directory, *directory.parents):
        if p.exists():
            try:
                return shutil.disk_usage(p).free
            except OSError:
                return None
    return None


def is_disk_full(exc: BaseException) -> bool:
    """True for ENOSPC / EDQUOT, or a writer error whose text says the disk is full."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(seen, RuntimeError | OSError) and any(
                t in str(seen).lower() for t in _DISK_FULL_TEXT):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def disk_full_error(directory: str | os.PathLike, needed: int | None,
                    what: str = "checkpoint") -> DiskFullError:
    """The one-line :class:`DiskFullError` for ``directory`` (``needed``: bytes the write needs)."""
    d = Path(directory)
    free = _free_bytes(d)
    need = f"needs about {human_bytes(needed)}" if needed else "needs more space"
    have = f", {human_bytes(free)} free" if free is not None else ""
    return DiskFullError(errno.ENOSPC, f"no space left on the device of {d} while writing the "
                         f"{what}: it {need}{have} (fix: free space there, lower "
                         "train.save_total_limit, or move paths.output_root); the previous "
                         "checkpoint is intact")
