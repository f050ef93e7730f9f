"""The demo's warm-up model: a short supervised fine-tune of the tiny model before any RL.

The warm-up trains on ``demo.warmup_videos`` of the synthetic training videos with both stage
instructions, seeded by ``demo.warmup_seed`` (so ``seed=`` varies the RL stages from one warm-up
model), and saves the model and processor into a directory. The demo runs it in a spawned process,
so the demo process itself never holds the model while its training children run;
``demo.shared_warmup`` puts one warm-up in a directory shared by every run of an experiment::

    out = shared_warmup_dir(cfg) if cfg.demo.shared_warmup else run_dir / "warmup_model"
    with locked(out.with_name(out.name + ".lock")):   # parallel runs wait for the first
        warmup_in_child(cfg, out)                     # -> out (config.json, weights, losses)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from museg.data.annotations import load_train_jsonl
from museg.data.prompts import TEMPLATES, build_question
from museg.data.video import VideoFailure, VideoLoader, video_spec_from_cfg
from museg.model import load_model_and_processor, model_path_from_cfg
from museg.rl.warmup import WarmupExample, supervised_warmup, target_completion

__all__ = ["warmup_seed", "warmup_model", "warmup_in_child", "shared_warmup_dir", "locked"]


def warmup_seed(cfg: DictConfig) -> int:
    """The warm-up's seed: ``demo.warmup_seed``, or ``seed`` when that is null.

    Fixed by default, so ``seed=`` varies only the RL stages from one warm-up model, the way MUSEG's
    runs all start from one instruction-tuned checkpoint.

    >>> from omegaconf import OmegaConf
    >>> warmup_seed(OmegaConf.create({"seed": 3, "demo": {"warmup_seed": 0}}))
    0
    >>> warmup_seed(OmegaConf.create({"seed": 3, "demo": {"warmup_seed": None}}))
    3
    """
    fixed = cfg.demo.warmup_seed
    return int(cfg.seed if fixed is None else fixed)


def _load_videos(cfg: DictConfig, paths: list[str]) -> dict[str, Any]:
    """Decode every warm-up video in-process through the shared video loop (a failure stops)."""
    videos: dict[str, Any] = {}
    bar = tqdm(total=len(paths), desc="warm-up videos", unit="video",
               dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30.0)
    spec = video_spec_from_cfg(cfg.video)
    with VideoLoader(spec, backend=cfg.video.backend, timeout_s=None, memory_items=0) as loader:
        for path, video in loader.iterate(paths):
            if isinstance(video, VideoFailure):
                raise video.error
            videos[path] = video
            bar.update(1)
    bar.close()
    return videos


def _examples(cfg: DictConfig) -> list[WarmupExample]:
    """The warm-up's supervised examples: each labelled sample under both stage instructions."""
    samples = load_train_jsonl(cfg.data.train_file, cfg.paths.video_root)
    limit = cfg.demo.warmup_videos
    if limit:  # labelled subset: the first N training videos (RL then uses all of them)
        keep = set(list(dict.fromkeys(s.video_path for s in samples))[: int(limit)])
        samples = [s for s in samples if s.video_path in keep]
    videos = _load_videos(cfg, list(dict.fromkeys(s.video_path for s in samples)))
    examples = []
    for s in samples:
        # both stage instructions: a tiny model does not generalise across instructions the way an
        # instruction-tuned Qwen2.5-VL does, and stage 2 switches instruction
        for template in (TEMPLATES["stage1"], TEMPLATES["stage2"]):
            examples.append(WarmupExample(videos[s.video_path], build_question(template, s.problem),
                                          target_completion(s.solution, "the event")))
    return examples


def warmup_model(cfg: DictConfig, out_dir: Path) -> Path:
    """Supervised warm-up of the tiny model on the synthetic train split; saved to ``out_dir``."""
    if (out_dir / "config.json").is_file():
        return out_dir
    seed = warmup_seed(cfg)
    torch.manual_seed(seed)
    model, processor = load_model_and_processor(
        model_path_from_cfg(cfg.model), dtype=cfg.model.dtype, attention=cfg.model.attention,
        freeze_vision=cfg.model.freeze_vision)
    examples = _examples(cfg)
    d = cfg.demo
    losses = supervised_warmup(model, processor, examples, steps=int(d.warmup_steps),
                               learning_rate=float(d.warmup_lr),
                               batch_size=int(d.warmup_batch_size), seed=seed, progress=True)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    (tmp / "warmup_losses.json").write_text(json.dumps(losses))
    tmp.rename(out_dir)
    return out_dir


def shared_warmup_dir(cfg: DictConfig) -> Path:
    """``<output_root>/<experiment>/warmup/<hash of what the warm-up depends on>``: one warm-up
    model (and one held-out evaluation of it) for every run of an experiment, whatever its
    ``seed`` or ablation variant (``demo.shared_warmup=true``)."""
    what = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "video")}
    what["synthetic"] = OmegaConf.to_container(cfg.data.synthetic, resolve=True)
    what["demo"] = {k: v for k, v in OmegaConf.to_container(cfg.demo, resolve=True).items()
                    if k.startswith("warmup")}
    what["seed"] = warmup_seed(cfg)
    key = hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return Path(cfg.paths.output_root) / cfg.experiment_name / "warmup" / key


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (parallel jobs wait for the one computing)."""
    import fcntl  # POSIX only: imported where a shared warm-up needs it

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def warmup_in_child(cfg: DictConfig, out_dir: Path) -> Path:
    """:func:`warmup_model` in a spawned process: the demo process itself never holds the model or
    torch's heap while the training children run (it would add ~1.1 GB to the demo's peak)."""
    plain = OmegaConf.to_container(cfg, resolve=True)  # resolvers are registered here, not there
    proc = multiprocessing.get_context("spawn").Process(
        target=_warmup_entry, args=(plain, str(out_dir)), name="museg-warmup")
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"demo warm-up failed (exit {proc.exitcode}); see the output above")
    return out_dir


def _warmup_entry(plain: dict, out_dir: str) -> None:
    warmup_model(OmegaConf.create(plain), Path(out_dir))
