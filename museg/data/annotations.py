"""Validated loaders for MUSEG training jsonl, grounding-evaluation json and E.T. Bench json.

Three on-disk formats become two typed records:

- :class:`Sample` from a MUSEG training file (one JSON object per line:
  ``idx, problem, solution=[[s, e], ...], video, task in {tvg, tal}``, optional ``duration``);
- :class:`EvalItem` from a grounding-evaluation file (a JSON list of
  ``{video, question, groundtruth=[[s, e], ...]}``; Charades-STA, THUMOS14/15, Perception Test) or
  from an E.T. Bench file (a JSON list of ``{idx, task, source, video, duration, q, [src, tgt, o, p,
  g]}``, see ``shared/spec/etbench_metrics.md``).

Every record is checked (missing key, wrong type, negative time, start >= end, empty solution,
unknown task, malformed JSON). A bad record raises :class:`AnnotationError` with a one-line message
``FILE:LINE: field `x`: what is wrong (fix the record or set data.on_bad_record=skip)``; with
``on_bad_record='skip'`` bad records are dropped and one ``logging.warning`` reports how many and
the first reasons. Nothing passes silently. E.T. Bench ground truth may contain zero-length windows,
so there only start > end is an error.

Video paths resolve against a video root with :func:`resolve_video_path` (training files say
``videos/charades/X.mp4``, evaluation files ``charades/X.mp4``; both work with either root).

Example::

    from museg.data.annotations import load_train_jsonl, load_grounding_eval
    samples = load_train_jsonl("data/train/stage_1.jsonl", "/data/museg", on_bad_record="skip")
    samples[0].solution, samples[0].video_path, samples[0].source   # [[0.03, 7.07], ...], ..., 'f:1'
    items = load_grounding_eval("data/eval/charades_sta.json", "/data/museg/videos")
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from museg.data.textcheck import special_token_in

logger = logging.getLogger(__name__)

TRAIN_TASKS = ("tvg", "tal")
ETBENCH_TASKS = ("rar", "eca", "rvq", "tvg", "epm", "tal", "evs", "vhd", "dvc", "slc", "tem", "gvq")
ON_BAD_RECORD = ("keep", "fail", "skip")
_FIX = "(fix the record or set data.on_bad_record=skip)"
_MAX_REASONS = 5


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


class _Bad(Exception):
    """Internal: one record is bad; carries 'field `x`: reason'."""


class _OddSegment(_Bad):
    """Internal: a segment with start >= end, the only fault ``on_bad_record='keep'`` keeps."""


def resolve_video_path(video: str, video_root: str | os.PathLike | None) -> str:
    """Resolve a video path from an annotation against ``video_root``; returns an absolute path.

    Deterministic rule (the first existing candidate wins; existence is NOT required, preflight
    checks it):

    1. ``video`` absolute -> itself.
    2. ``root/video``.
    3. ``video`` starts with ``videos/`` -> ``root/<video without 'videos/'>``
       (a training path used with a root that already is the ``videos`` folder).
    4. otherwise -> ``root/videos/video`` (an evaluation path used with the root above ``videos``).
    5. none exists -> candidate 3 when the root's basename is ``videos`` and the prefix is there,
       else candidate 2.

    >>> resolve_video_path("videos/a/b.mp4", "/nonexistent/videos")
    '/nonexistent/videos/a/b.mp4'
    >>> resolve_video_path("videos/a/b.mp4", "/nonexistent/data")
    '/nonexistent/data/videos/a/b.mp4'
    >>> resolve_video_path("a/b.mp4", "/nonexistent/videos")
    '/nonexistent/videos/a/b.mp4'
    """
    if os.path.isabs(video):
        return os.path.normpath(video)
    root = os.path.abspath(os.path.expanduser(os.fspath(video_root))) if video_root else os.getcwd()
    direct = os.path.join(root, video)
    if os.path.exists(direct):
        return os.path.normpath(direct)
    prefixed = video.startswith("videos/")
    alt = os.path.join(root, video[len("videos/"):]) if prefixed else os.path.join(root, "videos", video)
    if os.path.exists(alt):
        return os.path.normpath(alt)
    if prefixed and os.path.basename(root) == "videos":
        return os.path.normpath(alt)
    return os.path.normpath(direct)


# ----------------------------------------------------------------------------- field checks
def _require(rec: Mapping[str, Any], key: str) -> Any:
    if key not in rec:
        raise _Bad(f"field `{key}`: missing key")
    return rec[key]


def _check_str(rec: Mapping[str, Any], key: str) -> str:
    val = _require(rec, key)
    if not isinstance(val, str):
        raise _Bad(f"field `{key}`: expected a string, got {type(val).__name__} {val!r:.60}")
    if not val.strip():
        raise _Bad(f"field `{key}`: empty string")
    return val


def _check_text(rec: Mapping[str, Any], key: str) -> str:
    """A text field that reaches the tokenizer: no special tokens (museg.data.textcheck)."""
    val = _check_str(rec, key)
    found = special_token_in(val)
    if found:
        raise _Bad(f"field `{key}`: contains the model's special token {found[0]} at character "
                   f"{found[1]} (remove it from the text)")
    return val


def _is_num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _check_time(key: str, x: Any, what: str) -> float:
    if not _is_num(x):
        raise _Bad(f"field `{key}`: {what} {x!r:.40} is not a number")
    x = float(x)
    if not math.isfinite(x):
        raise _Bad(f"field `{key}`: {what} {x} is not finite")
    if x < 0:
        raise _Bad(f"field `{key}`: negative {what} {x}")
    return x


def _check_segments(key: str, segs: Any, allow_empty_len: bool = False) -> list[list[float]]:
    """Validate ``[[s, e], ...]``; ``allow_empty_len`` accepts s == e (E.T. Bench windows)."""
    if not isinstance(segs, list):
        raise _Bad(f"field `{key}`: expected a list of [start, end] pairs, got {type(segs).__name__}")
    if not segs:
        raise _Bad(f"field `{key}`: empty list of segments")
    out = []
    for i, seg in enumerate(segs):
        if not isinstance(seg, list | tuple) or len(seg) != 2:
            raise _Bad(f"field `{key}`: segment {i} is {seg!r:.40}, expected [start, end]")
        s = _check_time(key, seg[0], "start")
        e = _check_time(key, seg[1], "end")
        if s > e or (s == e and not allow_empty_len):
            op = ">=" if not allow_empty_len else ">"
            raise _OddSegment(f"field `{key}`: start {s} {op} end {e} (segment {i})")
        out.append([s, e])
    return out


def _check_duration(rec: Mapping[str, Any], required: bool = False) -> float | None:
    if "duration" not in rec or rec["duration"] is None:
        if required:
            raise _Bad("field `duration`: missing key")
        return None
    d = rec["duration"]
    if not _is_num(d) or not math.isfinite(float(d)) or float(d) <= 0:
        raise _Bad(f"field `duration`: expected a positive number, got {d!r:.40}")
    return float(d)


def _check_idx(rec: Mapping[str, Any]) -> int | str:
    idx = _require(rec, "idx")
    if isinstance(idx, bool) or not isinstance(idx, int | str):
        raise _Bad(f"field `idx`: expected an int or string, got {type(idx).__name__}")
    return idx


# ----------------------------------------------------------------------------- file reading
class _Collector:
    """Applies the fail/skip policy and logs one summary warning."""

    def __init__(self, path: str, on_bad_record: str, sink: list[str] | None = None):
        if on_bad_record not in ON_BAD_RECORD:
            raise ValueError(f"on_bad_record must be one of {ON_BAD_RECORD}, got {on_bad_record!r}")
        self.path, self.policy = path, on_bad_record
        self.reasons: list[str] = sink if sink is not None else []
        self.total = 0
        self.kept: list[str] = []

    def keep_odd(self, where: str, err: _Bad, segs: Any) -> list[list[float]]:
        """``keep``: the record's segments as written (start >= end included); others re-raise."""
        if self.policy != "keep" or not isinstance(err, _OddSegment):
            raise err
        self.kept.append(f"{where}: {err}")
        return [[float(s), float(e)] for s, e in segs]

    def bad(self, where: str, reason: str) -> None:
        if self.policy != "skip":  # keep: only start >= end segments are kept
            raise AnnotationError(f"{where}: {reason} {_FIX}")
        self.reasons.append(f"{where}: {reason}")  # skip is already set: no hint to set it

    def finish(self, n_ok: int) -> None:
        if self.kept:
            logger.warning(
                "%s: kept %d record(s) with a segment start >= end as written (data.on_bad_record="
                "keep: MUSEG trains on every row; skip drops them): %s", self.path, len(self.kept),
                " | ".join(self.kept))
        if self.reasons:
            logger.warning(
                "%s: skipped %d bad record(s) of %d (data.on_bad_record=skip); first: %s",
                self.path, len(self.reasons), self.total, " | ".join(self.reasons[:_MAX_REASONS]),
            )
        if n_ok == 0:
            raise AnnotationError(f"{self.path}: no usable records (file empty or all records bad)")


