"""GPU-hour projections of a GRPO run from a measured GPU check (``tests/gpu/check.py``).

``project_gpu_hours(check, optimizer_steps, completions_per_step, gpus)`` takes the parsed
``gpu_check.json`` (per optimizer step: ``rollout_s``, ``reference_s``, ``policy_s``,
``optimizer_s``, ``step_s``, ``completions``, ``completion_tokens``; ``config.prompt_tokens``) and
estimates the wall-clock and GPU hours of ``optimizer_steps`` steps of ``completions_per_step``
completions spread over ``gpus`` data-parallel GPUs. MUSEG's recipe: stage 1 = 400 steps and
stage 2 = 500 steps of 112 completions (14 prompts x G=8) on 8 GPUs.

Model (every assumption is returned in ``assumptions``):

- each GPU handles ``completions_per_step / gpus`` completions per step; rollout, reference,
  policy and the rest of a step (decode, inputs, rewards) scale linearly with that count from the
  measured step of ``completions`` completions (batched generation is sublinear in batch size, so
  this leans high); the optimizer step costs what it cost once per step;
- the first measured step is a warm-up and is left out when more than one was measured;
- completions are as long as measured unless ``completion_tokens`` is given: then rollout scales
  with the completion length and reference/policy with the sequence length (prompt + completion);
- ``overhead`` multiplies everything (ZeRO-3 communication, stragglers; 1.0 = none measured);
- model loading, checkpoints and evaluation are not counted.

Example:
    >>> check = {"config": {"prompt_tokens": 3000}, "steps": [
    ...     {"rollout_s": 20.0, "reference_s": 2.0, "policy_s": 6.0, "optimizer_s": 1.0,
    ...      "step_s": 31.0, "completions": 8, "completion_tokens": 256.0},
    ...     {"rollout_s": 10.0, "reference_s": 1.0, "policy_s": 3.0, "optimizer_s": 0.5,
    ...      "step_s": 16.0, "completions": 8, "completion_tokens": 256.0}]}
    >>> p = project_gpu_hours(check, optimizer_steps=400, completions_per_step=112, gpus=8)
    >>> p["seconds_per_step"], round(p["wall_hours"], 3), round(p["gpu_hours"], 2)
    (27.625, 3.069, 24.56)
    >>> project_gpu_hours(check, 400, 112, 8, completion_tokens=512)["seconds_per_step"] > 27.625
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["project_gpu_hours", "PHASES"]

#: Phases that scale with the completions a GPU handles (``other_s`` = the rest of the step).
PHASES = ("rollout_s", "reference_s", "policy_s", "other_s")


def _mean(rows: list[Mapping[str, Any]], key: str) -> float:
    vals = [float(r.get(key) or 0.0) for r in rows]
    return sum(vals) / len(vals) if vals else 0.0


def project_gpu_hours(check: Mapping[str, Any], optimizer_steps: int, completions_per_step: int,
                      gpus: int, *, completion_tokens: float | None = None,
                      overhead: float = 1.0) -> dict:
    """Estimated hours of ``optimizer_steps`` GRPO steps on ``gpus`` GPUs (see module doc).

    Returns ``seconds_per_step``, ``wall_hours``, ``gpu_hours``, ``per_step`` (seconds per phase
    at the projected scale), ``measured`` (the figures used) and ``assumptions`` (text).
    """
    steps = [s for s in check.get("steps") or [] if s.get("step_s") or s.get("rollout_s")]
    if not steps:
        raise ValueError("check has no measured steps (run tests/gpu/check.py first)")
    if gpus < 1 or completions_per_step < 1 or optimizer_steps < 0:
        raise ValueError("gpus and completions_per_step must be >= 1, optimizer_steps >= 0")
    used = steps[1:] if len(steps) > 1 else steps
    measured = {k: _mean(used, k) for k in ("rollout_s", "reference_s", "policy_s",
                                            "optimizer_s", "step_s", "completion_tokens")}
    core = sum(measured[k] for k in ("rollout_s", "reference_s", "policy_s", "optimizer_s"))
    measured["other_s"] = max(0.0, measured["step_s"] - core)
    measured["completions"] = _mean(used, "completions") or 8.0
    prompt = float((check.get("config") or {}).get("prompt_tokens") or 0.0)
    per_gpu = completions_per_step / gpus
    scale = per_gpu / measured["completions"]
    length = {"rollout_s": 1.0, "reference_s": 1.0, "policy_s": 1.0, "other_s": 1.0}
    m_tok = measured["completion_tokens"]
    if completion_tokens is not None and m_tok > 0:
        length["rollout_s"] = completion_tokens / m_tok
        seq = (prompt + completion_tokens) / (prompt + m_tok)
        length["reference_s"] = length["policy_s"] = seq
    per_step = {k: measured[k] * scale * length[k] * overhead for k in PHASES}
    per_step["optimizer_s"] = measured["optimizer_s"] * overhead
    seconds = sum(per_step.values())
    wall = seconds * optimizer_steps / 3600.0
    assumptions = [
        f"{gpus} data-parallel GPUs, {per_gpu:g} completions per GPU per step "
        f"({completions_per_step} per step); measured step: {measured['completions']:g} "
        "completions on one GPU",
        "rollout/reference/policy/other scale linearly with completions per GPU "
        "(batched generation is sublinear: leans high); optimizer cost once per step",
        f"first of {len(steps)} measured steps left out as warm-up" if len(steps) > 1
        else "single measured step (includes warm-up)",
        f"completion length {completion_tokens if completion_tokens is not None else m_tok:g} "
        f"tokens (measured {m_tok:g}); prompt {prompt:g} tokens",
        f"overhead factor {overhead:g} for communication (ZeRO-3 over {gpus} GPUs not measured)",
        "rollout backend as measured (HF generate; vLLM would be faster); model loading, "
        "checkpoints and evaluation not counted",
    ]
    return {"optimizer_steps": int(optimizer_steps), "completions_per_step": int(completions_per_step),
            "gpus": int(gpus), "seconds_per_step": round(seconds, 3), "wall_hours": wall,
            "gpu_hours": wall * gpus, "per_step": {k: round(v, 3) for k, v in per_step.items()},
            "measured": measured, "assumptions": assumptions}
