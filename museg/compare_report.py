"""The comparison itself and its outputs: ``compare.md``, ``compare.csv`` and plots.

:func:`build` turns finished runs into a :class:`Comparison` (variants, varying and constant keys,
mean ± sd per variant, differences against the baseline); :func:`markdown`, :func:`csv_rows` and
:func:`write_plots` render it::

    runs, unfinished = museg.compare_runs.find_runs(["outputs/default/eval"])
    c = build(runs, unfinished, baseline="eval.max_new_tokens=8")
    print(main_table(c)); Path("compare.md").write_text(markdown(c))
    write_csv(c, Path("compare.csv")); write_plots(c, Path("."))

Benchmark metrics are fractions and are shown ×100 (one decimal, as the paper); the CSV keeps the
raw numbers. Differences: per item (paired bootstrap over the items both variants evaluated,
each variant's seeds averaged per item) where per-item scores exist (tvg IoU, tal F1), and always
the seed-level difference of means (Welch t interval, needs two runs on each side).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from museg.compare_runs import Run
from museg.compare_stats import (
    Variant,
    group_variants,
    headline_metrics,
    mean_sd,
    paired_difference,
    seed_difference,
    select_baseline,
)

__all__ = ["Comparison", "build", "main_table", "markdown", "csv_rows", "write_csv",
           "write_plots"]

_TRAIN_ORDER = ("reward/total", "kl", "completion_length", "steps", "wall_time_s")
_MAIN_TRAIN = ("reward/total", "kl", "steps", "wall_time_s")  # the rest: md's training table


@dataclass
class Comparison:
    variants: list[Variant]
    varying: list[str]
    constant: dict[str, Any]
    baseline: int
    metrics: list[str]
    """Every benchmark metric present (headline ones first)."""
    headline: list[str]
    train_keys: list[str]
    task: str = ""
    """The runs' task (train, eval or demo)."""
    deltas: list[dict[str, dict[str, Any]]] = field(default_factory=list)
    """Per variant: metric -> {"items": paired_gain or None, "seeds": seed_difference}."""
    unfinished: list[Path] = field(default_factory=list)


def _values(v: Variant, metric: str, train: bool = False) -> list[float]:
    return [(r.train if train else r.metrics)[metric] for r in v.runs
            if metric in (r.train if train else r.metrics)]


def build(runs: list[Run], unfinished: list[Path] | None = None, baseline: str | None = None,
          metrics: list[str] | None = None, n_resamples: int = 2000) -> Comparison:
    """Group ``runs`` into variants and compute every figure of the comparison."""
    variants, varying, constant = group_variants(runs)
    base = select_baseline(variants, baseline)
    present = list(dict.fromkeys(m for r in runs for m in r.metrics))
    head = [m for m in (metrics or headline_metrics(present)) if m in present]
    ordered = head + sorted(m for m in present if m not in head)
    train_present = {k for r in runs for k in r.train}
    train_keys = [k for k in _TRAIN_ORDER if k in train_present]
    train_keys[1:1] = sorted(k for k in train_present if k.startswith("reward/")
                             and k != "reward/total")
    c = Comparison(variants, varying, constant, base, ordered, head, train_keys,
                   task=runs[0].task if runs else "", unfinished=list(unfinished or []))
    b = variants[base] if variants else None
    for v in variants:
        d: dict[str, dict[str, Any]] = {}
        for m in head:
            items = paired_difference(b, v, m, n_resamples=n_resamples) if v is not b else None
            d[m] = {"items": items, "seeds": seed_difference(_values(b, m), _values(v, m))}
        c.deltas.append(d)
    return c


# --------------------------------------------------------------------------------- formatting
def _pts(x: float) -> str:
    return "nan" if math.isnan(x) else f"{100 * x:.1f}"


def _num(x: float) -> str:
    if math.isnan(x):
        return "nan"
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.3g}"


def _cell(vals: list[float], fmt: Any) -> str:
    mean, sd, n = mean_sd(vals)
    if n == 0:
        return "-"
    return fmt(mean) if n == 1 else f"{fmt(mean)} ± {fmt(sd)}"


