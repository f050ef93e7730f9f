"""wandb without network: probe the server once at start, fall back to offline (or refuse).

``wandb.init(mode="online")`` with no reachable server blocks for about 100 s and then kills the run.
:func:`ensure_wandb_reachable` (called once per process before the task, by
:func:`museg.runguard.prepare_run_dir`) probes ``WANDB_BASE_URL`` (default
``https://api.wandb.ai``) with a short timeout when the effective mode (``WANDB_MODE``, else
``cfg.wandb.mode``) is ``online``. Unreachable: one warning line and ``WANDB_MODE=offline`` for
this process and its children (every ``wandb.init`` in museg honours ``WANDB_MODE``; sync later with
``wandb sync``), or, with ``wandb.require_online=true``, a one-line refusal.

Example::

    mode = ensure_wandb_reachable(cfg)     # 'online', 'offline' or 'disabled'
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from typing import Any

__all__ = ["WandbUnreachableError", "ensure_wandb_reachable", "probe", "PROBE_TIMEOUT_S"]

log = logging.getLogger(__name__)
PROBE_TIMEOUT_S = float(os.environ.get("MUSEG_WANDB_PROBE_TIMEOUT", "5"))
DEFAULT_URL = "https://api.wandb.ai"


class WandbUnreachableError(RuntimeError):
    """wandb.mode=online, wandb.require_online=true and the server cannot be reached."""


def probe(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """None when an HTTP server answers at ``url`` (any status), else why not (one phrase)."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/healthz", timeout=timeout_s):
            return None
    except urllib.error.HTTPError:
        return None  # it answered
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return f"{type(reason).__name__}: {reason}"


def ensure_wandb_reachable(cfg: Any) -> str:
    """The wandb mode this process will use (see module docstring); may set ``WANDB_MODE``."""
    mode = os.environ.get("WANDB_MODE") or str(cfg.wandb.mode)
    if mode != "online":
        return mode
    url = os.environ.get("WANDB_BASE_URL") or DEFAULT_URL
    why = probe(url)
    if why is None:
        return mode
    if cfg.wandb.require_online:
        raise WandbUnreachableError(
            f"wandb.mode=online but {url} cannot be reached within {PROBE_TIMEOUT_S:g} s ({why}) "
            "(fix: check the network or WANDB_BASE_URL, or drop wandb.require_online to log "
            "offline and `wandb sync` later)")
    log.warning("wandb: %s cannot be reached within %g s (%s); logging offline instead (sync "
                "later with `wandb sync %s/wandb`)", url, PROBE_TIMEOUT_S, why,
                cfg.run_dir)
    os.environ["WANDB_MODE"] = "offline"
    return "offline"
