"""The tasks ``python -m museg.run task=<name>`` dispatches to: name -> ``module:function``.

One place: the entrypoint dispatches through it, validation takes its choices from it and
``--help`` lists it. The functions are imported only when their task runs.

    >>> sorted(TASKS)[:3]
    ['compare', 'demo', 'eval']
"""

from __future__ import annotations

__all__ = ["TASKS"]

TASKS: dict[str, str] = {
    "train": "museg.rl.trainer:train",
    "eval": "museg.eval.runner:evaluate",
    "score": "museg.eval.score:score",
    "preflight": "museg.data.preflight:run_preflight",
    "demo": "museg.demo.pipeline:run_demo",
    "compare": "museg.compare:compare",
    "plan": "museg.plan:plan",
}
