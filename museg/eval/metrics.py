"""Grounding metrics of the MUSEG evaluation: Charades-STA style (tvg) and THUMOS style (tal).

``grounding_metrics(groundtruths, outputs, kind)`` takes the ground-truth segments per item and the
*raw* model outputs (with tags) and returns fractions in [0, 1]:

* ``kind="tvg"``: ``n, miou, r@0.1, r@0.3, r@0.5, r@0.7, mean_r`` - IoU of the first predicted vs
  the first true segment; ``r@t`` counts ``IoU >= t``; ``mean_r`` averages the four recalls.
* ``kind="tal"``: ``n, f1@0.1, f1@0.3, f1@0.5, f1@0.7, mean_f1`` - per item the IoU matrix
  (truth x prediction); if its max is below ``t`` the item adds 0, else recall = share of truth rows
  whose max >= t, precision = share of prediction columns whose max >= t, and the item adds their
  harmonic mean (when both > 0).

Parsing follows the reference evaluation: the answer is the text between ``<answer>`` and the last
``</answer>`` (stripped; empty unless each tag occurs once); numbers are all matches of
``\\d+\\.*\\d*`` paired in order; an odd count, an unparsable number (``1..5``) or a pair with
``start >= end`` gives an empty prediction, which scores 0. IoUs are computed in float32 with torch
like the reference, so threshold decisions match it bit for bit - including its quirk that ``tvg``
compares the IoU as a Python double (float32 ``7/10`` = 0.69999999 fails ``>= 0.7``) while ``tal``
compares tensors to the threshold in float32 (where the same IoU passes ``>= 0.7``).

Deviations (only for inputs the reference crashes on or turns into NaN): a ground truth given as a
bare ``[s, e]`` is wrapped as ``[[s, e]]``; an item whose ground truth cannot be read scores 0; a
NaN IoU (degenerate or float32-overflowing segments) adds 0 to ``miou`` (the reference's miou would
become NaN). An empty input gives ``n = 0`` and zeros.

Example:

>>> from museg.eval.metrics import grounding_metrics
>>> m = grounding_metrics([[[0, 10]]], ["<think>...</think><answer>0.0-5.0</answer>"], "tvg")
>>> m["miou"], m["r@0.5"], m["r@0.7"]
(0.5, 1.0, 0.0)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch

from museg.rewards.parsing import NUMBER_PATTERN, extract_answer

__all__ = [
    "THRESHOLDS",
    "format_value",
    "metric_output",
    "record_ious",
    "MetricsError",
    "parse_answer_segments",
    "per_item_iou",
    "temporal_iou",
    "grounding_metrics",
    "best_constant_answer",
]

THRESHOLDS = (0.1, 0.3, 0.5, 0.7)
KINDS = ("tvg", "tal")


class MetricsError(ValueError):
    """Bad arguments to :func:`grounding_metrics` (unknown kind, length mismatch)."""


def parse_answer_segments(text: Any, extract: bool = True) -> list[list[float]]:
    """Predicted segments of a raw output (``extract=True``) or of an extracted answer.

    Returns ``[]`` when the prediction is unusable (it then scores 0).

    >>> parse_answer_segments("<think>..</think><answer>1.5-3 and 4 - 6.25</answer>")
    [[1.5, 3.0], [4.0, 6.25]]
    >>> parse_answer_segments("<answer>3-1.5</answer>"), parse_answer_segments("<answer>1 2 3</answer>")
    ([], [])
    >>> parse_answer_segments("1-2", extract=False), parse_answer_segments("1-2")
    ([[1.0, 2.0]], [])
    """
    try:
        answer = extract_answer(text) if extract else text
        numbers_found = NUMBER_PATTERN.findall(answer)
        if len(numbers_found) % 2:
            return []
        values = [float(x) for x in numbers_found]
        segments = [[values[i], values[i + 1]] for i in range(0, len(values), 2)]
        if not all(s < e for s, e in segments):
            return []
        return segments
    except Exception:
        return []


def temporal_iou(windows1: torch.Tensor, windows2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU matrix ``[N, M]`` of ``[N, 2]`` and ``[M, 2]`` windows (no clamping of NaN).

    ``union = area1 + area2 - inter`` in the tensors' dtype.

    >>> temporal_iou(torch.tensor([[0.0, 10.0]]), torch.tensor([[0.0, 7.0], [20.0, 30.0]]))
    tensor([[0.7000, 0.0000]])
    """
    area1 = windows1[:, 1] - windows1[:, 0]
    area2 = windows2[:, 1] - windows2[:, 0]
    start = torch.max(windows1[:, None, 0], windows2[:, 0])
    end = torch.min(windows1[:, None, 1], windows2[:, 1])
    inter = (end - start).clamp(0)
    return inter / (area1[:, None] + area2 - inter)


