"""Step-time breakdown: wall time per phase of a training step.

Phases used by the trainer: ``decode`` (waiting for video frames), ``inputs`` (processor calls),
``rollout`` (generation), ``reward``, ``reference`` (reference-model forward),
``policy`` (policy forward + backward), ``optimizer`` (clip + step + zero_grad), ``checkpoint``,
``log``. Time of the step not covered by a phase is reported as ``other``.

Example::

    >>> t = StepTimer()
    >>> t.start_step()
    >>> with t.phase("rollout"):
    ...     pass
    >>> times = t.end_step()
    >>> sorted(k for k in times if k.startswith("time/"))[:2]
    ['time/other', 'time/rollout']
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["StepTimer", "PHASES", "overhead_fraction"]

PHASES = ("decode", "inputs", "rollout", "reward", "reference", "policy", "optimizer",
          "checkpoint", "log")
CORE_PHASES = ("rollout", "reference", "policy")


class StepTimer:
    """Accumulates ``time.perf_counter`` durations per phase within one step."""

    def __init__(self) -> None:
        self._acc: dict[str, float] = defaultdict(float)
        self._t0: float | None = None

    def start_step(self) -> None:
        self._acc = defaultdict(float)
        self._t0 = time.perf_counter()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self._acc[name] += time.perf_counter() - t

    def add(self, name: str, seconds: float) -> None:
        self._acc[name] += seconds

    def end_step(self) -> dict[str, float]:
        """Return ``{'time/<phase>': s, ..., 'time/other': s, 'time/step': s}`` for the step."""
        total = time.perf_counter() - (self._t0 if self._t0 is not None else time.perf_counter())
        out = {f"time/{k}": v for k, v in self._acc.items()}
        out["time/other"] = max(0.0, total - sum(self._acc.values()))
        out["time/step"] = total
        return out


def overhead_fraction(times: dict[str, float]) -> float:
    """Fraction of step wall time outside rollout / reference / policy forward-backward.

    >>> overhead_fraction({"time/rollout": 6.0, "time/policy": 3.0, "time/reward": 1.0,
    ...                    "time/step": 10.0})
    0.1
    """
    step = times.get("time/step", 0.0)
    if step <= 0:
        return 0.0
    core = sum(times.get(f"time/{k}", 0.0) for k in CORE_PHASES)
    return max(0.0, step - core) / step
