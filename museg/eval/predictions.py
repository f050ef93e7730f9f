"""Prediction files: our append-only ``predictions.jsonl`` and the reference implementation's json.

The runner appends one JSON object per finished item to ``run_dir/predictions.jsonl`` and flushes +
fsyncs it, so a killed run loses at most the line being written. On restart
:func:`repair_predictions` drops a torn last line and :func:`finished_ids` tells the runner what to
skip. :func:`load_prediction_file` reads either our file or the output json of the MUSEG reference
implementation (grounding: a list of annotation dicts with ``result.output`` plus a trailing stats
dict; E.T. Bench: a list of annotation entries with ``a``) into one record shape::

    {"item_id", "video", "output" (raw completion or None), "answer" (text inside <answer>,
     :func:`museg.rewards.parsing.extract_answer`),
     "groundtruth", "error" (optional), "extra" (E.T. Bench annotation fields)}

Example::

    with PredictionWriter(run_dir / "predictions.jsonl") as w:
        w.append({"item_id": "0", "video": "a.mp4", "output": "...", "answer": "1-2",
                  "groundtruth": [[1.0, 2.0]]})
    fmt, records = load_prediction_file(run_dir / "predictions.jsonl")
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = [
    "PredictionFormatError",
    "PredictionWriter",
    "repair_predictions",
    "read_predictions",
    "finished_ids",
    "detect_format",
    "load_prediction_file",
    "records_in_order",
]

class PredictionFormatError(ValueError):
    """A predictions file that is neither ours nor the reference implementation's output."""


