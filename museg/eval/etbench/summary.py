"""E.T. Bench scoring entry point: :func:`etbench_metrics` (12 tasks + the merged summary).

``entries`` are E.T. Bench annotation dicts (``idx, task, source, video, duration, q, src, tgt, o,
p, g``) plus the model's answer ``a``. The result (all values fractions, not ×100):

- ``rows``: one dict per (task, source): ``task, source, n, failed`` and the task's metrics
  (see :mod:`museg.eval.etbench.tasks` and :mod:`museg.eval.etbench.dense`);
- ``tasks``: per task, every numeric row metric averaged over the task's sources;
- the per-task keys ``rar_acc, eca_acc, rvq_acc, tvg_f1, epm_f1, tal_f1, evs_f1, vhd_f1, dvc_f1,
  dvc_sim, slc_f1, slc_sim, tem_rec, gvq_rec`` (and ``gvq_acc``, not in the summary), each the mean
  over the task's sources; the merged ``ref_acc`` (RAR, ECA, RVQ), ``gnd_f1`` (TVG, EPM, TAL, EVS,
  VHD), ``cap_f1`` / ``cap_sim`` (DVC, SLC), ``com_rec`` (TEM, GVQ) and ``avg`` (mean of REF, GND,
  CAP F1, COM). Every key is always present: ``None`` when a task is absent from the input or its
  metric could not be computed, and a merged key is ``None`` when any of its parts is;
- ``errors``: one line per unavailable component (Java, pycocoevalcap, MiniLM); the metrics that do
  not depend on it are still computed. The multiple-choice accuracies need MiniLM only when some
  answer falls back to similarity; ``dvc_f1``/``slc_f1`` never need it;
- ``n`` (entries scored after the subset) and ``timing_s`` (seconds per task / caption phase).

Example::

    from museg.eval.etbench import etbench_metrics
    res = etbench_metrics(json.load(open("etbench_answers.json")),
                          subset="shared/data/museg/eval/et_bench_subset.json")
    print(res["ref_acc"], res["gnd_f1"], res["cap_f1"], res["com_rec"], res["avg"])
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from museg.eval.etbench.captions import (
    CaptionMetricsUnavailable,
    MeteorScorer,
    SentenceEmbedder,
    report_unavailable,
)
from museg.eval.etbench.dense import build_group, score_dense
from museg.eval.etbench.tasks import (
    make_chooser,
    score_choice,
    score_evs,
    score_grounding,
    score_gvq,
    score_tal,
    score_vhd,
)

log = logging.getLogger(__name__)

__all__ = ["etbench_metrics", "ETBenchError", "TASKS", "TASK_KEYS", "MERGED", "load_subset",
           "filter_subset", "summarize"]

TASKS = ("rar", "eca", "rvq", "tvg", "epm", "tal", "evs", "vhd", "dvc", "slc", "tem", "gvq")
#: summary key -> (task, row metric)
TASK_KEYS = {
    "rar_acc": ("rar", "acc"), "eca_acc": ("eca", "acc"), "rvq_acc": ("rvq", "acc"),
    "tvg_f1": ("tvg", "f1"), "epm_f1": ("epm", "f1"), "tal_f1": ("tal", "f1"),
    "evs_f1": ("evs", "f1"), "vhd_f1": ("vhd", "f1"),
    "dvc_f1": ("dvc", "f1"), "dvc_sim": ("dvc", "sim"),
    "slc_f1": ("slc", "f1"), "slc_sim": ("slc", "sim"),
    "tem_rec": ("tem", "mrec"), "gvq_rec": ("gvq", "mrec"), "gvq_acc": ("gvq", "acc"),
}
MERGED = {
    "ref_acc": ("rar_acc", "eca_acc", "rvq_acc"),
    "gnd_f1": ("tvg_f1", "epm_f1", "tal_f1", "evs_f1", "vhd_f1"),
    "cap_f1": ("dvc_f1", "slc_f1"),
    "cap_sim": ("dvc_sim", "slc_sim"),
    "com_rec": ("tem_rec", "gvq_rec"),
    "avg": ("ref_acc", "gnd_f1", "cap_f1", "com_rec"),
}
_REQUIRED = {
    "rar": ("o", "p"), "eca": ("o", "p"), "rvq": ("o", "p"), "gvq": ("o", "p", "tgt"),
    "tvg": ("tgt",), "epm": ("tgt",), "tem": ("tgt",), "tal": ("tgt",), "evs": ("tgt",),
    "vhd": ("tgt",), "dvc": ("tgt", "g", "video"), "slc": ("tgt", "g", "video"),
}


class ETBenchError(ValueError):
    """Bad E.T. Bench input (one line naming the entry / file, the field and the fix)."""


def load_subset(subset: Mapping | str | Path | None) -> dict[str, dict[str, set[int]]] | None:
    """The subset as ``{task: {source: {idx, ...}}}`` from a dict or a json file path."""
    if subset is None:
        return None
    if isinstance(subset, str | Path):
        path = Path(subset)
        try:
            subset = json.loads(path.read_text())
        except FileNotFoundError:
            raise ETBenchError(f"{path}: subset file not found (fix: pass an existing "
                               "et_bench_subset.json or subset=None)") from None
        except json.JSONDecodeError as e:
            raise ETBenchError(f"{path}: not valid json ({e}) (fix: use the E.T. Bench subset "
                               "file {task: {source: [idx, ...]}})") from None
    if not isinstance(subset, Mapping) or not all(isinstance(v, Mapping) for v in subset.values()):
        raise ETBenchError("subset must map task -> source -> [idx, ...] "
                           "(fix: use the E.T. Bench subset json)")
    return {t: {s: {int(i) for i in idx} for s, idx in srcs.items()} for t, srcs in subset.items()}


def filter_subset(entries: Iterable[dict], subset: Mapping | str | Path | None) -> list[dict]:
    """Entries kept by the subset (``idx ∈ subset[task][source]``); all of them if None.

    >>> sub = {"tvg": {"charades_sta": [1]}}
    >>> [e["idx"] for e in filter_subset([{"task": "tvg", "source": "charades_sta", "idx": i}
    ...                                   for i in range(3)], sub)]
    [1]
    """
    keep = load_subset(subset)
    entries = list(entries)
    if keep is None:
        return entries
    return [e for e in entries if int(e.get("idx", -1)) in keep.get(e.get("task"), {})
            .get(e.get("source"), ())]


def _validate(entries: list[dict]) -> None:
    for i, e in enumerate(entries):
        where = f"entry {i} (idx={e.get('idx')!r}, task={e.get('task')!r})"
        if not isinstance(e, Mapping):
            raise ETBenchError(f"entry {i}: not a dict (fix: pass E.T. Bench annotation dicts)")
        task = e.get("task")
        if task not in _REQUIRED:
            raise ETBenchError(f"{where}: field `task` must be one of {', '.join(TASKS)} "
                               "(fix: score E.T. Bench entries only)")
        if "source" not in e:
            raise ETBenchError(f"{where}: field `source` missing (fix: keep the annotation "
                               "fields next to the answer `a`)")
        if e.get("a") is not None and not isinstance(e["a"], str):
            raise ETBenchError(f"{where}: field `a` must be the answer text, got "
                               f"{type(e['a']).__name__} (fix: store the model's answer string)")
        for f in _REQUIRED[task]:
            if e.get(f) is None:
                raise ETBenchError(f"{where}: field `{f}` missing (fix: keep the annotation "
                                   "fields next to the answer `a`)")
        if task in ("dvc", "slc") and len(e["tgt"]) != len(e["g"]):
            raise ETBenchError(f"{where}: `tgt` has {len(e['tgt'])} segments but `g` "
                               f"{len(e['g'])} captions (fix: one caption per segment)")


_COUNTS = ("n", "failed", "fallback", "parsed", "videos")


def _sum(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else sum(values)


def _mean(values: list[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)


def summarize(rows: list[dict]) -> dict[str, Any]:
    """Per-task source means (``tasks``), the per-task keys and the merged keys from ``rows``."""
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_task[r["task"]].append(r)
    tasks: dict[str, dict[str, float | None]] = {}
    for task, trs in by_task.items():
        names = [k for k in trs[0] if k not in ("task", "source")]
        tasks[task] = {k: (_sum if k in _COUNTS else _mean)([r.get(k) for r in trs])
                       for k in names}
    out: dict[str, Any] = {"tasks": tasks}
    for key, (task, metric) in TASK_KEYS.items():
        out[key] = tasks.get(task, {}).get(metric)
    for key, parts in MERGED.items():
        out[key] = _mean([out[p] for p in parts])
    return out


def etbench_metrics(entries: Iterable[dict], subset: Mapping | str | Path | None = None, *,
                    seed: int = 0, caption_metrics: bool = True,
                    embedder: SentenceEmbedder | None = None,
                    meteor: MeteorScorer | None = None) -> dict[str, Any]:
    """Score E.T. Bench answers (see the module docstring for the result's keys).

    ``subset``: None, ``{task: {source: [idx, ...]}}`` or a path to such json. ``seed`` fixes the
    random strings of the dense-captioning evaluation. ``caption_metrics=False`` skips the Java
    scorers and SentSim (their keys are ``None``, no error). ``embedder`` / ``meteor``: reuse a
    loaded MiniLM or a running METEOR process across calls (the caller closes ``meteor``);
    otherwise one METEOR process is started for this call and closed at its end.
    """
    entries = filter_subset(entries, subset)
    _validate(entries)
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for e in entries:
        groups[(e["task"], str(e["source"]))].append(e)
    errors: list[str] = []
    timing: dict[str, float] = defaultdict(float)
    embedder = embedder or SentenceEmbedder()
    chooser = make_chooser(embedder)

    own_meteor = meteor is None
    dense_keys = [k for k in groups if k[0] in ("dvc", "slc")]
    if caption_metrics and dense_keys and meteor is None:
        try:  # start now: the METEOR jar loads (~5 s) while the other tasks are scored
            meteor = MeteorScorer()
        except CaptionMetricsUnavailable as e:
            report_unavailable(errors, e)
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    try:
        for (task, source), group in sorted(groups.items()):
            if task in ("dvc", "slc"):
                continue
            t0 = time.perf_counter()
            rows[(task, source)] = _score_group(task, group, chooser, errors)
            timing[task] += time.perf_counter() - t0
        t0 = time.perf_counter()
        dense = [build_group(t, s, groups[(t, s)]) for t, s in sorted(dense_keys)]
        rows.update(score_dense(dense, seed=seed, errors=errors, embedder=embedder,
                                meteor=meteor if caption_metrics else None,
                                caption_metrics=caption_metrics, timing=timing))
        timing["dvc+slc"] = time.perf_counter() - t0
    finally:
        if own_meteor and meteor is not None:
            meteor.close()
    row_list = [{"task": t, "source": s, **rows[(t, s)]} for t, s in sorted(rows)]
    result: dict[str, Any] = {"rows": row_list, **summarize(row_list), "errors": errors,
                              "n": len(entries), "timing_s": dict(timing)}
    return result


def _score_group(task: str, group: list[dict], chooser: Any, errors: list[str]) -> dict:
    if task in ("tvg", "epm", "tem"):
        return score_grounding(group, task)
    if task == "tal":
        return score_tal(group)
    if task == "evs":
        return score_evs(group)
    if task == "vhd":
        return score_vhd(group)
    try:
        if task == "gvq":
            return score_gvq(group, chooser)
        return score_choice(group, chooser)
    except CaptionMetricsUnavailable as e:
        report_unavailable(errors, e)
        keys = ("acc", "miou", "r@0.1", "r@0.3", "r@0.5", "r@0.7", "mrec") if task == "gvq" \
            else ("acc",)
        return {"n": len(group), "failed": None, **dict.fromkeys(keys)}

