"""Seed-to-seed view of several demo runs: mean ± sd of every phase and of RL's gain.

One demo run says how far RL moved *that* model on the held-out items (``summary.json``,
``gain_vs_warmup``, with an interval over items). Whether that beats seed noise needs several runs:

    python -m museg.run -m seed=0,1,2                    # three demos (Hydra multirun)
    python -m museg.demo_seeds outputs/demo/demo/seed=*  # run dirs or summary.json files

prints a markdown table (mean ± sd over runs, in points) and the per-run gains of each RL phase
over its own warm-up (``python -m museg.demo.seeds`` is the same command; ``museg.demo_seeds`` is
the short name README uses). ``seeds_report(summaries)`` returns the same text.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from museg.demo.progress import PHASES

COLUMNS = (("miou", "tvg mIoU"), ("mean_r", "mean R"), ("mean_f1", "tal F1"))


def _mean_sd(values: Sequence[float]) -> str:
    if not values:
        return ""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.1f} ± {100 * sd:.1f}"


def seeds_report(summaries: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: per-phase mean ± sd over runs, then each RL phase's per-run mIoU gain.

    >>> s = lambda w, r: {"stages": {"warmup": {"miou": w}, "stage2": {"miou": r}}}
    >>> print(seeds_report([s(0.5, 0.7), s(0.6, 0.7)]).splitlines()[-1])
    | stage2 | +20.0, +10.0 | 15.0 ± 7.1 | 2/2 |
    """
    lines = [f"{len(summaries)} runs, mean ± sd over runs (points)", "",
             "| phase | " + " | ".join(name for _, name in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for phase in PHASES:
        rows = [s["stages"][phase] for s in summaries if phase in s.get("stages", {})]
        if rows:
            cells = [_mean_sd([r[k] for r in rows if k in r]) for k, _ in COLUMNS]
            lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    lines += ["", "| RL phase | mIoU gain over its warm-up, per run | mean ± sd | runs improved |",
              "|---|---|---|---|"]
    for phase in PHASES[1:]:
        gains = [s["stages"][phase]["miou"] - s["stages"]["warmup"]["miou"] for s in summaries
                 if {"warmup", phase} <= set(s.get("stages", {}))]
        if gains:
            per_run = ", ".join(f"{100 * g:+.1f}" for g in gains)
            better = sum(g > 0 for g in gains)
            lines.append(f"| {phase} | {per_run} | {_mean_sd(gains)} | {better}/{len(gains)} |")
    return "\n".join(lines)


def load_summaries(paths: Sequence[str | Path]) -> list[dict]:
    """``summary.json`` of each demo run directory (or the file itself)."""
    out = []
    for p in map(Path, paths):
        f = p / "summary.json" if p.is_dir() else p
        if not f.is_file():
            raise FileNotFoundError(f"{f}: no demo summary (fix: pass demo run directories, "
                                    "e.g. outputs/demo/demo/seed=*)")
        out.append(json.loads(f.read_text()))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m museg.demo_seeds", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="demo run directories or summary.json files")
    args = parser.parse_args(argv)
    try:
        summaries = load_summaries(args.runs)
    except FileNotFoundError as err:
        print(f"museg: {err}", file=sys.stderr)
        return 2
    print(seeds_report(summaries))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
