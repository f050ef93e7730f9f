"""Deterministic synthetic multi-segment grounding data: real videos + MUSEG-format annotations.

Each video (8-30 s, small frames, 10 fps) is a grey background on which big saturated shapes come
and go: one colour at a time, each colour with a fixed shape (red square, green circle, blue
triangle, ...), optionally moving while visible. A query names a colour's shape:

- ``tvg`` (one segment, asked only for a colour that appears exactly once):
  "Find the moment in the video described by the query 'the red square appears' ...";
- ``tal`` (every occurrence): "Find every section of the video in which the event 'the red square
  is visible' occurs ...".

The ground truth is exact: events start and end on frame boundaries (multiples of
``boundary_step`` seconds), a segment ``[s, e]`` means frames ``s*fps .. e*fps - 1`` show the shape.
Because the colour visible in each sampled frame alone determines the answer, a tiny
vision-language model can learn the task. Held-out videos are distinct files rendered from
independent seeds.

Output layout (``SyntheticPaths``)::

    root/videos/syn_{train,heldout}_NNNN.mp4     video_root = root/videos
    root/train.jsonl, root/heldout.jsonl          MUSEG training format (video = 'videos/...')
    root/heldout_eval.json                        grounding-eval format {video, question, groundtruth, task}
    root/params.json                              the generation parameters

Example::

    from museg.data.synthetic import ensure_synthetic
    from museg.data.annotations import load_train_jsonl, load_grounding_eval
    paths = ensure_synthetic("~/.cache/museg", n_train_videos=32, n_heldout_videos=8)
    train = load_train_jsonl(paths.train_file, paths.video_root)
    heldout = load_grounding_eval(paths.heldout_eval_file, paths.video_root)
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import random
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from museg.data.synthetic_render import (
    BACKGROUND,
    PALETTE,
    SHAPES,
    Event,
    blob_side,
    render_video,
)

GENERATOR_VERSION = 1  # bump when the output for given params changes

TVG_PHRASES = (
    "Find the moment in the video described by the query '{q}' and report its start and end "
    "timestamps.",
    "Give the start and end times of the part of the video that matches the description '{q}'.",
    "The text '{q}' describes one moment of this video. When does that moment begin and end? "
    "Answer with timestamps in seconds.",
)
TAL_PHRASES = (
    "Find every section of the video in which the event '{q}' occurs, and report each one with "
    "its start and end timestamps.",
    "Locate all the parts of the video where '{q}' happens and list their start and end times.",
    "For the event '{q}', give the start and end timestamps of every occurrence in the video.",
)


@dataclass(frozen=True)
class SyntheticPaths:
    """Where a generated synthetic dataset lives (all absolute)."""

    root: Path
    train_file: Path
    heldout_file: Path
    heldout_eval_file: Path
    video_root: Path


def _paths(root: Path) -> SyntheticPaths:
    return SyntheticPaths(root, root / "train.jsonl", root / "heldout.jsonl",
                          root / "heldout_eval.json", root / "videos")


def query_text(colour: str, task: str) -> str:
    """The event description for a colour.

    >>> query_text("red", "tvg"), query_text("blue", "tal")
    ('the red square appears', 'the blue triangle is visible')
    """
    verb = "appears" if task == "tvg" else "is visible"
    return f"the {colour} {SHAPES[colour]} {verb}"


def plan_events(rng: random.Random, n_steps: int, step_frames: int, colours: list[str],
                size: tuple[int, int], blob_frac: float, motion: bool,
                event_steps: tuple[int, int], gap_steps: tuple[int, int]) -> list[Event]:
    """Random non-overlapping events over ``n_steps`` steps; consecutive events with no gap
    between them always differ in colour (so each colour's segments never touch)."""
    side = blob_side(size, blob_frac)
    max_y, max_x = size[0] - side, size[1] - side
    events: list[Event] = []
    t = rng.randint(*gap_steps)
    prev = None
    while t + event_steps[0] <= n_steps:
        length = rng.randint(event_steps[0], min(event_steps[1], n_steps - t))
        choices = [c for c in colours if c != prev] or colours
        colour = rng.choice(choices)
        p0 = (rng.randint(0, max_y), rng.randint(0, max_x))
        p1 = (rng.randint(0, max_y), rng.randint(0, max_x)) if motion else p0
        events.append(Event(colour, t * step_frames, (t + length) * step_frames, p0, p1))
        gap = rng.randint(*gap_steps)
        prev = colour if gap == 0 else None
        t += length + gap
    return events


def colour_segments(events: list[Event], fps: float) -> dict[str, list[list[float]]]:
    """Ground-truth segments (seconds, 2 decimals) per colour, in time order."""
    out: dict[str, list[list[float]]] = {}
    for ev in sorted(events, key=lambda e: e.start_frame):
        out.setdefault(ev.colour, []).append(
            [round(ev.start_frame / fps, 2), round(ev.end_frame / fps, 2)])
    return out


def plan_queries(rng: random.Random, segments: dict[str, list[list[float]]], n: int,
                 tal_fraction: float, n_phrasings: int | None) -> list[dict[str, Any]]:
    """Up to ``n`` distinct queries: tvg only for colours with exactly one segment."""
    tvg = [c for c, s in segments.items() if len(s) == 1]
    tal = list(segments)
    used: set[tuple[str, str]] = set()
    out = []
    for _ in range(n):
        want = "tal" if rng.random() < tal_fraction else "tvg"
        for task in (want, "tvg" if want == "tal" else "tal"):
            pool = [c for c in (tal if task == "tal" else tvg) if (task, c) not in used]
            if pool:
                colour = rng.choice(pool)
                used.add((task, colour))
                phrases = TAL_PHRASES if task == "tal" else TVG_PHRASES
                phrase = rng.choice(phrases[: n_phrasings or len(phrases)])
                out.append({"problem": phrase.format(q=query_text(colour, task)),
                            "solution": segments[colour], "task": task, "colour": colour})
                break
    return out


def _step_grid(fps: float, boundary_step: float, event_range: tuple[float, float],
               gap_range: tuple[float, float], duration_range: tuple[float, float],
               ) -> tuple[int, tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Frames per boundary step, and the event, gap and duration ranges in steps (checked).

    >>> _step_grid(10, 0.5, (2.0, 6.0), (1.0, 4.0), (8, 30))
    (5, (4, 12), (2, 8), (16, 60))
    """
    step_frames = boundary_step * fps
    if step_frames < 1 or abs(step_frames - round(step_frames)) > 1e-6:
        raise ValueError(f"boundary_step * fps must be a whole number of frames, got {step_frames}")

    def steps(sec: float) -> int:
        return int(round(sec / boundary_step))

    ev_steps = (max(1, steps(event_range[0])), max(1, steps(event_range[1])))
    gap_steps = (steps(gap_range[0]), steps(gap_range[1]))
    dur_steps = (max(ev_steps[0], steps(duration_range[0])), steps(duration_range[1]))
    if ev_steps[0] > ev_steps[1] or gap_steps[0] > gap_steps[1] or dur_steps[0] > dur_steps[1]:
        raise ValueError("event_range, gap_range and duration_range must be (low, high) with low <= high")
    return int(round(step_frames)), ev_steps, gap_steps, dur_steps


def generate_synthetic(
    out_dir: str | os.PathLike,
    n_train_videos: int = 32,
    n_heldout_videos: int = 8,
    queries_per_video: int = 2,
    seed: int = 0,
    size: tuple[int, int] = (112, 112),
    fps: float = 10.0,
    duration_range: tuple[float, float] = (8.0, 30.0),
    n_colours: int = 3,
    event_range: tuple[float, float] = (2.0, 6.0),
    gap_range: tuple[float, float] = (1.0, 4.0),
    boundary_step: float = 0.5,
    blob_frac: float = 0.6,
    motion: bool = True,
    noise: float = 0.0,
    tal_fraction: float = 0.5,
    n_phrasings: int | None = None,
    background: tuple[int, int, int] = BACKGROUND,
    clock_rows: int = 0,
    progress: bool | None = None,
) -> SyntheticPaths:
    """Write videos and annotation files into ``out_dir`` (created; existing files overwritten).

    ``size`` is ``(height, width)`` (even). Difficulty knobs: ``n_colours`` (1-6), ``event_range``
    and ``gap_range`` (seconds; a gap of 0 makes a shape change colour in place),
    ``boundary_step`` (event boundaries are multiples of it; must be whole frames), ``blob_frac``
    (shape size / short side), ``motion``, ``noise`` (pixel noise std), ``tal_fraction`` (share of
    tal queries), ``n_phrasings`` (how many of the phrasings per task to use; None = all),
    ``clock_rows`` (a time bar in the bottom rows, full width at the longest duration; 0 = none).
    A run's ``data.synthetic`` (:class:`museg.config.schema_demo.SyntheticConfig`) holds these
    parameters, with these defaults.
    """
    if not 1 <= n_colours <= len(PALETTE):
        raise ValueError(f"n_colours must be in 1..{len(PALETTE)}, got {n_colours}")
    step_frames, ev_steps, gap_steps, dur_steps = _step_grid(
        fps, boundary_step, event_range, gap_range, duration_range)
    colours = list(PALETTE)[:n_colours]

    paths = _paths(Path(out_dir).expanduser().resolve())
    paths.video_root.mkdir(parents=True, exist_ok=True)
    eval_items: list[dict[str, Any]] = []
    bar = tqdm(total=n_train_videos + n_heldout_videos, desc="synthetic videos",
               disable=None if progress is None else not progress)
    for split, n_videos, file in (("train", n_train_videos, paths.train_file),
                                  ("heldout", n_heldout_videos, paths.heldout_file)):
        lines = []
        for k in range(n_videos):
            rng = random.Random(f"museg-synthetic/{seed}/{split}/{k}")
            n_steps = rng.randint(*dur_steps)
            events = plan_events(rng, n_steps, step_frames, colours, size, blob_frac, motion,
                                 ev_steps, gap_steps)
            name = f"syn_{split}_{k:04d}.mp4"
            render_video(paths.video_root / name, events, n_steps * step_frames, size, fps,
                         blob_frac, tuple(background), noise, rng.randrange(2**32),
                         clock_rows, dur_steps[1] * step_frames)
            segments = colour_segments(events, fps)
            duration = round(n_steps * step_frames / fps, 2)
            for q in plan_queries(rng, segments, queries_per_video, tal_fraction, n_phrasings):
                rec = {"idx": len(lines), "problem": q["problem"], "solution": q["solution"],
                       "video": f"videos/{name}", "duration": duration, "task": q["task"]}
                lines.append(json.dumps(rec))
                if split == "heldout":
                    eval_items.append({"video": name, "question": q["problem"],
                                       "groundtruth": q["solution"], "task": q["task"],
                                       "duration": duration})
            bar.update(1)
        file.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    bar.close()
    paths.heldout_eval_file.write_text(json.dumps(eval_items, indent=1), encoding="utf-8")
    return paths


def _normalized_params(params: Mapping[str, Any]) -> dict[str, Any]:
    sig = inspect.signature(generate_synthetic)
    unknown = set(params) - set(sig.parameters) - {"progress"}
    if unknown or "out_dir" in params:
        raise TypeError(f"unknown synthetic data parameter(s): {sorted(unknown | {'out_dir'} & set(params))}")
    full = {k: p.default for k, p in sig.parameters.items() if k not in ("out_dir", "progress")}
    full.update({k: v for k, v in params.items() if k != "progress"})
    # lists/tuples and OmegaConf containers all become plain JSON values
    return json.loads(json.dumps(full, default=lambda o: list(o)))


def synthetic_cache_key(**params: Any) -> str:
    """Hash of the full parameter set (defaults filled in) and the generator version."""
    full = _normalized_params(params)
    blob = json.dumps({"version": GENERATOR_VERSION, **full}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def ensure_synthetic(cache_dir: str | os.PathLike, **params: Any) -> SyntheticPaths:
    """Generate the dataset once into ``cache_dir/synthetic-<hash>`` and reuse it afterwards.

    Generation writes to a temporary sibling directory that is renamed into place at the end, so a
    crash or a concurrent caller never leaves a half-written dataset behind.
    """
    cache = Path(cache_dir).expanduser().resolve()
    full = _normalized_params(params)
    final = cache / f"synthetic-{synthetic_cache_key(**params)}"
    if (final / "params.json").is_file():
        return _paths(final)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".synthetic-tmp-", dir=cache))
    try:
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in full.items()}
        generate_synthetic(tmp, progress=params.get("progress"), **kwargs)
        (tmp / "params.json").write_text(
            json.dumps({"version": GENERATOR_VERSION, **full}, indent=1, sort_keys=True))
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "params.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return _paths(final)
