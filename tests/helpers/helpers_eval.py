"""Test helpers for the evaluation runner: small synthetic benchmarks and plain OmegaConf cfgs.

``grounding_bench(root)`` renders a few short synthetic videos (museg.data.synthetic) and returns
their grounding-eval file; ``etbench_bench(root, videos)`` writes a small E.T. Bench-format json
(tvg, tal, rar with options, vhd) plus a subset file over those videos; ``eval_cfg(...)`` is the
real composed ``task=eval model=tiny benchmark=synthetic`` config set to the tiny model on CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from museg.config import compose_config

SYN_PARAMS = dict(n_train_videos=0, n_heldout_videos=3, queries_per_video=4, seed=7,
                  size=(56, 56), fps=4, duration_range=(4, 6), event_range=(1.0, 2.0),
                  gap_range=(0.5, 1.0), n_colours=3, progress=False)


def grounding_bench(root: Path, n_items: int = 6) -> tuple[Path, Path]:
    """(grounding-eval json, video root) of a tiny synthetic benchmark: 3 videos, ``n_items``
    queries (the generated ones, cycled with numbered variants), grouped by video."""
    from museg.data.synthetic import generate_synthetic

    paths = generate_synthetic(root / "syn", **SYN_PARAMS)
    base = json.loads(Path(paths.heldout_eval_file).read_text())
    items = []
    for k in range(n_items):
        it = dict(base[k % len(base)])
        if k >= len(base):
            it["question"] = f"{it['question']} (variant {k // len(base)})"
        items.append(it)
    items.sort(key=lambda it: it["video"])
    out = root / "syn_bench.json"
    out.write_text(json.dumps(items, indent=1))
    return out, Path(paths.video_root)


def etbench_bench(root: Path, video_root: Path) -> tuple[Path, Path]:
    """(E.T. Bench-format json, subset json) over the synthetic videos in ``video_root``."""
    vids = sorted(p.name for p in video_root.glob("syn_heldout_*.mp4"))
    entries = [
        {"idx": 0, "task": "tvg", "source": "syn", "video": vids[0], "duration": 4.0,
         "q": "When does the red square appear? Answer 'X - Y seconds'.", "tgt": [1.0, 2.5]},
        {"idx": 1, "task": "tvg", "source": "syn", "video": vids[0], "duration": 4.0,
         "q": "When does the green circle appear? Answer 'X - Y seconds'.", "tgt": [0.5, 1.5]},
        {"idx": 0, "task": "tal", "source": "syn", "video": vids[1], "duration": 4.0,
         "q": "List every segment with a shape.", "tgt": [[0.5, 1.5], [2.0, 3.0]]},
        {"idx": 0, "task": "rar", "source": "syn", "video": vids[1], "duration": 4.0,
         "q": "Which shape appears first? Options: (A) square (B) circle (C) triangle (D) star",
         "o": ["square", "circle", "triangle", "star"], "p": 1},
        {"idx": 0, "task": "vhd", "source": "syn", "video": vids[2], "duration": 4.0,
         "q": "Give one timestamp of the highlight.", "tgt": [[1.0, 2.0]]},
    ]
    ann = root / "et_bench_mini.json"
    ann.write_text(json.dumps(entries, indent=1))
    subset = root / "et_bench_mini_subset.json"
    subset.write_text(json.dumps({"tvg": {"syn": [0]}, "rar": {"syn": [0]}, "tal": {"syn": []},
                                  "vhd": {"syn": [0]}}))
    return ann, subset


def eval_cfg(run_dir: Path, annotation: Path, video_root: Path, kind: str = "tvg",
             benchmark: str = "synthetic", subset: Path | None = None, template: str = "stage1",
             limit: int | None = None, batch_size: int = 2, max_new_tokens: int = 16,
             **eval_overrides) -> DictConfig:
    """The composed ``task=eval model=tiny benchmark=synthetic`` config (every key exists, so code
    reads ``cfg.eval.limit``) with these test values on top: tiny model, float32, greedy, CPU.
    It is resolved, so a child process can ``OmegaConf.load`` a saved copy without resolvers."""
    values = {
        "task": "eval", "seed": 0, "run_dir": str(run_dir),
        "paths": {"data_root": str(annotation.parent), "video_root": str(video_root),
                  "output_root": str(run_dir.parent), "cache_dir": str(run_dir.parent / "cache")},
        "model": {"name": "tiny", "path": "tiny", "dtype": "float32", "attention": "sdpa",
                  "gradient_checkpointing": False, "freeze_vision": True,
                  "lora": {"enabled": False}},
        "data": {"on_bad_record": "fail"},
        "video": {"fps": 2.0, "max_frames": 448, "min_frames": 4, "min_pixels": 12544,
                  "max_pixels": None, "total_pixels": 2809856, "backend": "torchcodec",
                  "decode_timeout_s": None, "cache": {"memory_items": 8, "disk": False},
                  "on_failure": "replace", "max_failure_fraction": 0.05, "prefetch": 0},
        "eval": {"benchmark": benchmark, "kind": kind, "annotation": str(annotation),
                 "subset": str(subset) if subset else None, "template": template,
                 "do_sample": False, "max_new_tokens": max_new_tokens, "batch_size": batch_size,
                 "video": {"fps": 2.0, "min_pixels": 12544, "total_pixels": 2809856,
                           "max_frames": None, "max_pixels": None},
                 "backend": "hf", "limit": limit, "predictions": None, "suite": [],
                 **eval_overrides},
    }
    # the real composed config (schema, groups, resolvers): a misspelt key here fails (struct mode)
    cfg = compose_config(["task=eval", "model=tiny", "benchmark=synthetic"])
    cfg = OmegaConf.merge(cfg, values)
    OmegaConf.resolve(cfg)
    return cfg

def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
