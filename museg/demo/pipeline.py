"""The demo's phases, each a child run of the real entrypoint: ``run_demo(cfg)`` (``task=demo``).

Warm-up (:mod:`museg.demo.warmup`, in a spawned process) → held-out evaluation → stage-1 GRPO →
evaluation → stage-2 GRPO → evaluation. Every training and evaluation phase runs
``python -m museg.run task=train stage=N ...`` / ``task=eval benchmark=synthetic ...`` as a child
process with ``experiment=<demo.experiment>``, the demo's own command-line overrides, an ablation
variant's overrides (``demo.variant``) and ``demo.stage_overrides.<phase>``; each RL stage starts
from the previous phase's weights. The results go to :func:`museg.demo.report.write_report`::

    from museg.demo.pipeline import run_demo
    summary = run_demo(cfg)   # cfg composed with experiment=demo
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from museg.config.naming import current_overrides
from museg.config.schema_demo import DemoConfig, DemoVariant
from museg.demo.progress import LABELS, PhaseClock, run_child
from museg.demo.report import write_report
from museg.demo.warmup import locked, shared_warmup_dir, warmup_in_child

__all__ = ["run_demo", "stage_overrides", "variant"]


def _override_key(override: str) -> str:
    """``"+train.beta=0.1"`` -> ``"train.beta"``."""
    return override.split("=", 1)[0].lstrip("+~")


def _user_overrides() -> list[str]:
    """The demo's own command-line overrides, forwarded to every child run (e.g. seed=1)."""
    skip = ("task", "experiment", "run_name", "run_dir", "init_from", "stage", "model.path")
    here = ("launcher", "hydra")  # children run inside this demo's job, never launched again
    return [o for o in current_overrides() if _override_key(o) not in skip
            and _override_key(o).split(".")[0].split("/")[0] not in here]


def _q(value: object) -> str:
    """Quote an override value (run names and paths contain '=' and ',')."""
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def _child(args: list[str], log_path: Path) -> None:
    """Run ``python -m museg.run ARGS``; its output (progress bars included: it runs on a
    pseudo-terminal, :func:`museg.demo.progress.run_child`) goes to the console and ``log_path``."""
    cmd = [sys.executable, "-m", "museg.run", *args]
    print(f"\n$ museg {' '.join(args)}", flush=True)
    rc = run_child(cmd, dict(os.environ, PYTHONUNBUFFERED="1"), log_path)
    if rc != 0:
        raise RuntimeError(f"demo phase failed (exit {rc}): museg {' '.join(args)}; "
                           f"see {log_path}")


def _demo_cfg(**demo: object) -> DictConfig:
    """A config holding only a typed ``demo`` section (the doctests' stand-in for a composed one)."""
    return OmegaConf.create({"demo": OmegaConf.merge(OmegaConf.structured(DemoConfig), demo)})


def stage_overrides(cfg: DictConfig, phase: str, user: list[str]) -> list[str]:
    """``demo.stage_overrides.<phase>`` for one RL stage, minus keys the user set on the command line.

    >>> cfg = _demo_cfg(stage_overrides={"stage2": ["train.beta=0.1", "seed=3"]})
    >>> stage_overrides(cfg, "stage2", ["seed=1"]), stage_overrides(cfg, "stage1", [])
    (['train.beta=0.1'], [])
    """
    table = cfg.demo.stage_overrides
    wanted = list(table[phase]) if phase in table else []
    taken = {_override_key(o) for o in user}
    return [o for o in wanted if _override_key(o) not in taken]


def variant(cfg: DictConfig) -> DemoVariant:
    """The ablation variant ``demo.variants[demo.variant]`` (no overrides, ``demo.stages``, when
    ``demo.variant`` is unset): ``overrides`` for every child run, ``stages`` to run.

    >>> cfg = _demo_cfg(variant="no_local", variants={"no_local": {
    ...     "overrides": ["reward.weights.local_matching=0.0"]}})
    >>> variant(cfg).overrides, variant(_demo_cfg()) == DemoVariant()
    (['reward.weights.local_matching=0.0'], True)
    """
    name, table = cfg.demo.variant, cfg.demo.variants
    if not name:
        return DemoVariant()
    if name not in table:
        raise ValueError(f"demo.variant={name} is not one of {', '.join(table)} (fix: pick one "
                         "or add it to demo.variants)")
    chosen = OmegaConf.to_container(table[name], resolve=True)
    return DemoVariant(**chosen)


