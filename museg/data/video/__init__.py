"""Video input: reference-exact frame plans, fast killable decoding, cache, failure policy.

- :mod:`.plan`: ``plan_frames(total_frames, video_fps, height, width, spec) -> FramePlan`` (what
  the model sees, equal to qwen-vl-utils 0.0.10), ``TRAIN_SPEC`` / ``EVAL_SPEC``,
  ``video_spec_from_cfg(cfg.video)``.
- :mod:`.errors`: the typed errors ``VideoError`` > ``VideoUnreadableError`` (>
  ``VideoNotFoundError``) / ``VideoTimeoutError``, and ``DecodeWorkerError`` (the environment).
- :mod:`.decode`: ``probe_video(path, backend)``, ``decode_video(path, spec, backend, timeout_s)
  -> DecodedVideo``.
- :mod:`.worker`: the killable worker processes behind ``timeout_s``.
- :mod:`.cache`: ``FrameCache(memory_items, disk_dir).get(path, spec, backend, timeout_s)``.
- :mod:`.policy`: ``FailurePolicy`` (replace + quarantine + abort past a failure fraction).
- :mod:`.prefetch`: ``Prefetcher`` (decode the next batch in the background).
- :mod:`.loader`: ``VideoLoader`` (THE loop every user reads videos through: prefetch, a decoded
  video or a typed ``VideoFailure``, one failure account) and ``frame_cache_dir``.

Example (preflight-style check of one file):
    >>> from museg.data.video import probe_video, plan_frames, decode_video, EVAL_SPEC  # doctest: +SKIP
    >>> info = probe_video("clip.mp4")                                    # doctest: +SKIP
    >>> plan = plan_frames(info.total_frames, info.fps, info.height, info.width, EVAL_SPEC)  # doctest: +SKIP
    >>> decode_video("clip.mp4", EVAL_SPEC, timeout_s=120).plan == plan   # doctest: +SKIP
    True
"""

from museg.data.video.cache import FrameCache, cache_key
from museg.data.video.decode import (
    BACKENDS,
    DecodedVideo,
    VideoInfo,
    decode_video,
    probe_video,
    resize_frames,
)
from museg.data.video.errors import (
    DecodeWorkerError,
    VideoError,
    VideoNotFoundError,
    VideoTimeoutError,
    VideoUnreadableError,
    VideoWorkerError,
)
from museg.data.video.loader import VideoFailure, VideoLoader, frame_cache_dir
from museg.data.video.plan import (
    DEFAULTS,
    EVAL_SPEC,
    TRAIN_SPEC,
    FramePlan,
    plan_frames,
    smart_nframes,
    smart_resize,
    video_spec_from_cfg,
    video_tokens,
)
from museg.data.video.policy import FailureBudgetExceeded, FailurePolicy
from museg.data.video.prefetch import Prefetcher

__all__ = [
    "BACKENDS", "DEFAULTS", "EVAL_SPEC", "TRAIN_SPEC", "DecodeWorkerError", "DecodedVideo",
    "FailureBudgetExceeded", "FailurePolicy", "FrameCache", "FramePlan", "Prefetcher",
    "VideoError", "VideoFailure", "VideoInfo", "VideoLoader", "VideoNotFoundError",
    "VideoTimeoutError", "VideoUnreadableError", "VideoWorkerError", "cache_key", "decode_video",
    "frame_cache_dir", "plan_frames", "probe_video", "resize_frames", "smart_nframes",
    "smart_resize", "video_spec_from_cfg", "video_tokens",
]