def _delta(d: dict[str, float] | None) -> str:
    if d is None:
        return ""
    g = f"{100 * d['gain']:+.1f}"
    if math.isnan(d["low"]):
        return g
    return f"{g} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"


def _key_cell(v: Any) -> str:
    text = str(v)
    return text if len(text) <= 40 else text[:37] + "..."


def primary_metrics(c: Comparison) -> list[str]:
    """Metrics whose differences the main table shows: those with per-item scores (tvg mIoU,
    tal F1), else the first two headline metrics."""
    return [m for m in c.headline if any(d[m]["items"] for d in c.deltas)] or c.headline[:2]


def _delta_columns(c: Comparison) -> list[tuple[str, str, str]]:
    """(title, metric, kind) of the difference columns of the main table."""
    cols = []
    for m in primary_metrics(c):
        if any(d[m]["items"] for d in c.deltas):
            cols.append((f"Δ {m} [95% CI, items]", m, "items"))
        if any(len(v.runs) > 1 for v in c.variants):
            cols.append((f"Δ {m} [95% CI, seeds]", m, "seeds"))
    return cols


def main_table(c: Comparison) -> str:
    """One row per variant: varying keys, runs, headline metrics, differences, training."""
    head = [*(c.varying or ["variant"]), "runs", "seeds", *c.headline]
    dcols = _delta_columns(c)
    train = [k for k in _MAIN_TRAIN if k in c.train_keys]
    head += [t for t, _, _ in dcols] + train
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, v in enumerate(c.variants):
        keys = [_key_cell(v.values[k]) for k in c.varying] or [v.label]
        if i == c.baseline:
            keys[0] += " (baseline)"
        cells = [*keys, str(len(v.runs)), ",".join(map(str, v.seeds))]
        cells += [_cell(_values(v, m), _pts) for m in c.headline]
        for _, m, kind in dcols:
            cells.append("" if i == c.baseline else _delta(c.deltas[i][m][kind]))
        cells += [_cell(_values(v, k, train=True), _num) for k in train]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _all_metrics_table(c: Comparison, keys: list[str], train: bool = False) -> str:
    head = ["variant", *keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in c.variants:
        lines.append("| " + " | ".join([v.label, *(_cell(_values(v, m, train), _num if train
                                                          else _pts) for m in keys)]) + " |")
    return "\n".join(lines)


_KEY_SETTINGS = {
    "eval": ("experiment_name", "model.name", "model.path", "eval.benchmark", "eval.limit",
             "eval.max_new_tokens"),
    "train": ("experiment_name", "model.name", "stage.id", "data.name", "train.max_steps",
              "train.learning_rate", "train.num_generations"),
    "demo": ("experiment_name", "model.name", "train.max_steps", "train.learning_rate",
             "demo.warmup_steps", "data.synthetic.n_heldout_videos"),
}


def markdown(c: Comparison, sources: list[str] | None = None,
             plots: list[str] | None = None) -> str:
    """``compare.md``: constant settings, the main table, every metric, how to read it."""
    n_runs = sum(len(v.runs) for v in c.variants)
    out = [f"# compare: {n_runs} runs, {len(c.variants)} variants", ""]
    if sources:
        out += ["Runs from: " + ", ".join(f"`{s}`" for s in sources), ""]
    if c.unfinished:
        out += [f"Skipped {len(c.unfinished)} unfinished run(s) (no results yet): "
                + ", ".join(f"`{p.name}`" for p in c.unfinished), ""]
    key_settings = [f"`{k}={_key_cell(c.constant[k])}`" for k in _KEY_SETTINGS.get(c.task, ())
                    if k in c.constant]
    out += [f"Task `{c.task}`. Same in every run: " + (", ".join(key_settings) or "(see below)")
            + "; "
            f"{len(c.constant)} constant keys listed at the end.", "",
            f"Baseline: **{c.variants[c.baseline].label if c.variants else '-'}**. Benchmark "
            "metrics ×100, mean ± sd over seeds; training figures: mean of the last logged steps.",
            "", *_demo_notes(c), main_table(c), "",
            "Δ columns: difference to the baseline in points. *items*: paired per item on the items "
            "both variants evaluated (seeds averaged per item), bootstrap 95% interval: the noise "
            "of the choice of evaluation items only. *seeds*: difference of the seed means, Welch "
            "95% interval: seed-to-seed noise. A difference is clear of noise when its interval "
            "excludes 0.", ""]
    if c.metrics:
        out += ["## Every metric (×100, mean ± sd over seeds)", "",
                _all_metrics_table(c, c.metrics), ""]
    if c.train_keys:
        out += ["## Training (mean of the last logged steps; steps and wall time per run)", "",
                _all_metrics_table(c, c.train_keys, train=True), ""]
    if plots:
        out += ["## Plots", "", *(f"![{p}]({p})" for p in plots), ""]
    out += ["<details><summary>Constant keys</summary>", "", "| key | value |", "|---|---|"]
    out += [f"| {k} | {_key_cell(v)} |".replace("\n", " ") for k, v in c.constant.items()]
    out += ["", "</details>", ""]
    return "\n".join(out)


def _demo_notes(c: Comparison) -> list[str]:
    """Demo runs: where their figures come from and the warm-up they all start from."""
    if c.task != "demo":
        return []
    out = ["Demo runs: held-out metrics after the last RL stage; steps summed over the stages; "
           "wall time of the whole demo."]
    befores = [r.before for v in c.variants for r in v.runs if r.before]
    shown = [m for m in c.headline if befores and all(m in b for b in befores)]
    if shown and all(b == befores[0] for b in befores):
        out[0] += " Every run starts from the same warm-up model: " + ", ".join(
            f"{m} {_pts(befores[0][m])}" for m in shown) + " before RL."
    return [*out, ""]


def csv_rows(c: Comparison) -> list[dict[str, Any]]:
    """One dict per variant: varying keys, runs, seeds, every metric (mean, sd), differences."""
    rows = []
    for i, v in enumerate(c.variants):
        row: dict[str, Any] = {"variant": v.label, **{k: v.values[k] for k in c.varying},
                               "baseline": i == c.baseline, "runs": len(v.runs),
                               "seeds": " ".join(map(str, v.seeds))}
        for m in c.metrics:
            row[m], row[f"{m}_sd"], _ = mean_sd(_values(v, m))
        for k in c.train_keys:
            row[f"train/{k}"], row[f"train/{k}_sd"], _ = mean_sd(_values(v, k, train=True))
        for m, d in c.deltas[i].items():
            for kind in ("items", "seeds"):
                if kind == "items" and not any(x[m]["items"] for x in c.deltas):
                    continue  # no per-item scores for this metric
                got = d[kind] or {}
                for part in ("gain", "low", "high"):
                    row[f"delta_{kind}_{m}_{part}"] = got.get(part, math.nan)
        rows.append(row)
    return rows


def write_csv(c: Comparison, path: Path) -> Path:
    rows = csv_rows(c)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if isinstance(x, float) and math.isnan(x) else x)
                        for k, x in r.items()})
    return path


