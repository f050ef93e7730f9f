"""Benchmark: score 100k synthetic completions (a mix of good and bad outputs) with the rewards.

Run: ``python tests/perf/bench_rewards.py [--n 100000] [--seed 0]``

Prints completions/s for
* ``compute_rewards`` (format + global + local, one parse per completion) - what the trainer uses;
* the three TRL reward functions called one after the other (each parses again);
* a literal regex transcription of the issue-3 specification (``tests/rewards/test_rewards_properties.py``),
  standing in for the reference implementation's per-sample work (without its debug-log writes),
and the ratios between them, after checking that all three agree on every completion. Rates are per
CPU second of this process (``time.process_time``), so a busy machine does not skew them.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rewards"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from museg.rewards import (  # noqa: E402
    compute_rewards,
    format_reward,
    global_matching_reward,
    local_matching_reward,
)

WEIGHTS = {"format": 1.0, "global_matching": 1.0, "local_matching": 1.0}
FILLER = ("The person walks to the door. Then the camera pans to the table where a cup is placed. "
          "Someone opens the fridge and takes out some milk. ")


def _segments(rng: random.Random, duration: float, k: int) -> list[list[float]]:
    cuts = sorted(round(rng.uniform(0, duration), 2) for _ in range(2 * k))
    return [[cuts[i], cuts[i + 1]] for i in range(0, 2 * k, 2) if cuts[i] < cuts[i + 1]] or [
        [0.0, 1.0]
    ]


def synthetic(n: int, seed: int) -> tuple[list[str], list[list[list[float]]]]:
    """``n`` completions (strings) and their ground truths, with a fixed mix of cases."""
    rng = random.Random(seed)
    texts, sols = [], []
    for _ in range(n):
        duration = rng.uniform(20, 300)
        gt = _segments(rng, duration, rng.randint(1, 5))
        pred = _segments(rng, duration, rng.randint(1, 5))
        answer = " ".join(f"{s:.2f}-{e:.2f}" for s, e in pred)
        mentions = " ".join(f"from {s:.2f} to {e:.2f}s, {FILLER}" for s, e in pred)
        think = FILLER * rng.randint(1, 6) + mentions
        case = rng.random()
        if case < 0.40:  # good, timestamps referenced
            text = f"<think>{think}</think>\n<answer>{answer}</answer>"
        elif case < 0.55:  # good format, timestamps not referenced
            text = f"<think>{FILLER * 3}</think><answer>{answer}</answer>"
        elif case < 0.70:  # unparsable answer
            text = f"<think>{think}</think><answer>{answer} and then {pred[0][0]}</answer>"
        elif case < 0.85:  # broken tags
            text = f"<think>{think}<answer>{answer}</answer>"
        else:  # junk or reversed segments
            text = rng.choice([FILLER, f"<answer>{pred[0][1]}-{pred[0][0]}</answer>",
                               f"<think>{think}</think><answer>{answer} {answer}</answer>"])
        texts.append(text)
        sols.append(gt)
    return texts, sols


def _time(fn) -> tuple[float, object]:
    """CPU seconds of this process (robust when other jobs share the cores) and the result."""
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-spec", action="store_true", help="skip the spec transcription")
    args = ap.parse_args()
    texts, sols = synthetic(args.n, args.seed)
    chars = sum(map(len, texts)) / len(texts)
    print(f"{args.n} completions, mean {chars:.0f} characters")

    t_fused, fused = _time(lambda: compute_rewards(texts, sols, WEIGHTS))
    t_sep, sep = _time(lambda: (format_reward(texts), global_matching_reward(texts, sols),
                                local_matching_reward(texts, sols)))
    assert fused["format"] == sep[0] and fused["global_matching"] == sep[1]
    assert fused["local_matching"] == sep[2]
    mean_total = sum(fused["total"]) / len(texts)
    levels = {v: fused["format"].count(v) for v in (0.0, 0.2, 0.6, 1.0)}
    print(f"format levels {levels}, mean total reward {mean_total:.3f}")
    print(f"compute_rewards (fused)      : {args.n / t_fused:10.0f} completions/CPU-s ({t_fused:.2f} s)")
    print(f"3 TRL functions, separately  : {args.n / t_sep:10.0f} completions/CPU-s ({t_sep:.2f} s)")
    print(f"ratio fused / separate       : {t_sep / t_fused:.2f}x")
    if not args.no_spec:
        from test_rewards_properties import spec_format, spec_global, spec_local

        t_spec, spec = _time(lambda: ([spec_format(t, True) for t in texts],
                                      [spec_global(t, g) for t, g in zip(texts, sols, strict=True)],
                                      [spec_local(t, g) for t, g in zip(texts, sols, strict=True)]))
        bad = sum(a != b for a, b in zip(spec[0], fused["format"], strict=True))
        bad += sum(a != b for a, b in zip(spec[1], fused["global_matching"], strict=True))
        bad += sum(a != b for a, b in zip(spec[2], fused["local_matching"], strict=True))
        print(f"spec transcription (regex)   : {args.n / t_spec:10.0f} completions/CPU-s ({t_spec:.2f} s)")
        print(f"ratio fused / spec           : {t_spec / t_fused:.2f}x ; mismatching scores: {bad}")


if __name__ == "__main__":
    main()
