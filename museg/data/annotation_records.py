"""Annotation records and their field checks: what a valid training sample / evaluation item is.

The typed records the loaders of :mod:`museg.data.annotations` return (:class:`Sample`,
:class:`EvalItem`), the errors they raise (:class:`AnnotationError`, one line naming FILE:LINE, the
field and the fix) and the per-field checks they share. A check raises :class:`RecordError` with
``field `x`: what is wrong``; the loader adds the file position and applies ``data.on_bad_record``
(a segment with start >= end raises :class:`OddSegmentError`, the one fault ``keep`` keeps)::

    from museg.data.annotation_records import RecordError, check_segments
    check_segments("solution", [[0, 2.5], [3, 4]])       # [[0.0, 2.5], [3.0, 4.0]]
    check_segments("solution", [[3, 1]])                  # OddSegmentError: field `solution`: ...
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from museg.data.textcheck import special_token_in

__all__ = ["AnnotationError", "AnnotationFileNotFoundError", "EvalItem", "OddSegmentError",
           "RecordError", "Sample", "check_duration", "check_idx", "check_segments", "check_str",
           "check_text", "check_time", "is_num", "require"]


class AnnotationError(ValueError):
    """A bad annotation file or record; the message names FILE:LINE, the field and the fix."""


class AnnotationFileNotFoundError(AnnotationError, FileNotFoundError):
    """The annotation file itself does not exist."""


@dataclass
class Sample:
    """One MUSEG training record. ``video`` is as written, ``video_path`` resolved and absolute."""

    idx: int | str
    problem: str
    solution: list[list[float]]
    video: str
    video_path: str
    task: str
    duration: float | None
    source: str  # 'file:line'


@dataclass
class EvalItem:
    """One evaluation question. ``item_id`` is stable: '<index>' (grounding) or
    '<task>/<source>/<idx>' (E.T. Bench). ``extra`` holds every other field of the entry (for
    E.T. Bench the whole entry: task, source, q, tgt, o, p, g, duration, idx, ...)."""

    item_id: str
    video: str
    video_path: str
    question: str
    groundtruth: list[list[float]]
    extra: dict[str, Any] = field(default_factory=dict)
    origin: str = ""  # 'file:line (item N)', for error messages


class RecordError(Exception):
    """One record is bad; carries 'field `x`: reason' (the loader adds where)."""


class OddSegmentError(RecordError):
    """A segment with start >= end, the only fault ``on_bad_record='keep'`` keeps."""


def require(rec: Mapping[str, Any], key: str) -> Any:
    """``rec[key]``, or :class:`RecordError` naming the missing key."""
    if key not in rec:
        raise RecordError(f"field `{key}`: missing key")
    return rec[key]


def check_str(rec: Mapping[str, Any], key: str) -> str:
    """``rec[key]`` as a non-empty string."""
    val = require(rec, key)
    if not isinstance(val, str):
        raise RecordError(f"field `{key}`: expected a string, got {type(val).__name__} {val!r:.60}")
    if not val.strip():
        raise RecordError(f"field `{key}`: empty string")
    return val


def check_text(rec: Mapping[str, Any], key: str) -> str:
    """A text field that reaches the tokenizer: no special tokens (museg.data.textcheck)."""
    val = check_str(rec, key)
    found = special_token_in(val)
    if found:
        raise RecordError(f"field `{key}`: contains the model's special token {found[0]} at character "
                   f"{found[1]} (remove it from the text)")
    return val


def is_num(x: Any) -> bool:
    """An int or float, not a bool."""
    return isinstance(x, int | float) and not isinstance(x, bool)


def check_time(key: str, x: Any, what: str) -> float:
    """``x`` as a finite, non-negative number of seconds (``what``: start or end)."""
    if not is_num(x):
        raise RecordError(f"field `{key}`: {what} {x!r:.40} is not a number")
    x = float(x)
    if not math.isfinite(x):
        raise RecordError(f"field `{key}`: {what} {x} is not finite")
    if x < 0:
        raise RecordError(f"field `{key}`: negative {what} {x}")
    return x


def check_segments(key: str, segs: Any, allow_empty_len: bool = False) -> list[list[float]]:
    """Validate ``[[s, e], ...]``; ``allow_empty_len`` accepts s == e (E.T. Bench windows)."""
    if not isinstance(segs, list):
        raise RecordError(f"field `{key}`: expected a list of [start, end] pairs, got {type(segs).__name__}")
    if not segs:
        raise RecordError(f"field `{key}`: empty list of segments")
    out = []
    for i, seg in enumerate(segs):
        if not isinstance(seg, list | tuple) or len(seg) != 2:
            raise RecordError(f"field `{key}`: segment {i} is {seg!r:.40}, expected [start, end]")
        s = check_time(key, seg[0], "start")
        e = check_time(key, seg[1], "end")
        if s > e or (s == e and not allow_empty_len):
            op = ">=" if not allow_empty_len else ">"
            raise OddSegmentError(f"field `{key}`: start {s} {op} end {e} (segment {i})")
        out.append([s, e])
    return out


def check_duration(rec: Mapping[str, Any], required: bool = False) -> float | None:
    """``rec["duration"]`` as a positive number, ``None`` when absent and not ``required``."""
    if "duration" not in rec or rec["duration"] is None:
        if required:
            raise RecordError("field `duration`: missing key")
        return None
    d = rec["duration"]
    if not is_num(d) or not math.isfinite(float(d)) or float(d) <= 0:
        raise RecordError(f"field `duration`: expected a positive number, got {d!r:.40}")
    return float(d)


def check_idx(rec: Mapping[str, Any]) -> int | str:
    """``rec["idx"]``: an int or a string."""
    idx = require(rec, "idx")
    if isinstance(idx, bool) or not isinstance(idx, int | str):
        raise RecordError(f"field `idx`: expected an int or string, got {type(idx).__name__}")
    return idx
