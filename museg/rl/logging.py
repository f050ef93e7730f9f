"""Training metrics sinks: jsonl (always), tensorboard + wandb (rank 0), completions table, PNG.

Files under ``run_dir``::

    metrics.jsonl          one json object per logged step ({'step': n, 'reward/total': ..., ...})
    completions.jsonl      rows (step, prompt, completion, every reward, advantage) every N steps
    completions.parquet    the same table, written at close()
    tb/                    tensorboard event files
    reward_curves.png      reward (total and per function) against step, written at close()

wandb runs on rank 0 only; ``WANDB_MODE`` (env) wins over ``cfg.wandb.mode``; the run id is kept in
``logger.wandb_id`` (the trainer stores it in checkpoints) and reused with ``resume='allow'``.
On resume from step ``k``, jsonl lines with step > k (written after that checkpoint) are dropped.

Example::

    log = MetricsLogger(run_dir, cfg, is_main=True)
    log.log(1, {"reward/total": 1.2, "loss": 0.1})
    log.log_completions(1, [{"prompt": "...", "completion": "...", "reward/total": 1.2}])
    log.close()
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from museg.launch.tracking import new_run_id, wandb_init_kwargs

__all__ = ["MetricsLogger", "plot_reward_curves"]

log = logging.getLogger(__name__)


def _truncate_jsonl(path: Path, max_step: int) -> None:
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if int(json.loads(line).get("step", 0)) <= max_step:
                kept.append(line)
        except (ValueError, AttributeError):
            continue
    path.write_text("".join(k + "\n" for k in kept))


def plot_reward_curves(history: list[Mapping[str, Any]], out_png: str | Path) -> Path | None:
    """Plot every ``reward/*`` series of ``history`` against step into ``out_png``."""
    keys = sorted({k for h in history for k in h if k.startswith("reward/") and "std" not in k})
    if not history or not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for k in keys:
        pts = [(h["step"], h[k]) for h in history if k in h and math.isfinite(float(h[k]))]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, label=k.removeprefix("reward/"), lw=2 if k == "reward/total" else 1)
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


class MetricsLogger:
    """Fan-out of per-step metrics; only rank 0 (``is_main``) writes anything."""

    def __init__(
        self,
        run_dir: str | Path,
        cfg: Any = None,
        is_main: bool = True,
        wandb_id: str | None = None,
        resume_step: int | None = None,
        history: list[dict[str, Any]] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.is_main = is_main
        self.history: list[dict[str, Any]] = list(history or [])
        self.wandb_id = wandb_id
        self._wandb = None
        self._tb = None
        self._completion_rows = 0
        if not is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.completions_path = self.run_dir / "completions.jsonl"
        if resume_step is not None:
            _truncate_jsonl(self.metrics_path, resume_step)
            _truncate_jsonl(self.completions_path, resume_step)
            self.history = [h for h in self.history if h.get("step", 0) <= resume_step]
        else:
            for p in (self.metrics_path, self.completions_path):
                p.unlink(missing_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter

            purge = (resume_step + 1) if resume_step is not None else None
            self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=purge)
        except ImportError:  # pragma: no cover - tensorboard is a dependency
            log.warning("tensorboard not installed: no tensorboard logs")
        self._init_wandb(cfg)

    def _init_wandb(self, cfg: Any) -> None:
        mode = os.environ.get("WANDB_MODE") or str(cfg.wandb.mode)
        if mode == "disabled":
            return
        import wandb

        if not self.wandb_id:
            self.wandb_id = new_run_id()
        kwargs = wandb_init_kwargs(cfg, run_id=self.wandb_id)
        kwargs.update(dir=str(self.run_dir), mode=mode)
        self._wandb = wandb.init(**kwargs)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.is_main:
            return
        row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        self.history.append(row)
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(k, float(v), int(step))
        if self._wandb is not None:
            self._wandb.log(dict(metrics), step=int(step))

    def log_completions(self, step: int, rows: list[Mapping[str, Any]]) -> None:
        if not self.is_main or not rows:
            return
        with self.completions_path.open("a") as f:
            for r in rows:
                f.write(json.dumps({"step": int(step), **r}, default=str) + "\n")
        self._completion_rows += len(rows)
        if self._wandb is not None:
            import wandb

            cols = ["step", *rows[0].keys()]
            table = wandb.Table(columns=cols, data=[[step, *r.values()] for r in rows])
            self._wandb.log({"completions": table}, step=int(step))

    def _write_parquet(self) -> None:
        if not self.completions_path.is_file():
            return
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:  # pragma: no cover
            return
        rows = [json.loads(line) for line in self.completions_path.read_text().splitlines() if line]
        if rows:
            pq.write_table(pa.Table.from_pylist(rows), self.run_dir / "completions.parquet")

    def close(self, summary: Mapping[str, Any] | None = None, plot: bool = True) -> None:
        if not self.is_main:
            return
        self._write_parquet()
        if plot:
            plot_reward_curves(self.history, self.run_dir / "reward_curves.png")
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            if summary:
                for k, v in summary.items():
                    if isinstance(v, int | float | str | bool):
                        self._wandb.summary[k] = v
            self._wandb.finish()
            self._wandb = None