def _open_text(path: str | os.PathLike) -> tuple[str, str]:
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise AnnotationFileNotFoundError(f"{p}: annotation file not found (check the path in the config)")
    try:  # utf-8-sig: a UTF-8 byte-order mark is not part of the first record
        with open(p, encoding="utf-8-sig") as f:
            return p, f.read()
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{p}: not UTF-8 text (byte {e.start}: {e.reason}) (fix: give the "
                              "annotation file as UTF-8 JSON)") from None


def _iter_json_list(path: str, text: str) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(index, line, element)`` of a top-level JSON list, with each element's line number."""
    dec = json.JSONDecoder()
    ws = " \t\r\n"
    last = [0, 1]  # (position, line) of the previous lookup; positions only grow

    def line_of(pos: int) -> int:
        if pos < last[0]:
            last[:] = [0, 1]
        last[1] += text.count("\n", last[0], pos)
        last[0] = pos
        return last[1]

    def fail(pos: int, what: str) -> AnnotationError:
        return AnnotationError(f"{path}:{line_of(pos)}: malformed JSON: {what} (fix the file)")

    pos = len(text) - len(text.lstrip(ws))
    if pos >= len(text) or text[pos] != "[":
        raise fail(pos, "expected a JSON list of items at the top level")
    pos += 1
    i = 0
    while True:
        while pos < len(text) and text[pos] in ws:
            pos += 1
        if pos < len(text) and text[pos] == "]" and i == 0:
            _check_end(path, text, pos + 1, line_of)
            return
        try:
            obj, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise fail(e.pos, e.msg) from None
        yield i, line_of(pos), obj
        i += 1
        pos = end
        while pos < len(text) and text[pos] in ws:
            pos += 1
        if pos < len(text) and text[pos] == ",":
            pos += 1
        elif pos < len(text) and text[pos] == "]":
            _check_end(path, text, pos + 1, line_of)
            return
        else:
            raise fail(pos, "expected ',' or ']' after an item")


