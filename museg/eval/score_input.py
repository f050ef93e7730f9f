"""Checks of a predictions file before ``task=score`` computes metrics from it.

:func:`check_records` refuses records the metrics cannot read (no ``groundtruth``, ground truth
that is not ``[[start, end], ...]``, a non-text answer) with one line naming the item, instead of a
traceback deep in the metrics. :func:`coverage` compares the file with the benchmark's annotation
(item count, ids and, for grounding, each item's ground truth), so a partial or foreign file is
never reported under the benchmark's name: ``score`` refuses it unless ``eval.allow_partial=true``
and then labels the report ``<benchmark> (partial: n of N items)``.

Example::

    check_records(path, "tvg", records)            # raises ScoreError
    cov = coverage(cfg, records)                  # {"checked": True, "complete": False, ...}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from museg.eval.items import load_eval_items

__all__ = ["ScoreError", "check_records", "coverage", "partial_label"]


class ScoreError(ValueError):
    """The predictions file does not fit the benchmark (one line naming the file and the fix)."""


def _segments_ok(gt: Any) -> bool:
    if not isinstance(gt, list) or not gt:
        return False
    return all(isinstance(s, list | tuple) and len(s) == 2 and all(
        isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in s)
        for s in gt)


def check_records(path: str | Path, kind: str, records: Sequence[dict]) -> None:
    """Raise :class:`ScoreError` for the first record metrics cannot score."""
    for r in records:
        rid = r.get("item_id")
        ans = r.get("answer")
        if ans is not None and not isinstance(ans, str):
            raise ScoreError(f"{path}: item {rid!r}: `answer` is a {type(ans).__name__}, not text "
                             "(fix: give the predictions file as written by the evaluation)")
        if kind in ("tvg", "tal", "mixed"):
            if r.get("groundtruth") is None:
                raise ScoreError(f"{path}: item {rid!r} has no `groundtruth` (fix: score a "
                                 "predictions file written by task=eval or the reference "
                                 "evaluation, which keep the ground truth)")
            if not _segments_ok(r["groundtruth"]):
                raise ScoreError(f"{path}: item {rid!r}: `groundtruth` {r['groundtruth']!r:.60} "
                                 "is not a list of [start, end] pairs (fix: repair the file)")


def coverage(cfg: Any, records: Sequence[dict]) -> dict[str, Any]:
    """How ``records`` cover the benchmark annotation of ``cfg`` (``checked: False`` when the
    annotation cannot be read)."""
    try:
        items = load_eval_items(cfg)
    except Exception as e:  # noqa: BLE001 - no annotation here: say so, do not fail the score
        return {"checked": False, "reason": " ".join(str(e).split())[:200]}
    want = {it.item_id: it for it in items}
    have = {str(r.get("item_id")): r for r in records}
    missing = [i for i in want if i not in have]
    extra = [i for i in have if i not in want]
    differ = []
    for i, it in want.items():
        r = have.get(i)
        if r is None or not it.groundtruth or not _segments_ok(r.get("groundtruth")):
            continue
        if [[round(float(a), 3), round(float(b), 3)] for a, b in r["groundtruth"]] != \
                [[round(float(a), 3), round(float(b), 3)] for a, b in it.groundtruth]:
            differ.append(i)
    return {"checked": True, "n_benchmark": len(want), "n_predictions": len(have),
            "n_missing": len(missing), "n_extra": len(extra), "n_groundtruth_differs": len(differ),
            "first_missing": missing[:5], "first_extra": extra[:5],
            "first_groundtruth_differs": differ[:5],
            "complete": not missing and not extra and not differ}


def partial_label(benchmark: str, cov: dict[str, Any]) -> str:
    """``'charades_sta (partial: 4 of 3720 items)'`` for an incomplete coverage."""
    n = cov["n_predictions"] - cov["n_extra"]
    return f"{benchmark} (partial: {n} of {cov['n_benchmark']} items)"


def describe(cov: dict[str, Any]) -> str:
    """One phrase: what does not match."""
    parts = []
    if cov["n_missing"]:
        parts.append(f"{cov['n_missing']} benchmark item(s) have no prediction (first: "
                     f"{cov['first_missing'][0]})")
    if cov["n_extra"]:
        parts.append(f"{cov['n_extra']} prediction(s) are not benchmark items (first: "
                     f"{cov['first_extra'][0]})")
    if cov["n_groundtruth_differs"]:
        parts.append(f"{cov['n_groundtruth_differs']} item(s) have another ground truth (first: "
                     f"{cov['first_groundtruth_differs'][0]})")
    return "; ".join(parts)
