"""The optimizer batch as a recipe quantity: prompts per step -> per-device micro-batch and accumulation.

MUSEG's released scripts train 7 GPUs (the 8th serves vLLM) with 1 prompt per GPU expanded to
G = 8 completions on that GPU and gradient accumulation 2: **14 prompts = 112 completions per
optimizer step**. That number, not the hardware, is the recipe, so the recipe states
``train.prompts_per_step`` and :func:`batch_layout` derives, for the world size at hand, how many
completions each process handles per micro-step (``per_device``, TRL semantics: completions) and
how many micro-steps an optimizer step has (``accumulation``)::

    >>> batch_layout(num_generations=8, world_size=7, prompts_per_step=14)    # the reference
    BatchLayout(world_size=7, num_generations=8, per_device=8, accumulation=2, prompts_per_step=14)
    >>> batch_layout(num_generations=8, world_size=8, prompts_per_step=14)    # 8 colocated GPUs
    BatchLayout(world_size=8, num_generations=8, per_device=7, accumulation=2, prompts_per_step=14)
    >>> batch_layout(8, 16, prompts_per_step=14).accumulation                  # 2 nodes x 8
    1

Every layout of the same ``prompts_per_step`` consumes the same prompts per step (positions
``[s * P, (s + 1) * P)`` of the data order) and normalises the loss the same way (mean over each
sequence's tokens, then over all ``P * G`` sequences of the step), so the number of steps and the
updates do not depend on the world size. The micro-batch is the largest divisor of a process's
completions per step that is at most ``max_micro_completions`` (default G: one prompt's group, as
the reference) and keeps whole prompts per micro-step (``per_device * world_size`` a multiple of G).

Without ``prompts_per_step`` the layout is given explicitly (``per_device`` and ``accumulation``,
as the tiny model and the demo do). A world size that cannot divide the step is refused with the
valid world sizes::

    >>> batch_layout(8, 3, prompts_per_step=14)
    Traceback (most recent call last):
    ...
    museg.rl.layout.LayoutError: train.prompts_per_step: 14 prompts x G=8 = 112 completions per optimizer step cannot be split over 3 processes (fix: use a world size that divides 112: 1, 2, 4, 7, 8, 14, 16, 28, 56, 112, or change train.prompts_per_step)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BatchLayout", "LayoutError", "batch_layout", "layout_from_cfg", "world_size_from_cfg"]


class LayoutError(ValueError):
    """The batch cannot be laid out on this world size: ``key``, ``problem`` and ``fix``; its
    message is the one line ``"<key>: <problem> (fix: <fix>)"``."""

    def __init__(self, key: str, problem: str, fix: str) -> None:
        super().__init__(f"{key}: {problem} (fix: {fix})")
        self.key, self.problem, self.fix = key, problem, fix


@dataclass(frozen=True)
class BatchLayout:
    """How one optimizer step is spread over processes and micro-steps."""

    world_size: int
    num_generations: int
    per_device: int  # completions per process per micro-step
    accumulation: int  # micro-steps per optimizer step
    prompts_per_step: int

    @property
    def completions_per_step(self) -> int:
        return self.prompts_per_step * self.num_generations

    @property
    def per_device_completions(self) -> int:
        """Completions one process handles per optimizer step."""
        return self.per_device * self.accumulation

    @property
    def prompts_per_micro_step(self) -> int:
        return self.per_device * self.world_size // self.num_generations


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _explicit(g: int, w: int, per_device: int | None, accumulation: int | None) -> BatchLayout:
    if per_device is None or accumulation is None:
        raise LayoutError("train.prompts_per_step", "null needs train.per_device_train_batch_size "
                          "and train.gradient_accumulation_steps",
                          "set both, or set train.prompts_per_step, MUSEG: 14")
    if per_device < 1 or accumulation < 1:
        key = "per_device_train_batch_size" if per_device < 1 else "gradient_accumulation_steps"
        raise LayoutError(f"train.{key}", "must be >= 1", f"set train.{key} >= 1")
    total = per_device * w
    if total % g:
        raise LayoutError(
            "train.per_device_train_batch_size", f"{per_device} completions x {w} process(es) = "
            f"{total} is not a multiple of num_generations {g}", "make "
            f"per_device_train_batch_size x processes a multiple of {g}, or set "
            "train.prompts_per_step and leave the per-device batch to museg")
    return BatchLayout(w, g, per_device, accumulation, total // g * accumulation)


def batch_layout(num_generations: int, world_size: int, prompts_per_step: int | None = None,
                 per_device: int | None = None, accumulation: int | None = None,
                 max_micro_completions: int | None = None) -> BatchLayout:
    """The layout of one optimizer step; raises :class:`LayoutError` (one line) when impossible.

    With ``prompts_per_step``, explicit ``per_device`` / ``accumulation`` are checked against it
    instead of derived:

    >>> batch_layout(8, 8, 14, per_device=14).accumulation
    1
    >>> batch_layout(8, 2, 2, max_micro_completions=8)     # tiny: 2 prompts x G=8 on 2 processes
    BatchLayout(world_size=2, num_generations=8, per_device=8, accumulation=1, prompts_per_step=2)
    >>> batch_layout(16, 1, 14)                            # G=16: one group per micro-step
    BatchLayout(world_size=1, num_generations=16, per_device=16, accumulation=14, prompts_per_step=14)
    """
    g, w = int(num_generations), int(world_size)
    if g < 1 or w < 1:
        raise LayoutError("train.num_generations" if g < 1 else "launcher.nproc_per_node",
                          f"num_generations {g} and world size {w} must be >= 1",
                          "use at least 1 of each")
    if prompts_per_step is None:
        return _explicit(g, w, per_device, accumulation)
    p = int(prompts_per_step)
    if p < 1:
        raise LayoutError("train.prompts_per_step", f"{p} < 1", "MUSEG uses 14")
    total = p * g
    if total % w:
        sizes = ", ".join(map(str, _divisors(total)))
        raise LayoutError(
            "train.prompts_per_step", f"{p} prompts x G={g} = {total} completions per optimizer "
            f"step cannot be split over {w} processes", f"use a world size that divides {total}: "
            f"{sizes}, or change train.prompts_per_step")
    mine = total // w
    if per_device is not None or accumulation is not None:
        pd = int(per_device) if per_device is not None else mine // int(accumulation or 1)
        acc = int(accumulation) if accumulation is not None else mine // max(pd, 1)
        if pd < 1 or acc < 1 or pd * acc != mine or (pd * w) % g:
            raise LayoutError(
                "train.per_device_train_batch_size", f"{per_device} x gradient_accumulation_steps "
                f"{accumulation} does not give {mine} completions per process per step with whole "
                f"prompts per micro-step ({p} prompts x G={g} over {w} processes)", "set both "
                "to null and let museg derive them, or change train.prompts_per_step")
        return BatchLayout(w, g, pd, acc, p)
    cap = int(max_micro_completions or g)
    whole = [d for d in _divisors(mine) if (d * w) % g == 0]  # never empty: mine itself is whole
    fits = [d for d in whole if d <= cap]
    pd = max(fits) if fits else min(whole)  # above the cap only when whole prompts demand it
    return BatchLayout(w, g, pd, mine // pd, p)


def world_size_from_cfg(cfg) -> int:
    """Processes of a job: ``launcher.nproc_per_node x launcher.nodes``."""
    return int(cfg.launcher.nproc_per_node) * int(cfg.launcher.nodes)


def layout_from_cfg(train_cfg, world_size: int) -> BatchLayout:
    """:func:`batch_layout` of a composed ``cfg.train`` on ``world_size`` processes."""
    t = train_cfg
    return batch_layout(int(t.num_generations), world_size, t.prompts_per_step,
                        t.per_device_train_batch_size, t.gradient_accumulation_steps,
                        t.micro_batch_completions)
