"""One configuration problem as data, and the two one-line exits of the command line.

:class:`ConfigProblem` (key, problem, fix) is what every check returns; ``str()`` gives the line
``<key>: <problem> (fix: <fix>)``. :class:`ConfigError` prints ``museg: config error: ...`` and
exits with code 2; :class:`TaskError` prints ``museg: error: ...`` and exits with code 1.

    >>> str(ConfigProblem("train.beta", "-1 < 0", "use 0.04"))
    'train.beta: -1 < 0 (fix: use 0.04)'
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

__all__ = ["ConfigProblem", "ConfigError", "TaskError"]


@dataclass(frozen=True)
class ConfigProblem:
    key: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.key}: {self.problem} (fix: {self.fix})"


class ConfigError(SystemExit):
    """A configuration problem, reported as one line with exit code 2."""

    def __init__(self, message: str):
        print(f"museg: config error: {message}", file=sys.stderr)
        super().__init__(2)


class TaskError(SystemExit):
    """A task stopped on a problem its message explains: one line, exit code 1."""

    def __init__(self, message: str):
        print(f"museg: error: {message}", file=sys.stderr)
        super().__init__(1)
