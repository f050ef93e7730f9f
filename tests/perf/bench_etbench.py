"""Benchmark: score a synthetic 7k-entry E.T. Bench answer file, time per task and in total.

Generates (deterministically, seed 0) an E.T. Bench-format json with all 12 tasks in the subset's
task/source proportions (``shared/data/museg/eval/et_bench_subset.json``, scaled to ``--n``) and
synthetic answers in the styles models write (ranges, "from X to Y", start/end sentences, letters,
free text, dense captions, junk, empty), writes it to a temp dir, loads it back and scores it with
:func:`museg.eval.etbench.etbench_metrics` including the caption metrics (Java + MiniLM).

``--reference-videos K`` also scores the first K youcook2 dvc entries the way the densevid-style
evaluation drives pycocoevalcap (its PTBTokenizer, Meteor, Bleu, Rouge and Cider classes; new
tokenizer runs per threshold and scorer) and prints the time ratio and the largest difference of
any caption metric against our batched scorer on the same pairs and random strings.

Run::

    python tests/perf/bench_etbench.py              # 7000 entries, caption metrics on
    python tests/perf/bench_etbench.py --n 2000 --no-captions --reference-videos 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: E.T. Bench subset counts (task -> source -> n); the generator scales them to --n.
SUBSET_COUNTS = {
    "rar": {"perception_test": 18}, "eca": {"charades_sta": 22}, "rvq": {"star": 26},
    "tvg": {"charades_sta": 32, "qvhighlights": 28}, "epm": {"ego4d_nlq": 28},
    "tal": {"thumos14": 28, "thumos15": 30, "perception_test": 28}, "evs": {"tvsum": 8},
    "vhd": {"youtube_highlights": 26, "qvhighlights": 25},
    "dvc": {"youcook2": 29, "hirest": 12}, "slc": {"ht_step": 18, "cross_task": 24},
    "tem": {"qvhighlights": 32, "perception_test": 32}, "gvq": {"qa_ego4d": 24},
}
WORDS = ("man woman chef person cuts slices pours mixes adds stirs fries boils chops onions garlic "
         "tomatoes water oil salt pepper flour sugar eggs bowl pan pot knife board table the a "
         "into onto with and then on in of").split()
STEPS = [f"{v} {o}" for v in ("add", "pour", "cut", "mix", "remove", "place", "stir", "open")
         for o in ("flour", "milk", "eggs", "the lid", "sugar", "water", "butter", "the wheel",
                   "the jack", "oil", "salt", "the batter")]


def _sentence(rng: random.Random, lo: int = 4, hi: int = 12) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."


def _seg(rng: random.Random, dur: float) -> list[float]:
    s = rng.uniform(0, dur * 0.8)
    return [round(s, 1), round(min(dur, s + rng.uniform(2, dur * 0.3)), 1)]


def _noisy(rng: random.Random, seg: list[float]) -> list[float]:
    d = max(1.0, seg[1] - seg[0])
    return [round(max(0.0, seg[0] + rng.gauss(0, d * 0.3)), 1),
            round(seg[1] + rng.gauss(0, d * 0.3), 1)]


def _ts_answer(rng: random.Random, seg: list[float]) -> str:
    s, e = _noisy(rng, seg)
    style = rng.random()
    if style < 0.6:
        return f"The event happens in {s} - {e} seconds."
    if style < 0.75:
        return f"It happens from {s} to {e} seconds."
    if style < 0.88:
        return f"The action starts at {s}.\nIt ends at {e}."
    if style < 0.95:
        return "I cannot tell."
    return ""


def _mc_answer(rng: random.Random, opts: list[str], p: int) -> str:
    pick = p if rng.random() < 0.55 else rng.randrange(len(opts))
    letter, style = chr(65 + pick), rng.random()
    if style < 0.5:
        return f"({letter}) {opts[pick]}"
    if style < 0.7:
        return f"{letter}. {opts[pick]}"
    if style < 0.9:
        return f"The answer is {opts[pick]}"
    return "" if style < 0.95 else "best option: " + letter


def _dense_answer(rng: random.Random, gts: list[list[float]], caps: list[str]) -> str:
    style = rng.random()
    k = max(1, len(gts) + rng.randint(-3, 1))
    idx = sorted(rng.sample(range(len(gts)), min(k, len(gts))))
    events = [(_noisy(rng, gts[i]), caps[i] if rng.random() < 0.5 else _sentence(rng)) for i in idx]
    if style < 0.8:
        return "\n".join(f"{s} - {e} seconds, {c}" for (s, e), c in events)
    if style < 0.88:
        return "\n".join(f"Start time: {s}s End time: {e}s\nDescription: {c}" for (s, e), c in events)
    if style < 0.95:
        return f"At {events[0][0][0]} seconds, {events[0][1]}"
    return ""


def make_entries(n_total: int = 7000, seed: int = 0) -> list[dict]:
    """Synthetic E.T. Bench entries with answers ``a`` (deterministic)."""
    rng = random.Random(seed)
    total = sum(c for srcs in SUBSET_COUNTS.values() for c in srcs.values())
    entries = []
    for task, srcs in SUBSET_COUNTS.items():
        for source, c in srcs.items():
            for idx in range(round(c * n_total / total)):
                dur = round(rng.uniform(30, 300), 1)
                e = {"idx": idx, "task": task, "source": source, "duration": dur,
                     "video": f"{source}/{task}_{idx:05d}.mp4", "q": "question"}
                if task in ("rar", "eca", "rvq", "gvq"):
                    e["o"] = [_sentence(rng, 2, 6) for _ in range(rng.choice((4, 5)))]
                    e["p"] = rng.randrange(len(e["o"]))
                    e["a"] = _mc_answer(rng, e["o"], e["p"])
                    if task == "gvq":
                        e["tgt"] = _seg(rng, dur)
                        e["a"] += " " + _ts_answer(rng, e["tgt"])
                elif task in ("tvg", "epm"):
                    e["tgt"] = _seg(rng, dur)
                    e["a"] = _ts_answer(rng, e["tgt"])
                elif task in ("tem", "tal", "evs"):
                    e["tgt"] = sorted(_seg(rng, dur) for _ in range(rng.randint(1, 5)))
                    k = rng.randint(1, len(e["tgt"]))
                    segs = [_noisy(rng, s) for s in e["tgt"][:k]]
                    e["a"] = (", ".join(f"{s} - {t}" for s, t in segs) if rng.random() < 0.85
                              else _ts_answer(rng, e["tgt"][0]))
                elif task == "vhd":
                    wins = [_seg(rng, dur) for _ in range(rng.randint(1, 4))]
                    e["tgt"] = [wins, wins[:1]] if source == "qvhighlights" else wins
                    x = rng.choice(wins)[0] + 1 if rng.random() < 0.5 else rng.uniform(0, dur)
                    e["a"] = f"The highlight is at {x:.1f} seconds." if rng.random() < 0.9 else ""
                else:
                    m = rng.randint(3, 10)
                    e["tgt"] = sorted(_seg(rng, dur) for _ in range(m))
                    e["g"] = ([rng.choice(STEPS) for _ in range(m)] if task == "slc"
                              else [_sentence(rng) for _ in range(m)])
                    e["a"] = _dense_answer(rng, e["tgt"], e["g"])
                entries.append(e)
    return entries


def reference_dense(entries: list[dict], k: int) -> dict[str, float]:
    """The densevid-style way on the first k youcook2 dvc entries vs :func:`score_dense`.

    Reference: per threshold, for each scorer a new pycocoevalcap PTBTokenizer run over all
    predictions and one over all references (2 Java runs x 4 scorers x 4 thresholds), then each
    scorer per video (pycocoevalcap's Meteor, Bleu, Rouge, Cider). Same pairs and random strings.
    Returns the seconds of both and the largest absolute difference of any metric.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    from museg.eval.etbench.captions import remove_nonascii
    from museg.eval.etbench.dense import build_group, caption_pairs, random_pool, score_dense
    from museg.eval.etbench.tasks import THRESHOLDS

    group = build_group("dvc", "youcook2", [e for e in entries if e["source"] == "youcook2"][:k])
    t0 = time.perf_counter()
    rng = random.Random("museg-etbench:0:dvc:youcook2")
    pool = random_pool(0)
    scorers = [(Bleu(4), ["bleu_1", "bleu_2", "bleu_3", "bleu_4"]), (Meteor(), ["meteor"]),
               (Rouge(), ["rouge_l"]), (Cider(), ["cider"])]
    per_t: dict[str, list[float]] = {}
    for t in THRESHOLDS:
        pairs = caption_pairs(group.videos, t, rng, pool)
        res, gts, ids, i = {}, {}, [], 0
        for v in pairs:
            ids.append([])
            for h, r in v:
                res[i] = [{"caption": remove_nonascii(h)}]
                gts[i] = [{"caption": remove_nonascii(r)}]
                ids[-1].append(i)
                i += 1
        for scorer, names in scorers:
            tres, tgts = PTBTokenizer().tokenize(res), PTBTokenizer().tokenize(gts)
            vals = []
            for vid in ids:
                kw = {"verbose": 0} if names[0] == "bleu_1" else {}
                s, _ = scorer.compute_score({j: tgts[j] for j in vid}, {j: tres[j] for j in vid},
                                            **kw)
                vals.append(s if isinstance(s, list) else [s])
            for n, name in enumerate(names):
                per_t.setdefault(name, []).append(sum(x[n] for x in vals) / len(vals))
    ref = {name: sum(v) / len(v) for name, v in per_t.items()}
    ref_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = score_dense([group], seed=0, errors=[])[("dvc", "youcook2")]
    our_s = time.perf_counter() - t0
    diff = max(abs(ref[m] - ours[m]) for m in ref)
    return {"reference_s": ref_s, "ours_s": our_s, "max_abs_diff": diff, "videos": len(group.videos)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=7000)
    ap.add_argument("--no-captions", action="store_true")
    ap.add_argument("--reference-videos", type=int, default=0)
    args = ap.parse_args()

    from museg.eval.etbench import etbench_metrics

    entries = make_entries(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "etbench_answers.json"
        path.write_text(json.dumps(entries))
        t0, c0 = time.perf_counter(), time.process_time()
        loaded = json.loads(path.read_text())
        res = etbench_metrics(loaded, caption_metrics=not args.no_captions)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        java_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        java_cpu = java_cpu.ru_utime + java_cpu.ru_stime
    counts: dict[str, int] = {}
    for e in entries:
        counts[e["task"]] = counts.get(e["task"], 0) + 1
    print(f"entries: {len(entries)}  cores: {os.cpu_count()}  load avg: {os.getloadavg()[0]:.1f}")
    print(f"{'part':<20}{'n':>6}{'seconds':>10}   (wall clock; other processes share the CPU)")
    for k, v in sorted(res["timing_s"].items(), key=lambda kv: -kv[1]):
        print(f"{k:<20}{counts.get(k, ''):>6}{v:>10.2f}")
    print(f"{'TOTAL':<20}{len(entries):>6}{total:>10.2f}   (wall; CPU: python {cpu:.1f} s, "
          f"java {java_cpu:.1f} s)")
    keys = ("ref_acc", "gnd_f1", "cap_f1", "cap_sim", "com_rec", "avg")
    print("summary:", {k: None if res[k] is None else round(100 * res[k], 1) for k in keys})
    if res["errors"]:
        print("errors:", res["errors"])
    if args.reference_videos:
        r = reference_dense(entries, args.reference_videos)
        print(f"dvc captions on {r['videos']} videos x 4 thresholds: densevid-style pycocoevalcap "
              f"{r['reference_s']:.1f} s, ours {r['ours_s']:.1f} s (incl. SentSim; ratio "
              f"{r['reference_s'] / r['ours_s']:.1f}x); BLEU/METEOR/ROUGE-L/CIDEr max |diff| "
              f"{r['max_abs_diff']:.1e}")


if __name__ == "__main__":
    main()
