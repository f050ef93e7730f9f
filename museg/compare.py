"""Compare finished runs: ``task=compare`` or ``python -m museg.compare``.

Point it at a Hydra multirun directory (or run directories, or a mix): it reads every finished
train, eval or demo run in it, groups runs that differ only in ``seed`` into one variant, finds
the config keys that differ between variants, and writes ``compare.md``, ``compare.csv`` and
plots (``compare_metrics.png``, ``compare_rewards.png``, ``compare_vs_<key>.png``) into
``compare.output`` (default: the first ``compare.runs`` directory)::

    python -m museg.run -m task=eval benchmark=synthetic eval.limit=4 eval.max_new_tokens=8,16
    python -m museg.run task=compare compare.runs=outputs/default/eval
    python -m museg.run task=compare compare.runs=outputs/abl/demo compare.baseline=demo.variant=full
    python -m museg.compare outputs/default/eval --baseline eval.max_new_tokens=16 --wandb

Each row: the varying keys, the runs and seeds, every headline benchmark metric (mean ± sd over
seeds), the difference to the baseline variant (``compare.baseline=<key=value>``, default the
first) per item with a paired bootstrap 95% interval where both evaluated the same items, and at
seed level with a Welch interval; training figures (final rewards per function, KL, completion
length, steps, wall time). Runs whose evaluation items, frame settings or model sizes differ are
refused in one line (``compare.allow_mismatch=true`` overrides); unfinished runs are skipped and
counted. ``compare.wandb=true`` also logs the table (``wandb.Table``) and the plots to a wandb run
of ``job_type=compare`` in the sweep's group. Reading: :mod:`museg.compare_runs`; statistics:
:mod:`museg.compare_stats`; table and plots: :mod:`museg.compare_report`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from museg.compare_report import (
    Comparison,
    build,
    csv_rows,
    main_table,
    markdown,
    write_csv,
    write_plots,
)
from museg.compare_runs import find_runs
from museg.compare_stats import CompareProblem, mismatches
from museg.config import ConfigError

__all__ = ["compare", "run_compare", "log_comparison_to_wandb", "CompareAfterSweep", "main"]

log = logging.getLogger(__name__)


def _paths(runs: Any) -> list[Path]:
    if runs is None or runs == "":
        raise CompareProblem("compare.runs is not set (fix: compare.runs=<multirun dir> or "
                             "compare.runs=[dir1,dir2])")
    items = [runs] if isinstance(runs, str | Path) else list(runs)
    paths = [Path(str(p)).expanduser().absolute() for p in items]
    missing = [str(p) for p in paths if not p.is_dir()]
    if missing:
        raise CompareProblem(f"compare.runs: {', '.join(missing)} is not a directory")
    return paths


def run_compare(runs: Any, output: str | Path | None = None, baseline: str | None = None,
                allow_mismatch: bool = False, task: str | None = None,
                metrics: Sequence[str] | None = None, last_steps: int = 10,
                n_resamples: int = 2000, plots: bool = True, wandb: dict | None = None,
                progress: bool = True) -> Comparison:
    """Compare the runs under ``runs`` and write the outputs; raises :class:`CompareProblem`.

    ``wandb``: keyword arguments for :func:`log_comparison_to_wandb` (None: no wandb).
    """
    paths = _paths(runs)
    found, unfinished = find_runs(paths, last_steps=last_steps, progress=progress)
    tasks = list(dict.fromkeys(r.task for r in found))
    if task:
        found = [r for r in found if r.task == task]
    elif len(tasks) > 1:
        raise CompareProblem(f"runs of several tasks ({', '.join(tasks)}) under "
                             f"{', '.join(map(str, paths))} (fix: compare.task=<one of them>, or "
                             "point compare.runs at one task's directory)")
    if not found:
        raise CompareProblem(f"no finished runs under {', '.join(map(str, paths))} "
                             f"({len(unfinished)} unfinished)")
    problems = mismatches(found)
    if problems and not allow_mismatch:
        raise CompareProblem("runs are not comparable, they differ in " + "; ".join(problems)
                             + " (fix: compare like with like, or compare.allow_mismatch=true)")
    c = build(found, unfinished, baseline=baseline, metrics=list(metrics or []) or None,
              n_resamples=n_resamples)
    out = Path(output).expanduser().absolute() if output else paths[0]
    out.mkdir(parents=True, exist_ok=True)
    written = write_plots(c, out) if plots else []
    text = markdown(c, sources=[str(p) for p in paths], plots=[p.name for p in written])
    if problems:
        text = text.replace("\n\n", "\n\n**Not like with like** (compare.allow_mismatch=true): "
                            + "; ".join(problems) + "\n\n", 1)
    (out / "compare.md").write_text(text)
    write_csv(c, out / "compare.csv")
    n = sum(len(v.runs) for v in c.variants)
    print(f"compare: {n} finished runs in {len(c.variants)} variants"
          + (f"; skipped {len(unfinished)} unfinished" if unfinished else ""))
    print(main_table(c))
    print(f"compare: wrote {out / 'compare.md'}, {out / 'compare.csv'} and {len(written)} plots")
    if wandb is not None:
        log_comparison_to_wandb(c, written, **{"directory": out, **wandb})
    return c


def log_comparison_to_wandb(c: Comparison, images: Sequence[Path], mode: str | None = None,
                            project: str = "museg", entity: str | None = None,
                            group: str | None = None, name: str | None = None,
                            directory: str | Path | None = None) -> str | None:
    """Log the table (``compare/table``) and plots (``compare/<plot>``) to a new wandb run of
    ``job_type=compare``; ``group`` defaults to the runs' ``experiment_name``. Returns the run id
    (None when wandb is disabled)."""
    import wandb

    mode = os.environ.get("WANDB_MODE") or mode or "online"
    if mode == "disabled":
        log.warning("compare.wandb=true but wandb is disabled (fix: wandb.mode=online|offline)")
        return None
    rows = csv_rows(c)
    cols = list(dict.fromkeys(k for r in rows for k in r))

    def cell(x: Any) -> Any:
        return x if isinstance(x, int | float | str | bool) or x is None else str(x)

    group = group or str(c.constant.get("experiment_name") or "compare")
    run = wandb.init(project=project, entity=entity, group=group, job_type="compare",
                     name=name or f"compare-{group}", dir=str(directory) if directory else None,
                     mode=mode, config={"varying": c.varying, "baseline": c.variants[
                         c.baseline].label, "constant": {k: cell(v) for k, v in c.constant.items()}})
    run.log({"compare/table": wandb.Table(columns=cols,
                                          data=[[cell(r.get(k)) for k in cols] for r in rows])})
    for p in images:
        run.log({f"compare/{Path(p).stem}": wandb.Image(str(p))})
    run_id = run.id
    run.finish()
    return run_id


def compare(cfg: Any) -> Comparison:
    """``task=compare``: :func:`run_compare` with ``cfg.compare`` (and ``cfg.wandb`` when
    ``compare.wandb=true``); a problem ends the run with one line and exit code 2."""
    from omegaconf import OmegaConf

    cc = cfg.compare
    runs = OmegaConf.to_container(cc.runs) if OmegaConf.is_config(cc.runs) else cc.runs
    wb = None
    if cc.wandb:
        wb = {"mode": cfg.wandb.mode, "project": cfg.wandb.project, "entity": cfg.wandb.entity,
              "group": None if cfg.wandb.group in (None, "default") else cfg.wandb.group}
    try:
        return run_compare(runs, output=cc.output, baseline=cc.baseline,
                           allow_mismatch=bool(cc.allow_mismatch), task=cc.task,
                           metrics=list(cc.metrics or []), last_steps=int(cc.last_steps),
                           n_resamples=int(cc.n_resamples), plots=bool(cc.plots), wandb=wb)
    except CompareProblem as e:
        raise ConfigError(f"compare: {e}") from None


class CompareAfterSweep(Callback):
    """Hydra callback: compare the sweep's runs when a multirun ends (``experiment=demo_ablation``).

    Configured as ``hydra.callbacks.compare: {_target_: museg.compare.CompareAfterSweep,
    baseline: <key=value>}``; a problem is reported in one line and does not fail the sweep.
    """

    def __init__(self, baseline: str | None = None, allow_mismatch: bool = False) -> None:
        self.baseline, self.allow_mismatch = baseline, allow_mismatch

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        print(f"\ncompare: sweep finished; comparing the runs in {sweep_dir}", flush=True)
        try:
            run_compare(sweep_dir, baseline=self.baseline, allow_mismatch=self.allow_mismatch)
        except CompareProblem as e:
            print(f"museg: compare: {e}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m museg.compare RUNS... [--baseline K=V] [--output DIR] [--task T]
    [--allow-mismatch] [--wandb]``."""
    p = argparse.ArgumentParser(prog="python -m museg.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="a multirun directory and/or run directories")
    p.add_argument("--baseline", help="override string of the baseline variant (key=value)")
    p.add_argument("--output", help="where to write (default: the first RUNS directory)")
    p.add_argument("--task", help="compare only runs of this task (train, eval, demo)")
    p.add_argument("--metric", action="append", help="headline metric (repeatable)")
    p.add_argument("--last-steps", type=int, default=10,
                   help="training figures: mean of the last N logged steps")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="compare runs with different eval sets, frame specs or model sizes")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--wandb", action="store_true", help="log the table and plots to wandb")
    p.add_argument("--wandb-project", default=os.environ.get("WANDB_PROJECT", "museg"))
    a = p.parse_args(argv)
    wb = {"project": a.wandb_project} if a.wandb else None
    try:
        run_compare(a.runs, output=a.output, baseline=a.baseline, task=a.task,
                    allow_mismatch=a.allow_mismatch, metrics=a.metric, last_steps=a.last_steps,
                    plots=not a.no_plots, wandb=wb)
    except CompareProblem as e:
        print(f"museg: config error: compare: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