# -------------------------------------------------------------------------------------- plots
def _figure(ncols: int, nrows: int = 1, width: float = 4.2, height: float = 3.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _short(v: Variant, limit: int = 28) -> str:
    text = ",".join(_key_cell(x) for x in v.values.values()) or "all"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def write_plots(c: Comparison, out_dir: Path) -> list[Path]:
    """``compare_metrics.png`` (values per variant, differences with intervals),
    ``compare_rewards.png`` (reward curves), ``compare_vs_<key>.png`` (numeric swept keys)."""
    paired = [m for m in c.headline if any(d[m]["items"] for d in c.deltas)]
    metrics = (paired or c.headline)[:4]
    written = []
    if metrics and c.variants:
        written.append(_plot_metrics(c, metrics, out_dir / "compare_metrics.png"))
    if any(r.curve for v in c.variants for r in v.runs):
        written.append(_plot_rewards(c, out_dir / "compare_rewards.png"))
    # metric against a numeric swept key (training runs: final total reward)
    against = [(m, False, 100.0) for m in metrics] or (
        [("reward/total", True, 1.0)] if "reward/total" in c.train_keys else [])
    for key in c.varying:
        xs = [v.values[key] for v in c.variants]
        if against and all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs):
            written.append(_plot_against(c, key, against, out_dir / f"compare_vs_{key}.png"))
    return written