def _check_end(path: str, text: str, pos: int, line_of: Any) -> None:
    """Only whitespace may follow the closing ``]`` of a JSON list."""
    rest = len(text) - len(text[pos:].lstrip(" \t\r\n"))
    if rest < len(text):
        raise AnnotationError(f"{path}:{line_of(rest)}: malformed JSON: unexpected data after the "
                              f"list's closing ']' at offset {rest}: {text[rest:rest + 20]!r} "
                              "(fix the file)")


# ----------------------------------------------------------------------------- loaders
def load_train_jsonl(
    path: str | os.PathLike,
    video_root: str | os.PathLike | None,
    on_bad_record: str = "fail",
    *,
    bad_records: list[str] | None = None,
) -> list[Sample]:
    """Load a MUSEG training jsonl (``idx, problem, solution, video, task[, duration]``).

    Blank lines are ignored. ``on_bad_record``: 'fail' raises :class:`AnnotationError` at the first
    bad record, 'skip' drops bad records and logs their count. ``bad_records`` (any loader), if
    given, receives the message of every skipped record.
    """
    p, text = _open_text(path)
    col = _Collector(p, on_bad_record, bad_records)
    out: list[Sample] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        col.total += 1
        where = f"{p}:{lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            col.bad(where, f"malformed JSON line: {e.msg} at column {e.colno}")
            continue
        try:
            if not isinstance(rec, dict):
                raise _Bad(f"record: expected a JSON object, got {type(rec).__name__}")
            idx = _check_idx(rec)
            problem = _check_text(rec, "problem")
            task = _check_str(rec, "task")
            if task not in TRAIN_TASKS:
                raise _Bad(f"field `task`: unknown task {task!r}, expected one of {list(TRAIN_TASKS)}")
            raw = _require(rec, "solution")
            try:
                solution = _check_segments("solution", raw)
            except _Bad as e:
                solution = col.keep_odd(where, e, raw)
            video = _check_str(rec, "video")
            duration = _check_duration(rec)
        except _Bad as e:
            col.bad(where, str(e))
            continue
        out.append(Sample(idx=idx, problem=problem, solution=solution, video=video,
                          video_path=resolve_video_path(video, video_root), task=task,
                          duration=duration, source=where))
    col.finish(len(out))
    return out


