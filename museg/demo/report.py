"""What a finished demo writes: ``summary.json``, ``demo_table.md`` and two plots.

From the held-out evaluations after each phase (``predictions.jsonl``, ``results.json``) and the
RL stages' ``metrics.jsonl``: per-phase metrics, each RL phase's tvg mIoU gain over the warm-up on
the same items with a paired bootstrap 95% interval, and the best constant answer (what ignoring
the video scores)::

    summary = write_report(cfg, run_dir, evals, train_dirs, start)   # evals: {phase: eval dir}
    gains_vs_warmup({"warmup": warm_eval_dir, "stage1": stage1_eval_dir})
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from museg.demo.progress import PHASES
from museg.eval.metrics import best_constant_answer, paired_gain, record_ious
from museg.launch.tracking import log_final_metrics

__all__ = ["write_report", "gains_vs_warmup", "tvg_item_ious", "constant_answer_baseline"]


def _phase_metrics(results_path: Path) -> dict[str, float]:
    results = json.loads(results_path.read_text())
    metrics = results.get("metrics", results)
    out = {}
    for key in ("miou", "mean_r", "mean_f1", "r@0.3", "r@0.5", "f1@0.5", "n"):
        for scope in (metrics, metrics.get("tvg", {}), metrics.get("tal", {})):
            if isinstance(scope, dict) and key in scope and key not in out:
                out[key] = scope[key]
    return out


def _tvg_records(predictions: Path) -> list[dict]:
    """The tvg items' records of one evaluation's predictions file."""
    rows = [json.loads(x) for x in predictions.read_text().splitlines() if x.strip()]
    return [r for r in rows if (r.get("extra") or {}).get("task") == "tvg"]


def tvg_item_ious(predictions: Path) -> dict[str, float]:
    """Per-item tvg IoU of one evaluation's predictions file, keyed by item id."""
    records = _tvg_records(predictions)
    return dict(zip((str(r["item_id"]) for r in records), record_ious(records), strict=True))


def gains_vs_warmup(evals: dict[str, Path]) -> dict[str, dict[str, float]]:
    """Each RL phase's tvg mIoU gain over the warm-up on the same held-out items, with a paired
    bootstrap 95% interval (evaluation-item noise only; seed noise needs several runs)."""
    base = tvg_item_ious(evals["warmup"] / "predictions.jsonl")
    out = {}
    for phase in PHASES[1:]:
        if phase in evals:
            after = tvg_item_ious(evals[phase] / "predictions.jsonl")
            ids = [i for i in base if i in after]
            out[phase] = paired_gain([base[i] for i in ids], [after[i] for i in ids])
    return out


def constant_answer_baseline(predictions: Path, step: float) -> dict[str, Any]:
    """Best single answer for every held-out tvg item (ignoring the video), from a predictions file."""
    gts = [r["groundtruth"] for r in _tvg_records(predictions)]
    segment, miou = best_constant_answer(gts, step)
    return {"constant_answer": segment, "miou": miou, "n": len(gts)}


def _gain_text(gain: dict[str, float], sep: str = " ") -> str:
    """``+7.7 [+3.4, +12.1]``: a gain and its interval, in points."""
    return f"{100 * gain['gain']:+.1f}{sep}[{100 * gain['low']:+.1f}, {100 * gain['high']:+.1f}]"


def _table(summary: dict) -> str:
    lines = ["| phase | mIoU (tvg) | mean R (tvg) | mean F1 (tal) | mIoU gain vs warm-up "
             "[95% CI over items] |", "|---|---|---|---|---|"]
    gains = summary.get("gain_vs_warmup", {})
    for p in PHASES:
        m = summary["stages"].get(p)
        if m:
            gain = _gain_text(gains[p]) if p in gains else ""
            lines.append(f"| {p} | {100 * m.get('miou', 0):.1f} | {100 * m.get('mean_r', 0):.1f} "
                         f"| {100 * m.get('mean_f1', 0):.1f} | {gain} |")
    base = summary.get("baseline")
    if base:
        s, e = base["constant_answer"]
        lines.append(f"| constant answer {s:g}-{e:g} s (ignores the video) | "
                     f"{100 * base['miou']:.1f} | | | |")
    return "\n".join(lines)


def _plots(run_dir: Path, summary: dict, train_dirs: dict[str, Path]) -> None:
    """``reward_curves.png`` (mean total reward per RL stage) and ``heldout_miou.png``."""
    import matplotlib  # optional and slow: only the finished demo draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, d in train_dirs.items():
        path = d / "metrics.jsonl"
        if not path.is_file():
            continue
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        steps = [r.get("step", i + 1) for i, r in enumerate(rows)]
        ax.plot(steps, [r.get("reward/total", float("nan")) for r in rows], label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("mean total reward")
    ax.set_title("GRPO reward per stage")
    ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "reward_curves.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    phases = [p for p in PHASES if p in summary["stages"]]
    heights = [summary["stages"][p].get("miou", 0.0) for p in phases]
    ax.bar(phases, heights, color="#4c72b0")
    gains = summary.get("gain_vs_warmup", {})
    for i, (p, h) in enumerate(zip(phases, heights, strict=True)):
        if p in gains:  # gain over the warm-up and its 95% interval over held-out items
            ax.annotate(_gain_text(gains[p], "\n"), (i, h), ha="center", va="bottom", fontsize=7)
    if "baseline" in summary:
        ax.axhline(summary["baseline"]["miou"], color="#c44e52", linestyle="--",
                   label="best constant answer (ignores the video)")
        ax.legend(loc="upper left", fontsize=8)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("held-out mIoU (tvg items)")
    ax.set_title("held-out mIoU per phase\n(labels: gain over warm-up, 95% interval over items)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(run_dir / "heldout_miou.png", dpi=120)
    plt.close(fig)


def write_report(cfg: DictConfig, run_dir: Path, evals: dict[str, Path],
                 train_dirs: dict[str, Path], start: float) -> dict:
    """Write ``summary.json`` (``stages``, ``runs``, ``gain_vs_warmup``, ``baseline``,
    ``wall_seconds`` since ``start``, ``config``), log it, write the table and plots, print the
    table; returns the summary."""
    summary: dict[str, Any] = {"stages": {}, "runs": {}}
    for phase, out in evals.items():
        summary["stages"][phase] = _phase_metrics(out / "results.json")
        summary["runs"][f"{phase}_eval"] = str(out)
    for phase, d in train_dirs.items():
        summary["runs"][f"{phase}_train"] = str(d)
    summary["gain_vs_warmup"] = gains_vs_warmup(evals)
    summary["baseline"] = constant_answer_baseline(
        evals["warmup"] / "predictions.jsonl", float(cfg.data.synthetic.boundary_step))
    summary["wall_seconds"] = round(time.time() - start, 1)
    summary["config"] = OmegaConf.to_container(cfg.demo, resolve=True)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    log_final_metrics(cfg, {k: summary[k] for k in ("stages", "gain_vs_warmup", "wall_seconds")},
                      run_dir)
    table = _table(summary)
    (run_dir / "demo_table.md").write_text(table + "\n")
    _plots(run_dir, summary, train_dirs)
    print("\n" + table)
    print(f"\n[demo] done in {summary['wall_seconds']:.0f} s; summary: {run_dir / 'summary.json'}")
    return summary