def _max_steps(cfg: DictConfig, overrides: list[str]) -> int | None:
    """GRPO steps of one RL stage (its ``train.max_steps=`` override, else the config's)."""
    steps = next((o.split("=", 1)[1] for o in overrides
                  if _override_key(o) == "train.max_steps"), cfg.train.max_steps)
    return int(steps) if int(steps) > 0 else None


def _heldout_items(cfg: DictConfig) -> int | None:
    """Held-out items of the synthetic benchmark (known once the data exists; else None)."""
    ann = cfg.eval.annotation
    try:
        return len(json.loads(Path(str(ann)).read_text())) if ann and ann != "generated" else None
    except (OSError, ValueError):
        return None


@dataclass
class _Phases:
    """One demo's child runs, in order, and where each wrote (evaluations, RL training runs)."""

    cfg: DictConfig
    run_dir: Path
    common: list[str]  # overrides of every child: experiment, variant, the user's
    user: list[str]
    clock: PhaseClock
    n_heldout: int | None
    evals: dict[str, Path] = field(default_factory=dict)
    train_dirs: dict[str, Path] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return Path(self.cfg.paths.output_root) / self.cfg.experiment_name

    def evaluate(self, phase: str, model_dir: Path, run: str | None = None) -> None:
        """Held-out evaluation of ``model_dir`` (a shared warm-up's only once: ``warmup-*``)."""
        self.clock.start(f"held-out evaluation after {LABELS[phase]}", "eval", self.n_heldout)
        run = run or f"{self.cfg.run_name}-{phase}"
        out = self.root / "eval" / run
        if not (run.startswith("warmup-") and (out / "results.json").is_file()):  # shared: once
            _child([*self.common, "task=eval", "benchmark=synthetic", f"model.path={_q(model_dir)}",
                    f"run_name={_q(run)}"], self.run_dir / f"{phase}_eval.log")
        self.evals[phase] = out

    def warm_up(self) -> Path:
        """The warm-up model (this run's, or the experiment's shared one) and its evaluation."""
        cfg = self.cfg
        self.clock.start("synthetic data + tiny model + supervised warm-up", "warmup",
                         cfg.demo.warmup_steps)
        if not cfg.demo.shared_warmup:
            warm = warmup_in_child(cfg, self.run_dir / "warmup_model")
            self.evaluate("warmup", warm)
            return warm
        shared = shared_warmup_dir(cfg)  # computed once (under a lock), reused by every run
        with locked(shared.with_name(shared.name + ".lock")):
            warm = shared if (shared / "config.json").is_file() else warmup_in_child(cfg, shared)
            settings = json.dumps(OmegaConf.to_container(cfg.eval, resolve=True), sort_keys=True)
            self.evaluate("warmup", warm, f"warmup-{shared.name}-"
                          f"{hashlib.sha1(settings.encode()).hexdigest()[:6]}")
        return warm

    def rl_stage(self, stage: int, init: Path, evaluate: bool) -> Path:
        """GRPO stage ``stage`` from ``init``'s weights (then evaluated if asked); its final model."""
        phase = f"stage{stage}"
        extra = stage_overrides(self.cfg, phase, self.user)
        self.clock.start(f"stage-{stage} GRPO", "train", _max_steps(self.cfg, extra))
        name = f"{self.cfg.run_name}-{phase}"
        train_dir = self.root / "train" / name
        _child([*self.common, *extra, "task=train", f"stage={stage}", f"init_from={_q(init)}",
                f"run_name={_q(name)}"], self.run_dir / f"{phase}_train.log")
        self.train_dirs[phase] = train_dir
        if evaluate:
            self.evaluate(phase, train_dir / "final")
        return train_dir / "final"


def run_demo(cfg: DictConfig) -> dict:
    """Warm-up, stage 1, stage 2 and held-out evaluation after each; returns the summary."""
    start = time.time()
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    user = _user_overrides()
    chosen = variant(cfg)  # an ablation variant (experiment=demo_ablation); none by default
    common = [f"experiment={cfg.demo.experiment}", *chosen.overrides, *user]
    stages = [int(s) for s in chosen.stages or cfg.demo.stages]
    eval_each = bool(cfg.demo.eval_each_stage)
    clock = PhaseClock(total=2 + len(stages) + (len(stages) if eval_each else 1))
    phases = _Phases(cfg, run_dir, common, user, clock, _heldout_items(cfg))
    model = phases.warm_up()
    for stage in stages:
        model = phases.rl_stage(stage, model, evaluate=eval_each or stage == stages[-1])
    clock.finish()
    return write_report(cfg, run_dir, phases.evals, phases.train_dirs, start)
