"""Evaluation reports: ``results.json``, ``results.md`` (paper column order) and plots.

``write_report(run_dir, benchmark, kind, metrics, settings, records)`` writes

- ``results.json``: every metric plus every setting that changes numbers (model path + revision,
  dtype, pixels, frames, fps, decoding, backend, template, annotation checksum, museg version and
  git commit), from :func:`collect_settings`;
- ``results.md``: the paper's table (Charades-STA mIoU, R@0.3/0.5/0.7 | THUMOS14 F1 | THUMOS15 F1 |
  Perception Test F1 | E.T. Bench REF/GND/CAP/COM/AVG | subset REF/GND/CAP/COM/AVG) followed by
  every metric of this run and the settings;
- plots (matplotlib Agg): ``iou_hist.png`` + ``recall_vs_threshold.png`` (tvg),
  ``f1_vs_threshold.png`` (tal), ``etbench_summary.png`` (etbench).

Example::

    settings = collect_settings(cfg, model_path="/ckpt/MUSEG-7B", video_spec=spec)
    write_report(run_dir, "charades_sta", "tvg", metrics, settings, records)
    print(paper_table({"MUSEG-7B": {"charades_sta": metrics}}))
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import museg
from museg.data.prompts import TEMPLATES
from museg.data.video import plan as P
from museg.eval.metrics import format_value
from museg.eval.plots import write_plots

log = logging.getLogger(__name__)

__all__ = ["PAPER_COLUMNS", "collect_settings", "model_revision", "repo_commit", "paper_table",
           "metrics_table", "rows_table", "write_report", "etbench_avg"]

_ET = ("ref_acc", "gnd_f1", "cap_f1", "com_rec")

#: (column title, benchmark, metric key) in the paper's order.
PAPER_COLUMNS: list[tuple[str, str, str]] = [
    ("Charades-STA mIoU", "charades_sta", "miou"),
    ("R@0.3", "charades_sta", "r@0.3"),
    ("R@0.5", "charades_sta", "r@0.5"),
    ("R@0.7", "charades_sta", "r@0.7"),
    ("THUMOS14 F1", "thumos14", "mean_f1"),
    ("THUMOS15 F1", "thumos15", "mean_f1"),
    ("Perception Test F1", "perception_test", "mean_f1"),
    ("E.T. REF", "et_bench", "ref_acc"),
    ("E.T. GND", "et_bench", "gnd_f1"),
    ("E.T. CAP", "et_bench", "cap_f1"),
    ("E.T. COM", "et_bench", "com_rec"),
    ("E.T. AVG", "et_bench", "avg"),
    ("Subset REF", "et_bench_subset", "ref_acc"),
    ("Subset GND", "et_bench_subset", "gnd_f1"),
    ("Subset CAP", "et_bench_subset", "cap_f1"),
    ("Subset COM", "et_bench_subset", "com_rec"),
    ("Subset AVG", "et_bench_subset", "avg"),
]


# ----------------------------------------------------------------------------------- provenance
def _git(cwd: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def repo_commit(path: str | Path | None = None) -> dict:
    """Git commit (and dirty flag) of the repository holding ``path`` (default: the museg code)."""
    where = Path(path) if path else Path(__file__).resolve().parent
    if where.is_file():
        where = where.parent
    if not where.exists():
        return {"commit": None}
    commit = _git(where, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None}
    dirty = _git(where, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(dirty)}


def model_revision(path: str | None) -> dict:
    """What identifies the weights at ``path``: HF snapshot hash, git commit, config fields.

    >>> model_revision("/x/models--Qwen--Q/snapshots/" + "a" * 40)["snapshot"] == "a" * 40
    True
    """
    info: dict[str, Any] = {"path": path}
    if not path:
        return info
    m = re.search(r"snapshots/([0-9a-f]{40})", str(path))
    if m:
        info["snapshot"] = m.group(1)
    p = Path(path)
    cfg_file = p / "config.json"
    if cfg_file.is_file():
        try:
            conf = json.loads(cfg_file.read_text())
            for k in ("_name_or_path", "transformers_version", "torch_dtype", "dtype",
                      "model_type"):
                if k in conf:
                    info[k] = conf[k]
            info["config_sha256"] = hashlib.sha256(cfg_file.read_bytes()).hexdigest()[:16]
        except (OSError, ValueError):
            pass
    if p.is_dir() and (p / ".git").exists():
        info["git_commit"] = _git(p, "rev-parse", "HEAD")
    return info


def _file_sha256(path: str | None) -> str | None:
    if not path or not Path(path).is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _effective_spec(spec: Mapping | None) -> dict:
    """The frame spec as given plus the planner defaults used for keys it leaves unset."""
    out: dict[str, Any] = dict(spec or {})
    defaults = {"fps": P.DEFAULT_FPS, "min_frames": P.DEFAULT_MIN_FRAMES,
                "max_frames": f"min({P.DEFAULT_MAX_FRAMES}, total_frames)",
                "min_pixels": P.VIDEO_MIN_PIXELS, "max_pixels": P.VIDEO_MAX_PIXELS,
                "total_pixels": P.VIDEO_TOTAL_PIXELS, "frame_factor": P.FRAME_FACTOR}
    if spec is not None:
        for k, v in defaults.items():
            if out.get(k) is None:  # None means "not given": the planner default applies
                out[k] = v
    return out


def collect_settings(cfg: Any, model_path: str | None = None, video_spec: Mapping | None = None,
                     with_model: bool = True) -> dict:
    """Every setting that affects the numbers, for ``results.json``."""
    import torch
    import transformers

    s: dict[str, Any] = {
        "benchmark": cfg.eval.benchmark,
        "kind": cfg.eval.kind,
        "annotation": cfg.eval.annotation,
        "annotation_sha256": _file_sha256(cfg.eval.annotation),
        "subset": cfg.eval.subset,
        # without these four keys (to go once they compose the real config)
        "limit": cfg.eval.limit,
        "video_root": cfg.paths.video_root,
        "museg_version": museg.__version__,
        "museg_git": repo_commit(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "seed": cfg.seed,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if with_model:
        path = model_path or cfg.model.path
        template = cfg.eval.template
        template_text = TEMPLATES.get(template, template) if template else template
        s.update({
            "model": {"name": cfg.model.name, "dtype": cfg.model.dtype,
                      "attention": cfg.model.attention, **model_revision(path)},
            "decoding": {"do_sample": bool(cfg.eval.do_sample),
                         "max_new_tokens": cfg.eval.max_new_tokens,
                         "batch_size": cfg.eval.batch_size,
                         "backend": cfg.eval.backend},
            "template": template if template != template_text else "(text below)",
            "template_text": template_text,
            "video": {**_effective_spec(video_spec),
                      "decode_backend": cfg.video.backend,
                      "decode_timeout_s": cfg.video.decode_timeout_s,
                      "on_failure": cfg.video.on_failure},
            "device": (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"),
        })
    return s


# ---------------------------------------------------------------------------------------- tables
def etbench_avg(metrics: Mapping[str, Any]) -> float | None:
    """AVG of E.T. Bench = mean of REF, GND, CAP (F1) and COM; None if any is missing.

    >>> etbench_avg({"ref_acc": 0.6, "gnd_f1": 0.4, "cap_f1": 0.2, "com_rec": 0.2})
    0.35
    """
    vals = [metrics.get(k) for k in _ET]
    if any(not isinstance(v, int | float) for v in vals):
        return None
    return round(sum(vals) / 4, 12)


def _with_avg(bench: str, m: Mapping[str, Any]) -> dict:
    m = dict(m)
    if bench.startswith("et_bench") and "avg" not in m:
        a = etbench_avg(m)
        if a is not None:
            m["avg"] = a
    return m


def paper_table(rows: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """Markdown table in the paper's column order; ``rows``: label -> benchmark -> metrics.

    Columns of benchmarks no row has are dropped.

    >>> print(paper_table({"m": {"thumos14": {"mean_f1": 0.297}}}))
    | model | THUMOS14 F1 |
    |---|---|
    | m | 29.7 |
    """
    present = {b for r in rows.values() for b in r}
    cols = [c for c in PAPER_COLUMNS if c[1] in present]
    if not cols:
        return ""
    lines = ["| model | " + " | ".join(c[0] for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for label, benches in rows.items():
        cells = [format_value(_with_avg(b, benches.get(b, {})).get(k)) for _, b, k in cols]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def metrics_table(metrics: Mapping[str, Any]) -> str:
    """Every scalar metric as a two-column markdown table (fractions shown as given).

    >>> print(metrics_table({"n": 2, "miou": 0.25}))
    | metric | value |
    |---|---|
    | n | 2 |
    | miou | 0.2500 |
    """
    lines = ["| metric | value |", "|---|---|"]
    for k, v in _flat(metrics).items():
        if isinstance(v, float):
            lines.append(f"| {k} | {v:.4f} |")
        elif isinstance(v, int | str | bool) or v is None:
            lines.append(f"| {k} | {v} |")
    return "\n".join(lines)


def rows_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Per-(task, source) rows (E.T. Bench) as a markdown table, numbers as fractions.

    >>> print(rows_table([{"task": "tvg", "source": "x", "n": 2, "f1": 0.5}]))
    | task | source | n | f1 |
    |---|---|---|---|
    | tvg | x | 2 | 0.5000 |
    """
    cols: list[str] = []
    for r in rows:
        cols += [k for k, v in r.items() if k not in cols and not isinstance(v, Mapping | list)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{r[c]:.4f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _settings_md(settings: Mapping[str, Any]) -> str:
    lines = ["| setting | value |", "|---|---|"]
    for k, v in _flat(settings).items():
        if isinstance(v, str) and len(v) > 120:
            v = v[:117] + "..."
        lines.append(f"| {k} | {str(v).replace('|', '/').replace(chr(10), ' ')} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- report
def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item") and callable(x.item):  # numpy / torch scalars
        return x.item()
    if isinstance(x, int | float | str | bool) or x is None:
        return x
    return str(x)


def write_report(run_dir: str | Path, benchmark: str, kind: str, metrics: Mapping[str, Any],
                 settings: Mapping[str, Any], records: Sequence[dict] = (),
                 label: str | None = None) -> dict:
    """Write results.json, results.md and plots for one benchmark run; returns the json payload."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = _with_avg(benchmark or "", metrics)
    try:
        plots = write_plots(run_dir, kind, metrics, records)
    except Exception as e:  # a plot must never lose the numbers
        log.warning("plots skipped: %s: %s", type(e).__name__, e)
        plots = []
    payload = _jsonable({"benchmark": benchmark, "kind": kind, "metrics": metrics,
                         "n_items": len(records), "settings": settings, "plots": plots})
    (run_dir / "results.json").write_text(json.dumps(payload, indent=2, sort_keys=False))
    label = label or _label(settings)
    parts = [f"# {benchmark} ({kind})", ""]
    table = paper_table({label: {benchmark: metrics}})
    if table:
        parts += ["Paper columns (×100):", "", table, ""]
    errors = metrics.get("errors")
    if errors:
        parts += ["**Metric errors** (these metrics are missing):", ""]
        parts += [f"- {e}" for e in errors] + [""]
    if settings.get("n_errors"):
        parts += [f"**{settings['n_errors']} item(s) had undecodable videos** and score 0 "
                  "(see `error` in predictions.jsonl; rerun to retry them).", ""]
    parts += ["## All metrics", "", metrics_table(metrics), ""]
    if isinstance(metrics.get("rows"), list) and metrics["rows"]:
        parts += ["## Per task and source", "", rows_table(metrics["rows"]), ""]
    parts += ["## Settings", "", _settings_md(settings), ""]
    parts += [f"![{p}]({p})" for p in plots]
    (run_dir / "results.md").write_text("\n".join(parts) + "\n")
    log.info("wrote %s/results.json and results.md", run_dir)
    return payload


def _label(settings: Mapping[str, Any]) -> str:
    model = settings.get("model") or {}
    path = model.get("path") if isinstance(model, Mapping) else None
    name = model.get("name") if isinstance(model, Mapping) else None
    if path:
        return Path(str(path)).name or str(path)
    return str(name or "predictions")
