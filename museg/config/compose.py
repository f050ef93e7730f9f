"""Composing and pre-checking configs: ``compose_config(overrides)`` and ``check_overrides``.

``compose_config`` composes ``conf/config.yaml`` (or the installed ``museg.conf``) through Hydra's
compose API with the schema and resolvers registered, quoting ``stage`` choices first; tests and
the entrypoint use it. ``check_overrides`` composes every sweep variant and validates it, returning
the first problem as one line (or None), so a bad sweep value stops before anything runs::

    cfg = compose_config(["stage=2", "model=7b"])
    check_overrides(["train.num_generations=8,1"])    # -> 'train.num_generations: 1 < 2: ...'
"""

from __future__ import annotations

import re

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from museg.config.naming import register_resolvers, set_fallback_overrides
from museg.config.paths import CONFIG_PATH, absolutize_paths
from museg.config.schema import register_schema
from museg.config.validate import validate

__all__ = ["compose_config", "check_overrides", "normalize_overrides", "split_args",
           "override_variants", "INFO_FLAGS"]

INFO_FLAGS = {"--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i",
               "--shell-completion", "-sc"}
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--info", "-i", "--config-path", "-cp",
                     "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun"}


def normalize_overrides(argv: list[str]) -> list[str]:
    """Quote ``stage`` choices so Hydra reads them as group names, not integers, and
    ``compare.baseline``'s ``key=value`` so Hydra reads it as one string.

    >>> normalize_overrides(["stage=2", "model=7b", "-m", "stage=1,2"])
    ["stage='2'", 'model=7b', '-m', "stage='1','2'"]
    >>> normalize_overrides(["compare.baseline=demo.variant=full"])
    ["compare.baseline='demo.variant=full'"]
    """
    out = []
    for arg in argv:
        m = re.fullmatch(r"([+~]*stage)=(.+)", arg)
        if m and not m.group(2).startswith(("'", '"')):
            values = ",".join(f"'{v.strip()}'" for v in m.group(2).split(","))
            arg = f"{m.group(1)}={values}"
        m = re.fullmatch(r"(compare\.baseline)=([^'\"].*=.*)", arg)
        if m:
            arg = f"{m.group(1)}='{m.group(2)}'"
        out.append(arg)
    return out


def split_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate Hydra flags (with their values) from config overrides."""
    flags, overrides = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-"):
            flags.append(arg)
            if arg in _FLAGS_WITH_VALUE and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                if "=" not in argv[i + 1] or arg not in ("--cfg", "-c", "--info", "-i"):
                    flags.append(argv[i + 1])
                    i += 1
        else:
            overrides.append(arg)
        i += 1
    return flags, overrides


def override_variants(overrides: list[str]) -> list[list[str]]:
    """One override list per sweep value (others at their first value), or the list itself."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    sweeps = [i for i, o in enumerate(parsed) if o.is_sweep_override()]
    if not sweeps:
        return [overrides]
    values = {i: [f"{parsed[i].get_key_element()}={v}"
                  for v in parsed[i].sweep_string_iterator()] for i in sweeps}
    base = [values[i][0] if i in values else o for i, o in enumerate(overrides)]
    variants = [base]
    for i in sweeps:
        for v in values[i][1:]:
            variants.append([v if j == i else b for j, b in enumerate(base)])
    return variants


def compose_config(overrides: list[str], return_hydra_config: bool = False) -> DictConfig:
    """Compose ``conf/config.yaml`` with overrides through Hydra's compose API (tests use this)."""
    from hydra import compose, initialize_config_dir, initialize_config_module

    register_schema()
    register_resolvers()
    overrides = normalize_overrides(overrides)
    set_fallback_overrides(overrides)
    if CONFIG_PATH.startswith("pkg://"):
        ctx = initialize_config_module(config_module="museg.conf", version_base="1.3")
    else:
        ctx = initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3")
    with ctx:
        cfg = compose(config_name="config", overrides=overrides,
                      return_hydra_config=return_hydra_config)
    absolutize_paths(cfg)
    return cfg


def _first_line(exc: BaseException) -> str:
    """First line of an exception and of its causes, plus Hydra's list of available options."""
    parts: list[str] = []
    options: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        lines = [ln.strip() for ln in str(seen).strip().splitlines() if ln.strip()]
        if lines and lines[0] not in parts:
            parts.append(lines[0])
        for i, ln in enumerate(lines):
            if ln.startswith("Available options"):
                options = [o for o in lines[i + 1:] if "=" not in o and ":" not in o]
        seen = seen.__cause__
    text = ": ".join(parts) or type(exc).__name__
    if options:
        text += f" (fix: use one of {', '.join(options)})"
    return text


def check_overrides(overrides: list[str], check_files: bool = True,
                    check_values: bool = True) -> str | None:
    """Compose every sweep variant and validate it; the first problem as one line, else None."""
    try:
        variants = override_variants(overrides)
    except Exception as exc:  # noqa: BLE001 - any parse error becomes one line
        return f"cannot parse overrides: {_first_line(exc)}"
    for variant in variants:
        try:
            cfg = compose_config(variant)
            problems = validate(cfg, check_files=check_files) if check_values else []
        except Exception as exc:  # noqa: BLE001 - Hydra/OmegaConf errors become one line
            line = _first_line(exc)
            merging = re.match(r"Error merging override [+~]*([^=\s]+)=\S*: ", line)
            if merging:  # a value of the wrong type: name the key first, like every problem
                line = f"{merging.group(1)}: {line[merging.end():]}"
            if "could not be converted" in line or "not a valid" in line:
                line += " (fix: give a value of the documented type; see --cfg job)"
            elif "Could not override" in line:
                line += " (fix: check the key name against --cfg job)"
            return line
        if problems:
            return str(problems[0])
    return None