def _groundtruth(gt: Any) -> list[Any]:
    gt = list(gt)
    if gt and isinstance(gt[0], numbers.Real):
        return [gt]
    return gt


def _f32(segments: Sequence[Sequence[float]]) -> torch.Tensor:
    return torch.tensor([[float(s[0]), float(s[1])] for s in segments], dtype=torch.float32)


def _tvg_ious(pairs: list[tuple[Any, list[list[float]]]]) -> list[float]:
    """First-vs-first float32 IoU per item (as Python floats; NaN kept), batched in one tensor op."""
    ious = [0.0] * len(pairs)
    index, gts, preds = [], [], []
    for i, (gt, pred) in enumerate(pairs):
        if not pred:
            continue
        try:
            first = _groundtruth(gt)[0]
            gts.append([float(first[0]), float(first[1])])
        except Exception:
            continue
        index.append(i)
        preds.append(pred[0])
    if index:
        g, p = _f32(gts), _f32(preds)
        inter = (torch.min(g[:, 1], p[:, 1]) - torch.max(g[:, 0], p[:, 0])).clamp(0)
        values = (inter / ((g[:, 1] - g[:, 0]) + (p[:, 1] - p[:, 0]) - inter)).tolist()
        for i, v in zip(index, values, strict=True):
            ious[i] = v
    return ious


def per_item_iou(groundtruth: Any, output: Any) -> float:
    """tvg IoU (float32, as a Python float) of an output's first segment vs the first truth.

    0.0 for an empty prediction, an unreadable ground truth or a NaN IoU.

    >>> per_item_iou([[0, 10]], "<answer>0-7</answer>")
    0.699999988079071
    >>> per_item_iou([[0, 10]], "<answer>7-0</answer>")
    0.0
    """
    value = _tvg_ious([(groundtruth, parse_answer_segments(output))])[0]
    return value if math.isfinite(value) else 0.0


def _tal_scores(gt: Any, pred: list[list[float]]) -> list[float]:
    """Per-threshold F1 contribution of one item (float32 comparisons like the reference)."""
    scores = [0.0] * len(THRESHOLDS)
    if not pred:
        return scores
    try:
        iou = temporal_iou(_f32(_groundtruth(gt)), _f32(pred))
        if iou.numel() == 0:
            return scores
        best = iou.max()
        row_max, col_max = iou.amax(dim=1), iou.amax(dim=0)
    except Exception:
        return scores
    for i, thr in enumerate(THRESHOLDS):
        if bool(best < thr):
            continue
        rec = (row_max >= thr).float().mean().item()
        prc = (col_max >= thr).float().mean().item()
        if prc > 0 and rec > 0:
            scores[i] = 2 * prc * rec / (prc + rec)
    return scores


def grounding_metrics(
    groundtruths: Sequence[Any], outputs: Sequence[Any], kind: str
) -> dict[str, float | int]:
    """Metrics of raw outputs against ground truths (see the module docstring).

    Raises :class:`MetricsError` for an unknown ``kind`` or different list lengths.

    >>> gts = [[[0, 10], [20, 30]], [[0, 10]]]
    >>> outs = ["<answer>0-10 20-27</answer>", "<answer>0-10 50-60</answer>"]
    >>> m = grounding_metrics(gts, outs, "tal")
    >>> m["n"], m["f1@0.5"], round(m["f1@0.7"], 4)  # item 2: prc 0.5, rec 1 -> 2/3
    (2, 0.8333333333333333, 0.8333)
    >>> grounding_metrics([], [], "tvg")["miou"]
    0.0
    """
    if kind not in KINDS:
        raise MetricsError(f"grounding_metrics: kind must be one of {KINDS}, got {kind!r}")
    if len(groundtruths) != len(outputs):
        raise MetricsError(
            f"grounding_metrics: {len(groundtruths)} ground truths but {len(outputs)} outputs "
            f"(pass one output per item, in the same order)"
        )
    n = len(groundtruths)
    preds = [parse_answer_segments(o) for o in outputs]
    result: dict[str, float | int] = {"n": n}
    if kind == "tvg":
        ious = _tvg_ious(list(zip(groundtruths, preds, strict=True)))
        hits = [0] * len(THRESHOLDS)
        miou = 0.0
        for v in ious:
            if math.isfinite(v):
                miou += v
            for i, thr in enumerate(THRESHOLDS):
                hits[i] += int(v >= thr)
        result["miou"] = miou / n if n else 0.0
        for i, thr in enumerate(THRESHOLDS):
            result[f"r@{thr}"] = hits[i] / n if n else 0.0
        result["mean_r"] = sum(hits) / n / len(THRESHOLDS) if n else 0.0
    else:
        sums = [0.0] * len(THRESHOLDS)
        for gt, pred in zip(groundtruths, preds, strict=True):
            for i, s in enumerate(_tal_scores(gt, pred)):
                sums[i] += s
        for i, thr in enumerate(THRESHOLDS):
            result[f"f1@{thr}"] = sums[i] / n if n else 0.0
        result["mean_f1"] = sum(sums) / n / len(THRESHOLDS) if n else 0.0
    return result


