"""Dense-captioning evaluation of E.T. Bench's dvc and slc tasks (spec: "Dense captioning").

Per (task, source) group: answers are parsed with
:func:`~museg.eval.etbench.parsing.parse_captions`; parsed samples are grouped by ``video`` (a later
entry of the same video replaces an earlier one); ``scale = distinct videos / N`` (two parsed
samples of one video count once; ``failed`` still counts samples). For each threshold t:

- detection — a (prediction, GT) pair covers when IoU > t (IoU = inter / (min(hull, len1 + len2)
  + 1e-8), float64); per video precision / recall, averaged over videos; F1@t from the scaled P, R;
- captions — every prediction pairs with each GT caption of IoU ≥ t, or else with a random
  10–20-letter string; per video BLEU-1..4, METEOR, ROUGE-L, CIDEr and SentSim on PTB-tokenized
  text, averaged over videos (not scaled).

``f1`` and the caption metrics are means over t. All groups of a run share one tokenizer call, one
METEOR process and one embedding batch. Random strings are drawn (seeded per group) from one seeded
pool of :data:`RANDOM_POOL` strings: the same distribution per draw, and far fewer sentences to
embed than one fresh string per unmatched prediction.

Example::

    groups = [build_group("dvc", "youcook2", entries)]
    rows = score_dense(groups, seed=0, errors=[])      # {("dvc", "youcook2"): {"f1": .., "sim": ..}}
"""

from __future__ import annotations

import logging
import random
import string
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from museg.eval.etbench.captions import (
    CaptionMetricsUnavailable,
    MeteorScorer,
    PTBTokenizer,
    SentenceEmbedder,
    coco_scores,
    report_unavailable,
)
from museg.eval.etbench.parsing import parse_captions
from museg.eval.etbench.tasks import THRESHOLDS

log = logging.getLogger(__name__)

__all__ = ["DenseGroup", "build_group", "dense_iou", "detection", "caption_pairs", "random_pool",
           "score_dense", "CAPTION_KEYS", "RANDOM_POOL"]

RANDOM_POOL = 256
CAPTION_KEYS = ("sim", "meteor", "bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider")
Video = tuple[list[list[float]], list[str], list[list[float]], list[str]]


@dataclass
class DenseGroup:
    """One (task, source): ``videos[video] = (pred_segs, pred_caps, gt_segs, gt_caps)``."""

    task: str
    source: str
    n: int
    parsed: int
    videos: dict[str, Video] = field(default_factory=dict)


def build_group(task: str, source: str, entries: Sequence[dict]) -> DenseGroup:
    """Parse the answers of one group; unparsed samples only count in ``n``."""
    group = DenseGroup(task, source, len(entries), 0)
    for e in entries:
        segs, caps = parse_captions(e.get("a"))
        if not segs:
            continue
        group.parsed += 1
        gt = [list(map(float, s)) for s in e["tgt"]]
        group.videos[str(e["video"])] = (segs, caps, gt, [str(c) for c in e["g"]])
    return group


