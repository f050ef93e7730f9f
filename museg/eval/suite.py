"""``benchmark=all``: run every benchmark in sequence and write one combined table.

Each benchmark named in ``cfg.eval.suite`` (default: the paper's six) is read from
``conf/benchmark/<name>.yaml``; its identity keys (benchmark, kind, annotation, subset, template)
replace those of ``cfg.eval`` while every other eval setting (batch size, backend, limit, video,
decoding) is kept, and it runs into ``run_dir/<name>/`` (resumable like a single run). The model is
loaded once and shared. A benchmark whose annotation file is missing is skipped with a warning and
shown as skipped. At the end ``run_dir/results.json`` and ``run_dir/results.md`` hold the combined
table in the paper's column order.

Example::

    python -m museg.run task=eval benchmark=all model.path=/ckpt/MUSEG-7B paths.data_root=/data

    from museg.eval.suite import suite_configs
    for name, sub in suite_configs(cfg): ...      # (name, per-benchmark cfg)

The loop itself is :func:`museg.eval.runner.run_suite`; this module composes the per-benchmark
configs (:func:`suite_configs`), shares one model (:class:`SharedBackend`) and writes the combined
report (:func:`write_suite_report`). It never imports the runner.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from museg.config.naming import register_resolvers
from museg.eval.report import collect_settings, paper_table
from museg.generation.backends import Backend, make_backend
from museg.model.load import model_path_from_cfg

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_SUITE", "IDENTITY_KEYS", "SharedBackend", "benchmark_node", "suite_configs",
           "write_suite_report"]

DEFAULT_SUITE = ("charades_sta", "thumos14", "thumos15", "perception_test", "et_bench",
                 "et_bench_subset")
IDENTITY_KEYS = ("benchmark", "kind", "annotation", "subset", "video_root", "template")


def _conf_dirs() -> list[Path]:
    pkg = Path(__file__).resolve().parents[1]
    return [pkg / "conf", pkg.parent / "conf"]


def benchmark_node(name: str, conf_dir: str | Path | None = None) -> DictConfig:
    """The ``eval`` node of ``conf/benchmark/<name>.yaml`` (unresolved)."""
    dirs = [Path(conf_dir)] if conf_dir else _conf_dirs()
    for d in dirs:
        f = d / "benchmark" / f"{name}.yaml"
        if f.is_file():
            node = OmegaConf.load(f)
            if "eval" in node and isinstance(node.eval, DictConfig):  # '# @package _global_'
                node = node.eval
            return node
    raise FileNotFoundError(f"benchmark {name!r}: no benchmark/{name}.yaml under "
                            f"{', '.join(map(str, dirs))} (fix: eval.suite=[...] of known names)")


def _sub_cfg(cfg: Any, name: str, node: Mapping) -> DictConfig:
    base = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    sub = OmegaConf.create(OmegaConf.to_container(base, resolve=False))
    if isinstance(node, DictConfig):  # keep interpolations raw: they resolve against the full cfg
        node = OmegaConf.to_container(node, resolve=False)
    for k in IDENTITY_KEYS:
        if k in node:
            sub.eval[k] = node[k]
    for k in node:
        if k not in sub.eval:
            sub.eval[k] = node[k]
    sub.eval.suite = []
    sub.run_dir = str(Path(cfg.run_dir).absolute() / name)
    register_resolvers()
    OmegaConf.resolve(sub)
    return sub


def suite_configs(cfg: Any, benchmark_cfgs: Mapping[str, Mapping] | None = None,
                  conf_dir: str | Path | None = None) -> list[tuple[str, DictConfig]]:
    """(name, resolved per-benchmark cfg) for every benchmark of the suite, in order."""
    names: Sequence[str] = list(cfg.eval.suite) or list(DEFAULT_SUITE)
    out = []
    for name in names:
        node = (benchmark_cfgs or {}).get(name)
        if node is None:
            node = benchmark_node(name, conf_dir)
        out.append((name, _sub_cfg(cfg, name, node)))
    return out


class SharedBackend:
    """Loads the model on first use, then serves every benchmark of the suite."""

    def __init__(self, cfg: Any, backend: Backend | None = None) -> None:
        self.cfg, self._b = cfg, backend
        self.name = cfg.eval.backend

    @property
    def model_path(self) -> str:
        if self._b is not None:
            return self._b.model_path
        return str(model_path_from_cfg(self.cfg.model))

    def generate(self, questions: Sequence[str], videos: Sequence[Any]) -> list[str]:
        if self._b is None:
            self._b = make_backend(self.cfg)
        return self._b.generate(questions, videos)


def write_suite_report(cfg: Any, run_dir: Path, results: Mapping[str, dict],
                       skipped: Mapping[str, str], shared: SharedBackend) -> None:
    """``run_dir/results.json`` and ``run_dir/results.md``: the combined table in the paper's
    column order, the skipped benchmarks and links to each benchmark's report."""
    label = Path(shared.model_path).name if results else str(cfg.model.name)
    settings = collect_settings(cfg, model_path=shared.model_path if results else None)
    payload = {"benchmarks": {n: {"metrics": m, "run_dir": str(run_dir / n)}
                              for n, m in results.items()},
               "skipped": dict(skipped), "settings": settings}
    (run_dir / "results.json").write_text(json.dumps(payload, indent=2, default=str))
    table = paper_table({label: dict(results)}) or "(no benchmark produced results)"
    lines = ["# MUSEG benchmark suite", "", "Paper columns (×100):", "", table, ""]
    if skipped:
        lines += ["Skipped:", ""] + [f"- {n}: {r}" for n, r in skipped.items()] + [""]
    lines += [f"- {n}: [{n}/results.md]({n}/results.md)" for n in results]
    (run_dir / "results.md").write_text("\n".join(lines) + "\n")