def best_constant_answer(groundtruths: Sequence[Any], step: float,
                         horizon: float | None = None) -> tuple[list[float], float]:
    """The one ``[s, e]`` (on a grid of ``step`` seconds) with the highest tvg mIoU over all items.

    What a model that ignores the video can score: the floor a grounding result must beat. Candidates
    run from 0 to ``horizon`` (default: the latest ground-truth end); ties keep the earliest.

    >>> best_constant_answer([[[0, 4]], [[2, 6]], [[2, 4]]], step=2.0)
    ([2.0, 4.0], 0.6666666666666666)
    """
    if step <= 0:
        raise MetricsError(f"step must be > 0, got {step}")
    gts = [_groundtruth(g) for g in groundtruths]
    ends = [float(seg[1]) for g in gts for seg in g[:1]]
    if not ends:
        return [0.0, 0.0], 0.0
    top = horizon if horizon is not None else max(ends)
    grid = [k * step for k in range(int(math.floor(top / step + 1e-9)) + 1)]
    best: tuple[list[float], float] = ([0.0, 0.0], -1.0)
    for i, start in enumerate(grid):
        for end in grid[i + 1:]:
            answer = f"<answer>{start}-{end}</answer>"
            miou = grounding_metrics(gts, [answer] * len(gts), "tvg")["miou"]
            if miou > best[1] + 1e-12:
                best = ([start, end], miou)
    return best


def paired_gain(before: Sequence[float], after: Sequence[float], confidence: float = 0.95,
                n_resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean per-item gain ``after - before`` on the same items, with a paired bootstrap interval.

    The interval resamples items (scipy's percentile bootstrap of the mean difference), so it says
    how much of a gain the choice of evaluation items alone could produce; it says nothing about
    training seeds. Returns ``gain``, ``low``, ``high`` (same units as the inputs) and ``n``.

    >>> g = paired_gain([0.0, 0.5, 0.5, 1.0], [0.5, 1.0, 0.5, 1.0])
    >>> g["gain"], g["n"], g["low"] >= 0.0
    (0.25, 4, True)
    """
    import numpy as np
    from scipy import stats

    if len(before) != len(after):
        raise MetricsError(f"paired_gain needs equal lengths, got {len(before)} and {len(after)}")
    diff = np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64)
    if diff.size == 0:
        return {"gain": 0.0, "low": 0.0, "high": 0.0, "n": 0}
    mean = float(diff.mean())
    if diff.size == 1 or np.all(diff == diff[0]):  # no spread: the interval is the point
        return {"gain": mean, "low": mean, "high": mean, "n": int(diff.size)}
    res = stats.bootstrap((diff,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                          method="percentile", random_state=np.random.default_rng(seed))
    return {"gain": mean, "low": float(res.confidence_interval.low),
            "high": float(res.confidence_interval.high), "n": int(diff.size)}


def metric_output(record: dict) -> str:
    """The completion text the grounding metrics see: the record's answer re-wrapped in tags.

    Equivalent to the raw output under the exactly-one-pair rule, and works for reference files
    that only kept the extracted answer.

    >>> metric_output({"answer": "1.0-2.0"}), metric_output({"answer": ""})
    ('<answer>1.0-2.0</answer>', '')
    """
    ans = record.get("answer") or ""
    return f"<answer>{ans}</answer>" if ans else ""


def record_ious(records: Sequence[dict]) -> list[float]:
    """tvg IoU of each prediction record (first predicted vs first true segment), as the metrics see it.

    >>> record_ious([{"answer": "0-5", "groundtruth": [[0, 10]]}, {"answer": "", "groundtruth": [[0, 1]]}])
    [0.5, 0.0]
    """
    return [float(per_item_iou(r["groundtruth"], metric_output(r))) for r in records]


def format_value(v: Any, scale: float = 100.0) -> str:
    """A fraction as the paper prints it (×100, one decimal); ``-`` for missing.

    >>> format_value(0.5974), format_value(None), format_value(float("nan"))
    ('59.7', '-', 'nan')
    """
    if isinstance(v, bool) or not isinstance(v, int | float):
        return "-"
    if math.isnan(v):
        return "nan"
    return f"{v * scale:.1f}"