def load_grounding_eval(
    path: str | os.PathLike,
    video_root: str | os.PathLike | None,
    on_bad_record: str = "fail",
    *,
    bad_records: list[str] | None = None,
) -> list[EvalItem]:
    """Load a grounding-evaluation json list of ``{video, question, groundtruth}``.

    ``item_id`` is the item's index in the file (kept for skipped items too, so ids stay stable);
    any other keys of an item (e.g. ``task`` in synthetic held-out files) go to ``extra``.
    """
    p, text = _open_text(path)
    col = _Collector(p, on_bad_record, bad_records)
    out: list[EvalItem] = []
    for i, lineno, rec in _iter_json_list(p, text):
        col.total += 1
        where = f"{p}:{lineno}: item {i}"
        try:
            if not isinstance(rec, dict):
                raise _Bad(f"item: expected a JSON object, got {type(rec).__name__}")
            video = _check_str(rec, "video")
            question = _check_text(rec, "question")
            gt = _check_segments("groundtruth", _require(rec, "groundtruth"))
        except _Bad as e:
            col.bad(where, str(e))
            continue
        extra = {k: v for k, v in rec.items() if k not in ("video", "question", "groundtruth")}
        out.append(EvalItem(item_id=str(i), video=video,
                            video_path=resolve_video_path(video, video_root), question=question,
                            groundtruth=gt, extra=extra, origin=where))
    col.finish(len(out))
    return out


def _etbench_groundtruth(tgt: Any) -> list[list[float]]:
    """Timestamps in ``tgt`` as ``[[s, e], ...]``: flat pair, list of pairs, or (vhd) a list of
    per-annotator lists of windows (flattened). Non-timestamp ``tgt`` (or none) -> ``[]``.

    >>> _etbench_groundtruth([1, 2.5])
    [[1.0, 2.5]]
    >>> _etbench_groundtruth([[[0, 2], [4, 6]], [[1, 3]]])
    [[0.0, 2.0], [4.0, 6.0], [1.0, 3.0]]
    >>> _etbench_groundtruth(None), _etbench_groundtruth(["a cat"])
    ([], [])
    """
    if not isinstance(tgt, list) or not tgt:
        return []
    if len(tgt) == 2 and all(_is_num(x) for x in tgt):
        return _check_segments("tgt", [tgt], allow_empty_len=True)
    if all(isinstance(x, list) and x and isinstance(x[0], list) for x in tgt):
        tgt = [w for per in tgt for w in per]
    if all(isinstance(x, list) and len(x) == 2 for x in tgt):
        return _check_segments("tgt", tgt, allow_empty_len=True)
    return []


def _load_subset(subset: str | os.PathLike | Mapping | None) -> Mapping | None:
    if subset is None or isinstance(subset, Mapping):
        return subset
    p, text = _open_text(subset)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{p}:{e.lineno}: malformed JSON: {e.msg} (fix the subset file)") from None
    if not isinstance(data, dict):
        raise AnnotationError(f"{p}: subset must be a JSON object {{task: {{source: [idx, ...]}}}}")
    return data


def load_etbench(
    path: str | os.PathLike,
    video_root: str | os.PathLike | None,
    on_bad_record: str = "fail",
    subset: str | os.PathLike | Mapping | None = None,
    *,
    bad_records: list[str] | None = None,
) -> list[EvalItem]:
    """Load an E.T. Bench annotation json; optionally keep only ``subset[task][source]`` indices.

    ``question`` is ``q``; ``groundtruth`` comes from ``tgt`` when it holds timestamps (else ``[]``);
    ``extra`` is the whole entry; ``item_id`` is ``'<task>/<source>/<idx>'``.
    """
    p, text = _open_text(path)
    keep = _load_subset(subset)
    col = _Collector(p, on_bad_record, bad_records)
    out: list[EvalItem] = []
    n_valid = 0
    seen: dict[str, str] = {}
    for i, lineno, rec in _iter_json_list(p, text):
        col.total += 1
        where = f"{p}:{lineno}: item {i}"
        try:
            if not isinstance(rec, dict):
                raise _Bad(f"item: expected a JSON object, got {type(rec).__name__}")
            idx = _check_idx(rec)
            task = _check_str(rec, "task")
            if task not in ETBENCH_TASKS:
                raise _Bad(f"field `task`: unknown task {task!r}, expected one of {list(ETBENCH_TASKS)}")
            source = _check_str(rec, "source")
            video = _check_str(rec, "video")
            question = _check_text(rec, "q")
            _check_duration(rec, required=True)
            gt = _etbench_groundtruth(rec.get("tgt"))
            item_id = f"{task}/{source}/{idx}"
            if item_id in seen:
                raise _Bad(f"field `idx`: duplicate id {item_id} (first at {seen[item_id]})")
        except _Bad as e:
            col.bad(where, str(e))
            continue
        seen[item_id] = where
        n_valid += 1
        if keep is not None and idx not in keep.get(task, {}).get(source, ()):
            continue
        out.append(EvalItem(item_id=item_id, video=video,
                            video_path=resolve_video_path(video, video_root), question=question,
                            groundtruth=gt, extra=dict(rec), origin=where))
    col.finish(n_valid)
    if not out:
        raise AnnotationError(f"{p}: the subset kept 0 of {n_valid} entries "
                              "(check that eval.subset belongs to this annotation file)")
    return out
