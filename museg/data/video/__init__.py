"""Video input: reference-exact frame plans, fast killable decoding, cache, failure policy.

- :mod:`.plan`: ``plan_frames(total_frames, video_fps, height, width, spec) -> FramePlan`` (what
  the model sees, equal to qwen-vl-utils 0.0.10), ``TRAIN_SPEC`` / ``EVAL_SPEC``,
  ``video_spec_from_cfg(cfg.video)``.
- :mod:`.decode`: ``probe_video(path, backend)``, ``decode_video(path, spec, backend, timeout_s)
  -> DecodedVideo`` and the typed errors ``VideoError`` > ``VideoUnreadableError`` /
  ``VideoTimeoutError``.
- :mod:`.worker`: the killable worker processes behind ``timeout_s``.
- :mod:`.cache`: ``FrameCache(memory_items, disk_dir).get(path, spec, backend, timeout_s)``.
- :mod:`.policy`: ``FailurePolicy`` (replace + quarantine + abort past a failure fraction).
- :mod:`.prefetch`: ``Prefetcher`` (decode the next batch in the background).

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
    VideoError,
    VideoInfo,
    VideoNotFoundError,
    VideoTimeoutError,
    VideoUnreadableError,
    decode_video,
    probe_video,
    resize_frames,
)
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
    "BACKENDS", "DEFAULTS", "EVAL_SPEC", "TRAIN_SPEC", "DecodedVideo", "FailureBudgetExceeded",
    "FailurePolicy", "FrameCache", "FramePlan", "Prefetcher", "VideoError", "VideoInfo",
    "VideoNotFoundError", "VideoTimeoutError", "VideoUnreadableError", "cache_key",
    "decode_video", "plan_frames", "probe_video", "resize_frames", "smart_nframes",
    "smart_resize", "video_spec_from_cfg", "video_tokens",
]
