"""Finding and reading finished museg runs for ``task=compare`` (:mod:`museg.compare`).

A run directory is any directory with a Hydra ``.hydra/config.yaml``; what it holds depends on
its task:

- ``eval``: ``results.json`` (metrics and the settings that change numbers) and
  ``predictions.jsonl`` (one record per item, so runs on the same items can be paired); a suite
  (``benchmark=all``) has one sub-directory per benchmark;
- ``train``: ``summary.json`` (steps, wall time, last metrics) and ``metrics.jsonl`` (per step);
- ``demo``: ``summary.json`` whose ``runs`` point at its train and eval children; the last RL
  phase is what the demo is judged by.

``find_runs(paths)`` walks the given directories (a multirun directory, run directories, or a mix)
and returns :class:`Run` objects for the finished runs and the paths of the unfinished ones::

    runs, unfinished = find_runs(["outputs/default/eval"])
    runs[0].config["eval.max_new_tokens"], runs[0].metrics["miou"], runs[0].items["miou"]["17"]

Reading never imports torch or a model; per-item scores use :func:`museg.eval.metrics.record_ious`
(tvg IoU) and :func:`museg.eval.metrics.grounding_metrics` on one item (tal F1).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from museg.eval.metrics import grounding_metrics, metric_output, record_ious

__all__ = ["Run", "find_runs", "run_dirs", "load_run", "flat_config", "item_scores",
           "SKIP_DIRS", "TRAIN_FIGURES"]

#: directories never searched for runs (checkpoints, models, logs, launcher state)
SKIP_DIRS = {"checkpoints", "final", "tb", "wandb", "warmup_model", "__pycache__"}
#: training figures besides ``reward/*`` (from metrics.jsonl)
TRAIN_FIGURES = ("kl", "completion_length")
#: tasks whose runs hold results to compare
RESULT_TASKS = ("eval", "train", "demo")
_CONTEXT_RESOLVERS = ("museg.", "hydra:", "oc.env")  # values that depend on where they resolve


@dataclass
class Run:
    """One finished run, reduced to what a comparison needs."""

    path: Path
    task: str
    config: dict[str, Any]
    """Flat config: dotted key -> value (lists as lists); interpolations that depend on the
    process (run name, environment) are kept as written."""
    overrides: list[str] = field(default_factory=list)
    order: tuple = ()
    metrics: dict[str, float] = field(default_factory=dict)
    """Benchmark metrics (``miou``, ``mean_f1``, ``avg``; a suite: ``thumos14/mean_f1``)."""
    n_items: dict[str, int] = field(default_factory=dict)
    items: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per-item scores by metric (``miou``: tvg IoU, ``mean_f1``: tal F1) -> item id -> score."""
    eval_set: str | None = None
    """Fingerprint of the evaluated items (ids, videos, ground truths)."""
    frame_spec: dict[str, Any] = field(default_factory=dict)
    """Effective evaluation frame settings from ``results.json``."""
    train: dict[str, float] = field(default_factory=dict)
    """Training figures: ``reward/<fn>``, ``kl``, ``completion_length`` (mean of the last steps),
    ``steps``, ``wall_time_s``."""
    curve: list[tuple[float, float]] = field(default_factory=list)
    """(step, reward/total) over training (a demo: its RL stages one after the other)."""
    finished: bool = True
    """False while the run has written no results yet (or was preempted)."""
    before: dict[str, float] = field(default_factory=dict)
    """A demo's warm-up metrics (before RL), for reference."""

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    @property
    def name(self) -> str:
        return self.path.name


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a line being written
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------ discovery
def run_dirs(paths: Iterable[str | Path], max_depth: int = 4) -> list[Path]:
    """Directories holding ``.hydra/config.yaml`` under ``paths`` (not below another run)."""
    found: list[Path] = []

    def walk(p: Path, depth: int) -> None:
        if (p / ".hydra" / "config.yaml").is_file():
            found.append(p)
            return
        if depth >= max_depth:
            return
        for child in sorted(p.iterdir()):
            if child.is_dir() and not child.name.startswith(".") and child.name not in SKIP_DIRS:
                walk(child, depth + 1)

    for p in map(Path, paths):
        if p.is_dir():
            walk(p.absolute(), 0)
    return list(dict.fromkeys(found))