def dense_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of the dense-captioning evaluation: inter / (min(hull, len1 + len2) + 1e-8).

    >>> round(dense_iou([0, 10], [5, 15]), 6), dense_iou([0, 1], [2, 3])
    (0.333333, 0.0)
    """
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = min(max(a[1], b[1]) - min(a[0], b[0]), (a[1] - a[0]) + (b[1] - b[0]))
    return inter / (union + 1e-8)


def detection(videos: dict[str, Video], t: float) -> tuple[float, float]:
    """(precision, recall) at ``t`` (strict ``IoU > t``), averaged over videos.

    >>> detection({"v": ([[0, 10], [50, 60]], ["a", "b"], [[0, 10]], ["a"])}, 0.5)
    (0.5, 1.0)
    """
    if not videos:
        return 0.0, 0.0
    ps, rs = [], []
    for preds, _, gts, _ in videos.values():
        covered_p, covered_g = set(), set()
        for i, p in enumerate(preds):
            for j, g in enumerate(gts):
                if dense_iou(p, g) > t:
                    covered_p.add(i)
                    covered_g.add(j)
        ps.append(len(covered_p) / len(preds) if preds else 0.0)
        rs.append(len(covered_g) / len(gts) if gts else 0.0)
    return sum(ps) / len(ps), sum(rs) / len(rs)


def random_pool(seed: int, size: int = RANDOM_POOL) -> list[str]:
    """``size`` random lowercase strings of 10–20 letters, fixed by ``seed``.

    >>> pool = random_pool(0, 3); pool == random_pool(0, 3), all(10 <= len(s) <= 20 for s in pool)
    (True, True)
    """
    rng = random.Random(f"museg-etbench-random-strings:{seed}")
    return ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(10, 20)))
            for _ in range(size)]


def caption_pairs(videos: dict[str, Video], t: float, rng: random.Random,
                  pool: Sequence[str]) -> list[list[tuple[str, str]]]:
    """Per video, the (prediction, reference) caption pairs at ``t`` (``IoU >= t``).

    >>> v = {"v": ([[0, 10], [50, 60]], ["a", "b"], [[0, 10]], ["g"])}
    >>> caption_pairs(v, 0.5, random.Random(0), ["zzzzzzzzzz"])
    [[('a', 'g'), ('b', 'zzzzzzzzzz')]]
    """
    out = []
    for preds, pcaps, gts, gcaps in videos.values():
        pairs = []
        for p, pc in zip(preds, pcaps, strict=True):
            matched = [(pc, gc) for g, gc in zip(gts, gcaps, strict=False) if dense_iou(p, g) >= t]
            pairs.extend(matched or [(pc, pool[rng.randrange(len(pool))])])
        out.append(pairs)
    return out


def _detection_row(group: DenseGroup) -> dict[str, Any]:
    scale = len(group.videos) / group.n if group.n else 0.0   # distinct videos, not samples
    row: dict[str, Any] = {"n": group.n, "failed": group.n - group.parsed,
                           "videos": len(group.videos)}
    f1s, precs, recs = [], [], []
    for t in THRESHOLDS:
        p, r = detection(group.videos, t)
        p, r = p * scale, r * scale
        f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
        row[f"f1@{t}"] = f1
        f1s.append(f1)
        precs.append(p)
        recs.append(r)
    row["precision"] = sum(precs) / len(precs)
    row["recall"] = sum(recs) / len(recs)
    row["f1"] = sum(f1s) / len(f1s)
    return row


def score_dense(groups: Sequence[DenseGroup], seed: int = 0, errors: list[str] | None = None,
                embedder: SentenceEmbedder | None = None, meteor: MeteorScorer | None = None,
                caption_metrics: bool = True,
                timing: dict[str, float] | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    """Rows (detection + caption metrics) for every group; caption failures → ``None`` + error.

    ``meteor``: a running :class:`MeteorScorer` (started early by the caller so that Java loads
    while other tasks are scored); ``None`` with ``caption_metrics`` starts one here.
    """
    errors = [] if errors is None else errors
    timing = {} if timing is None else timing
    rows = {(g.task, g.source): _detection_row(g) for g in groups}
    todo = [g for g in groups if g.parsed]
    for g in groups:
        if not g.parsed:
            rows[(g.task, g.source)].update(dict.fromkeys(CAPTION_KEYS, 0.0))
    if not todo:
        return rows
    for g in todo:
        rows[(g.task, g.source)].update(dict.fromkeys(CAPTION_KEYS))
    if not caption_metrics:
        return rows

    t0 = time.perf_counter()
    try:
        tokenizer = PTBTokenizer()
        pool = random_pool(seed)
        plan: dict[tuple[str, str, float], list[list[tuple[str, str]]]] = {}
        for g in todo:
            rng = random.Random(f"museg-etbench:{seed}:{g.task}:{g.source}")
            for t in THRESHOLDS:
                plan[(g.task, g.source, t)] = caption_pairs(g.videos, t, rng, pool)
        # as the reference: per (group, t) one tokenizer run over the predictions of all pairs
        # and one over their references, in pair order — here all in a single Java call
        keys = list(plan)
        docs = [[p[i] for v in plan[k] for p in v] for k in keys for i in (0, 1)]
        tok = tokenizer.tokenize_documents(docs)
        for j, k in enumerate(keys):
            hyps, refs = iter(tok[2 * j]), iter(tok[2 * j + 1])
            plan[k] = [[(next(hyps), next(refs)) for _ in v] for v in plan[k]]
    except CaptionMetricsUnavailable as e:
        report_unavailable(errors, e)
        return rows
    timing["captions:tokenize"] = time.perf_counter() - t0

    per_video: dict[str, dict[tuple[str, str, float], list[float]]] = {k: {} for k in CAPTION_KEYS}
    # A thread drives METEOR (a Java process), then BLEU/ROUGE/CIDEr, while this one embeds.
    meteor_job = threading.Thread(target=_run_meteor_and_coco,
                                  args=(plan, meteor, per_video, errors, timing))
    meteor_job.start()
    try:
        t0 = time.perf_counter()
        try:
            embedder = embedder or SentenceEmbedder()
            embedder.encode(sorted({s for vids in plan.values() for v in vids for p in v for s in p}))
            for k, vids in plan.items():
                per_video["sim"][k] = [float(np.mean(embedder.pair_similarity(v))) for v in vids]
        except CaptionMetricsUnavailable as e:
            report_unavailable(errors, e)
        timing["captions:sentsim"] = time.perf_counter() - t0
    finally:
        meteor_job.join()

    for g in todo:
        row = rows[(g.task, g.source)]
        for m in CAPTION_KEYS:
            vals = [per_video[m].get((g.task, g.source, t)) for t in THRESHOLDS]
            if any(v is None for v in vals):
                continue
            row[m] = float(np.mean([np.mean(v) for v in vals]))
    return rows


def _run_meteor_and_coco(plan: dict, meteor: MeteorScorer | None, per_video: dict,
                         errors: list[str], timing: dict[str, float]) -> None:
    t0 = time.perf_counter()
    own = meteor is None
    try:
        meteor = meteor or MeteorScorer()
        keys = list(plan)
        scores = meteor.video_scores([v for k in keys for v in plan[k]])
        pos = 0
        for k in keys:
            per_video["meteor"][k] = scores[pos:pos + len(plan[k])]
            pos += len(plan[k])
    except CaptionMetricsUnavailable as e:
        report_unavailable(errors, e)
    except Exception as e:  # noqa: BLE001 - a thread must report, not die silently
        report_unavailable(errors, f"METEOR failed ({type(e).__name__}: {e})")
    finally:
        if own and meteor is not None:
            meteor.close()
    timing["captions:meteor"] = time.perf_counter() - t0
    try:
        _run_coco(plan, per_video, timing)
    except Exception as e:  # noqa: BLE001 - a thread must report, not die silently
        report_unavailable(errors, f"BLEU/ROUGE/CIDEr failed ({type(e).__name__}: {e})")


def _run_coco(plan: dict, per_video: dict, timing: dict[str, float]) -> None:
    t0 = time.perf_counter()
    cache: dict[tuple[tuple[str, str], ...], dict[str, float]] = {}
    for k, vids in plan.items():
        vals = []
        for v in vids:
            key = tuple(v)
            if key not in cache:
                cache[key] = coco_scores(v)
            vals.append(cache[key])
        for m in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider"):
            per_video[m][k] = [x[m] for x in vals]
    timing["captions:coco"] = time.perf_counter() - t0

