"""Preflight's verdict and report: per-source table, honest token statistics, one verdict line.

:mod:`museg.data.preflight` scans the videos; this module turns its summary into what a user reads
before spending GPU hours::

    source       videos  samples  ok  missing  broken  timeout
    charades       2260     2819   0     2260       0        0
    ...
    token budget: not measured (no video decoded)
    verdict: BLOCKED: 4908 of 4908 videos missing or broken (100.0% > video.max_failure_fraction
    = 5.0%): training would abort (fix: set paths.video_root to the folder holding charades/..., or ...)

The threshold is the trainer's own: training aborts once more than ``video.max_failure_fraction``
(default 0.05) of the videos it has seen failed (``video.on_failure=replace``), and at the first
failure with ``video.on_failure=fail``; preflight blocks on the same rule, so its exit code
(``task=preflight``: 0 ready, 1 blocked) predicts whether training would stop on the data.

>>> source_of("videos/et_instruct_164k/hacs/F54PZypvzCc.mp4"), source_of("charades/3MSZA.mp4")
('hacs', 'charades')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

#: Folders that group sources rather than name one (the release's ``et_instruct_164k``).
CONTAINER_DIRS = frozenset({"videos", "video", "et_instruct_164k", "et_bench_processed"})
STATUSES = ("ok", "missing", "broken", "timeout")


def source_of(video: str) -> str:
    """The source dataset of an annotation's ``video`` field: its innermost folder that is not a
    container (``videos``, ``et_instruct_164k``); ``(top level)`` for a bare file name."""
    parts = [p for p in PurePosixPath(video.replace("\\", "/")).parts[:-1]
             if p not in CONTAINER_DIRS and p not in ("/", ".")]
    return parts[-1] if parts else "(top level)"


def per_source(videos: Sequence[tuple[str, str, int]], rows: Mapping[str, Mapping[str, Any]]
               ) -> dict[str, dict[str, int]]:
    """``source -> {videos, samples, ok, missing, broken, timeout, unscanned}`` from one
    ``(video path, annotation's video field, samples using it)`` per distinct video; ``rows`` are
    the manifest rows by video path (a path without a row counts as unscanned).

    >>> per_source([("/v/a.mp4", "videos/charades/a.mp4", 2)], {"/v/a.mp4": {"status": "missing"}})
    {'charades': {'videos': 1, 'samples': 2, 'ok': 0, 'missing': 1, 'broken': 0, 'timeout': 0, 'unscanned': 0}}
    """
    table: dict[str, dict[str, int]] = {}
    for path, video, n_samples in videos:
        src = source_of(video or path)
        row = table.setdefault(src, {"videos": 0, "samples": 0, **{s: 0 for s in STATUSES},
                                     "unscanned": 0})
        row["videos"] += 1
        row["samples"] += n_samples
        status = rows[path]["status"] if path in rows else "unscanned"
        row[status if status in row else "broken"] += 1
    return dict(sorted(table.items(), key=lambda kv: (-kv[1]["videos"], kv[0])))


def source_table(sources: Mapping[str, Mapping[str, int]]) -> str:
    """The per-source table as aligned text (``unscanned`` only when some are)."""
    cols = ["videos", "samples", *STATUSES]
    if any(r.get("unscanned") for r in sources.values()):
        cols.append("unscanned")
    width = max([len("source"), *(len(s) for s in sources)]) + 2
    lines = ["source".ljust(width) + "".join(c.rjust(10) for c in cols)]
    for src, r in sources.items():
        lines.append(src.ljust(width) + "".join(f"{r.get(c, 0):>10,}" for c in cols))
    return "\n".join(lines)


def verdict(summary: Mapping[str, Any], max_failure_fraction: float, on_failure: str,
            target: str = "train") -> tuple[bool, str]:
    """``(blocked, one line)``: blocked when the failed videos would stop ``target``.

    >>> verdict({"scanned": 10, "missing": 1, "broken": 0, "timeout": 0, "ok": 9}, 0.05, "replace")
    (True, 'verdict: BLOCKED: 1 of 10 scanned videos missing, broken or timed out (10.0% > video.max_failure_fraction = 5.0%): train would abort (fix: restore the files, set paths.video_root, or drop their records)')
    >>> verdict({"scanned": 100, "missing": 1, "broken": 0, "timeout": 0, "ok": 99}, 0.05,
    ...         "replace")[0]
    False
    """
    scanned = int(summary.get("scanned", 0))
    failed = sum(int(summary.get(k, 0)) for k in ("missing", "broken", "timeout"))
    frac = failed / scanned if scanned else 0.0
    where = "" if not summary.get("unscanned_videos") else \
        f" (first {scanned} of {summary.get('videos')} videos, preflight.limit)"
    what = f"{failed} of {scanned} scanned videos missing, broken or timed out"
    if scanned == 0:
        return True, "verdict: BLOCKED: no video scanned (fix: check the annotation file)"
    if failed and on_failure == "fail":
        return True, (f"verdict: BLOCKED: {what} and video.on_failure=fail: {target} would stop at "
                      "the first (fix: restore the files, or video.on_failure=replace)")
    if frac > max_failure_fraction:
        return True, (f"verdict: BLOCKED: {what} ({frac:.1%} > video.max_failure_fraction = "
                      f"{max_failure_fraction:.1%}): {target} would abort (fix: restore the files, "
                      "set paths.video_root, or drop their records)")
    tail = f"; {failed} will be replaced at run time" if failed else ""
    return False, f"verdict: READY for {target}: {scanned - failed} of {scanned} videos decode{tail}{where}"


def token_lines(summary: Mapping[str, Any]) -> list[str]:
    """Token-budget lines; "not measured" when no video was decoded (nothing to estimate from)."""
    stats = summary.get("prompt_tokens_est")
    if not stats:
        return ["token budget: not measured (no video decoded; fix the videos and rerun)"]
    limit = summary.get("max_prompt_length")
    over = summary.get("samples_over_max_prompt_length")
    return [f"prompt tokens (estimated, {summary.get('ok', 0)} decoded videos): median "
            f"{stats['median']}, p95 {stats['p95']}, max {stats['max']}; {over} sample(s) over "
            f"train.max_prompt_length={limit}"]


def format_report(summary: Mapping[str, Any]) -> str:
    """The text printed at the end of ``task=preflight``."""
    lines = [f"preflight ({summary.get('target')}): {summary.get('annotation')}",
             f"videos under paths.video_root={summary.get('video_root')}", ""]
    if summary.get("sources"):
        lines += [source_table(summary["sources"]), ""]
    if summary.get("bad_records"):
        lines.append(f"{summary['bad_records']} bad annotation record(s) "
                     f"({summary.get('bad_record_policy')}); first: "
                     f"{(summary.get('bad_record_examples') or ['?'])[0]}")
    examples = summary.get("not_ok_examples") or []
    if examples:
        lines.append(f"first problem: {examples[0]['path']}: {examples[0]['status']} "
                     f"({examples[0].get('error')})")
    lines += token_lines(summary)
    lines.append(f"elapsed: {summary.get('elapsed_s', 0):.1f} s; details: {summary.get('manifest')}")
    lines.append(summary["verdict"]["line"])
    return "\n".join(lines)
