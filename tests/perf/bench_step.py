"""Step-time breakdown of GRPO training with the tiny model (CPU) on synthetic videos.

Runs ``museg.rl.trainer.train`` for a few steps (HF rollouts with one seed per completion;
``--oracle`` mixes in one correct answer per group so rewards vary) and prints, per phase, the mean
seconds per step (first step excluded as warm-up) and its share of the step wall time, then the
fraction of wall time that is *not* rollout / reference forward / policy forward-backward (target
<= 10 %). Batch semantics as the trainer: ``--per-device`` completions per micro-step (default G:
one group), ``--accum`` micro-steps per optimizer step.

Then a rollout comparison on one prompt, ``--generations`` completions, same tokens budget:
HF ``generate`` sampling all G rows from one RNG stream (the previous trainer; not reproducible
per completion), the trainer's seeded sampler (one seed per completion, one batched call), and one
``generate`` call per completion (per-completion seeds the naive way).

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
sys.path.insert(0, str(HERE.parent / "helpers"))
sys.path.insert(0, str(HERE.parent.parent))

from helpers_rl import oracle_mix_rollout, tiny_train_cfg  # noqa: E402

CORE = ("rollout", "reference", "policy")


def bench_training(args: argparse.Namespace) -> None:
    from museg.rl.trainer import train

    per_device = args.per_device or args.generations
    with tempfile.TemporaryDirectory() as tmp:
        cfg = tiny_train_cfg(tmp, train__max_steps=args.steps, train__num_generations=args.generations,
                             train__per_device_train_batch_size=per_device,
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
    prompts = per_device // args.generations * args.accum
    print(f"tiny model, G={args.generations}, per_device={per_device} completions, "
          f"{args.accum} micro-steps = {prompts} prompts/step, {args.max_new_tokens} new tokens, "
          f"{len(hist)} measured steps (run wall {wall:.1f}s incl. model load)")
    print(f"{'phase':<12}{'s/step':>10}{'share':>9}")
    for k in phases:
        m = statistics.mean(h.get(k, 0.0) for h in hist)
        print(f"{k.removeprefix('time/'):<12}{m:>10.4f}{m / step_mean:>8.1%}")
    print(f"{'step':<12}{step_mean:>10.4f}{1:>8.0%}")
    core = sum(statistics.mean(h.get(f"time/{k}", 0.0) for h in hist) for k in CORE)
    frac = 1 - core / step_mean
    print(f"overhead (not rollout/reference/policy): {frac:.1%}  target <= 10%  "
          f"{'OK' if frac <= 0.10 else 'ABOVE TARGET'}")


def bench_rollout(args: argparse.Namespace) -> None:
    from museg.data.sources import materialize_synthetic
    from museg.data.video import decode_video, video_spec_from_cfg
    from museg.dist import DistInfo
    from museg.generation.hf import generate_completions
    from museg.generation.seeded import sample_completions
    from museg.model.inputs import build_prompt_text, build_video_inputs
    from museg.rl.builders import build_models, load_train_samples

    g, n_new, reps = args.generations, args.max_new_tokens, args.rollout_repeats
    with tempfile.TemporaryDirectory() as tmp:
        cfg = tiny_train_cfg(tmp)
        materialize_synthetic(cfg)
        model, proc, _, _ = build_models(cfg, DistInfo())
        s = load_train_samples(cfg)[0]
        video = decode_video(s.video_path, video_spec_from_cfg(cfg.video))
        inputs = build_video_inputs(proc, [build_prompt_text(proc, s.problem)], [video])

    def timed(fn) -> tuple[float, float]:
        fn()  # warm-up
        t0, lengths = time.perf_counter(), []
        for _ in range(reps):
            out = fn()
            lengths += [float(r.completion_mask.sum(1).float().mean()) for r in
                        (out if isinstance(out, list) else [out])]
        return (time.perf_counter() - t0) / reps, statistics.mean(lengths)

    seeds = list(range(g))
    variants = {
        "hf batched (one RNG stream)": lambda: generate_completions(
            model, proc, inputs, g, n_new, seed=0),
        "seeded batched (trainer)": lambda: sample_completions(
            model, proc, [inputs] * g, seeds, n_new),
        "seeded, one call per completion": lambda: [sample_completions(
            model, proc, [inputs], [sd], n_new) for sd in seeds],
    }
    times = {k: timed(f) for k, f in variants.items()}
    base = times["hf batched (one RNG stream)"][0]
    print(f"\nrollout of G={g} completions of one prompt (max {n_new} new tokens, mean of {reps}):")
    for k, (v, length) in times.items():
        print(f"  {k:<34}{v:>8.3f}s   x{v / base:.2f}   mean length {length:.1f} tokens")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--per-device", type=int, default=0, help="completions/micro-step (0: G)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--accum", type=int, default=2)
    ap.add_argument("--prefetch", type=int, default=2)
    ap.add_argument("--beta", type=float, default=0.04)
    ap.add_argument("--oracle", action="store_true", help="inject one correct answer per group")
    ap.add_argument("--rollout-repeats", type=int, default=5)
    ap.add_argument("--skip-rollout", action="store_true", help="only the training breakdown")
    args = ap.parse_args()
    bench_training(args)
    if not args.skip_rollout:
        bench_rollout(args)


if __name__ == "__main__":
    main()