class PredictionWriter:
    """Append-only JSONL writer; every :meth:`append` is flushed and fsynced before returning."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_predictions(self.path)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record as a single line and make it durable."""
        if "item_id" not in record:
            raise PredictionFormatError(f"{self.path}: record without `item_id`: {dict(record)!r}")
        line = json.dumps(dict(record), ensure_ascii=False)
        self._fh.write(line + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def repair_predictions(path: str | os.PathLike) -> int:
    """Truncate a torn (unterminated) last line left by a kill; returns the bytes removed."""
    path = Path(path)
    if not path.exists():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    keep = data.rfind(b"\n") + 1
    with open(path, "r+b") as fh:
        fh.truncate(keep)
    log.warning("%s: dropped a torn last line (%d bytes) from an interrupted run",
                path, len(data) - keep)
    return len(data) - keep


def read_predictions(path: str | os.PathLike, dedupe: bool = True) -> list[dict]:
    """Records of our ``predictions.jsonl``, one per item id in first-seen order.

    Duplicates keep the first record without an ``error`` field (an item whose video failed is
    retried on resume and may then have a later, successful line); if every line of an id has an
    error, the last one is kept. A torn last line is ignored; a malformed line elsewhere raises
    :class:`PredictionFormatError`.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8-sig").split("\n")
    records: list[dict] = []
    where: dict[str, int] = {}
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            if no == len(lines):  # torn tail, not yet repaired
                continue
            msg = getattr(e, "msg", "nested too deeply")
            raise PredictionFormatError(
                f"{path}:{no}: not valid JSON ({msg}); fix or delete that line") from None
        if not isinstance(rec, dict) or "item_id" not in rec:
            raise PredictionFormatError(f"{path}:{no}: field `item_id` missing; not a museg "
                                        "predictions line")
        key = str(rec["item_id"])
        if dedupe and key in where:
            if records[where[key]].get("error"):
                records[where[key]] = rec
            continue
        where[key] = len(records)
        records.append(rec)
    return records


def finished_ids(path: str | os.PathLike, retry_errors: bool = True) -> set[str]:
    """Item ids already predicted in ``path``; with ``retry_errors`` ids whose only records carry
    an ``error`` (undecodable video) do not count as finished, so a resumed run retries them."""
    return {str(r["item_id"]) for r in read_predictions(path)
            if not (retry_errors and r.get("error"))}


def detect_format(data: Any) -> str:
    """Name the format of a parsed json document: ``reference_grounding`` or ``reference_etbench``.

    >>> detect_format([{"video": "v.mp4", "groundtruth": [[0, 1]], "result": {"output": ""}}])
    'reference_grounding'
    >>> detect_format([{"task": "tvg", "source": "x", "idx": 0, "a": ""}])
    'reference_etbench'
    """
    if isinstance(data, list) and data and all(isinstance(d, dict) for d in data):
        rows = [d for d in data if not _is_stats(d)]
        if rows and all("result" in d and "groundtruth" in d for d in rows):
            return "reference_grounding"
        if rows and all("a" in d and "task" in d for d in rows):
            return "reference_etbench"
    raise PredictionFormatError(
        "unknown predictions format: expected museg predictions.jsonl (lines with `item_id`), "
        "a reference grounding "
        "output (list of dicts with `groundtruth` and `result.output`) or a reference E.T. Bench "
        "output (list of entries with `task` and `a`)")


def _is_stats(d: Mapping) -> bool:
    """The reference grounding script appends a metrics dict (``tot``, ``m_iou``...) at the end."""
    return "tot" in d and "video" not in d


def _raw_from_conversation(conv: Any) -> str | None:
    if isinstance(conv, list) and conv and isinstance(conv[-1], str):
        last = conv[-1]
        if last.startswith("assistant: "):
            return last[len("assistant: "):]
    return None


def _reference_records(fmt: str, data: list[dict]) -> list[dict]:
    out = []
    rows = [d for d in data if not _is_stats(d)]
    for i, d in enumerate(rows):
        if fmt == "reference_grounding":
            res = d.get("result") or {}
            if not isinstance(res, dict):
                raise PredictionFormatError(
                    f"item {i}: `result` is a {type(res).__name__}, expected an object with "
                    "`output` (the reference's format; fix: give the unmodified output json)")
            out.append({
                "item_id": str(i),
                "video": d.get("video"),
                "output": _raw_from_conversation(res.get("conversation")),
                "answer": str(res.get("output") or ""),
                "groundtruth": d.get("groundtruth"),
            })
        else:
            extra = {k: v for k, v in d.items() if k not in ("a", "c")}
            out.append({
                "item_id": f"{d.get('task')}/{d.get('source')}/{d.get('idx', i)}",
                "video": d.get("video"),
                "output": _raw_from_conversation(d.get("c")),
                "answer": str(d.get("a") or ""),
                "groundtruth": d.get("tgt"),
                "extra": extra,
            })
    return out


def load_prediction_file(path: str | os.PathLike) -> tuple[str, list[dict]]:
    """Read any supported predictions file into ``(format, records)``.

    ``format`` is ``museg`` (our jsonl), ``reference_grounding`` or ``reference_etbench``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: predictions file not found (set eval.predictions=<file>)")
    if not path.is_file():
        raise PredictionFormatError(f"{path}: not a file (fix: eval.predictions=<a predictions "
                                    "file>)")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a byte-order mark is not data
    except UnicodeDecodeError as e:
        raise PredictionFormatError(f"{path}: not a UTF-8 text file (byte {e.start}: {e.reason}); "
                                    "a binary file? (fix: eval.predictions=<predictions.jsonl or "
                                    "the reference's output json>)") from None
    if not text.strip():
        raise PredictionFormatError(f"{path}: the file is empty (fix: point eval.predictions at a "
                                    "finished run's predictions)")
    first = next((line for line in text.splitlines() if line.strip()), "")
    try:
        head = json.loads(first)
    except (json.JSONDecodeError, RecursionError):
        head = None
    if isinstance(head, dict) and "item_id" in head:
        return "museg", read_predictions(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    except RecursionError:
        raise PredictionFormatError(f"{path}: JSON nested too deeply to be a predictions file "
                                    "(fix: eval.predictions=<a predictions file>)") from None
    try:
        fmt = detect_format(data)
        return fmt, _reference_records(fmt, data)
    except PredictionFormatError as e:
        raise PredictionFormatError(f"{path}: {e}") from None


def records_in_order(records: Iterable[dict], item_ids: Iterable[str]) -> list[dict]:
    """Records reordered to follow ``item_ids``; ids without a record are skipped."""
    by_id = {str(r["item_id"]): r for r in records}
    return [by_id[i] for i in item_ids if i in by_id]
