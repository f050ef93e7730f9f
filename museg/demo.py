"""The embedded default: ``python -m museg.run`` (= ``experiment=demo``) shows the method working.

Offline, on a CPU: synthetic multi-segment grounding videos → the tiny Qwen2.5-VL → a short
supervised warm-up on a small labelled subset of the training videos (``demo.warmup_videos``) →
stage-1 GRPO → stage-2 GRPO from stage 1's weights, both over every training video → held-out
evaluation after each phase, next to the best constant answer (what ignoring the video scores).
Every training and evaluation phase runs through the real entrypoint
(``python -m museg.run task=train stage=1 ...``, ``task=eval benchmark=synthetic ...``) in a child
process, with the same trainer, rewards, metrics and configs as the real recipe, only smaller
budgets (``conf/experiment/demo.yaml``). The warm-up is seeded by ``demo.warmup_seed``, so
``seed=`` varies the RL stages from one warm-up model. Writes ``summary.json`` (``stages``,
``gain_vs_warmup`` with paired bootstrap intervals over held-out items, ``baseline``),
``demo_table.md`` and plots (reward curves per stage, held-out mIoU per phase) into the demo's run
directory; ``python -m museg.demo_seeds`` summarises several seeds.

    run_demo(cfg)   # cfg composed with experiment=demo
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

PHASES = ("warmup", "stage1", "stage2")


def _override_key(override: str) -> str:
    """``"+train.beta=0.1"`` -> ``"train.beta"``."""
    return override.split("=", 1)[0].lstrip("+~")


def _user_overrides() -> list[str]:
    """The demo's own command-line overrides, forwarded to every child run (e.g. seed=1)."""
    from museg.config.naming import current_overrides

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
    pseudo-terminal, :func:`museg.demo_progress.run_child`) goes to the console and ``log_path``."""
    from museg.demo_progress import run_child

    cmd = [sys.executable, "-m", "museg.run", *args]
    print(f"\n$ museg {' '.join(args)}", flush=True)
    rc = run_child(cmd, dict(os.environ, PYTHONUNBUFFERED="1"), log_path)
    if rc != 0:
        raise RuntimeError(f"demo phase failed (exit {rc}): museg {' '.join(args)}; "
                           f"see {log_path}")


def stage_overrides(cfg: DictConfig, phase: str, user: list[str]) -> list[str]:
    """``demo.stage_overrides.<phase>`` for one RL stage, minus keys the user set on the command line.

    >>> from omegaconf import OmegaConf
    >>> cfg = OmegaConf.create({"demo": {"stage_overrides": {"stage2": ["train.beta=0.1", "seed=3"]}}})
    >>> stage_overrides(cfg, "stage2", ["seed=1"]), stage_overrides(cfg, "stage1", [])
    (['train.beta=0.1'], [])
    """
    wanted = list((cfg.get("demo") or {}).get("stage_overrides", {}).get(phase) or [])
    taken = {_override_key(o) for o in user}
    return [o for o in wanted if _override_key(o) not in taken]


def warmup_seed(cfg: DictConfig) -> int:
    """The warm-up's seed: ``demo.warmup_seed``, or ``seed`` when that is null.

    Fixed by default, so ``seed=`` varies only the RL stages from one warm-up model, the way MUSEG's
    runs all start from one instruction-tuned checkpoint.

    >>> from omegaconf import OmegaConf
    >>> warmup_seed(OmegaConf.create({"seed": 3, "demo": {"warmup_seed": 0}}))
    0
    >>> warmup_seed(OmegaConf.create({"seed": 3, "demo": {"warmup_seed": None}}))
    3
    """
    fixed = (cfg.get("demo") or {}).get("warmup_seed")
    return int(cfg.seed if fixed is None else fixed)


def warmup_model(cfg: DictConfig, out_dir: Path) -> Path:
    """Supervised warm-up of the tiny model on the synthetic train split; saved to ``out_dir``."""
    import torch

    from museg.data.annotations import load_train_jsonl
    from museg.data.prompts import TEMPLATES, build_question
    from museg.data.video import VideoFailure, VideoLoader, video_spec_from_cfg
    from museg.model import load_model_and_processor, model_path_from_cfg
    from museg.rl.warmup import WarmupExample, supervised_warmup, target_completion

    if (out_dir / "config.json").is_file():
        return out_dir
    seed = warmup_seed(cfg)
    torch.manual_seed(seed)
    model, processor = load_model_and_processor(
        model_path_from_cfg(cfg.model), dtype=cfg.model.dtype, attention=cfg.model.attention,
        freeze_vision=cfg.model.freeze_vision)
    samples = load_train_jsonl(cfg.data.train_file, cfg.paths.video_root)
    limit = cfg.demo.get("warmup_videos")
    if limit:  # labelled subset: the first N training videos (RL then uses all of them)
        keep = set(list(dict.fromkeys(s.video_path for s in samples))[: int(limit)])
        samples = [s for s in samples if s.video_path in keep]
    spec = video_spec_from_cfg(cfg.video)
    videos: dict[str, Any] = {}
    examples = []
    from tqdm import tqdm

    paths = list(dict.fromkeys(s.video_path for s in samples))
    bar = tqdm(total=len(paths), desc="warm-up videos", unit="video",
               dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30.0)
    # the shared video loop, decoding in-process as before (a failure stops the warm-up)
    with VideoLoader(spec, backend=cfg.video.backend, timeout_s=None, memory_items=0) as loader:
        for path, video in loader.iterate(paths):
            if isinstance(video, VideoFailure):
                raise video.error
            videos[path] = video
            bar.update(1)
    for s in samples:
        # both stage instructions: a tiny model does not generalise across instructions the way an
        # instruction-tuned Qwen2.5-VL does, and stage 2 switches instruction
        for template in (TEMPLATES["stage1"], TEMPLATES["stage2"]):
            examples.append(WarmupExample(videos[s.video_path], build_question(template, s.problem),
                                          target_completion(s.solution, "the event")))
    bar.close()
    d = cfg.demo
    losses = supervised_warmup(model, processor, examples, steps=int(d.warmup_steps),
                               learning_rate=float(d.warmup_lr),
                               batch_size=int(d.warmup_batch_size), seed=seed, progress=True)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    (tmp / "warmup_losses.json").write_text(json.dumps(losses))
    tmp.rename(out_dir)
    return out_dir


def variant(cfg: DictConfig) -> dict[str, Any]:
    """The ablation variant ``demo.variants[demo.variant]`` (``{}`` when unset): ``overrides``
    for every child run, ``stages`` (RL stages to run, default ``demo.stages`` or [1, 2]).

    >>> from omegaconf import OmegaConf
    >>> cfg = OmegaConf.create({"demo": {"variant": "no_local", "variants": {"no_local": {
    ...     "overrides": ["reward.weights.local_matching=0.0"]}}}})
    >>> variant(cfg)["overrides"], variant(OmegaConf.create({"demo": {}}))
    (['reward.weights.local_matching=0.0'], {})
    """
    d = cfg.get("demo") or {}
    name = d.get("variant")
    if not name:
        return {}
    table = OmegaConf.to_container(d.get("variants") or {}, resolve=True)
    if name not in table:
        raise ValueError(f"demo.variant={name} is not one of {', '.join(table)} (fix: pick one "
                         "or add it to demo.variants)")
    return dict(table[name] or {})


def shared_warmup_dir(cfg: DictConfig) -> Path:
    """``<output_root>/<experiment>/warmup/<hash of what the warm-up depends on>``: one warm-up
    model (and one held-out evaluation of it) for every run of an experiment, whatever its
    ``seed`` or ablation variant (``demo.shared_warmup=true``)."""
    what = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "video")}
    what["synthetic"] = OmegaConf.to_container(cfg.data.synthetic, resolve=True)
    what["demo"] = {k: v for k, v in OmegaConf.to_container(cfg.demo, resolve=True).items()
                    if k.startswith("warmup")}
    what["seed"] = warmup_seed(cfg)
    key = hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return Path(cfg.paths.output_root) / cfg.experiment_name / "warmup" / key


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (parallel jobs wait for the one computing)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _warmup_in_child(cfg: DictConfig, out_dir: Path) -> Path:
    """:func:`warmup_model` in a spawned process: the demo process itself never holds the model or
    torch's heap while the training children run (it would add ~1.1 GB to the demo's peak)."""
    import multiprocessing

    plain = OmegaConf.to_container(cfg, resolve=True)  # resolvers are registered here, not there
    proc = multiprocessing.get_context("spawn").Process(
        target=_warmup_entry, args=(plain, str(out_dir)), name="museg-warmup")
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"demo warm-up failed (exit {proc.exitcode}); see the output above")
    return out_dir


def _warmup_entry(plain: dict, out_dir: str) -> None:
    warmup_model(OmegaConf.create(plain), Path(out_dir))


_LABELS = {"warmup": "the warm-up", "stage1": "stage 1", "stage2": "stage 2"}


def _max_steps(cfg: DictConfig, overrides: list[str]) -> int | None:
    """GRPO steps of one RL stage (its ``train.max_steps=`` override, else the config's)."""
    steps = next((o.split("=", 1)[1] for o in overrides
                  if _override_key(o) == "train.max_steps"), cfg.train.max_steps)
    return int(steps) if int(steps) > 0 else None


def _heldout_items(cfg: DictConfig) -> int | None:
    """Held-out items of the synthetic benchmark (known once the data exists; else None)."""
    ann = cfg.eval.get("annotation")
    try:
        return len(json.loads(Path(str(ann)).read_text())) if ann and ann != "generated" else None
    except (OSError, ValueError):
        return None


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
    from museg.eval.metrics import record_ious

    records = _tvg_records(predictions)
    return dict(zip((str(r["item_id"]) for r in records), record_ious(records), strict=True))


def gains_vs_warmup(evals: dict[str, Path]) -> dict[str, dict[str, float]]:
    """Each RL phase's tvg mIoU gain over the warm-up on the same held-out items, with a paired
    bootstrap 95% interval (evaluation-item noise only; seed noise needs several runs)."""
    from museg.eval.metrics import paired_gain

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
    from museg.eval.metrics import best_constant_answer

    gts = [r["groundtruth"] for r in _tvg_records(predictions)]
    segment, miou = best_constant_answer(gts, step)
    return {"constant_answer": segment, "miou": miou, "n": len(gts)}


def _plots(run_dir: Path, summary: dict, train_dirs: dict[str, Path]) -> None:
    import matplotlib

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


def run_demo(cfg: DictConfig) -> dict:
    """Warm-up, stage 1, stage 2 and held-out evaluation after each; returns the summary."""
    start = time.time()
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    name = cfg.run_name
    user = _user_overrides()
    chosen = variant(cfg)  # an ablation variant (experiment=demo_ablation); {} by default
    common = [f"experiment={cfg.demo.get('experiment') or 'demo'}",
              *chosen.get("overrides", []), *user]
    stages = [int(s) for s in chosen.get("stages") or cfg.demo.get("stages") or (1, 2)]
    eval_each = bool(cfg.demo.get("eval_each_stage", True))
    evals: dict[str, Path] = {}
    train_dirs: dict[str, Path] = {}

    from museg.demo_progress import PhaseClock

    clock = PhaseClock(total=2 + len(stages) + (len(stages) if eval_each else 1))
    n_heldout = _heldout_items(cfg)

    def eval_phase(phase: str, model_dir: Path, run: str | None = None) -> None:
        clock.start(f"held-out evaluation after {_LABELS[phase]}", "eval", n_heldout)
        run = run or f"{name}-{phase}"
        out = Path(cfg.paths.output_root) / cfg.experiment_name / "eval" / run
        if not (run.startswith("warmup-") and (out / "results.json").is_file()):  # shared: once
            _child([*common, "task=eval", "benchmark=synthetic", f"model.path={_q(model_dir)}",
                    f"run_name={_q(run)}"], run_dir / f"{phase}_eval.log")
        evals[phase] = out

    clock.start("synthetic data + tiny model + supervised warm-up", "warmup",
                int(cfg.demo.get("warmup_steps") or 0))
    if cfg.demo.get("shared_warmup"):  # computed once (under a lock), reused by every run
        shared = shared_warmup_dir(cfg)
        with _locked(shared.with_name(shared.name + ".lock")):
            warm = shared if (shared / "config.json").is_file() else \
                _warmup_in_child(cfg, shared)
            settings = json.dumps(OmegaConf.to_container(cfg.eval, resolve=True), sort_keys=True)
            eval_phase("warmup", warm, f"warmup-{shared.name}-"
                       f"{hashlib.sha1(settings.encode()).hexdigest()[:6]}")
    else:
        warm = _warmup_in_child(cfg, run_dir / "warmup_model")
        eval_phase("warmup", warm)
    prev = warm
    for stage in stages:
        phase = f"stage{stage}"
        clock.start(f"stage-{stage} GRPO", "train",
                    _max_steps(cfg, stage_overrides(cfg, phase, user)))
        train_dir = Path(cfg.paths.output_root) / cfg.experiment_name / "train" / f"{name}-{phase}"
        _child([*common, *stage_overrides(cfg, phase, user), "task=train", f"stage={stage}",
                f"init_from={_q(prev)}", f"run_name={_q(f'{name}-{phase}')}"],
               run_dir / f"{phase}_train.log")
        train_dirs[phase] = train_dir
        prev = train_dir / "final"
        if eval_each or stage == stages[-1]:
            eval_phase(phase, prev)

    clock.finish()
    summary: dict[str, Any] = {"stages": {}, "runs": {}}
    for phase, out in evals.items():
        summary["stages"][phase] = _phase_metrics(out / "results.json")
        summary["runs"][f"{phase}_eval"] = str(out)
    for phase, d in train_dirs.items():
        summary["runs"][f"{phase}_train"] = str(d)
    summary["gain_vs_warmup"] = gains_vs_warmup(evals)
    summary["baseline"] = constant_answer_baseline(
        evals["warmup"] / "predictions.jsonl", float(cfg.data.synthetic.get("boundary_step", 1.0)))
    summary["wall_seconds"] = round(time.time() - start, 1)
    summary["config"] = OmegaConf.to_container(cfg.demo, resolve=True)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    from museg.launch.tracking import log_final_metrics

    log_final_metrics(cfg, {k: summary[k] for k in ("stages", "gain_vs_warmup", "wall_seconds")},
                      run_dir)
    table = _table(summary)
    (run_dir / "demo_table.md").write_text(table + "\n")
    _plots(run_dir, summary, train_dirs)
    print("\n" + table)
    print(f"\n[demo] done in {summary['wall_seconds']:.0f} s; summary: {run_dir / 'summary.json'}")
    return summary
