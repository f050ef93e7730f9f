"""Per-task E.T. Bench scorers (all but dvc/slc, see :mod:`museg.eval.etbench.dense`).

Each scorer takes the entries of one (task, source) group — dicts with the annotation fields and
the answer ``a`` — and returns a row of fractions: ``n``, ``failed`` and the task's metrics:

==============  ================================================================================
tvg, epm        ``miou``, ``r@t`` for t in :data:`THRESHOLDS`, ``f1`` (= mean of ``r@t``)
tem             same with IoU = max over the ground-truth segments; ``mrec`` (= mean of ``r@t``)
gvq             ``acc``; for correct choices the timestamp ``miou``, ``r@t`` and ``mrec``
tal             ``f1@t`` and ``f1`` (mean over t)
evs             ``f1`` over the parsed samples (1-second timeline), ``parsed``
vhd             ``f1`` = hit rate of the first number inside any annotated window
rar, eca, rvq   ``acc`` (letter rules, then MiniLM similarity fallback on the stripped answer)
==============  ================================================================================

IoUs are computed in float32 with torch and compared in float64, so an IoU of exactly 0.7 is
``0.69999999`` and misses ``>= 0.7`` as in the reference. Multiple-choice scorers take a
``choose(requests) -> list[int]`` callable for the similarity fallback (see :func:`make_chooser`);
it may raise :class:`~museg.eval.etbench.captions.CaptionMetricsUnavailable`.

Example::

    >>> row = score_grounding([{"a": "0 - 5", "tgt": [0, 10]}], "tvg")
    >>> row["miou"], row["r@0.5"], row["r@0.7"]
    (0.5, 1.0, 0.0)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from museg.eval.etbench.parsing import (
    choice_outcome,
    first_number,
    gvq_letter,
    option_letter,
    parse_timestamps,
    strip_choice,
)

__all__ = ["THRESHOLDS", "iou_matrix", "score_grounding", "score_gvq", "score_tal", "score_evs",
           "score_vhd", "score_choice", "make_chooser", "option_texts", "Chooser"]

THRESHOLDS = (0.1, 0.3, 0.5, 0.7)
#: ``choose([(answer, [option_text, ...]), ...]) -> [index, ...]`` (similarity fallback).
Chooser = Callable[[Sequence[tuple[str, list[str]]]], list[int]]


def iou_matrix(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> np.ndarray:
    """``[len(a), len(b)]`` IoUs computed in float32 (torch), returned as float64; NaN → 0.

    >>> float(iou_matrix([[0, 7]], [[0, 10]])[0, 0]) >= 0.7
    False
    >>> iou_matrix([[0, 5], [20, 30]], [[0, 10]]).tolist()
    [[0.5], [0.0]]
    """
    p = torch.tensor(a, dtype=torch.float32).reshape(-1, 2)
    g = torch.tensor(b, dtype=torch.float32).reshape(-1, 2)
    inter = (torch.minimum(p[:, None, 1], g[None, :, 1])
             - torch.maximum(p[:, None, 0], g[None, :, 0])).clamp(min=0)
    union = (p[:, None, 1] - p[:, None, 0]) + (g[None, :, 1] - g[None, :, 0]) - inter
    iou = (inter / union).double().numpy()
    return np.nan_to_num(iou, nan=0.0, posinf=0.0, neginf=0.0)


def _segments(tgt: Any) -> list[list[float]]:
    """Ground truth as a list of segments (flat ``[s, e]`` is wrapped)."""
    if tgt and not isinstance(tgt[0], list | tuple):
        return [list(tgt)]
    return [list(s) for s in tgt]


def _best_iou(seg: list[float], tgt: Any) -> float:
    """IoU of one predicted segment with the best ground-truth segment (0 without any).

    >>> _best_iou([0, 5], [[0, 10], [0, 6]]), _best_iou([0, 5], [])
    (0.8333333134651184, 0.0)
    """
    gt = _segments(tgt)
    return float(iou_matrix([seg], gt).max()) if gt else 0.0


def _recall_row(ious: list[float], n: int, mean_key: str) -> dict[str, float]:
    row = {"miou": sum(ious) / n if n else 0.0}
    for t in THRESHOLDS:
        row[f"r@{t}"] = sum(1 for x in ious if x >= t) / n if n else 0.0
    row[mean_key] = sum(row[f"r@{t}"] for t in THRESHOLDS) / len(THRESHOLDS)
    return row


def score_grounding(entries: Sequence[dict], task: str) -> dict[str, Any]:
    """tvg / epm (``f1``) and tem (``mrec``, IoU = max over GT): first parsed segment vs ``tgt``."""
    ious, failed = [], 0
    for e in entries:
        segs = parse_timestamps(e.get("a"))
        if not segs:
            failed += 1
            ious.append(0.0)
            continue
        ious.append(_best_iou(segs[0], e["tgt"]))
    n = len(entries)
    return {"n": n, "failed": failed, **_recall_row(ious, n, "mrec" if task == "tem" else "f1")}


def option_texts(options: Sequence[Any]) -> list[str]:
    """Options rendered for the similarity fallback: ``(A) text`` or ``(A) s - e``.

    >>> option_texts(["a cat", [1.5, 3]])
    ['(A) a cat', '(B) 1.5 - 3']
    """
    out = []
    for i, o in enumerate(options):
        body = f"{o[0]} - {o[1]}" if isinstance(o, list | tuple) else str(o)
        out.append(f"({option_letter(i)}) {body}")
    return out


def make_chooser(embedder: Any) -> Chooser:
    """Similarity fallback: the option whose text is closest (cosine, MiniLM) to the answer text.

    The answer text is the transformed one (:func:`~museg.eval.etbench.parsing.strip_choice`),
    not the raw answer; ties go to the first option.

    ``embedder`` is a :class:`~museg.eval.etbench.captions.SentenceEmbedder` (or anything with
    ``encode(texts) -> normalised [N, D] array``); all texts of a call are encoded in one batch.
    """

    def choose(requests: Sequence[tuple[str, list[str]]]) -> list[int]:
        if not requests:
            return []
        embedder.encode([t for a, opts in requests for t in (a, *opts)])
        picks = []
        for answer, opts in requests:
            sims = embedder.encode(opts) @ embedder.encode([answer])[0]
            picks.append(int(np.argmax(sims)))
        return picks

    return choose


def score_choice(entries: Sequence[dict], choose: Chooser) -> dict[str, Any]:
    """rar / eca / rvq accuracy; ``failed`` = empty answers + fallbacks that matched nothing."""
    hits, failed, fallback, requests = 0, 0, [], []
    for e in entries:
        status, found = choice_outcome(e.get("a"), int(e["p"]))
        if status == "hit":
            hits += 1
        elif status == "empty":
            failed += 1
        else:
            failed += not found
            fallback.append(int(e["p"]))
            requests.append((strip_choice(e.get("a")), option_texts(e["o"])))
    picks = choose(requests)
    hits += sum(1 for pick, p in zip(picks, fallback, strict=True) if pick == p)
    n = len(entries)
    return {"n": n, "failed": failed, "fallback": len(requests), "acc": hits / n if n else 0.0}


def score_gvq(entries: Sequence[dict], choose: Chooser) -> dict[str, Any]:
    """gvq: choice accuracy ``acc`` and, for correct choices only, timestamp ``mrec``/``miou``.

    The valid letters come from the option count of the group's first sample; the fallback
    compares the case-kept stripped answer with the options.
    """
    n_opts = len(entries[0]["o"]) if entries else 0
    letters: list[int | str] = [gvq_letter(e.get("a"), n_opts) for e in entries]
    todo = [i for i, x in enumerate(letters) if x == "fallback"]
    picks = choose([(strip_choice(entries[i].get("a"), keep_case=True),
                     option_texts(entries[i]["o"])) for i in todo])
    for i, pick in zip(todo, picks, strict=True):
        letters[i] = pick
    correct, failed, ious = 0, 0, []
    for e, letter in zip(entries, letters, strict=True):
        if letter == "empty":
            failed += 1
            continue
        if letter != int(e["p"]):
            continue
        correct += 1
        segs = parse_timestamps(e.get("a"))
        if not segs:
            failed += 1
            continue
        ious.append(_best_iou(segs[0], e["tgt"]))
    n = len(entries)
    return {"n": n, "failed": failed, "fallback": len(todo), "acc": correct / n if n else 0.0,
            **_recall_row(ious, n, "mrec")}


def score_tal(entries: Sequence[dict]) -> dict[str, Any]:
    """tal: per-sample F1 at each threshold (0 if no IoU reaches it), summed / N, mean over t."""
    sums = dict.fromkeys(THRESHOLDS, 0.0)
    failed = 0
    for e in entries:
        segs = parse_timestamps(e.get("a"))
        gt = _segments(e["tgt"])
        if not segs or not gt:
            failed += not segs
            continue
        m = iou_matrix(gt, segs)  # GT x pred
        best_gt, best_pred = m.max(axis=1), m.max(axis=0)
        for t in THRESHOLDS:
            if m.max() < t:
                continue
            rec = float((best_gt >= t).mean())
            prc = float((best_pred >= t).mean())
            sums[t] += 2 * prc * rec / (prc + rec)
    n = len(entries)
    row: dict[str, Any] = {"n": n, "failed": failed}
    for t in THRESHOLDS:
        row[f"f1@{t}"] = sums[t] / n if n else 0.0
    row["f1"] = sum(row[f"f1@{t}"] for t in THRESHOLDS) / len(THRESHOLDS)
    return row


def _timeline(segments: Sequence[Sequence[float]], value: int) -> np.ndarray:
    """1000 one-second bins; ``value`` on ``[max(0, round(s)), round(e))`` (round half even).

    >>> _timeline([[0.5, 2.5], [3.5, 5.5]], 1)[:7].tolist()
    [1, 1, 0, 0, 1, 1, 0]
    """
    line = np.zeros(1000, dtype=np.int64)
    for s, e in segments:
        line[max(0, round(s)):max(0, round(e))] = value
    return line


def score_evs(entries: Sequence[dict]) -> dict[str, Any]:
    """evs: timeline F1 (tp = both, fp = pred only, fn = GT only), mean over parsed samples."""
    f1s = []
    for e in entries:
        segs = parse_timestamps(e.get("a"))
        if not segs:
            continue
        both = _timeline(_segments(e["tgt"]), 1) + _timeline(segs, 2)
        tp, fp, fn = int((both == 3).sum()), int((both == 2).sum()), int((both == 1).sum())
        if tp == 0:
            f1s.append(0.0)
            continue
        p, r = tp / (tp + fp), tp / (tp + fn)
        f1s.append(2 * p * r / (p + r))
    n = len(entries)
    return {"n": n, "failed": n - len(f1s), "parsed": len(f1s),
            "f1": sum(f1s) / len(f1s) if f1s else 0.0}


def _windows(tgt: Any) -> list[list[float]]:
    """vhd windows of all annotators (``tgt`` is windows, or per-annotator lists of windows).

    >>> _windows([[1, 2], [5, 6]]), _windows([[[1, 2]], [[5, 6], [8, 9]]])
    ([[1, 2], [5, 6]], [[1, 2], [5, 6], [8, 9]])
    """
    if tgt and tgt[0] and isinstance(tgt[0][0], list | tuple):
        return [list(w) for annotator in tgt for w in annotator]
    return [list(w) for w in tgt]


def score_vhd(entries: Sequence[dict]) -> dict[str, Any]:
    """vhd: hit if the first number of the answer lies in any window (bounds included)."""
    hits, failed = 0, 0
    for e in entries:
        x = first_number(e.get("a"))
        if x is None:
            failed += 1
            continue
        hits += any(w[0] <= x <= w[1] for w in _windows(e["tgt"]) if len(w) == 2)
    n = len(entries)
    return {"n": n, "failed": failed, "f1": hits / n if n else 0.0}