def flat_config(raw: Any) -> dict[str, Any]:
    """Dotted key -> value of a saved Hydra config (a DictConfig, a dict or a yaml path).

    Interpolations between keys are resolved; those that depend on the process that resolves them
    (``${museg.run_name:}``, ``${hydra:...}``, ``${oc.env:...}``) are kept as written.

    >>> flat_config({"a": {"b": 1, "c": "${a.b}"}, "n": "${museg.run_name:}", "l": [1, 2]})
    {'a.b': 1, 'a.c': 1, 'n': '${museg.run_name:}', 'l': [1, 2]}
    """
    from omegaconf import DictConfig, OmegaConf

    cfg = raw if isinstance(raw, DictConfig) else (
        OmegaConf.load(raw) if isinstance(raw, str | Path) else OmegaConf.create(raw))
    plain = OmegaConf.to_container(cfg, resolve=False)
    out: dict[str, Any] = {}

    def value(key: str, v: Any) -> Any:
        if not (isinstance(v, str) and "${" in v) or any(r in v for r in _CONTEXT_RESOLVERS):
            return v
        try:
            got = OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
        except Exception:  # noqa: BLE001 - unresolvable here: keep what was written
            return v
        return OmegaConf.to_container(got, resolve=True) if OmegaConf.is_config(got) else got

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping) and node:
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = value(prefix[:-1], node)

    walk(plain, "")
    return out


# ------------------------------------------------------------------------------- item-level data
def item_scores(records: Sequence[dict], kind: str) -> dict[str, dict[str, float]]:
    """Per-item scores of prediction records: ``miou`` (tvg IoU) and/or ``mean_f1`` (tal F1).

    ``kind`` mixed splits the records by ``extra.task``; etbench has no per-item score here.

    >>> recs = [{"item_id": 1, "answer": "0-5", "groundtruth": [[0, 10]], "extra": {"task": "tvg"}},
    ...         {"item_id": 2, "answer": "0-10", "groundtruth": [[0, 10]], "extra": {"task": "tal"}}]
    >>> item_scores(recs, "mixed")
    {'miou': {'1': 0.5}, 'mean_f1': {'2': 1.0}}
    """
    def task_of(r: dict) -> str:
        if kind in ("tvg", "tal"):
            return kind
        return str((r.get("extra") or {}).get("task", "tvg"))

    out: dict[str, dict[str, float]] = {}
    if kind not in ("tvg", "tal", "mixed"):
        return out
    tvg = [r for r in records if task_of(r) == "tvg"]
    tal = [r for r in records if task_of(r) == "tal"]
    if tvg:
        out["miou"] = dict(zip((str(r["item_id"]) for r in tvg), record_ious(tvg), strict=True))
    if tal:
        out["mean_f1"] = {str(r["item_id"]): float(grounding_metrics(
            [r["groundtruth"]], [metric_output(r)], "tal")["mean_f1"]) for r in tal}
    return out


def _fingerprint(records: Sequence[dict]) -> str:
    keys = sorted(json.dumps([str(r.get("item_id")), r.get("video"), r.get("groundtruth")])
                  for r in records)
    return hashlib.sha1("\n".join(keys).encode()).hexdigest()[:12]


