"""Benchmark inference runner: the loop of a batched, resumable evaluation.

``evaluate(cfg)`` (``task=eval``) runs one benchmark (``cfg.eval.kind``: ``tvg``/``tal`` grounding
json, or ``etbench``), or with ``eval.kind=suite`` / ``eval.benchmark=all`` every benchmark of the
suite (:func:`run_suite`, configs from :mod:`museg.eval.suite`). A benchmark's items
(:mod:`museg.eval.items`) are answered greedily in batches (``cfg.eval.backend``: HF or vLLM,
:mod:`museg.generation.backends`), every finished item appended to
``cfg.run_dir/predictions.jsonl`` (flushed + fsynced; a restarted run skips finished items); then
the metrics (:mod:`museg.eval.score`) and ``results.json``, ``results.md`` and plots
(:mod:`museg.eval.report`). Data flows one way: this module imports those, none imports it.

Example::

    from museg.eval.runner import evaluate
    metrics = evaluate(cfg)   # cfg composed by museg.run with task=eval benchmark=charades_sta
    print(metrics["miou"])

Videos come through :class:`museg.data.video.VideoLoader` (the next ``video.prefetch`` batches
decode in the background; consecutive items on one video reuse the decoded frames). A video that
fails to decode is recorded with an ``error`` field and an empty answer (it counts as wrong, and
is listed in ``settings.failed_videos``); ``cfg.video.on_failure=fail`` raises instead.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from museg.data.prompts import template_from_cfg
from museg.data.video import VideoError, VideoFailure, VideoLoader
from museg.eval.items import (
    EvalError,
    check_videos_exist,
    eval_question,
    eval_video_spec,
    load_eval_items,
)
from museg.eval.metrics import parse_answer_segments
from museg.eval.predictions import (
    PredictionWriter,
    finished_ids,
    read_predictions,
)
from museg.eval.report import collect_settings, write_report
from museg.eval.score import compute_metrics
from museg.eval.suite import SharedBackend, suite_configs, write_suite_report
from museg.fingerprint import file_identity, model_identity
from museg.generation.backends import Backend, make_backend
from museg.launch.tracking import log_final_metrics
from museg.model.load import model_path_from_cfg
from museg.rewards.parsing import extract_answer

log = logging.getLogger(__name__)

__all__ = ["evaluate", "evaluate_benchmark", "run_inference", "run_suite"]


#: Abort when this many videos failed before any decoded (a wrong video root, a broken decoder).
_ABORT_AFTER_FAILURES = 8


# --------------------------------------------------------------------------------------- running

def plain(x: Any) -> Any:
    """``x`` as plain python containers when it is a ``DictConfig`` (resolved), else ``x``."""
    return OmegaConf.to_container(x, resolve=True) if isinstance(x, DictConfig) else x


def _settings_fingerprint(cfg: Any, spec: Mapping) -> dict:
    """Settings that change predictions; a resumed run must match them."""
    return {
        "benchmark": cfg.eval.benchmark,
        "kind": cfg.eval.kind,
        "annotation": str(cfg.eval.annotation),
        "subset": cfg.eval.subset,
        "template": cfg.eval.template,
        "model": str(cfg.model.path or cfg.model.name),
        "dtype": cfg.model.dtype,
        "do_sample": bool(cfg.eval.do_sample),
        "max_new_tokens": cfg.eval.max_new_tokens,
        "video": {k: plain(v) for k, v in sorted(spec.items())},
        "decode_backend": cfg.video.backend,
        **_identity(cfg),
    }


def _identity(cfg: Any) -> dict:
    """Data and model identity (museg.fingerprint): annotation size + sha256, model files."""
    ann = cfg.eval.annotation
    info = file_identity(ann) if ann else {}
    return {"annotation_size": info.get("size"), "annotation_sha256": info.get("sha256"),
            "model_identity": model_identity(cfg.model.path, cfg.model.name)}


def _check_resume(run_dir: Path, fp: dict, n_done: int, resume: Any = "auto") -> None:
    """Refuse to add predictions to a file made with other settings (``resume=force``: warn)."""
    path = run_dir / "eval_settings.json"
    if path.exists() and n_done:
        old = json.loads(path.read_text())
        # keys an older museg did not record are not compared
        diff = sorted(k for k in set(old) | set(fp) if k in old and old.get(k) != fp.get(k))
        if diff and str(resume).lower() == "force":
            log.warning("resume=force: adding to %s/predictions.jsonl although it was made with "
                        "different settings (%s)", run_dir, ", ".join(diff))
        elif diff:
            raise EvalError(
                f"{run_dir}/predictions.jsonl was made with different settings ({', '.join(diff)}) "
                "(fix: resume=never to start a fresh numbered run directory, a new "
                "experiment_name, restore the old settings, or resume=force to add to it anyway)")
    path.write_text(json.dumps(fp, indent=2, default=str))


def _record(item: Any, kind: str, output: str, error: str | None = None) -> dict:
    """One predictions.jsonl line: id, video, raw output, parsed answer, ground truth."""
    rec = {"item_id": item.item_id, "kind": kind, "video": item.video, "output": output,
           "answer": extract_answer(output), "groundtruth": item.groundtruth}
    if kind in ("tvg", "tal", "mixed"):
        try:
            rec["segments"] = parse_answer_segments(output)
        except Exception as e:  # parsing never decides a metric here; keep the record
            rec["segments"] = None
            log.debug("parse_answer_segments failed on item %s: %s", item.item_id, e)
    if error:
        rec["error"] = error
    if item.extra:
        rec["extra"] = plain(item.extra)
    return rec


def _batches(items: Sequence, size: int) -> list[list]:
    """Consecutive chunks (order kept, so items on the same video stay adjacent for the cache)."""
    size = max(1, int(size))
    return [list(items[i: i + size]) for i in range(0, len(items), size)]


def _video_loader(cfg: Any, run_dir: Path) -> VideoLoader:
    """The evaluation's :class:`VideoLoader`: ``eval.video``'s frame spec, ``video``'s decoding
    settings, one background decode thread; a video the planner rejects (``ValueError``) fails
    like an unreadable one."""
    return VideoLoader.from_cfg(cfg.video, spec=eval_video_spec(cfg),
                                cache_dir=cfg.paths.cache_dir,
                                workers=1, failure_types=(VideoError, ValueError))


def _loaded_batches(loader: VideoLoader, batches: list[list],
                    ahead: int) -> Iterator[tuple[list, list]]:
    """Each batch with its videos (decoded or :class:`VideoFailure`); the next ``ahead`` batches'
    videos decode in the background meanwhile."""
    for b, batch in enumerate(batches):
        for nxt in batches[b: b + 1 + ahead]:
            loader.submit(it.video_path for it in nxt)
        yield batch, [loader.load(it.video_path) for it in batch]


class _Tally:
    """Items done in this run; aborts when the first ``_ABORT_AFTER_FAILURES`` videos all failed."""

    def __init__(self) -> None:
        self.ok = self.err = 0

    def failed(self, item: Any, failure: VideoFailure) -> None:
        self.err += 1
        if self.ok == 0 and self.err >= _ABORT_AFTER_FAILURES:
            raise EvalError(
                f"the first {self.err} videos all failed to decode (last: "
                f"{item.video_path}: {failure.error}); is paths.video_root right?"
            ) from failure.error
        log.error("item %s: video %s failed to decode (%s); recorded as wrong",
                  item.item_id, item.video_path, failure.error)


def run_inference(cfg: Any, items: Sequence, backend: Backend | None,
                  run_dir: Path) -> tuple[dict, Backend | None]:
    """Predict every unfinished item, appending to ``run_dir/predictions.jsonl``.

    Returns (this run's stats: seconds, items done, frame-cache counters; the backend used or
    ``None`` when nothing was left to do).
    """
    pred_path = run_dir / "predictions.jsonl"
    done = finished_ids(pred_path)  # items whose video failed before are retried
    todo = [it for it in items if it.item_id not in done]
    fail_fast = cfg.video.on_failure == "fail"
    template = template_from_cfg(cfg.eval, "eval")  # eval.template_file, else eval.template
    kind = cfg.eval.kind
    if todo and backend is None:
        backend = make_backend(cfg)
    t0 = time.perf_counter()
    tally = _Tally()
    bar = tqdm(total=len(items), initial=len(items) - len(todo), unit="item", disable=None,
               desc=f"eval {cfg.eval.benchmark}", dynamic_ncols=True)
    loader = _video_loader(cfg, run_dir)
    batches = _batches(todo, cfg.eval.batch_size)
    ahead = max(0, int(cfg.video.prefetch))
    try:
        with PredictionWriter(pred_path) as writer:
            for batch, loaded in _loaded_batches(loader, batches, ahead):
                ready, videos = [], []
                for it, video in zip(batch, loaded, strict=True):
                    if not isinstance(video, VideoFailure):
                        ready.append(it)
                        videos.append(video)
                        tally.ok += 1
                        continue
                    if fail_fast:
                        raise video.error
                    tally.failed(it, video)
                    writer.append(_record(it, kind, "", error=video.message))
                    bar.update(1)
                if ready:
                    outs = backend.generate(
                        [eval_question(template, it.question) for it in ready], videos)
                    for it, out in zip(ready, outs, strict=True):
                        writer.append(_record(it, kind, out))
                        bar.update(1)
    finally:
        loader.close()
        bar.close()
    if tally.err:
        log.warning("%d item(s) had undecodable videos (see `error` in %s)", tally.err, pred_path)
    stats = {"seconds": round(time.perf_counter() - t0, 3), "items": tally.ok + tally.err,
             "decode_failures": tally.err, "frame_cache": loader.stats()}
    return stats, backend


def _model_path_or_none(cfg: Any) -> str | None:
    try:
        return str(model_path_from_cfg(cfg.model))
    except Exception:  # provenance only: never fail a finished run for it
        return cfg.model.path


def evaluate(cfg: Any, backend: Backend | None = None) -> dict:
    """Run (or resume) one benchmark and write the report; returns the metrics dict.

    ``eval.kind=suite`` / ``eval.benchmark=all`` runs :func:`run_suite` instead (returns benchmark
    name -> metrics). The final metrics go to the run's tracker (one wandb run for a suite).

    ``backend`` lets a caller reuse a loaded model across benchmarks.
    """
    if cfg.eval.kind == "suite" or cfg.eval.benchmark == "all":
        results = run_suite(cfg, backend=backend)
        _track_final_metrics(cfg, results)  # one wandb run for the suite: <benchmark>.<metric>
        return results
    metrics = evaluate_benchmark(cfg, backend)
    _track_final_metrics(cfg, metrics)
    return metrics


def evaluate_benchmark(cfg: Any, backend: Backend | None = None) -> dict:
    """Run (or resume) the single benchmark of ``cfg`` and write its report (no tracking)."""
    run_dir = Path(cfg.run_dir).absolute()
    run_dir.mkdir(parents=True, exist_ok=True)
    items = load_eval_items(cfg)
    check_videos_exist(cfg, items)
    spec = eval_video_spec(cfg)
    pred_path = run_dir / "predictions.jsonl"
    n_done = len(read_predictions(pred_path))
    _check_resume(run_dir, _settings_fingerprint(cfg, spec), n_done, cfg.resume)
    log.info("%s: %d items (%d already finished) -> %s", cfg.eval.benchmark,
             len(items), n_done, pred_path)
    run_stats, backend = run_inference(cfg, items, backend, run_dir)

    ids = [it.item_id for it in items]
    recs = {str(r["item_id"]): r for r in read_predictions(pred_path)}
    missing = [i for i in ids if i not in recs]
    if missing:
        raise EvalError(f"{pred_path}: {len(missing)} item(s) have no prediction after the run "
                        f"(first: {missing[0]}); rerun to resume")
    records = [recs[i] for i in ids]
    kind = cfg.eval.kind
    metrics = compute_metrics(kind, records, subset=None)
    model_path = backend.model_path if backend is not None else _model_path_or_none(cfg)
    settings = collect_settings(cfg, model_path=model_path, video_spec=spec)
    settings["this_run"] = run_stats
    settings["n_errors"] = n_err = sum(1 for r in records if r.get("error"))
    # the failure budget counts distinct videos (failed / seen), as in training
    bad_videos = sorted({str(r.get("video")) for r in records if r.get("error")})
    n_videos = len({str(r.get("video")) for r in records})
    settings["failed_videos"] = bad_videos
    max_frac = float(cfg.video.max_failure_fraction)
    if len(bad_videos) > max_frac * n_videos:
        log.error("%d of %d distinct videos (> video.max_failure_fraction=%s) are unreadable; "
                  "their %d item(s) score 0; see `error` in %s (rerun to retry them)",
                  len(bad_videos), n_videos, max_frac, n_err, pred_path)
    write_report(run_dir, cfg.eval.benchmark, kind, metrics, settings, records)
    return metrics


def run_suite(cfg: Any, backend: Backend | None = None,
              benchmark_cfgs: Mapping[str, Mapping] | None = None,
              conf_dir: str | Path | None = None) -> dict:
    """Evaluate every benchmark of the suite (:func:`museg.eval.suite.suite_configs`) with one
    shared model; writes the combined report; returns name -> metrics.

    ``benchmark_cfgs`` (name -> eval node) replaces reading ``conf/benchmark/<name>.yaml``.
    """
    run_dir = Path(cfg.run_dir).absolute()
    run_dir.mkdir(parents=True, exist_ok=True)
    shared = SharedBackend(cfg, backend)
    results: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    for name, sub in suite_configs(cfg, benchmark_cfgs, conf_dir):
        ann = sub.eval.annotation
        if not ann or not Path(ann).is_file():
            reason = f"annotation file not found: {ann}"
            log.warning("benchmark %s skipped: %s (set paths.data_root or eval.suite)", name, reason)
            skipped[name] = reason
            continue
        log.info("suite: %s -> %s", name, sub.run_dir)
        results[name] = evaluate_benchmark(sub, backend=shared)
    write_suite_report(cfg, run_dir, results, skipped, shared)
    return results


def _track_final_metrics(cfg: Any, metrics: Mapping) -> None:
    """The final metrics into the run's wandb summary (no-op when wandb is disabled)."""
    log_final_metrics(cfg, metrics, Path(cfg.run_dir).absolute())


if __name__ == "__main__":  # pragma: no cover - convenience: python -m museg.eval.runner cfg.yaml
    import sys

    logging.basicConfig(level=os.environ.get("LOGLEVEL", "INFO"))
    print(json.dumps(evaluate(OmegaConf.load(sys.argv[1])), indent=2, default=str))
