"""Preflight: check every video an annotation file refers to before spending GPU hours on it.

``preflight(cfg)`` (wired to ``python -m museg.run task=preflight``) loads the training file
(``cfg.data.train_file``; with ``cfg.preflight.target=eval`` the benchmark annotation
``cfg.eval.annotation``), resolves each video against ``cfg.paths.video_root``, and for each unique
video decodes exactly the frames the model will see (``museg.data.video.decode_video`` with the
spec from ``cfg.video``, the configured backend and timeout; ``preflight.workers`` at a time
through the shared loop :class:`museg.data.video.VideoLoader`). Results go to
``run_dir/manifest.jsonl`` one row per video, flushed as they come, so a killed preflight resumes
where it stopped (rows already there are skipped). At the end it writes ``run_dir/summary.json``
(missing / broken / timed-out videos, samples affected, duration mismatches, token-budget
statistics, samples over ``cfg.train.max_prompt_length``) and ``run_dir/token_budget.png``.
As ``task=preflight`` (:func:`run_preflight`) it then prints a per-source table and one verdict line
(:mod:`museg.data.preflight_report`) and exits 1 when the videos would stop training.

Its settings are ``cfg.preflight`` (``limit``, ``workers``, ``duration_tolerance_s``; defaults in
:class:`museg.config.schema.PreflightConfig`); ``cfg`` is the composed config, read as is.

Example::

    python -m museg.run task=preflight data=museg_stage1 paths.video_root=/data/museg/videos
    # or from Python, with a composed cfg:
    from museg.data.preflight import preflight
    summary = preflight(cfg); summary["missing"], summary["samples_over_max_prompt_length"]
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from museg.data import preflight_report as R
from museg.data.annotations import load_etbench, load_grounding_eval, load_train_jsonl
from museg.data.prompts import build_question, template_from_cfg
from museg.data.sources import materialize_synthetic
from museg.data.video import (
    VideoError,
    VideoLoader,
    VideoNotFoundError,
    VideoTimeoutError,
    decode_video,
    video_spec_from_cfg,
)
from museg.data.video.decode import check_path

log = logging.getLogger(__name__)


class PreflightError(ValueError):
    """Preflight cannot start (no annotation to scan): one line with the fix."""


MANIFEST = "manifest.jsonl"
SUMMARY = "summary.json"
HISTOGRAM = "token_budget.png"
CHAT_OVERHEAD_TOKENS = 32  # system prompt, role markers, vision start/end tokens (estimate)


@dataclass
class _Ref:
    """One annotation record's view of its video."""

    video: str
    video_path: str
    duration: float | None
    max_end: float
    text_chars: int


def _need_file(key: str, path: str, what: str = "") -> None:
    if not Path(path).expanduser().is_file():
        raise PreflightError(f"{key}={path}{what}: file not found (fix: set paths.data_root to the "
                             f"folder holding train/ and eval/, or {key}=<file>)")


def _load_refs(cfg: Any, target: str) -> tuple[str, str, list[_Ref], list[str]]:
    """(annotation file, video root, refs, bad-record messages) for ``target`` train|eval."""
    materialize_synthetic(cfg)  # data=synthetic / benchmark=synthetic: run.dispatch did it for CLI runs
    video_root = str(cfg.paths.video_root)
    policy = cfg.data.on_bad_record
    bad: list[str] = []
    if target == "train":
        template = template_from_cfg(cfg.stage)
        path = str(cfg.data.train_file)
        _need_file("data.train_file", path)
        samples = load_train_jsonl(path, video_root, policy, bad_records=bad)
        refs = [_Ref(s.video, s.video_path, s.duration, max(e for _, e in s.solution),
                     len(build_question(template, s.problem))) for s in samples]
        return path, video_root, refs, bad
    if target != "eval":
        raise ValueError(f"preflight.target must be train or eval, got {target!r}")
    ev = cfg.eval
    template = template_from_cfg(ev, "eval")
    if ev.video_root is not None:  # E.T. Bench: its own folder (null: paths.video_root)
        video_root = str(ev.video_root)
    if ev.annotation is None:
        raise PreflightError(f"benchmark={ev.benchmark} has no single annotation "
                             "(fix: one benchmark at a time, e.g. benchmark=charades_sta)")
    path = str(ev.annotation)
    _need_file("eval.annotation", path, f" of benchmark={ev.benchmark}")
    if ev.kind == "etbench":
        items = load_etbench(path, video_root, policy, subset=ev.subset, bad_records=bad)
    else:
        items = load_grounding_eval(path, video_root, policy, bad_records=bad)
    refs = []
    for it in items:
        dur = it.extra.get("duration")
        refs.append(_Ref(it.video, it.video_path, float(dur) if isinstance(dur, int | float) else None,
                         max((e for _, e in it.groundtruth), default=0.0),
                         len(build_question(template, it.question))))
    return path, video_root, refs, bad


