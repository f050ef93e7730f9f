"""Frame plans: which frames the model sees and at what size, decided without decoding anything.

``plan_frames(total_frames, video_fps, height, width, spec)`` reproduces the video sampling of the
reference pipeline MUSEG pins (qwen-vl-utils 0.0.10) for every input: the frame count (fps-based or
a fixed ``nframes``), the frame indices (``round(linspace(0, total_frames - 1, n))`` in float32,
as ``torch.linspace`` computes them), the sample fps handed to the processor as
``second_per_grid_ts = 2 / sample_fps``, the per-frame pixel cap derived from ``total_pixels`` and
the resize to multiples of 28. ``video_tokens`` is what the LLM will see: ``n/2 * h'/28 * w'/28``.

``spec`` keys (all optional, ``None`` means "not given"): ``fps``, ``nframes``, ``min_frames``,
``max_frames``, ``min_pixels``, ``max_pixels``, ``total_pixels``, ``resized_height`` and
``resized_width`` (both or neither), plus the decode option ``resize`` (ignored here). MUSEG's specs
are :data:`TRAIN_SPEC` and :data:`EVAL_SPEC`; :func:`video_spec_from_cfg` builds a spec from the
``video`` config group.

Example:
    >>> p = plan_frames(300, 30.0, 480, 854, TRAIN_SPEC)
    >>> p.nframes, p.indices[:4], p.height, p.width, p.sample_fps, p.video_tokens
    (20, [0, 16, 31, 47], 392, 700, 2.0, 3500)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

FACTOR = 28  # patch 14 x merge 2
FRAME_FACTOR = 2  # temporal patch size
MAX_RATIO = 200
DEFAULT_FPS = 2.0
DEFAULT_MIN_FRAMES = 4
DEFAULT_MAX_FRAMES = 768
VIDEO_MIN_PIXELS = 128 * 28 * 28
VIDEO_MAX_PIXELS = 768 * 28 * 28
VIDEO_TOTAL_PIXELS = int(128000 * 28 * 28 * 0.9)
IMAGE_MIN_PIXELS = 4 * 28 * 28  # used by the reference for explicit resized_height/width
IMAGE_MAX_PIXELS = 16384 * 28 * 28

PLAN_KEYS = ("fps", "nframes", "min_frames", "max_frames", "min_pixels", "max_pixels",
             "total_pixels", "resized_height", "resized_width")
INT_KEYS = ("nframes", "min_frames", "max_frames", "resized_height", "resized_width")
DECODE_KEYS = ("resize",)  # options of decode_video carried in the spec; plan_frames ignores them
RESIZE_MODES = ("exact", "fast")

#: MUSEG training: 2 fps, at most 448 frames, 16*28*28 min pixels, 3584*28*28 total pixels.
TRAIN_SPEC: dict[str, Any] = {"fps": 2.0, "min_frames": 4, "max_frames": 448,
                              "min_pixels": 12544, "total_pixels": 2809856}
#: MUSEG evaluation: 2 fps, default frame limits, same pixel budget.
EVAL_SPEC: dict[str, Any] = {"fps": 2.0, "min_pixels": 12544, "total_pixels": 2809856}
DEFAULTS: dict[str, dict[str, Any]] = {"train": TRAIN_SPEC, "eval": EVAL_SPEC}


@dataclass(frozen=True)
class FramePlan:
    """What the model sees of one video.

    ``indices``: sampled frame indices (0-based, non-decreasing); ``height``/``width``: the resized
    frame size (multiples of 28); ``sample_fps``: frames per second of the sampled clip (pass
    ``second_per_grid_ts = 2 / sample_fps`` to the model); ``video_tokens``: LLM tokens of the video;
    ``nframes``: ``len(indices)``.
    """

    indices: list[int]
    height: int
    width: int
    sample_fps: float
    video_tokens: int
    nframes: int

    @property
    def second_per_grid_t(self) -> float:
        """Seconds covered by one temporal patch (2 frames)."""
        return FRAME_FACTOR / self.sample_fps

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FramePlan:
        return cls(indices=[int(i) for i in d["indices"]], height=int(d["height"]),
                   width=int(d["width"]), sample_fps=float(d["sample_fps"]),
                   video_tokens=int(d["video_tokens"]), nframes=int(d["nframes"]))


def _round_by(x: float, f: int) -> int:
    return round(x / f) * f


def _ceil_by(x: float, f: int) -> int:
    return math.ceil(x / f) * f


def _floor_by(x: float, f: int) -> int:
    return math.floor(x / f) * f


def _get(spec: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """``spec[key]``, or ``default`` when absent or ``None``. A spec is a plain frame-spec dict
    (:data:`TRAIN_SPEC`, :func:`video_spec_from_cfg`'s output, a preflight manifest's ``spec``)
    whose keys are all optional; the defaults are the reference planner's (qwen-vl-utils 0.0.10),
    not config values."""
    v = spec.get(key)
    return default if v is None else v


def check_spec(spec: Mapping[str, Any]) -> None:
    """Reject unknown keys and contradictory options with one clear line.

    >>> check_spec({"fps": 2.0, "nframes": 8})
    Traceback (most recent call last):
    ...
    ValueError: video spec: give either `fps` or `nframes`, not both (got fps=2.0, nframes=8)
    """
    unknown = sorted(set(spec) - set(PLAN_KEYS) - set(DECODE_KEYS))
    if unknown:
        raise ValueError(f"video spec: unknown key(s) {unknown} (fix: use only {list(PLAN_KEYS)} "
                         f"and {list(DECODE_KEYS)})")
    if spec.get("fps") is not None and spec.get("nframes") is not None:
        raise ValueError(f"video spec: give either `fps` or `nframes`, not both "
                         f"(got fps={spec['fps']}, nframes={spec['nframes']})")
    if (spec.get("resized_height") is None) != (spec.get("resized_width") is None):
        raise ValueError("video spec: give both `resized_height` and `resized_width` or neither")
    mode = spec.get("resize")
    if mode is not None and mode not in RESIZE_MODES:
        raise ValueError(f"video spec: `resize` must be one of {RESIZE_MODES}, got {mode!r}")


def smart_resize(height: int, width: int, factor: int = FACTOR,
                 min_pixels: float = IMAGE_MIN_PIXELS,
                 max_pixels: float = IMAGE_MAX_PIXELS) -> tuple[int, int]:
    """Size (h', w') with both sides multiples of ``factor`` and area within the pixel bounds,
    keeping the aspect ratio as well as possible.

    >>> smart_resize(480, 854, min_pixels=12544, max_pixels=15610.0)
    (84, 140)
    >>> smart_resize(10, 10, min_pixels=12544, max_pixels=20000)
    (112, 112)
    """
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(f"frame {width}x{height}: aspect ratio "
                         f"{max(height, width) / min(height, width):.1f} exceeds {MAX_RATIO}")
    h = max(factor, _round_by(height, factor))
    w = max(factor, _round_by(width, factor))
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = _floor_by(height / beta, factor)
        w = _floor_by(width / beta, factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = _ceil_by(height * beta, factor)
        w = _ceil_by(width * beta, factor)
    return h, w


def smart_nframes(spec: Mapping[str, Any], total_frames: int, video_fps: float) -> int:
    """Number of frames to sample (even, in ``[2, total_frames]``) else ``ValueError``.

    >>> smart_nframes({"fps": 2.0}, 300, 30.0), smart_nframes({"nframes": 5}, 300, 30.0)
    (20, 4)
    >>> smart_nframes({"fps": 2.0, "max_frames": 448}, 36000, 29.97)
    448
    """
    check_spec(spec)
    if spec.get("nframes") is not None:
        n = _round_by(spec["nframes"], FRAME_FACTOR)
    else:
        fps = _get(spec, "fps", DEFAULT_FPS)
        min_frames = _ceil_by(_get(spec, "min_frames", DEFAULT_MIN_FRAMES), FRAME_FACTOR)
        max_frames = _floor_by(_get(spec, "max_frames", min(DEFAULT_MAX_FRAMES, total_frames)),
                               FRAME_FACTOR)
        n = total_frames / video_fps * fps
        n = min(min(max(n, min_frames), max_frames), total_frames)
        n = _floor_by(n, FRAME_FACTOR)
    if not (FRAME_FACTOR <= n <= total_frames):
        raise ValueError(f"cannot sample {n} frames from a video of {total_frames} frames "
                         f"(need {FRAME_FACTOR} <= frames <= total_frames)")
    return int(n)


def frame_indices(total_frames: int, nframes: int) -> list[int]:
    """``round(linspace(0, total_frames - 1, nframes))`` computed in float32 like ``torch.linspace``.

    >>> frame_indices(10, 4)
    [0, 3, 6, 9]
    """
    return torch.linspace(0, total_frames - 1, nframes).round().long().tolist()


def pixel_cap(nframes: int, spec: Mapping[str, Any]) -> float:
    """Per-frame pixel cap: even share of ``total_pixels`` (per temporal patch), at most 768*28*28,
    at least ``1.05 * min_pixels``, lowered further by an explicit ``max_pixels``.

    >>> pixel_cap(360, TRAIN_SPEC)
    15610.31111111111
    """
    min_pixels = _get(spec, "min_pixels", VIDEO_MIN_PIXELS)
    total_pixels = _get(spec, "total_pixels", VIDEO_TOTAL_PIXELS)
    cap = max(min(VIDEO_MAX_PIXELS, total_pixels / nframes * FRAME_FACTOR), int(min_pixels * 1.05))
    return min(_get(spec, "max_pixels", cap), cap)


def plan_frames(total_frames: int, video_fps: float, height: int, width: int,
                spec: Mapping[str, Any]) -> FramePlan:
    """The frame plan of a video with ``total_frames`` frames at ``video_fps``, frames ``height`` x
    ``width``, sampled per ``spec`` (see the module docstring). Raises ``ValueError`` with a clear
    message on impossible inputs (too few frames, aspect ratio > 200, bad spec)."""
    if total_frames is None or total_frames < 1:
        raise ValueError(f"cannot plan frames of a video with {total_frames} frames")
    if not video_fps or video_fps <= 0 or not math.isfinite(video_fps):
        raise ValueError(f"cannot plan frames of a video with fps={video_fps}")
    if height < 1 or width < 1:
        raise ValueError(f"cannot plan frames of a video of size {width}x{height}")
    n = smart_nframes(spec, total_frames, video_fps)
    indices = frame_indices(total_frames, n)
    sample_fps = n / max(total_frames, 1e-6) * video_fps
    if spec.get("resized_height") is not None:
        h, w = smart_resize(spec["resized_height"], spec["resized_width"], FACTOR)
    else:
        h, w = smart_resize(height, width, FACTOR,
                            min_pixels=_get(spec, "min_pixels", VIDEO_MIN_PIXELS),
                            max_pixels=pixel_cap(n, spec))
    tokens = (n // FRAME_FACTOR) * (h // FACTOR) * (w // FACTOR)
    return FramePlan(indices=indices, height=h, width=w, sample_fps=sample_fps,
                     video_tokens=tokens, nframes=n)


def video_tokens(plan: FramePlan) -> int:
    """LLM tokens of a planned video (temporal patch 2, 2x2 spatial merge).

    >>> video_tokens(plan_frames(300, 30.0, 480, 854, EVAL_SPEC))
    3500
    """
    return (plan.nframes // FRAME_FACTOR) * (plan.height // FACTOR) * (plan.width // FACTOR)


def video_spec_from_cfg(video_cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """The plan spec (plus ``resize`` if set) from a ``video`` config node (DictConfig or dict);
    keys left ``None`` are dropped, ``nframes`` wins over ``fps``; other keys (backend, cache, ...)
    are not part of the spec.

    >>> video_spec_from_cfg({"fps": 2.0, "max_frames": None, "min_pixels": 12544,
    ...                      "total_pixels": 2809856, "backend": "torchcodec"})
    {'fps': 2.0, 'min_pixels': 12544, 'total_pixels': 2809856}
    """
    video_cfg = video_cfg or {}
    spec: dict[str, Any] = {}
    for key in PLAN_KEYS + DECODE_KEYS:
        val = video_cfg.get(key) if hasattr(video_cfg, "get") else None
        if val is None:
            continue
        try:
            if key == "fps":
                val = float(val)
            elif key in INT_KEYS:
                if float(val) != int(val):
                    raise ValueError
                val = int(val)
            elif key == "resize":
                val = str(val)
            else:
                val = float(val) if isinstance(val, str) else val
        except (TypeError, ValueError):
            raise ValueError(f"video.{key}: expected {'an integer' if key in INT_KEYS else 'a number'}"
                             f", got {val!r}") from None
        if key != "resize" and not val > 0:
            raise ValueError(f"video.{key}: must be > 0, got {val!r} (fix: set a positive value "
                             f"or null)")
        spec[key] = val
    if spec.get("nframes") is not None:
        for k in ("fps", "min_frames", "max_frames"):
            spec.pop(k, None)
    check_spec(spec)
    return spec