def _scalars(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric metrics, flattened; counts (``n``) and lists left out; nested copies of top-level
    values (a mixed benchmark's ``tvg.miou`` = ``miou``) dropped."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if isinstance(v, Mapping):
            for sk, sv in _scalars(v).items():
                if metrics.get(sk) != sv:
                    out[f"{prefix}{k}.{sk}"] = sv
        elif isinstance(v, int | float) and not isinstance(v, bool) and k != "n":
            if math.isfinite(float(v)):
                out[f"{prefix}{k}"] = float(v)
    return out


def _read_eval_dir(run: Run, d: Path, prefix: str = "") -> bool:
    """Metrics, items and settings of one benchmark's eval directory into ``run``."""
    res = _read_json(d / "results.json")
    if not isinstance(res, dict) or "metrics" not in res:
        return False
    kind = str(res.get("kind", ""))
    run.metrics.update(_scalars(res["metrics"], prefix))
    run.n_items[prefix.rstrip("/") or "items"] = int(res.get("n_items") or
                                                     res["metrics"].get("n", 0) or 0)
    settings = res.get("settings") or {}
    video = settings.get("video") or {}
    for k in ("fps", "min_pixels", "max_pixels", "total_pixels", "max_frames", "min_frames"):
        if k in video:
            run.frame_spec[f"{prefix}{k}"] = video[k]
    records = _read_jsonl(d / "predictions.jsonl")
    if records:
        for metric, scores in item_scores(records, kind).items():
            run.items[f"{prefix}{metric}"] = scores
        fp = _fingerprint(records)
        run.eval_set = fp if not prefix else f"{run.eval_set or ''}{prefix}{fp};"
    elif settings.get("annotation_sha256"):
        run.eval_set = f"{settings['annotation_sha256']}:{settings.get('limit')}"
    return True


def _train_figures(d: Path, last_steps: int) -> tuple[dict[str, float], list[tuple[float, float]]]:
    rows = _read_jsonl(d / "metrics.jsonl")
    tail = rows[-max(1, last_steps):]
    out: dict[str, float] = {}
    keys = sorted({k for r in tail for k in r if (k.startswith("reward/") and "std" not in k)
                   or k in TRAIN_FIGURES})
    for k in keys:
        vals = [float(r[k]) for r in tail if k in r and math.isfinite(float(r[k]))]
        if vals:
            out[k] = sum(vals) / len(vals)
    curve = [(float(r.get("step", i + 1)), float(r["reward/total"]))
             for i, r in enumerate(rows) if "reward/total" in r]
    return out, curve


def _child(recorded: str | None, demo_dir: Path) -> Path | None:
    """A demo child's directory: as recorded, else at the same place relative to the demo."""
    if not recorded:
        return None
    p = Path(recorded)
    if p.is_dir():
        return p
    moved = demo_dir.parent.parent / p.parent.name / p.name
    return moved if moved.is_dir() else None


# ------------------------------------------------------------------------------------- one run
def load_run(path: str | Path, last_steps: int = 10) -> Run:
    """The :class:`Run` in ``path`` (``finished`` False when it has no results yet)."""
    import yaml

    path = Path(path)
    config = flat_config(path / ".hydra" / "config.yaml")
    overrides = []
    if (path / ".hydra" / "overrides.yaml").is_file():
        overrides = [str(o) for o in yaml.safe_load((path / ".hydra" / "overrides.yaml")
                                                    .read_text()) or []]
    order: tuple = (str(path.parent), math.inf, path.name)
    hydra_file = path / ".hydra" / "hydra.yaml"
    if hydra_file.is_file():
        num = ((yaml.safe_load(hydra_file.read_text()) or {}).get("hydra") or {}) \
            .get("job", {}).get("num")
        if isinstance(num, int):
            order = (str(path.parent), num, path.name)
    task = str(config.get("task", ""))
    run = Run(path=path, task=task, config=config, overrides=overrides, order=order)
    run.finished = _read_results(run, last_steps)
    return run


def _read_results(run: Run, last_steps: int) -> bool:
    path, task = run.path, run.task
    if task == "eval":
        res = _read_json(path / "results.json")
        if not isinstance(res, dict):
            return False
        if "benchmarks" in res:  # a suite: one directory per benchmark
            for name in res["benchmarks"]:
                _read_eval_dir(run, path / name, prefix=f"{name}/")
            return True
        return _read_eval_dir(run, path)
    summary = _read_json(path / "summary.json")
    if not isinstance(summary, dict):
        return False
    if task == "train":
        if summary.get("preempted") or not summary.get("final_dir"):
            return False
        run.train, run.curve = _train_figures(path, last_steps)
        run.train["steps"] = float(summary.get("step", 0))
        run.train["wall_time_s"] = float(summary.get("wall_time_s", 0.0))
        return True
    if task == "demo":
        return _load_demo(run, summary, last_steps)
    return False


def _load_demo(run: Run, summary: dict, last_steps: int) -> bool:
    stages = summary.get("stages") or {}
    phases = [p for p in stages if p != "warmup"]
    if not phases:
        return False
    final = phases[-1]
    run.before = _scalars(stages.get("warmup") or {})
    children = summary.get("runs") or {}
    eval_dir = _child(children.get(f"{final}_eval"), run.path)
    if eval_dir is None or not _read_eval_dir(run, eval_dir):
        run.metrics = _scalars(stages[final])
    offset, steps = 0.0, 0.0
    for phase in [k.removesuffix("_train") for k in children if k.endswith("_train")]:
        train_dir = _child(children.get(f"{phase}_train"), run.path)
        if train_dir is None:
            continue
        figures, curve = _train_figures(train_dir, last_steps)
        run.curve += [(offset + s, r) for s, r in curve]
        done = float((_read_json(train_dir / "summary.json") or {}).get("step", len(curve)))
        offset += done
        steps += done
        if phase == final:
            run.train.update(figures)
    run.train["steps"] = steps
    run.train["wall_time_s"] = float(summary.get("wall_seconds", 0.0))
    return True


def find_runs(paths: Iterable[str | Path], last_steps: int = 10,
              progress: bool = True) -> tuple[list[Run], list[Path]]:
    """Finished runs under ``paths`` (in sweep order) and the directories of unfinished ones.

    Runs of other tasks (compare, score, preflight) are ignored.
    """
    from tqdm.auto import tqdm

    dirs = run_dirs(paths)
    runs: list[Run] = []
    unfinished: list[Path] = []
    for d in tqdm(dirs, desc="compare: reading runs", unit="run", disable=not progress or None):
        try:
            run = load_run(d, last_steps)
        except Exception:  # noqa: BLE001 - a half-written run reads as unfinished
            unfinished.append(d)
            continue
        if run.task not in RESULT_TASKS:
            continue  # compare, score, preflight: nothing to compare
        (runs if run.finished else unfinished).append(run if run.finished else d)
    runs.sort(key=lambda r: r.order)
    return runs, unfinished