def _read_manifest(path: Path) -> dict[str, dict]:
    """Rows already written, by path; a partial last line (killed mid-write) is dropped."""
    if not path.is_file():
        return {}
    rows: dict[str, dict] = {}
    good_lines = []
    text = path.read_text(encoding="utf-8")
    for line in text.splitlines(keepends=True):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if line.endswith("\n") and isinstance(row, dict) and "path" in row:
            rows[row["path"]] = row
            good_lines.append(line)
    if "".join(good_lines) != text:
        path.write_text("".join(good_lines), encoding="utf-8")
    return rows


def check_video(path: str, spec: Mapping[str, Any], backend: str, timeout_s: float | None) -> dict:
    """Decode the planned frames of one video; returns a manifest row (never raises)."""
    t0 = time.perf_counter()
    row: dict[str, Any] = {"path": path, "ok": False, "status": "ok", "error": None,
                           "backend": backend}
    try:
        check_path(path)
    except VideoNotFoundError as e:
        row.update(status="missing", error=e.cause)
        return row
    except VideoError as e:  # symlink loop, a file used as a directory, name too long, ...
        row.update(status="broken", error=e.cause)
        return row
    try:
        dv = decode_video(path, spec, backend=backend, timeout_s=timeout_s)
    except VideoTimeoutError as e:
        row.update(status="timeout", error=str(e))
    except (VideoError, ValueError) as e:
        row.update(status="broken", error=f"{type(e).__name__}: {e}")
    except Exception as e:  # never let one odd file stop the scan; it is reported, not hidden
        log.warning("preflight: unexpected %s on %s: %s", type(e).__name__, path, e)
        row.update(status="broken", error=f"{type(e).__name__}: {e}")
    else:
        plan, meta = dv.plan, dv.meta
        fps, total = float(meta["video_fps"]), int(meta["total_frames"])
        duration = meta.get("duration") or (total / fps if fps > 0 else None)
        row.update(ok=True, total_frames=total, total_frames_header=meta.get("total_frames_header"),
                   fps=fps, duration=None if duration is None else round(float(duration), 3),
                   source_size=meta.get("source_size"), planned_frames=len(plan.indices),
                   height=plan.height, width=plan.width, sample_fps=plan.sample_fps,
                   video_tokens=int(plan.video_tokens), backend=meta.get("backend", backend))
    row["seconds"] = round(time.perf_counter() - t0, 3)
    return row


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    v = sorted(values)
    q = lambda p: v[min(len(v) - 1, int(math.ceil(p * len(v))) - 1)]  # noqa: E731
    return {"min": v[0], "mean": round(sum(v) / len(v), 2), "median": q(0.5), "p95": q(0.95),
            "max": v[-1]}


