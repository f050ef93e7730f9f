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

Video paths resolve against a video root with
:func:`museg.data.annotation_files.resolve_video_path` (training files say
``videos/charades/X.mp4``, evaluation files ``charades/X.mp4``; both work with either root). The
records, errors and field checks are in :mod:`museg.data.annotation_records`, file reading in
:mod:`museg.data.annotation_files`; this module applies ``data.on_bad_record`` and holds the loaders.

Example::

    from museg.data.annotations import load_train_jsonl, load_grounding_eval
    samples = load_train_jsonl("data/train/stage_1.jsonl", "/data/museg", on_bad_record="skip")
    samples[0].solution, samples[0].video_path, samples[0].source   # [[0.03, 7.07], ...], ..., 'f:1'
    items = load_grounding_eval("data/eval/charades_sta.json", "/data/museg/videos")
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from museg.data.annotation_files import iter_json_list, open_text, resolve_video_path
from museg.data.annotation_records import (
    AnnotationError,
    EvalItem,
    OddSegmentError,
    RecordError,
    Sample,
    check_duration,
    check_idx,
    check_segments,
    check_str,
    check_text,
    is_num,
    require,
)

__all__ = ["AnnotationError", "EvalItem", "Sample", "load_etbench", "load_grounding_eval",
           "load_train_jsonl"]

logger = logging.getLogger(__name__)

TRAIN_TASKS = ("tvg", "tal")
ETBENCH_TASKS = ("rar", "eca", "rvq", "tvg", "epm", "tal", "evs", "vhd", "dvc", "slc", "tem", "gvq")
ON_BAD_RECORD = ("keep", "fail", "skip")
_FIX = "(fix the record or set data.on_bad_record=skip)"
_MAX_REASONS = 5


class _Collector:
    """Applies the fail/skip policy and logs one summary warning."""

    def __init__(self, path: str, on_bad_record: str, sink: list[str] | None = None):
        if on_bad_record not in ON_BAD_RECORD:
            raise ValueError(f"on_bad_record must be one of {ON_BAD_RECORD}, got {on_bad_record!r}")
        self.path, self.policy = path, on_bad_record
        self.reasons: list[str] = sink if sink is not None else []
        self.total = 0
        self.kept: list[str] = []

    def keep_odd(self, where: str, err: RecordError, segs: Any) -> list[list[float]]:
        """``keep``: the record's segments as written (start >= end included); others re-raise."""
        if self.policy != "keep" or not isinstance(err, OddSegmentError):
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
    p, text = open_text(path)
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
                raise RecordError(f"record: expected a JSON object, got {type(rec).__name__}")
            idx = check_idx(rec)
            problem = check_text(rec, "problem")
            task = check_str(rec, "task")
            if task not in TRAIN_TASKS:
                raise RecordError(f"field `task`: unknown task {task!r}, expected one of {list(TRAIN_TASKS)}")
            raw = require(rec, "solution")
            try:
                solution = check_segments("solution", raw)
            except RecordError as e:
                solution = col.keep_odd(where, e, raw)
            video = check_str(rec, "video")
            duration = check_duration(rec)
        except RecordError as e:
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
    p, text = open_text(path)
    col = _Collector(p, on_bad_record, bad_records)
    out: list[EvalItem] = []
    for i, lineno, rec in iter_json_list(p, text):
        col.total += 1
        where = f"{p}:{lineno}: item {i}"
        try:
            if not isinstance(rec, dict):
                raise RecordError(f"item: expected a JSON object, got {type(rec).__name__}")
            video = check_str(rec, "video")
            question = check_text(rec, "question")
            gt = check_segments("groundtruth", require(rec, "groundtruth"))
        except RecordError as e:
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
    if len(tgt) == 2 and all(is_num(x) for x in tgt):
        return check_segments("tgt", [tgt], allow_empty_len=True)
    if all(isinstance(x, list) and x and isinstance(x[0], list) for x in tgt):
        tgt = [w for per in tgt for w in per]
    if all(isinstance(x, list) and len(x) == 2 for x in tgt):
        return check_segments("tgt", tgt, allow_empty_len=True)
    return []


def _load_subset(subset: str | os.PathLike | Mapping | None) -> Mapping | None:
    if subset is None or isinstance(subset, Mapping):
        return subset
    p, text = open_text(subset)
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
    p, text = open_text(path)
    keep = _load_subset(subset)
    col = _Collector(p, on_bad_record, bad_records)
    out: list[EvalItem] = []
    n_valid = 0
    seen: dict[str, str] = {}
    for i, lineno, rec in iter_json_list(p, text):
        col.total += 1
        where = f"{p}:{lineno}: item {i}"
        try:
            if not isinstance(rec, dict):
                raise RecordError(f"item: expected a JSON object, got {type(rec).__name__}")
            idx = check_idx(rec)
            task = check_str(rec, "task")
            if task not in ETBENCH_TASKS:
                raise RecordError(f"field `task`: unknown task {task!r}, expected one of {list(ETBENCH_TASKS)}")
            source = check_str(rec, "source")
            video = check_str(rec, "video")
            question = check_text(rec, "q")
            check_duration(rec, required=True)
            gt = _etbench_groundtruth(rec.get("tgt"))
            item_id = f"{task}/{source}/{idx}"
            if item_id in seen:
                raise RecordError(f"field `idx`: duplicate id {item_id} (first at {seen[item_id]})")
        except RecordError as e:
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
