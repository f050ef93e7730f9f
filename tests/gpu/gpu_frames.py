"""Synthetic videos for the GPU check, fed to museg through its on-disk frame cache (no decoding).

museg's trainer and eval runner read frames through :class:`museg.data.video.FrameCache`, whose
disk store is keyed by (file path, size, mtime, frame spec, backend). :func:`make_videos` writes
small placeholder files and stores, under each file's key, frames planned by museg's own
:func:`~museg.data.video.plan_frames` for a video of ``duration`` s at ``fps`` and
``height`` x ``width`` (MUSEG's frame spec: 100 s of 480x854 at 2 fps -> 200 frames of 112x196 =
2,800 video tokens). The real runs then hit the cache; torchcodec, decord and ffmpeg are never
touched (a cache miss would try to decode a placeholder and fail loudly with
``video.on_failure=fail``).

Example::

    paths = make_videos(root / "videos", 4, cache_dir / "frames",
                        [(dict(video_spec_from_cfg(cfg.video)), "torchcodec")], duration=100.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from museg.data.video import DecodedVideo, FrameCache, plan_frames


def synthetic_frames(path: str, spec: Mapping[str, Any], duration: float, fps: float,
                     height: int, width: int) -> DecodedVideo:
    """Planned frames (uint8 ``[T, 3, h, w]``, a moving pattern) of a virtual video."""
    total = max(2, round(duration * fps))
    plan = plan_frames(total, fps, height, width, dict(spec))
    t = torch.tensor(plan.indices, dtype=torch.int32).view(-1, 1, 1, 1)
    y = torch.arange(plan.height, dtype=torch.int32).view(1, 1, -1, 1)
    x = torch.arange(plan.width, dtype=torch.int32).view(1, 1, 1, -1)
    c = torch.tensor([0, 85, 170], dtype=torch.int32).view(1, 3, 1, 1)
    seed = sum(map(ord, Path(path).name))
    frames = ((x + 2 * y + 3 * t + c + seed) % 256).to(torch.uint8).contiguous()
    meta = {"backend": "synthetic", "path": str(path), "total_frames": total, "video_fps": fps,
            "sample_fps": plan.sample_fps, "pts": [i / fps for i in plan.indices]}
    return DecodedVideo(frames=frames, plan=plan, meta=meta)


def make_videos(root: str | Path, n: int, disk_dir: str | Path,
                specs: Sequence[tuple[Mapping[str, Any], str]], duration: float, fps: float = 30.0,
                height: int = 480, width: int = 854) -> list[Path]:
    """Write ``n`` placeholder files under ``root`` and cache their frames for each (spec, backend).

    Returns the file paths; ``video_tokens`` of every plan can be read back with
    ``FrameCache(disk_dir=disk_dir).get(path, spec, backend)``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = root / f"synthetic_{i:03d}.mp4"
        if not p.exists():
            p.write_bytes(b"museg gpu check: frames come from the frame cache\n")
        paths.append(p)

    def decode(path: str, spec: Mapping[str, Any], backend: str, timeout_s: Any) -> DecodedVideo:
        return synthetic_frames(path, spec, duration, fps, height, width)

    cache = FrameCache(memory_items=0, disk_dir=disk_dir, decode_fn=decode)
    for spec, backend in specs:
        for p in paths:
            cache.get(p, dict(spec), backend=backend)
    return paths