def _histogram(path: Path, tokens: list[int], limit: int | None, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if tokens:
        ax.hist(tokens, bins=min(50, max(5, len(set(tokens)))), color="tab:blue")
    if limit:
        ax.axvline(limit, color="tab:red", linestyle="--", label=f"max_prompt_length={limit}")
        ax.legend()
    ax.set_xlabel("estimated prompt tokens (video + text)")
    ax.set_ylabel("samples")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def summarize(refs: list[_Ref], rows: Mapping[str, dict], max_prompt_length: int | None
              ) -> tuple[dict[str, Any], list[int]]:
    """Counts and token-budget statistics over the scanned videos and the samples using them;
    also returns each usable sample's estimated prompt length (for the histogram)."""
    scanned = [rows[p] for p in dict.fromkeys(r.video_path for r in refs) if p in rows]
    status = [r["status"] for r in scanned]
    prompt_tokens, video_tokens, affected, over = [], [], 0, 0
    for ref in refs:
        row = rows.get(ref.video_path)
        if row is None:
            continue
        if not row["ok"]:
            affected += 1
            continue
        video_tokens.append(row["video_tokens"])
        est = row["video_tokens"] + math.ceil(ref.text_chars / 3) + CHAT_OVERHEAD_TOKENS
        prompt_tokens.append(est)
        over += bool(max_prompt_length and est > max_prompt_length)
    return {
        "samples_scanned": len(refs),
        "scanned": len(scanned),
        "ok": status.count("ok"),
        "missing": status.count("missing"),
        "broken": status.count("broken"),
        "timeout": status.count("timeout"),
        "samples_affected": affected,
        "duration_mismatch_videos": sum(bool(r.get("duration_mismatch")) for r in scanned),
        "video_tokens": _stats(video_tokens),
        "prompt_tokens_est": _stats(prompt_tokens),
        "planned_frames": _stats([r["planned_frames"] for r in scanned if r["ok"]]),
        "max_prompt_length": max_prompt_length,
        "samples_over_max_prompt_length": over,
        "decode_seconds": round(sum(r.get("seconds", 0.0) for r in scanned), 2),
        "not_ok_examples": [{k: r[k] for k in ("path", "status", "error")}
                            for r in scanned if not r["ok"]][:20],
    }, prompt_tokens


def preflight(cfg: Any, check: Callable[..., dict] = check_video) -> dict[str, Any]:
    """Scan annotations + videos, write manifest.jsonl, summary.json and token_budget.png in
    ``cfg.run_dir``; returns the summary dict."""
    t_start = time.perf_counter()
    run_dir = Path(str(cfg.run_dir)).expanduser()
    run_dir.mkdir(parents=True, exist_ok=True)
    pf = cfg.preflight
    target = pf.target
    annotation, video_root, refs, bad = _load_refs(cfg, target)
    spec = dict(video_spec_from_cfg(cfg.video if target == "train" else cfg.eval.video))
    backend = str(cfg.video.backend)
    timeout = cfg.video.decode_timeout_s
    tolerance = float(pf.duration_tolerance_s)
    limit = pf.limit
    workers = max(1, int(pf.workers))

    per_video: dict[str, list[_Ref]] = {}
    for ref in refs:
        per_video.setdefault(ref.video_path, []).append(ref)
    videos = list(per_video)[: limit if limit is not None else None]
    refs_scanned = [r for v in videos for r in per_video[v]]
    spec_key = json.dumps({"spec": spec, "backend": backend}, sort_keys=True, default=str)

    manifest = run_dir / MANIFEST
    rows = {p: r for p, r in _read_manifest(manifest).items() if r.get("spec_key") == spec_key}
    todo = [v for v in videos if v not in rows]
    log.info("preflight: %d samples, %d videos (%d already in %s)", len(refs), len(videos),
             len(videos) - len(todo), manifest)

    def run_one(path: str) -> dict:
        row = check(path, spec, backend, timeout)
        ann = [r.duration for r in per_video[path] if r.duration is not None]
        row.update(video=per_video[path][0].video, n_samples=len(per_video[path]),
                   annotation_duration=max(ann) if ann else None,
                   max_segment_end=max(r.max_end for r in per_video[path]), spec_key=spec_key)
        dur = row.get("duration")
        row["duration_mismatch"] = None if dur is None else bool(
            (row["annotation_duration"] is not None and abs(dur - row["annotation_duration"]) > tolerance)
            or row["max_segment_end"] > dur + tolerance)
        return row

    # the shared video loop, each video checked its own way (no frame cache: a verdict per file)
    loader = VideoLoader(spec, backend, timeout, memory_items=0, workers=workers, fetch=run_one)
    with open(manifest, "a", encoding="utf-8") as out, loader, \
            tqdm(total=len(videos), initial=len(videos) - len(todo), desc="preflight videos",
                 unit="video", disable=None) as bar:
        for _, row in loader.iterate(todo, ahead=workers):
            out.write(json.dumps(row) + "\n")
            out.flush()
            rows[row["path"]] = row
            bar.update(1)
            if not row["ok"]:
                bar.set_postfix_str(f"last problem: {row['status']}")

    max_len = cfg.train.max_prompt_length
    summary, prompt_tokens = summarize(refs_scanned, rows, max_len)
    summary = {"target": target, "annotation": annotation, "video_root": video_root,
               "spec": spec, "backend": backend, "bad_records": len(bad),
               "bad_record_examples": bad[:5], "samples": len(refs), "videos": len(per_video),
               "unscanned_videos": len(per_video) - len(videos), **summary, "manifest": str(manifest), "histogram": str(run_dir / HISTOGRAM)}
    summary["bad_record_policy"] = f"data.on_bad_record={cfg.data.on_bad_record}"
    summary["sources"] = R.per_source(
        [(p, per_video[p][0].video, len(per_video[p])) for p in per_video], rows)
    if not prompt_tokens:  # nothing decoded: nothing measured, not "0 over the limit"
        summary["samples_over_max_prompt_length"] = None
        summary["histogram"] = None
    blocked, line = R.verdict(summary, float(cfg.video.max_failure_fraction),
                              str(cfg.video.on_failure), target)
    summary["verdict"] = {"blocked": blocked, "line": line}
    summary["elapsed_s"] = round(time.perf_counter() - t_start, 2)
    (run_dir / SUMMARY).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    if prompt_tokens:
        _histogram(run_dir / HISTOGRAM, prompt_tokens, max_len,
                   f"{Path(annotation).name}: token budget")
    log.info("preflight: %d ok, %d missing, %d broken, %d timeout; %d samples affected; "
             "%s over max_prompt_length -> %s", summary["ok"], summary["missing"],
             summary["broken"], summary["timeout"], summary["samples_affected"],
             summary["samples_over_max_prompt_length"], run_dir / SUMMARY)
    return summary


def run_preflight(cfg: Any) -> dict[str, Any]:
    """``task=preflight``: :func:`preflight`, then the report and its verdict on stdout; exits 1
    (:class:`PreflightBlocked`) when the data would stop ``preflight.target``."""
    summary = preflight(cfg)
    print(R.format_report(summary), flush=True)
    if summary["verdict"]["blocked"]:
        raise PreflightBlocked(1)
    return summary


class PreflightBlocked(SystemExit):
    """Exit status 1 of ``task=preflight`` when its verdict is BLOCKED (the report says why)."""
