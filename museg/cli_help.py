"""museg's own ``--help``: the tasks, the config groups and their choices, five examples.

``python -m museg.run --help`` (or ``-h``) prints :func:`render_help`; ``--hydra-help`` still prints
Hydra's own page. Nothing here is a second list to keep in sync:

- the tasks are the keys of ``museg.run.TASKS``; each gets a line from :data:`TASK_LINES`, or the
  first sentence of its function's docstring (read from the source, without importing it) when a new
  task has no line yet;
- the config groups and their choices are the ``*.yaml`` files under ``conf/`` (minus
  :data:`HIDDEN_CHOICES`), with the default marked from ``conf/config.yaml``'s defaults list.

>>> first_sentence("Run one benchmark and write the report; returns x.\\n\\nMore.")
'Run one benchmark and write the report; returns x.'
"""

from __future__ import annotations

import ast
import importlib.util
import itertools
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import yaml

#: One line per task, as a user reads it (tasks come from ``museg.run.TASKS``; a task missing here
#: falls back to its function's docstring).
TASK_LINES: dict[str, str] = {
    "train": "GRPO training (stage=1|2) of model=tiny|3b|7b on data.train_file",
    "eval": "evaluate a checkpoint (model.path) on benchmark=<name>; resumable",
    "score": "score an existing predictions file (eval.predictions=...), no model needed",
    "preflight": "check every video of the training (or preflight.target=eval) annotations; verdict",
    "demo": "the embedded offline demo: tiny model, synthetic videos, warm-up + 2 GRPO stages",
    "plan": "lay a training run out (batch per process, optimizer steps, data rows, recipe values); no GPU, JSON last line",
    "compare": "compare the results of several runs side by side",
}

#: Choices that exist for tests or as templates to copy, not to be picked as they are.
HIDDEN_CHOICES: frozenset[str] = frozenset({"launcher/slurm_example"})

EXAMPLES: tuple[tuple[str, str], ...] = (
    ("python -m museg.run", "the offline demo (same as experiment=demo; CPU, 7-9 min)"),
    ("python -m museg.run stage=2 model=7b --cfg job --resolve", "print the whole stage-2 recipe"),
    ("python -m museg.run task=preflight data=museg_stage1 paths.data_root=/data/museg",
     "check the stage-1 videos before training"),
    ("python -m museg.run -m launcher=slurm stage=1 model=7b launcher.dry_run=true",
     "the sbatch script of stage 1, nothing submitted"),
    ("python -m museg.run task=eval benchmark=charades_sta model=7b model.path=/ckpt/MUSEG-7B",
     "evaluate a checkpoint"),
)


def first_sentence(doc: str | None) -> str:
    """The docstring's first sentence on one line ('' for no docstring)."""
    if not doc:
        return ""
    para = " ".join(doc.strip().split("\n\n")[0].split())
    m = re.match(r"(.+?\.)(\s|$)", para)
    return (m.group(1) if m else para).strip()


def _docstring_of(target: str) -> str:
    """Docstring of ``module:function`` read with ``ast`` (no import: torch stays unloaded)."""
    module, _, fn = target.partition(":")
    try:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin:
            return ""
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    except (ImportError, OSError, SyntaxError, ValueError):
        return ""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == fn:
            return ast.get_docstring(node) or ""
    return ""


def task_lines(tasks: Mapping[str, str]) -> dict[str, str]:
    """``task -> one line`` for every task of ``tasks`` (``name -> 'module:function'``)."""
    return {name: TASK_LINES.get(name) or first_sentence(_docstring_of(target))
            or f"runs {target}" for name, target in tasks.items()}


def _conf_root(config_path: str) -> Path:
    if config_path.startswith("pkg://"):
        return Path(str(resources.files(config_path.removeprefix("pkg://"))))
    return Path(config_path)


def config_groups(config_path: str) -> dict[str, list[str]]:
    """``group -> choices`` from the ``*.yaml`` files under the config directory (sorted)."""
    root = _conf_root(config_path)
    groups: dict[str, list[str]] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")):
        choices = sorted(f.stem for f in d.glob("*.yaml")
                         if f"{d.name}/{f.stem}" not in HIDDEN_CHOICES)
        if choices:
            groups[d.name] = choices
    return groups


def default_choices(config_path: str) -> dict[str, str]:
    """``group -> default choice`` from ``config.yaml``'s defaults list (as written there)."""
    text = (_conf_root(config_path) / "config.yaml").read_text(encoding="utf-8")
    out: dict[str, str] = {}
    for entry in (yaml.safe_load(text) or {}).get("defaults", []):
        if isinstance(entry, dict):
            for k, v in entry.items():
                out[str(k)] = "none" if v is None else str(v)
    return out


def _choice_text(group: str, choices: list[str], default: str | None) -> str:
    if default and "${" in default:
        return ", ".join(choices) + f"  (default follows {default})"
    marked = [f"{c}*" if c == default else c for c in choices]
    return ", ".join(marked) + ("  (default: none)" if default == "none" else "")


def render_help(tasks: Mapping[str, str], config_path: str) -> str:
    """The whole help page."""
    lines = ["museg: GRPO of Qwen2.5-VL for multi-segment video temporal grounding (MUSEG).",
             "",
             "usage: python -m museg.run [-m] [task=<task>] [<group>=<choice> ...] [key=value ...]",
             "                           [--cfg job [--resolve]] [--help] [--hydra-help]",
             "       python -m museg.run          (no arguments: the offline demo, experiment=demo)",
             "", "tasks (task=<name>; default: train):"]
    described = task_lines(tasks)
    width = max(len(n) for n in described) + 2
    lines += [f"  {name:<{width}}{text}" for name, text in described.items()]
    groups = config_groups(config_path)
    defaults = default_choices(config_path)
    lines += ["", "config groups (<group>=<choice>; * marks the default):"]
    width = max(len(g) for g in groups) + 2
    lines += [f"  {g:<{width}}{_choice_text(g, c, defaults.get(g))}" for g, c in groups.items()]
    lines += ["", "examples:"]
    for cmd, what in EXAMPLES:
        lines += [f"  # {what}", f"  {cmd}"]
    lines += ["",
              "every key and its meaning: --cfg job (the composed config), museg/config/schema*.py "
              "(one docstring per key);",
              "a sweep: -m key=a,b (with --cfg job: each run's config); Hydra's own help: "
              "--hydra-help; README.md."]
    return "\n".join(lines)


def sweep_runs(overrides: list[str]) -> list[tuple[str, list[str]]]:
    """Every run of a Hydra sweep (the cartesian product, as Hydra's basic sweeper runs them):
    ``(label of its sweep values, its overrides)``.

    >>> [label for label, _ in sweep_runs(["model=7b", "a=1,2", "b=x,y"])]
    ['a=1,b=x', 'a=1,b=y', 'a=2,b=x', 'a=2,b=y']
    >>> sweep_runs(["model=7b"])
    [('', ['model=7b'])]
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    options: list[list[str]] = []
    for text, o in zip(overrides, parsed, strict=True):
        if o.is_sweep_override():
            key = text.split("=", 1)[0]
            options.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            options.append([text])
    sweep_idx = [i for i, o in enumerate(parsed) if o.is_sweep_override()]
    return [(",".join(combo[i] for i in sweep_idx), list(combo))
            for combo in itertools.product(*options)]
