"""Score an existing predictions file without a model (``task=score``).

Accepts our ``predictions.jsonl`` and the MUSEG reference implementation's output json (grounding:
annotation dicts with ``result.output``; E.T. Bench: entries with ``a``), detects which one it is,
computes the benchmark metrics and writes the same report as an evaluation run into ``cfg.run_dir``.

Example::

    python -m museg.run task=score benchmark=charades_sta eval.predictions=/runs/eval_charades.json

    from museg.eval.score import score
    metrics = score(cfg)          # cfg.eval.predictions + cfg.eval.kind (+ cfg.eval.subset)

:func:`compute_metrics` is shared with the runner: records in, metrics dict out.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from museg.eval.etbench import etbench_metrics
from museg.eval.metrics import grounding_metrics, metric_output
from museg.eval.predictions import PredictionFormatError, load_prediction_file
from museg.eval.report import collect_settings, write_report
from museg.eval.score_input import (
    ScoreError,
    check_records,
    coverage,
    describe,
    partial_label,
)

log = logging.getLogger(__name__)

__all__ = ["ScoreError", "compute_metrics", "etbench_entries", "score"]

def etbench_entries(records: Sequence[dict]) -> list[dict]:
    """E.T. Bench entries (annotation fields + answer ``a``) from prediction records."""
    entries = []
    for r in records:
        extra = r.get("extra")
        if not isinstance(extra, dict) or "task" not in extra:
            raise ScoreError(f"record {r.get('item_id')!r} has no E.T. Bench fields (`extra.task`);"
                             " is this a grounding predictions file? (fix: use a grounding benchmark)")
        entries.append({**extra, "a": r.get("answer") or ""})
    return entries


def _load_subset(subset: Any) -> Any:
    if isinstance(subset, str | Path):
        p = Path(subset)
        if not p.exists():
            raise ScoreError(f"{p}: E.T. Bench subset file not found (fix: eval.subset=PATH or null)")
        return json.loads(p.read_text())
    return subset


def compute_metrics(kind: str, records: Sequence[dict], subset: Any = None) -> dict:
    """Metrics of ``records`` for ``kind`` (tvg/tal: grounding_metrics; etbench: etbench_metrics)."""
    if kind in ("tvg", "tal"):
        gts = [r["groundtruth"] for r in records]
        return dict(grounding_metrics(gts, [metric_output(r) for r in records], kind))
    if kind == "etbench":
        return dict(etbench_metrics(etbench_entries(records), subset=_load_subset(subset)))
    if kind == "mixed":
        return mixed_metrics(records)
    raise ScoreError(f"eval.kind={kind!r} is not one of tvg, tal, mixed, etbench")


def mixed_metrics(records: Sequence[dict]) -> dict:
    """Grounding metrics per item task (``extra.task`` = tvg or tal), flattened and nested.

    Used by benchmarks that mix single- and multi-segment questions (the synthetic held-out split):
    ``miou``/``mean_r``/``r@t`` come from the tvg items, ``mean_f1``/``f1@t`` from the tal items.
    """
    out: dict[str, Any] = {"n": len(records)}
    for task in ("tvg", "tal"):
        rows = [r for r in records if (r.get("extra") or {}).get("task", "tvg") == task]
        sub = compute_metrics(task, rows)
        out[task] = sub
        out.update({k: v for k, v in sub.items() if k != "n"})
    return out


def _check_kind(path: Path, fmt: str, kind: str, records: Sequence[dict]) -> None:
    if fmt == "museg" and records:
        first = records[0]
        extra = first.get("extra") if isinstance(first.get("extra"), dict) else {}
        is_et = first.get("kind") == "etbench" or (
            "kind" not in first and "source" in extra and "task" in extra)
        fmt_kind = "etbench" if is_et else "grounding"
    else:
        fmt_kind = "etbench" if fmt == "reference_etbench" else "grounding"
    want = "etbench" if kind == "etbench" else "grounding"
    if fmt_kind != want:
        raise ScoreError(f"{path}: holds {fmt_kind} predictions but eval.kind={kind} "
                         f"(fix: choose a {fmt_kind} benchmark)")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def score(cfg: Any) -> dict:
    """Score ``cfg.eval.predictions`` for ``cfg.eval.kind``; writes the report to ``cfg.run_dir``."""
    pred = cfg.eval.predictions
    if not pred:
        raise ScoreError("task=score needs eval.predictions=<file> (our predictions.jsonl or the "
                         "reference implementation's output json)")
    path = Path(pred)
    kind = cfg.eval.kind
    if kind not in ("tvg", "tal", "mixed", "etbench"):
        raise ScoreError(f"task=score scores one benchmark, got eval.kind={kind!r} "
                         "(fix: benchmark=<charades_sta|thumos14|...|et_bench_subset>)")
    try:
        fmt, records = load_prediction_file(path)
    except PredictionFormatError as e:
        raise ScoreError(str(e)) from None
    if not records:
        raise ScoreError(f"{path}: no predictions in the file")
    _check_kind(path, fmt, kind, records)
    check_records(path, kind, records)
    bench = str(cfg.eval.benchmark)
    cov = coverage(cfg, records)
    if cov["checked"] and not cov["complete"]:
        if not cfg.eval.allow_partial:
            raise ScoreError(f"{path}: does not match benchmark={bench}: {describe(cov)} (fix: "
                             "choose the benchmark the file was made for, or eval.allow_partial="
                             "true to score it labelled as partial)")
        bench = partial_label(bench, cov)
        log.warning("scoring %s as %s: %s", path, bench, describe(cov))
    elif not cov["checked"]:
        log.warning("could not compare %s with benchmark=%s (%s); the report says so", path,
                    bench, cov["reason"])
    subset = cfg.eval.subset if kind == "etbench" else None
    try:
        metrics = compute_metrics(kind, records, subset=subset)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        if isinstance(e, ScoreError):
            raise
        raise ScoreError(f"{path}: cannot be scored as eval.kind={kind} ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:160]}) (fix: check the file's format)") from None
    log.info("scored %d predictions from %s (%s format)", len(records), path, fmt)

    settings = collect_settings(cfg, model_path=None, video_spec=None, with_model=False)
    settings["predictions"] = {"path": str(path.absolute()), "format": fmt,
                               "sha256": _sha256(path), "n": len(records)}
    old = path.parent / "eval_settings.json"
    if fmt == "museg" and old.exists():
        settings["run_settings"] = json.loads(old.read_text())
    run_dir = Path(cfg.run_dir).absolute()
    settings["coverage"] = cov
    write_report(run_dir, bench, kind, metrics, settings, records)
    return metrics