def _plot_metrics(c: Comparison, metrics: list[str], path: Path) -> Path:
    labels = [_short(v) for v in c.variants]
    fig, axes = _figure(len(metrics), 2)
    for j, m in enumerate(metrics):
        top, bottom = axes[0][j], axes[1][j]
        for i, v in enumerate(c.variants):
            vals = [100 * x for x in _values(v, m)]
            if vals:
                mean, sd, _ = mean_sd(vals)
                top.scatter([i] * len(vals), vals, s=12, alpha=0.5, color="#4c72b0")
                top.errorbar([i], [mean], yerr=[sd], fmt="o", color="black", capsize=4)
            d = c.deltas[i][m]
            for kind, dx, style in (("items", -0.1, "-"), ("seeds", 0.1, "--")):
                g = d[kind]
                if g and i != c.baseline and not math.isnan(g["low"]):
                    bottom.errorbar([i + dx], [100 * g["gain"]], fmt="o", capsize=4,
                                    yerr=[[100 * (g["gain"] - g["low"])],
                                          [100 * (g["high"] - g["gain"])]], linestyle=style,
                                    color="#c44e52" if kind == "items" else "#55a868",
                                    label=kind if i == (1 if c.baseline == 0 else 0) else None)
        top.set_title(f"{m} (×100): seeds and mean ± sd", fontsize=8)
        bottom.axhline(0, color="grey", lw=0.8)
        bottom.set_title(f"Δ {m} vs baseline, 95% CI", fontsize=8)
        for ax in (top, bottom):
            ax.set_xlim(-0.5, len(labels) - 0.5)
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
        if bottom.get_legend_handles_labels()[0]:
            bottom.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _plot_rewards(c: Comparison, path: Path) -> Path:
    labels = [_short(v) for v in c.variants]
    fig, axes = _figure(1, width=6.5, height=3.8)
    ax = axes[0][0]
    for i, v in enumerate(c.variants):
        for k, r in enumerate(v.runs):
            if r.curve:
                xs, ys = zip(*r.curve, strict=True)
                ax.plot(xs, ys, color=f"C{i % 10}", lw=1, alpha=0.7,
                        label=labels[i] if k == 0 else None)
    ax.set_xlabel("optimizer step (RL stages one after the other)")
    ax.set_ylabel("mean total reward")
    ax.legend(fontsize=7, title=", ".join(c.varying) or None, title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _plot_against(c: Comparison, key: str, against: list[tuple[str, bool, float]],
                  path: Path) -> Path:
    """One panel per metric: mean ± sd over seeds against the numeric swept ``key``, one line
    per combination of the other swept keys."""
    fig, axes = _figure(len(against))
    others = [k for k in c.varying if k != key]
    for j, (m, train, scale) in enumerate(against):
        ax = axes[0][j]
        lines: dict[str, list[tuple[float, float, float]]] = {}
        for v in c.variants:
            vals = _values(v, m, train=train)
            if vals:
                mean, sd, _ = mean_sd(vals)
                tag = ",".join(f"{k}={_key_cell(v.values[k])}" for k in others)
                lines.setdefault(tag, []).append((float(v.values[key]), scale * mean, scale * sd))
        for tag, pts in lines.items():
            pts.sort()
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts],
                        marker="o", capsize=3, label=tag or None)
        ax.set_xlabel(key)
        ax.set_ylabel(f"{m}{' (×100)' if scale == 100 else ''}, mean ± sd over seeds")
        if others:
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    return path
