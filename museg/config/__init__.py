"""museg's configuration: the typed schema, its validation, composition and run naming.

- :mod:`museg.config.schema` (+ ``schema_train``, ``schema_eval``): the dataclasses, one docstring
  per field, the MUSEG recipe as defaults; registered as ``museg_schema``;
- :mod:`museg.config.validate`: ``validate(cfg) -> list[ConfigProblem]`` (cross-field rules, files),
  with :mod:`museg.config.checks` (values and paths refused up front);
- :mod:`museg.config.compose`: ``compose_config(overrides)``, ``check_overrides`` (the CLI pre-check);
- :mod:`museg.config.naming`: run names from overrides and the ``museg.*`` resolvers;
- :mod:`museg.config.paths`: the package's ``conf/``, DeepSpeed configs by name, absolute paths;
- :mod:`museg.config.tasks`: ``TASKS``, the one list of tasks;
- :mod:`museg.config.problems`: ``ConfigProblem`` and the one-line exits.

Example::

    from museg.config import compose_config, validate
    cfg = compose_config(["stage=2", "model=7b"])
    assert validate(cfg, check_files=False) == []
"""

from museg.config.compose import check_overrides, compose_config, normalize_overrides, split_args
from museg.config.paths import (
    CONFIG_PATH,
    absolutize_paths,
    deepspeed_config_path,
    package_conf_dir,
)
from museg.config.problems import ConfigError, ConfigProblem, TaskError
from museg.config.schema import PATCH, MusegConfig, register_schema
from museg.config.tasks import TASKS
from museg.config.validate import TRAINING_TASKS, validate

__all__ = ["CONFIG_PATH", "PATCH", "TASKS", "TRAINING_TASKS", "ConfigError", "ConfigProblem",
           "MusegConfig", "TaskError", "absolutize_paths", "check_overrides", "compose_config",
           "deepspeed_config_path", "normalize_overrides", "package_conf_dir", "register_schema",
           "split_args", "validate"]
