"""Step-time breakdown of GRPO training with the tiny model (CPU) on synthetic videos.

Runs ``museg.rl.trainer.train`` for a few steps (HF rollouts; ``--oracle`` mixes in one correct
answer per group so rewards vary) and prints, per phase, the mean seconds per step (first step
excluded as warm-up) and its share of the step wall time, then the fraction of wall time that is
*not* rollout / reference forward / policy forward-backward (target <= 10 %).

    python tests/perf/bench_step.py                       # defaults: 6 steps, G=8, 32 new tokens
    python tests/perf/bench_step.py --steps 10 --max-new-tokens 64 --generations 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent))

from helpers_rl import oracle_mix_rollout, tiny_train_cfg  # noqa: E402

CORE = ("rollout", "reference", "policy")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--accum", type=int, default=2)
    ap.add_argument("--prefetch", type=int, default=2)
    ap.add_argument("--beta", type=float, default=0.04)
    ap.add_argument("--oracle", action="store_true", help="inject one correct answer per group")
    args = ap.parse_args()

    from museg.rl.trainer import train

    with tempfile.TemporaryDirectory() as tmp:
        cfg = tiny_train_cfg(tmp, train__max_steps=args.steps, train__num_generations=args.generations,
                             train__max_completion_length=args.max_new_tokens,
                             train__gradient_accumulation_steps=args.accum, train__beta=args.beta,
                             video__prefetch=args.prefetch, train__save_steps=10**6,
                             train__completions_every=0)
        t0 = time.perf_counter()
        summary = train(cfg, rollout_fn=oracle_mix_rollout if args.oracle else None)
        wall = time.perf_counter() - t0
    hist = [h for h in summary["history"] if h["step"] > 1] or summary["history"]
    phases = sorted({k for h in hist for k in h if k.startswith("time/")} -
                    {"time/step", "time/overhead_fraction"})
    step_mean = statistics.mean(h["time/step"] for h in hist)
    print(f"tiny model, G={args.generations}, {args.accum} prompts/step, "
          f"{args.max_new_tokens} new tokens, {len(hist)} measured steps "
          f"(run wall {wall:.1f}s incl. model load)")
    print(f"{'phase':<12}{'s/step':>10}{'share':>9}")
    for k in phases:
        m = statistics.mean(h.get(k, 0.0) for h in hist)
        print(f"{k.removeprefix('time/'):<12}{m:>10.4f}{m / step_mean:>8.1%}")
    print(f"{'step':<12}{step_mean:>10.4f}{1:>8.0%}")
    core = sum(statistics.mean(h.get(f"time/{k}", 0.0) for h in hist) for k in CORE)
    frac = 1 - core / step_mean
    print(f"overhead (not rollout/reference/policy): {frac:.1%}  target <= 10%  "
          f"{'OK' if frac <= 0.10 else 'ABOVE TARGET'}")


if __name__ == "__main__":
    main()
