"""Read evaluation settings from a composed config, a plain dict or a partial test config.

``cfg_get(cfg, "eval.kind", default)`` walks a dotted key on a ``DictConfig`` / mapping / object
and returns ``default`` when a part is missing or the value is ``None``; ``plain(x)`` turns a
``DictConfig`` into plain containers (for json). Every module of :mod:`museg.eval` reads settings
through here, so none of them needs the runner.

Example:
    >>> cfg_get({"eval": {"limit": None, "kind": "tvg"}}, "eval.kind")
    'tvg'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["cfg_get", "plain"]


def cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
    """``cfg.a.b.c`` for a dotted ``key`` on DictConfig/dict, or ``default`` if missing/None.

    >>> cfg_get({"eval": {"limit": None}}, "eval.limit", 5), cfg_get({}, "x.y", 1)
    (5, 1)
    """
    node = cfg
    for part in key.split("."):
        if node is None:
            return default
        try:
            node = node.get(part) if isinstance(node, Mapping | DictConfig) else getattr(node, part)
        except Exception:  # missing interpolation, attribute error
            return default
    return default if node is None else node


def plain(x: Any) -> Any:
    """``x`` as plain python containers when it is a ``DictConfig`` (resolved), else ``x``."""
    return OmegaConf.to_container(x, resolve=True) if isinstance(x, DictConfig) else x
