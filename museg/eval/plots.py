"""Evaluation plots (matplotlib, Agg canvas, no global pyplot state).

``write_plots(run_dir, kind, metrics, records)`` writes, by benchmark kind:

- ``tvg``: ``iou_hist.png`` (per-item IoU of the first predicted vs the first true segment) and
  ``recall_vs_threshold.png`` (R@t for t in 0.01..0.99, the reported thresholds marked);
- ``tal``: ``f1_vs_threshold.png`` (F1@t at the reported thresholds);
- ``etbench``: ``etbench_summary.png`` (per-task scores).

Example::

    from museg.eval.plots import write_plots
    write_plots(Path("runs/eval"), "tvg", metrics, records)   # -> ['iou_hist.png', ...]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from museg.eval.metrics import THRESHOLDS, format_value, record_ious

__all__ = ["write_plots"]


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def write_plots(run_dir: Path, kind: str, metrics: Mapping[str, Any],
                records: Sequence[dict]) -> list[str]:
    """Write the kind's plots into ``run_dir``; returns the file names written."""
    written: list[str] = []
    if kind == "tvg" and records:
        ious = record_ious(records)
        fig, ax = _figure()
        ax.hist(ious, bins=20, range=(0.0, 1.0), color="tab:blue", edgecolor="white")
        ax.set(xlabel="IoU (first predicted vs first true segment)", ylabel="items",
               title=f"IoU histogram (n={len(ious)}, mIoU={format_value(metrics.get('miou'))})")
        fig.tight_layout()
        fig.savefig(run_dir / "iou_hist.png")
        written.append("iou_hist.png")
        ts = [i / 100 for i in range(1, 100)]
        rec = [sum(1 for x in ious if x >= t) / len(ious) for t in ts]
        fig, ax = _figure()
        ax.plot(ts, rec, color="tab:blue", label="R@t")
        pts = [(t, metrics[f"r@{t}"]) for t in THRESHOLDS if f"r@{t}" in metrics]
        if pts:
            ax.scatter(*zip(*pts, strict=True), color="tab:red", zorder=3, label="reported")
        ax.set(xlabel="IoU threshold t", ylabel="recall R@t", ylim=(0, 1), xlim=(0, 1),
               title="Recall vs IoU threshold")
        ax.legend()
        fig.tight_layout()
        fig.savefig(run_dir / "recall_vs_threshold.png")
        written.append("recall_vs_threshold.png")
    elif kind == "tal":
        pts = [(t, metrics[f"f1@{t}"]) for t in THRESHOLDS if f"f1@{t}" in metrics]
        if pts:
            fig, ax = _figure()
            ax.plot(*zip(*pts, strict=True), marker="o", color="tab:green")
            ax.set(xlabel="IoU threshold t", ylabel="F1@t", ylim=(0, 1), xlim=(0, 0.8),
                   title=f"F1 vs IoU threshold (mean F1={format_value(metrics.get('mean_f1'))})")
            fig.tight_layout()
            fig.savefig(run_dir / "f1_vs_threshold.png")
            written.append("f1_vs_threshold.png")
    elif kind == "etbench":
        keys = [k for k in ("rar_acc", "eca_acc", "rvq_acc", "tvg_f1", "epm_f1", "tal_f1",
                            "evs_f1", "vhd_f1", "dvc_f1", "slc_f1", "tem_rec", "gvq_rec")
                if isinstance(metrics.get(k), int | float)]
        if keys:
            fig, ax = _figure()
            ax.bar(range(len(keys)), [metrics[k] for k in keys], color="tab:purple")
            ax.set_xticks(range(len(keys)), keys, rotation=60, fontsize=7)
            ax.set(ylim=(0, 1), ylabel="score", title="E.T. Bench per task")
            fig.tight_layout()
            fig.savefig(run_dir / "etbench_summary.png")
            written.append("etbench_summary.png")
    return written
