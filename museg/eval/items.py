"""What one benchmark evaluation asks: its items, the prompt question and the frame spec.

``load_eval_items(cfg)`` reads ``cfg.eval.annotation`` (kind ``tvg`` / ``tal`` / ``mixed``
grounding json, or ``etbench``) with videos under ``eval.video_root`` or ``paths.video_root``,
truncated to ``eval.limit``; ``check_videos_exist(cfg, items)`` stops early when not one video
exists (a wrong video root); ``eval_question(template, problem)`` builds the question;
``eval_video_spec(cfg)`` is the frame spec of ``cfg.eval.video``. Problems raise
:class:`EvalError` (one line with the fix).

Example:
    >>> eval_question("Answer in <answer></answer>.", "When?")
    'When?\\nAnswer in <answer></answer>.'
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from museg.data.annotations import load_etbench, load_grounding_eval
from museg.data.prompts import TEMPLATES, build_question
from museg.data.video import video_spec_from_cfg

__all__ = ["EvalError", "check_videos_exist", "eval_question", "eval_video_spec",
           "load_eval_items"]


class EvalError(RuntimeError):
    """A configuration or resume problem of an evaluation run (one-line message with the fix)."""


def load_eval_items(cfg: Any) -> list:
    """Benchmark items for ``cfg.eval`` (kind tvg/tal/etbench), truncated to ``cfg.eval.limit``."""
    kind, ann = cfg.eval.kind, cfg.eval.annotation
    if not ann:
        raise EvalError("eval.annotation is not set (fix: benchmark=<name> or eval.annotation=PATH)")
    if not Path(ann).exists():
        raise EvalError(f"{ann}: annotation file not found (fix: set eval.annotation or "
                        "paths.data_root)")
    root = cfg.eval.video_root or cfg.paths.video_root
    on_bad = cfg.data.on_bad_record
    if kind in ("tvg", "tal", "mixed"):
        items = load_grounding_eval(ann, root, on_bad_record=on_bad)
    elif kind == "etbench":
        items = load_etbench(ann, root, on_bad_record=on_bad, subset=cfg.eval.subset)
    else:
        raise EvalError(f"eval.kind={kind!r} is not one of tvg, tal, mixed, etbench")
    limit = cfg.eval.limit
    if limit is not None:
        items = items[: int(limit)]
    ids = [it.item_id for it in items]
    if len(set(ids)) != len(ids):
        raise EvalError(f"{ann}: item ids are not unique; cannot resume safely")
    return items


def check_videos_exist(cfg: Any, items: Sequence) -> None:
    """Raise :class:`EvalError` (one line naming the video root and the first missing path) when
    not one video of ``items`` exists: a wrong video root, not a few broken files."""
    paths = list(dict.fromkeys(it.video_path for it in items))
    if not paths or any(os.path.exists(p) for p in paths):
        return
    key, root = (("eval.video_root", cfg.eval.video_root) if cfg.eval.video_root
                 else ("paths.video_root", cfg.paths.video_root))
    raise EvalError(f"none of the {len(paths)} videos of benchmark={cfg.eval.benchmark} "
                    f"exists under {key}={root} (first missing: {paths[0]}; fix: set "
                    f"{key} to the folder holding the annotation's video paths, "
                    f"e.g. {items[0].video})")


def eval_question(template: str | None, problem: str) -> str:
    r"""The prompt question: ``template`` is a name in ``prompts.TEMPLATES``, text with
    ``{problem}``, or an instruction appended after the question on a new line.

    >>> eval_question("", "When?")
    'When?'
    """
    if not template:
        return problem
    text = TEMPLATES.get(template, template)
    if "{problem}" not in text:  # an instruction to append
        return f"{problem}\n{text}"
    return build_question(text, problem)


def eval_video_spec(cfg: Any) -> dict:
    """Frame-sampling spec for evaluation (``cfg.eval.video``; MUSEG: fps 2, 16·28·28 min pixels)."""
    return dict(video_spec_from_cfg(cfg.eval.video))
