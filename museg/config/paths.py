"""Where things are: the package's conf/ directory, DeepSpeed configs by name, absolute paths.

    >>> package_conf_dir().name
    'conf'
    >>> deepspeed_config_path("zero3").name
    'zero3.json'
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

__all__ = ["absolutize_paths", "package_conf_dir", "deepspeed_config_path", "CONFIG_PATH"]

_SOURCE_CONF = Path(__file__).resolve().parents[2] / "conf"
# A source checkout uses the top-level conf/ directly; an installed wheel ships it as museg.conf.
CONFIG_PATH = str(_SOURCE_CONF) if (_SOURCE_CONF / "config.yaml").is_file() else "pkg://museg.conf"


def absolutize_paths(cfg: DictConfig) -> None:
    """Make user-given relative ``paths.*`` absolute (relative to the launch directory), in place.

    Interpolated values (the defaults) are left alone: they resolve through ``museg.abspath``.
    """
    for key in ("data_root", "video_root", "output_root", "cache_dir"):
        raw = OmegaConf.to_container(cfg.paths, resolve=False)[key]
        if isinstance(raw, str) and raw.strip() and "${" not in raw:  # "" is refused by validate
            cfg.paths[key] = str(Path(raw).expanduser().absolute())


def package_conf_dir() -> Path:
    """The config directory shipped with museg: conf/ of a source checkout, else ``museg.conf``."""
    if (_SOURCE_CONF / "config.yaml").is_file():
        return _SOURCE_CONF
    from importlib.resources import files

    return Path(str(files("museg.conf")))


def deepspeed_config_path(value: str | None) -> Path | None:
    """``train.deepspeed`` as a file: a name in the package's ``conf/deepspeed/`` or a json path.

    Names resolve against the package, never the current directory, so a job started anywhere
    (SLURM, submitit) finds ``zero3``.

    >>> deepspeed_config_path("zero3").name, deepspeed_config_path(None)
    ('zero3.json', None)
    """
    if not value:
        return None
    named = package_conf_dir() / "deepspeed" / f"{value}.json"
    if "/" not in str(value) and not str(value).endswith(".json"):
        return named
    return Path(str(value)).expanduser()
